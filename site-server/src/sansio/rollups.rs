//! Status roll-ups: the last word of each sender, distribution point and catalog, folded one
//! status message at a time in report-log order, and the filter of `status messages`. Pure:
//! the database folds each report in the transaction that appends it (`db/status.rs`), so no
//! view ever scans the report log.

use chrono::{DateTime, Utc};
use schema::report::{Attribute, ReportEnvelope, StatusMessage};
use schema::status::{self, Severity};
use schema::{AdvertisementId, PackageId, SiteCode};
use serde::{Deserialize, Serialize};

/// How far a package version has been sent to one site (the seed's "% of content sent per
/// site"): the last word of its sender (3531/3532/3533).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSending {
    pub site: SiteCode,
    /// The site whose sender sends it.
    pub from: SiteCode,
    pub pct: u8,
    /// sending, error (with the error), sent.
    pub state: String,
    pub error: Option<String>,
    pub time: DateTime<Utc>,
}

/// The (package, version, destination) a sender message is about.
pub fn sending_key(m: &StatusMessage) -> Option<(PackageId, u32, SiteCode)> {
    if !(status::SENDER_PROGRESS..=status::SENDER_COMPLETE).contains(&m.id) {
        return None;
    }
    let (mut pkg, mut ver, mut dest) = (None, None, None);
    for a in &m.attributes {
        match a {
            Attribute::Package(p) => pkg = Some(*p),
            Attribute::SourceVersion(v) => ver = Some(*v),
            Attribute::DestinationSite(d) => dest = Some(*d),
            _ => {}
        }
    }
    Some((pkg?, ver?, dest?))
}

/// The sending after sender message `m` (whose key is `prev`'s): `None` keeps `prev` (an
/// older word arriving late).
pub fn fold_sending(prev: Option<&SiteSending>, m: &StatusMessage) -> Option<SiteSending> {
    let (_, _, dest) = sending_key(m)?;
    if prev.is_some_and(|p| p.time > m.time) {
        return None;
    }
    let before = prev.map_or(0, |p| p.pct);
    let (pct, state, error) = match m.id {
        status::SENDER_PROGRESS => (
            m.insertion
                .get(3)
                .and_then(|p| p.parse().ok())
                .unwrap_or(before),
            "sending",
            None,
        ),
        status::SENDER_ERROR => (before, "error", m.insertion.get(3).cloned()),
        _ => (100, "sent", None),
    };
    Some(SiteSending {
        site: dest,
        from: m.site,
        pct,
        state: state.into(),
        error,
        time: m.time,
    })
}

/// A distribution point's last word about a package version: when, and its state
/// (pulling, installed, failed: why, damaged, removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpWord {
    pub time: DateTime<Utc>,
    pub state: String,
}

/// The (package, version, site, DP id) a distribution message (2342, 2330, 40150-40152) is
/// about.
pub fn dp_key(m: &StatusMessage) -> Option<(PackageId, u32, SiteCode, String)> {
    if !matches!(
        m.id,
        status::DP_DISTRIBUTION_COMPLETE
            | status::DP_DISTRIBUTION_STARTED
            | status::DP_DISTRIBUTION_FAILED..=status::DP_PACKAGE_REMOVED
    ) {
        return None;
    }
    let (mut pkg, mut ver, mut dp) = (None, None, None);
    for a in &m.attributes {
        match a {
            Attribute::Package(p) => pkg = Some(*p),
            Attribute::SourceVersion(v) => ver = Some(*v),
            Attribute::DistributionPoint(d) => dp = Some(d.as_str()),
            _ => {}
        }
    }
    // A DP names itself SITE/ID in its messages; the machine is its id at its site.
    let dp = dp?;
    let dp = dp.rsplit('/').next().unwrap_or(dp).to_string();
    Some((pkg?, ver?, m.site, dp))
}

/// The DP's word after message `m`: `None` keeps `prev` (an older word arriving late).
pub fn fold_dp(prev: Option<&DpWord>, m: &StatusMessage) -> Option<DpWord> {
    dp_key(m)?;
    if prev.is_some_and(|p| p.time > m.time) {
        return None;
    }
    let state = match m.id {
        status::DP_DISTRIBUTION_STARTED => "pulling".to_string(),
        status::DP_DISTRIBUTION_COMPLETE => "installed".to_string(),
        status::DP_DISTRIBUTION_FAILED => format!(
            "failed: {}",
            m.insertion.get(3).cloned().unwrap_or_default()
        ),
        status::DP_PACKAGE_DAMAGED => "damaged, fetching again".to_string(),
        _ => "removed".to_string(),
    };
    Some(DpWord {
        time: m.time,
        state,
    })
}

/// One site's catalog, as its messages tell: the version applied and when, its last sync
/// attempt and that attempt's errors (top site only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogWord {
    pub catalog_version: u64,
    pub applied: Option<DateTime<Utc>>,
    pub last_sync: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Whether `m` is a catalog message (6701-6703 at the top, 40400 below).
pub fn is_catalog(m: &StatusMessage) -> bool {
    matches!(
        m.id,
        status::CATALOG_SYNC_STARTED
            | status::CATALOG_SYNC_COMPLETED
            | status::CATALOG_SYNC_FAILED
            | status::CATALOG_VERSION_APPLIED
    )
}

/// The site's catalog word after message `m` (of that site): `None` if `m` changes nothing.
pub fn fold_catalog(prev: &CatalogWord, m: &StatusMessage) -> Option<CatalogWord> {
    if !is_catalog(m) {
        return None;
    }
    let mut r = prev.clone();
    match m.id {
        status::CATALOG_SYNC_STARTED => {
            r.last_sync = Some(m.time);
            r.last_error = None;
        }
        status::CATALOG_SYNC_FAILED => {
            let e = m.text();
            r.last_error = Some(match r.last_error.take() {
                Some(prev) => format!("{prev}; {e}"),
                None => e,
            });
            r.last_sync.get_or_insert(m.time);
        }
        _ => {
            let v = m.catalog_version()?;
            if v > r.catalog_version || r.applied.is_none() {
                r.catalog_version = r.catalog_version.max(v);
                r.applied = Some(m.time);
            }
        }
    }
    (r != *prev).then_some(r)
}

/// One site as the messages about it tell (the hierarchy page's row for a site this site
/// has no link to): its link as its parent last said (40200/40201), its view from the top
/// (40221/40222), its last error, its server's start and stop (40001/40002) and its DPs
/// (40205/40206).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteWord {
    /// Up (`Some(true)`) or down, as the site's parent last said, and since when.
    pub link_up: Option<bool>,
    pub link_since: Option<DateTime<Utc>>,
    /// Why the link last went down.
    pub link_error: Option<String>,
    /// Whether the site's view from the top is stale (the freeze alarm), and since when.
    pub frozen: Option<bool>,
    pub frozen_since: Option<DateTime<Utc>>,
    /// The site's newest message of severity error: its id, time and text.
    pub last_error: Option<(u32, DateTime<Utc>, String)>,
    /// When its server last started, and last said it was stopping.
    pub started: Option<DateTime<Utc>>,
    pub stopping: Option<DateTime<Utc>>,
    /// Its DPs: attached (true) or detached, as it last said.
    pub dps: std::collections::BTreeMap<String, bool>,
}

/// The site message `m` tells about, if it is one [`fold_site`] keeps: the child for a link
/// message, else the site that raised it.
pub fn site_word_key(m: &StatusMessage) -> Option<SiteCode> {
    match m.id {
        status::CHILD_LINK_UP | status::CHILD_LINK_DOWN => {
            m.insertion.first().and_then(|c| SiteCode::new(c).ok())
        }
        status::VIEW_FROM_TOP_STALE
        | status::VIEW_FROM_TOP_FRESH
        | status::SITE_SERVER_STARTED
        | status::SITE_SERVER_STOPPING
        | status::DP_ATTACHED
        | status::DP_DETACHED => Some(m.site),
        _ if m.severity == Severity::Error => Some(m.site),
        _ => None,
    }
}

/// The word of the site [`site_word_key`] named after message `m`: `None` if `m` changes
/// nothing.
pub fn fold_site(prev: &SiteWord, m: &StatusMessage) -> Option<SiteWord> {
    let mut r = prev.clone();
    let newer = |t: Option<DateTime<Utc>>| t.is_none_or(|t| m.time >= t);
    match m.id {
        status::CHILD_LINK_UP | status::CHILD_LINK_DOWN if newer(r.link_since) => {
            let up = m.id == status::CHILD_LINK_UP;
            r.link_up = Some(up);
            r.link_since = Some(m.time);
            if !up {
                r.link_error = m.insertion.get(1).cloned();
            }
        }
        status::VIEW_FROM_TOP_STALE | status::VIEW_FROM_TOP_FRESH if newer(r.frozen_since) => {
            r.frozen = Some(m.id == status::VIEW_FROM_TOP_STALE);
            r.frozen_since = Some(m.time);
        }
        status::SITE_SERVER_STARTED if newer(r.started) => r.started = Some(m.time),
        status::SITE_SERVER_STOPPING if newer(r.stopping) => r.stopping = Some(m.time),
        status::DP_ATTACHED | status::DP_DETACHED => {
            if let Some(dp) = m.insertion.first() {
                r.dps.insert(dp.clone(), m.id == status::DP_ATTACHED);
            }
        }
        _ => {}
    }
    if m.severity == Severity::Error && newer(r.last_error.as_ref().map(|e| e.1)) {
        r.last_error = Some((m.id, m.time, m.text()));
    }
    (r != *prev).then_some(r)
}

/// Filters and page of `status messages`. Without `from`, the newest `limit` messages (before
/// `before`, if given) are shown; with it, the first `limit` from that position on. Always in
/// log order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub id: Option<u32>,
    pub site: Option<SiteCode>,
    pub severity: Option<Severity>,
    pub component: Option<String>,
    pub package: Option<PackageId>,
    pub advert: Option<AdvertisementId>,
    /// The first position to show (paging forward).
    pub from: Option<u64>,
    /// Show positions before this one (paging back).
    pub before: Option<u64>,
    /// At most this many (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

/// Messages on a page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 1000;
/// The most messages one answer carries.
pub const MAX_PAGE: usize = 100_000;

/// An index of the report log: messages by one attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Index {
    Advert = b'a',
    Package = b'p',
    Id = b'i',
    Component = b'c',
    Site = b's',
    Severity = b'v',
}

impl MessageQuery {
    /// The page size asked for, bounded.
    pub fn page(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }

    /// Whether message `env` passes every filter.
    pub fn matches(&self, env: &ReportEnvelope) -> bool {
        let schema::report::Report::Status(m) = &env.body else {
            return false;
        };
        self.since.is_none_or(|s| m.time >= s)
            && self.until.is_none_or(|u| m.time < u)
            && self.id.is_none_or(|id| m.id == id)
            && self.site.is_none_or(|s| m.site == s)
            && self.severity.is_none_or(|s| m.severity == s)
            && self.component.as_ref().is_none_or(|c| m.component == *c)
            && self.package.is_none_or(|p| m.package() == Some(p))
            && self.advert.is_none_or(|a| advert_of(m) == Some(a))
    }

    /// The index to walk: the filter most likely to be narrow (an advertisement before a
    /// package before an id ...), with the value's index term; `None`: walk the log.
    pub fn index(&self) -> Option<(Index, Vec<u8>)> {
        if let Some(a) = &self.advert {
            return Some((Index::Advert, a.to_string().into_bytes()));
        }
        if let Some(p) = &self.package {
            return Some((Index::Package, p.to_string().into_bytes()));
        }
        if let Some(id) = self.id {
            return Some((Index::Id, id.to_be_bytes().to_vec()));
        }
        if let Some(c) = &self.component {
            return Some((Index::Component, c.as_bytes().to_vec()));
        }
        if let Some(s) = self.site {
            return Some((Index::Site, s.as_bytes().to_vec()));
        }
        self.severity
            .map(|s| (Index::Severity, vec![severity_byte(s)]))
    }
}

fn severity_byte(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
    }
}

fn advert_of(m: &StatusMessage) -> Option<AdvertisementId> {
    m.attributes.iter().find_map(|a| match a {
        Attribute::Advertisement(id) => Some(*id),
        _ => None,
    })
}

/// Every index term of message `m`: each index it is listed in, with the term.
pub fn index_terms(m: &StatusMessage) -> Vec<(Index, Vec<u8>)> {
    let mut out = vec![
        (Index::Id, m.id.to_be_bytes().to_vec()),
        (Index::Site, m.site.as_bytes().to_vec()),
        (Index::Severity, vec![severity_byte(m.severity)]),
        (Index::Component, m.component.as_bytes().to_vec()),
    ];
    if let Some(p) = m.package() {
        out.push((Index::Package, p.to_string().into_bytes()));
    }
    if let Some(a) = advert_of(m) {
        out.push((Index::Advert, a.to_string().into_bytes()));
    }
    out
}

/// The watermark's step: the report log is indexed by the minute its newest message so far
/// reached (see [`watermark_minute`]).
pub const WATERMARK_STEP_SECS: i64 = 60;

/// The minute that message time `t` falls in. The log's watermark at a position is the newest
/// message time at or before it; it never goes back, so the first position whose watermark
/// reached `since`'s minute bounds from below every message at or after `since` (a message
/// is never newer than the watermark at its own position).
pub fn watermark_minute(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp().div_euclid(WATERMARK_STEP_SECS)).unwrap_or(0)
}

/// What retention may remove: positions up to `acked` (the parent has them; the whole log at
/// the top) whose message is older than `cutoff`, or beyond the newest `max` of the log of
/// `len` positions. Returns whether position `pos` holding a report of time `time` goes.
pub fn retention_drops(
    pos: u64,
    time: DateTime<Utc>,
    acked: u64,
    len: u64,
    cutoff: Option<DateTime<Utc>>,
    max: Option<u64>,
) -> bool {
    if pos > acked {
        return false;
    }
    let too_old = cutoff.is_some_and(|c| time < c);
    let too_many = max.is_some_and(|m| len.saturating_sub(pos) >= m);
    too_old || too_many
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::report::Report;

    fn code(s: &str) -> SiteCode {
        SiteCode::new(s).unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn msg(id: u32, site: &str, t: i64, attrs: Vec<Attribute>, ins: &[&str]) -> StatusMessage {
        let mut m = StatusMessage::new(
            id,
            code(site),
            "host",
            at(t),
            attrs,
            ins.iter().map(|s| s.to_string()).collect(),
        );
        m.time = at(t);
        m
    }

    fn pkg() -> PackageId {
        "CEN00001".parse().unwrap()
    }

    #[test]
    fn a_senders_last_word_wins_and_an_older_one_arriving_late_changes_nothing() {
        let attrs = || {
            vec![
                Attribute::Package(pkg()),
                Attribute::SourceVersion(1),
                Attribute::DestinationSite(code("S01")),
            ]
        };
        let p = msg(
            status::SENDER_PROGRESS,
            "P01",
            10,
            attrs(),
            &["a", "b", "c", "40"],
        );
        assert_eq!(sending_key(&p), Some((pkg(), 1, code("S01"))));
        let s = fold_sending(None, &p).unwrap();
        assert_eq!((s.pct, s.state.as_str()), (40, "sending"));
        let err = msg(
            status::SENDER_ERROR,
            "P01",
            20,
            attrs(),
            &["a", "b", "c", "timed out"],
        );
        let e = fold_sending(Some(&s), &err).unwrap();
        assert_eq!((e.pct, e.state.as_str()), (40, "error"));
        assert_eq!(e.error.as_deref(), Some("timed out"));
        let done = msg(status::SENDER_COMPLETE, "P01", 30, attrs(), &[]);
        let d = fold_sending(Some(&e), &done).unwrap();
        assert_eq!((d.pct, d.state.as_str()), (100, "sent"));
        assert_eq!(fold_sending(Some(&d), &p), None, "older word arriving late");
        let other = msg(status::DP_DISTRIBUTION_COMPLETE, "P01", 40, attrs(), &[]);
        assert_eq!(sending_key(&other), None);
    }

    #[test]
    fn a_sites_word_takes_its_parents_link_messages_and_its_own_alarms() {
        let up = msg(status::CHILD_LINK_UP, "P01", 10, vec![], &["S01", "4"]);
        assert_eq!(
            site_word_key(&up),
            Some(code("S01")),
            "the child, not the parent"
        );
        let w = fold_site(&SiteWord::default(), &up).unwrap();
        assert_eq!((w.link_up, w.link_since), (Some(true), Some(at(10))));
        let down = msg(
            status::CHILD_LINK_DOWN,
            "P01",
            20,
            vec![],
            &["S01", "timed out"],
        );
        let w = fold_site(&w, &down).unwrap();
        assert_eq!(w.link_up, Some(false));
        assert_eq!(w.link_error.as_deref(), Some("timed out"));
        assert_eq!(fold_site(&w, &up), None, "an older word arriving late");
        let stale = msg(
            status::VIEW_FROM_TOP_STALE,
            "S01",
            30,
            vec![],
            &["30", "CEN", "9", "x"],
        );
        assert_eq!(site_word_key(&stale), Some(code("S01")));
        let w = fold_site(&w, &stale).unwrap();
        assert_eq!(w.frozen, Some(true));
        let fresh = msg(
            status::VIEW_FROM_TOP_FRESH,
            "S01",
            40,
            vec![],
            &["CEN", "9", "x"],
        );
        let w = fold_site(&w, &fresh).unwrap();
        assert_eq!(w.frozen, Some(false));
        let dp = msg(
            status::DP_ATTACHED,
            "S01",
            50,
            vec![],
            &["DP1", "127.0.0.1:1", "0"],
        );
        let w = fold_site(&w, &dp).unwrap();
        assert_eq!(w.dps.get("DP1"), Some(&true));
        let gone = msg(status::DP_DETACHED, "S01", 60, vec![], &["DP1", "closed"]);
        let w = fold_site(&w, &gone).unwrap();
        assert_eq!(w.dps.get("DP1"), Some(&false));
        let bad = msg(
            status::CATALOG_SYNC_FAILED,
            "S01",
            70,
            vec![],
            &["src", "boom"],
        );
        assert_eq!(bad.severity, Severity::Error);
        assert_eq!(site_word_key(&bad), Some(code("S01")));
        let w = fold_site(&w, &bad).unwrap();
        assert_eq!(
            w.last_error.as_ref().map(|e| e.0),
            Some(status::CATALOG_SYNC_FAILED)
        );
        let info = msg(
            status::PACKAGE_PUBLISHED,
            "S01",
            80,
            vec![],
            &["a", "b", "c"],
        );
        assert_eq!(site_word_key(&info), None);
    }

    #[test]
    fn a_dp_is_named_by_its_id_at_its_site() {
        let m = msg(
            status::DP_DISTRIBUTION_COMPLETE,
            "S01",
            5,
            vec![
                Attribute::Package(pkg()),
                Attribute::SourceVersion(2),
                Attribute::DistributionPoint("S01/DP1".into()),
            ],
            &[],
        );
        assert_eq!(dp_key(&m), Some((pkg(), 2, code("S01"), "DP1".into())));
        assert_eq!(fold_dp(None, &m).unwrap().state, "installed");
    }

    #[test]
    fn the_filter_and_the_index_agree() {
        let m = msg(
            status::SENDER_ERROR,
            "P01",
            10,
            vec![Attribute::Package(pkg())],
            &[],
        );
        let env = ReportEnvelope {
            origin: code("P01"),
            origin_seq: 1,
            time: at(10),
            body: Report::Status(m.clone()),
            sig: schema::trust::Signature::MISSING,
        };
        let terms = index_terms(&m);
        let q = MessageQuery {
            id: Some(status::SENDER_ERROR),
            site: Some(code("P01")),
            since: Some(at(10)),
            ..Default::default()
        };
        assert!(q.matches(&env));
        assert!(terms.contains(&q.index().unwrap()));
        let q = MessageQuery {
            package: Some(pkg()),
            ..Default::default()
        };
        assert!(q.matches(&env));
        assert_eq!(q.index().unwrap().0, Index::Package);
        assert!(terms.contains(&q.index().unwrap()));
        for miss in [
            MessageQuery {
                since: Some(at(11)),
                ..Default::default()
            },
            MessageQuery {
                until: Some(at(10)),
                ..Default::default()
            },
            MessageQuery {
                severity: Some(Severity::Info),
                ..Default::default()
            },
            MessageQuery {
                component: Some("nobody".into()),
                ..Default::default()
            },
        ] {
            assert!(!miss.matches(&env), "{miss:?}");
        }
        assert_eq!(MessageQuery::default().index(), None);
        assert_eq!(MessageQuery::default().page(), DEFAULT_PAGE);
    }

    #[test]
    fn retention_keeps_what_the_parent_has_not_acknowledged() {
        let cutoff = Some(at(100));
        // Old and acknowledged: goes. Old but not acknowledged: stays.
        assert!(retention_drops(5, at(0), 10, 20, cutoff, None));
        assert!(!retention_drops(11, at(0), 10, 20, cutoff, None));
        // Young: stays unless over the count.
        assert!(!retention_drops(5, at(200), 10, 20, cutoff, None));
        assert!(retention_drops(5, at(200), 10, 20, cutoff, Some(15)));
        assert!(!retention_drops(6, at(200), 10, 20, cutoff, Some(15)));
        assert!(!retention_drops(5, at(0), 10, 20, None, None));
    }

    #[test]
    fn the_watermark_minute_never_goes_back_past_its_message() {
        assert_eq!(watermark_minute(at(0)) + 1, watermark_minute(at(60)));
        assert!(watermark_minute(at(59)) == watermark_minute(at(0)));
    }
}
