//! Catalog views of a site: `status sync` (every site's catalog version, from the roll-ups
//! of the report log), `catalog list` and `catalog show`. Read-only: nothing here writes or wakes.
//!
//! Called by the admin API on a blocking thread. No lock of the site is taken.

use crate::sansio::decide::Refusal;
use crate::sansio::rollups::CatalogWord;

use chrono::{DateTime, Utc};
use schema::catalog::{Classification, Update};
use schema::SiteCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::{OpError, Site};

/// One site's row of `status sync`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRow {
    pub site: SiteCode,
    /// The catalog version the site has applied (0: none yet).
    pub catalog_version: u64,
    /// When it applied it (from its 6702 at the top, its 40400 below).
    pub applied: Option<DateTime<Utc>>,
    /// Versions this site's catalog is behind the newest this site knows of.
    pub behind_by: u64,
    /// The site's last sync attempt (top site only).
    pub last_sync: Option<DateTime<Utc>>,
    /// The errors of its last sync attempt (6703), if it had any.
    pub last_error: Option<String>,
}

/// Every site's sync status from the sites' catalog words: `sites` (this site and its
/// subtree) in order, this site's own catalog version `own`. Pure.
pub fn sync_status(
    sites: &[SiteCode],
    own: u64,
    words: &BTreeMap<SiteCode, CatalogWord>,
) -> Vec<SyncRow> {
    let mut rows: BTreeMap<SiteCode, SyncRow> = sites
        .iter()
        .map(|s| {
            let w = words.get(s).cloned().unwrap_or_default();
            (
                *s,
                SyncRow {
                    site: *s,
                    catalog_version: w.catalog_version,
                    applied: w.applied,
                    behind_by: 0,
                    last_sync: w.last_sync,
                    last_error: w.last_error,
                },
            )
        })
        .collect();
    let newest = rows
        .values()
        .map(|r| r.catalog_version)
        .max()
        .unwrap_or(0)
        .max(own);
    let mut out: Vec<SyncRow> = sites.iter().filter_map(|s| rows.remove(s)).collect();
    for r in &mut out {
        r.behind_by = newest - r.catalog_version;
    }
    out
}

impl Site {
    /// `status sync`: this site and every site of its subtree.
    pub fn sync_rows(&self) -> Result<Vec<SyncRow>, OpError> {
        let mut sites = vec![self.cfg.code];
        for s in self.known_sites()? {
            if !sites.contains(&s) {
                sites.push(s);
            }
        }
        let own = self.db.meta()?.catalog_version;
        Ok(sync_status(&sites, own, &self.db.catalog_words()?))
    }

    /// `catalog list`.
    pub fn catalog_list(&self, q: &CatalogQuery) -> Result<Vec<Update>, OpError> {
        let now = Utc::now();
        let class = q.classification.as_deref().map(Classification::parse);
        let mut out: Vec<Update> = self
            .db
            .catalog()?
            .into_iter()
            .filter(|u| match q.state {
                CatalogState::Active => !u.expired && u.superseded_by.is_none(),
                CatalogState::Superseded => !u.expired && u.superseded_by.is_some(),
                CatalogState::Expired => u.expired,
                CatalogState::All => true,
            })
            .filter(|u| {
                q.product
                    .as_deref()
                    .is_none_or(|p| u.product.eq_ignore_ascii_case(p))
            })
            .filter(|u| class.as_ref().is_none_or(|c| u.classification == *c))
            .filter(|u| {
                // A window longer than chrono can count back is no filter.
                let from = q.since_secs.and_then(|s| {
                    chrono::Duration::try_seconds(i64::try_from(s).ok()?)
                        .and_then(|d| now.checked_sub_signed(d))
                });
                from.is_none_or(|f| u.posted >= f)
            })
            .collect();
        out.sort_by(|a, b| b.posted.cmp(&a.posted).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// `catalog show ID`: the update and the ones it supersedes.
    pub fn catalog_show(&self, id: &str) -> Result<CatalogEntry, OpError> {
        let all = self.db.catalog()?;
        let supersedes: Vec<String> = all
            .iter()
            .filter(|u| u.superseded_by.as_deref() == Some(id))
            .map(|u| u.id.clone())
            .collect();
        let update = all.into_iter().find(|u| u.id == id).ok_or_else(|| {
            Refusal::Invalid(format!(
                "update {id} is not in this site's catalog: list updates with `site-server catalog list`"
            ))
        })?;
        Ok(CatalogEntry { update, supersedes })
    }
}

/// Which updates `catalog list` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogState {
    /// Neither expired nor superseded.
    #[default]
    Active,
    Superseded,
    Expired,
    All,
}

/// The filters of `catalog list`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CatalogQuery {
    pub product: Option<String>,
    pub classification: Option<String>,
    /// Posted within this many seconds.
    pub since_secs: Option<u64>,
    #[serde(default)]
    pub state: CatalogState,
}

/// `catalog show`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub update: Update,
    /// The updates this one supersedes.
    pub supersedes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::report::StatusMessage;
    use schema::report::{Attribute, Report, ReportEnvelope};
    use schema::status;

    /// The catalog words of `reports`, folded in order as the database does.
    fn words(reports: &[ReportEnvelope]) -> BTreeMap<SiteCode, CatalogWord> {
        let mut out: BTreeMap<SiteCode, CatalogWord> = BTreeMap::new();
        for e in reports {
            let Report::Status(m) = &e.body else { continue };
            let w = out.entry(m.site).or_default();
            if let Some(next) = crate::sansio::rollups::fold_catalog(w, m) {
                *w = next;
            }
        }
        out
    }

    fn msg(site: &str, id: u32, t: i64, v: Option<u64>, ins: &[&str]) -> ReportEnvelope {
        let time = DateTime::from_timestamp(1_800_000_000 + t, 0).unwrap();
        ReportEnvelope {
            origin: site.parse().unwrap(),
            origin_seq: t as u64,
            time,
            body: Report::Status(StatusMessage::new(
                id,
                site.parse().unwrap(),
                "m",
                time,
                v.map(Attribute::CatalogVersion).into_iter().collect(),
                ins.iter().map(|s| s.to_string()).collect(),
            )),
            sig: schema::trust::Signature::MISSING,
        }
    }

    #[test]
    fn sync_status_shows_versions_lag_and_the_last_attempts_errors() {
        let sites: Vec<SiteCode> = ["CEN", "P01", "S01"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let reports = vec![
            msg("CEN", status::CATALOG_SYNC_STARTED, 1, None, &["1", "deb"]),
            msg("CEN", status::CATALOG_SYNC_COMPLETED, 2, Some(1), &["1"]),
            msg(
                "P01",
                status::CATALOG_VERSION_APPLIED,
                3,
                Some(1),
                &["1", "5", "CEN"],
            ),
            msg(
                "CEN",
                status::CATALOG_SYNC_STARTED,
                10,
                None,
                &["2", "deb, ms"],
            ),
            msg(
                "CEN",
                status::CATALOG_SYNC_FAILED,
                11,
                None,
                &["ms", "no such file"],
            ),
            msg("CEN", status::CATALOG_SYNC_COMPLETED, 12, Some(2), &["2"]),
            msg(
                "P01",
                status::CATALOG_VERSION_APPLIED,
                13,
                Some(2),
                &["2", "1", "CEN"],
            ),
        ];
        let rows = sync_status(&sites, 2, &words(&reports));
        let view: Vec<(String, u64, u64, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.site.to_string(),
                    r.catalog_version,
                    r.behind_by,
                    r.last_error.is_some(),
                )
            })
            .collect();
        assert_eq!(
            view,
            vec![
                ("CEN".into(), 2, 0, true),
                ("P01".into(), 2, 0, false),
                ("S01".into(), 0, 2, false)
            ]
        );
        assert!(rows[0]
            .last_error
            .as_ref()
            .unwrap()
            .contains("no such file"));
        // A later clean attempt clears the error.
        let mut more = reports.clone();
        more.push(msg(
            "CEN",
            status::CATALOG_SYNC_STARTED,
            20,
            None,
            &["1", "deb"],
        ));
        more.push(msg(
            "CEN",
            status::CATALOG_SYNC_COMPLETED,
            21,
            Some(2),
            &["2"],
        ));
        let rows = sync_status(&sites, 2, &words(&more));
        assert_eq!(rows[0].last_error, None);
        assert_eq!(rows[0].applied.unwrap().timestamp(), 1_800_000_012);
    }
}
