//! Helpers shared by the unit tests of the pure cores: site codes, package ids, targets and a
//! fixed time.

use chrono::{DateTime, TimeZone, Utc};
use schema::event::{DistributionTarget, DpRef};
use schema::{PackageId, SiteCode};

pub(super) fn code(s: &str) -> SiteCode {
    SiteCode::new(s).unwrap()
}

pub(super) fn pkg(s: &str) -> PackageId {
    s.parse().unwrap()
}

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

pub(super) fn to_site(s: &str) -> DistributionTarget {
    DistributionTarget::Site(code(s))
}

pub(super) fn to_dp(site: &str, dp: &str) -> DistributionTarget {
    DistributionTarget::DistributionPoint {
        site: code(site),
        dp: dp.into(),
    }
}

pub(super) fn to_group(g: &str) -> DistributionTarget {
    DistributionTarget::DpGroup(g.into())
}

pub(super) fn dp(site: &str, dp: &str) -> DpRef {
    DpRef {
        site: code(site),
        dp: dp.into(),
    }
}
