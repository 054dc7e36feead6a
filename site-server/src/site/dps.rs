//! Distribution points: groups, what each DP of this site must hold, and the DPs and
//! children this site reports up the tree.
//!
//! Called by the admin API (`dp ...`), by `net::dp_link` (assignments) and at start
//! (`report_dps`, `report_children`). Decisions wake [`Wake::LogGrew`] and
//! [`Wake::ReportsGrew`]; reports wake [`Wake::ReportsGrew`]. No lock of the site is taken.

use crate::sansio::decide::{self};
use chrono::Utc;
use schema::event::DistributionTarget;
use schema::report::{Report, SiteData};
use schema::SiteCode;
use serde::{Deserialize, Serialize};

use super::{OpError, Site, Wake};

/// `dp group add|remove`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DpGroupChange {
    pub group: String,
    #[serde(default)]
    pub add: Vec<schema::event::DpRef>,
    #[serde(default)]
    pub remove: Vec<schema::event::DpRef>,
}

/// One row of `dp list`: a distribution point of this site or one below it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpRow {
    pub site: SiteCode,
    pub id: String,
    pub address: String,
    pub fingerprint: String,
}

/// Per (site, DP) of one package version: the last word of its distribution messages.
pub(super) type DpProgress =
    std::collections::HashMap<(SiteCode, String), crate::sansio::rollups::DpWord>;

/// The DPs of one site a package version is targeted at, and how many have it installed
/// (the seed's "DPs targeted / installed / % installed" per site).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteDps {
    pub site: SiteCode,
    pub targeted: usize,
    pub installed: usize,
    pub pct_installed: u8,
    pub dps: Vec<DpInstall>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpInstall {
    pub dp: String,
    /// waiting for its site, pulling, installed, failed: REASON, damaged, removed.
    pub state: String,
}

impl Site {
    /// Every distribution point of `sites`, as their reports say (this site's own included:
    /// it reports them to itself first).
    pub fn known_dps(
        &self,
        sites: &std::collections::BTreeSet<SiteCode>,
    ) -> Result<std::collections::BTreeSet<(SiteCode, String)>, OpError> {
        let mut out = std::collections::BTreeSet::new();
        for s in sites {
            for d in self.db.reported_dps(*s)?.unwrap_or_default() {
                out.insert((*s, d.id));
            }
        }
        Ok(out)
    }

    /// `dp group create NAME`.
    pub fn dp_group_create(&self, group: &str) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db
            .append_own(ctx.now, |view| decide::dp_group_create(view, &ctx, group))?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// `dp group add|remove NAME --dp SITE/ID`.
    pub fn dp_group_change(&self, req: &DpGroupChange) -> Result<(), OpError> {
        let known = self.known_sites()?;
        let dps = self.known_dps(&known)?;
        let target = DistributionTarget::DpGroup(req.group.clone());
        let mut at_group = 0;
        for p in self.db.packages()? {
            if self.db.targets(&p.id)?.contains(&target) {
                at_group += 1;
            }
        }
        let ctx = self.ctx();
        self.db.append_own(ctx.now, |view| {
            decide::dp_group_change(
                view,
                &ctx,
                &req.group,
                &req.add,
                &req.remove,
                &dps,
                at_group,
            )
        })?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// `dp group list`.
    pub fn dp_groups(&self) -> Result<crate::sansio::projection::DpGroups, OpError> {
        Ok(self.db.dp_groups()?)
    }

    /// `dp list`: every distribution point of this site and its subtree, as reported.
    pub fn dps(&self) -> Result<Vec<DpRow>, OpError> {
        let mut out = Vec::new();
        for s in self.known_sites()? {
            for d in self.db.reported_dps(s)?.unwrap_or_default() {
                out.push(DpRow {
                    site: s,
                    id: d.id,
                    address: d.address,
                    fingerprint: d.fingerprint,
                });
            }
        }
        Ok(out)
    }

    /// What DP `dp` of this site must hold: the current version of every package targeted
    /// at it (directly or through a group it is in) that is complete in this site's store,
    /// with the older versions that are not retired (the DP keeps the one it has until the
    /// new one is in); and its ranked sources if it is a pull DP.
    pub fn dp_assignments(
        &self,
        dp: &str,
    ) -> Result<(Vec<schema::wire::DpAssignment>, Vec<schema::wire::DpSource>), OpError> {
        let me = DistributionTarget::DistributionPoint {
            site: self.cfg.code,
            dp: dp.to_string(),
        };
        let member = schema::event::DpRef {
            site: self.cfg.code,
            dp: dp.to_string(),
        };
        let groups = self.db.dp_groups()?;
        let mut out = Vec::new();
        for p in self.db.packages()? {
            let targeted = self.db.targets(&p.id)?.iter().any(|t| match t {
                DistributionTarget::DpGroup(g) => {
                    groups.get(g).is_some_and(|m| m.contains(&member))
                }
                t => *t == me,
            });
            if !targeted {
                continue;
            }
            let Some(v) = p.current() else { continue };
            let Some(m) = self.db.manifest(&v.manifest_id)? else {
                continue;
            };
            if !m.unique_chunks().iter().all(|c| self.store.has(&c.id)) {
                continue;
            }
            out.push(schema::wire::DpAssignment {
                package: p.id,
                name: p.name.clone(),
                version: v.source_version,
                priority: p.priority,
                manifest_id: v.manifest_id,
                manifest: m,
                keep: p
                    .versions
                    .iter()
                    .filter(|o| !o.retired && o.source_version < v.source_version)
                    .map(|o| o.source_version)
                    .collect(),
            });
        }
        let sources = self
            .cfg
            .dps
            .iter()
            .find(|d| d.id == dp)
            .map(|d| {
                d.sources
                    .iter()
                    .filter_map(|s| self.cfg.dps.iter().find(|o| o.id == *s))
                    .map(|o| schema::wire::DpSource {
                        dp: o.id.clone(),
                        address: o.address.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((out, sources))
    }

    /// Reports this site's distribution points up the tree, if they changed since it last did.
    pub fn report_dps(&self) -> Result<(), OpError> {
        let now: Vec<schema::report::DistributionPointInfo> = self
            .cfg
            .dps
            .iter()
            .map(|d| schema::report::DistributionPointInfo {
                id: d.id.clone(),
                address: d.address.clone(),
                fingerprint: d.fingerprint.clone(),
            })
            .collect();
        let before = self.db.reported_dps(self.cfg.code)?;
        if before.as_ref() == Some(&now) || (before.is_none() && now.is_empty()) {
            return Ok(());
        }
        self.db.append_own_reports(
            Utc::now(),
            vec![Report::SiteData(SiteData::DistributionPoints(now))],
        )?;
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// Reports this site's children up the tree, if they changed since it last did.
    pub fn report_children(&self) -> Result<(), OpError> {
        let now = self.child_codes();
        if self.db.reported_children(self.cfg.code)?.as_ref() == Some(&now) {
            return Ok(());
        }
        self.db
            .append_own_reports(Utc::now(), vec![Report::SiteData(SiteData::Children(now))])?;
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// Per site of the subtree, the DPs a package version is targeted at there (directly or
    /// through a group, by `targets`) and how far it is installed on them (`progress`).
    pub(super) fn dp_rows(
        &self,
        targets: &[DistributionTarget],
        groups: &crate::sansio::projection::DpGroups,
        known: &std::collections::BTreeSet<SiteCode>,
        progress: &DpProgress,
    ) -> Result<Vec<SiteDps>, OpError> {
        let mut rows = Vec::new();
        for site in known {
            let mut row = SiteDps {
                site: *site,
                targeted: 0,
                installed: 0,
                pct_installed: 0,
                dps: Vec::new(),
            };
            for d in self.db.reported_dps(*site)?.unwrap_or_default() {
                let member = schema::event::DpRef {
                    site: *site,
                    dp: d.id.clone(),
                };
                let targeted = targets.iter().any(|t| match t {
                    DistributionTarget::DistributionPoint { site: s, dp } => {
                        s == site && *dp == d.id
                    }
                    DistributionTarget::DpGroup(g) => {
                        groups.get(g).is_some_and(|m| m.contains(&member))
                    }
                    DistributionTarget::Site(_) => false,
                });
                if !targeted {
                    continue;
                }
                let state = progress
                    .get(&(*site, d.id.clone()))
                    .map_or("waiting for its site".to_string(), |w| w.state.clone());
                row.targeted += 1;
                if state == "installed" {
                    row.installed += 1;
                }
                row.dps.push(DpInstall { dp: d.id, state });
            }
            if let Some(pct) = (row.installed * 100).checked_div(row.targeted) {
                row.pct_installed = pct as u8;
                rows.push(row);
            }
        }
        Ok(rows)
    }
}
