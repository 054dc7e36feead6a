//! Catalog sync, the shell: runs a sync at the top site (by hand or on schedule), and answers
//! what operators ask of the catalog and of every site's sync status.
//!
//! A sync reloads `[sync]` from `site.toml`, reads its sources in order (the plug-ins of
//! [`crate::catalog_sources`]), works out the changes with the pure
//! [`crate::catalog_sync::plan`], and appends them as one `CatalogDelta` event (catalog
//! version N+1) with its 6702 in one transaction. An unchanged catalog appends no event, only
//! the 6702. Each source that fails raises a 6703. The deltas replicate like any event;
//! every site below raises 40400 as it applies one ([`Site::apply_parent_events`]), and those
//! reports flow up: [`sync_status`] reads them.

use crate::catalog_sources::{self, Configured};
use crate::catalog_sync::{self, ChangeCounts, SourceRead};
use crate::config::SiteConfig;
use crate::decide::{Decided, Refusal};
use crate::projection;
use crate::site::{OpError, Site};
use chrono::{DateTime, Utc};
use schema::catalog::{CatalogDelta, Classification, Update};
use schema::event::ConfigEvent;
use schema::report::{Attribute, Report, ReportEnvelope};
use schema::SiteCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The record of the last clean sync: the catalog version it left, and each source's
/// fingerprint (name, digest), in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LastSync {
    catalog_version: u64,
    sources: Vec<(String, String)>,
}

const LAST_SYNC: &str = "catalog-last-sync";

/// What a sync did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// The catalog version after the sync.
    pub catalog_version: u64,
    /// Whether a delta event was appended (false: nothing changed, or the sync failed).
    pub delta: bool,
    pub counts: ChangeCounts,
    /// Updates in the catalog after the sync (expired and superseded ones included).
    pub total: u64,
    /// The sources read, in order.
    pub sources: Vec<String>,
    /// The sources that failed, with why.
    pub failures: Vec<(String, String)>,
    /// A source with `StopOnFailure=True` failed: nothing was applied.
    pub stopped: bool,
    /// Updates a later source listed that an earlier one gives (left to the earlier).
    pub left_to_earlier: u64,
    /// Size of the delta event as stored in the config log (bytes).
    pub delta_bytes: u64,
    /// Every source was as at the last clean sync (same bytes, same settings, same catalog
    /// version): nothing was read again.
    #[serde(default)]
    pub unchanged_sources: bool,
    /// Milliseconds spent reading the sources, and working out and applying the delta.
    pub read_ms: u64,
    pub apply_ms: u64,
}

/// Syncs the catalog now (`site-server sync now`, or the schedule). Only the top site syncs;
/// one sync runs at a time.
pub async fn sync_now(site: Arc<Site>) -> Result<SyncOutcome, OpError> {
    if let Some(p) = &site.cfg.parent {
        return Err(Refusal::Invalid(format!(
            "{} is not the top site: the catalog is synced at the top of the hierarchy and reaches {} as delta events through its parent {}; run `site-server sync now` at the top site",
            site.cfg.code, site.cfg.code, p.code
        ))
        .into());
    }
    let _one = site.sync_lock.lock().await;
    let path = site.dir.config();
    let cfg = SiteConfig::load(&site.dir).map_err(|e| Refusal::Invalid(e.to_string()))?;
    if cfg.sync.sources.is_empty() {
        return Err(Refusal::Invalid(format!(
            "no catalog sources: add a [[sync.source]] to {} (name = \"debian\", plugin = \"apt\" or \"json\", args = \"Path=...\")",
            path.display()
        ))
        .into());
    }
    let mut sources: Vec<Configured> = Vec::new();
    for s in &cfg.sync.sources {
        match catalog_sources::build(s) {
            Ok(c) => sources.push(c),
            Err(e) => {
                site.raise(6703, vec![], vec![s.name.clone(), e.clone()])?;
                return Err(Refusal::Invalid(format!("{e} (in {})", path.display())).into());
            }
        }
    }
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    site.raise(
        6701,
        vec![],
        vec![names.len().to_string(), names.join(", ")],
    )?;
    let started = std::time::Instant::now();
    // Every source as at the last clean sync: the catalog is what they say; read nothing.
    let mut prints = Vec::new();
    for s in &sources {
        prints.push(s.plugin.fingerprint().await.map(|f| (s.name.clone(), f)));
    }
    let prints: Option<Vec<(String, String)>> = prints.into_iter().collect();
    let version = site.db.meta()?.catalog_version;
    let last: Option<LastSync> = site.db.record(LAST_SYNC)?;
    if let (Some(p), Some(l)) = (&prints, last) {
        if l.catalog_version == version && l.sources == *p {
            let total = site.db.catalog_len()?;
            site.raise(
                6702,
                vec![Attribute::CatalogVersion(version)],
                vec![
                    version.to_string(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                    "0".into(),
                    total.to_string(),
                ],
            )?;
            return Ok(SyncOutcome {
                catalog_version: version,
                total,
                sources: names,
                unchanged_sources: true,
                read_ms: started.elapsed().as_millis() as u64,
                ..Default::default()
            });
        }
    }
    let now = Utc::now();
    let mut listed = Vec::new();
    for s in &sources {
        let r = s.plugin.read(now).await;
        if let Err(e) = &r {
            tracing::info!(source = %s.name, error = %e, "catalog source failed");
        }
        listed.push(r);
    }
    let read_ms = started.elapsed().as_millis() as u64;
    let site2 = site.clone();
    let out = tokio::task::spawn_blocking(move || apply(&site2, &sources, listed, read_ms, prints))
        .await
        .map_err(|e| OpError::Failed(format!("the sync thread failed: {e}")))??;
    site.log_grew.notify_waiters();
    site.reports_grew.notify_waiters();
    Ok(out)
}

/// Works out the delta and appends it with its reports (on a blocking thread).
fn apply(
    site: &Site,
    sources: &[Configured],
    listed: Vec<Result<Vec<Update>, String>>,
    read_ms: u64,
    prints: Option<Vec<(String, String)>>,
) -> Result<SyncOutcome, OpError> {
    let started = std::time::Instant::now();
    let current: BTreeMap<String, Update> = site
        .db
        .catalog()?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    let reads: Vec<SourceRead<'_>> = sources
        .iter()
        .zip(listed)
        .map(|(s, l)| SourceRead {
            name: &s.name,
            judge: s.plugin.as_ref(),
            stop_on_failure: s.stop_on_failure,
            listed: l,
        })
        .collect();
    let plan = catalog_sync::plan(&current, reads);
    let ctx = site.ctx();
    let failed: Vec<Report> = plan
        .failures
        .iter()
        .map(|(name, why)| ctx.status(6703, vec![], vec![name.clone(), why.clone()]))
        .collect();
    let mut out = SyncOutcome {
        counts: ChangeCounts::of(&plan.changes),
        sources: sources.iter().map(|s| s.name.clone()).collect(),
        failures: plan.failures.clone(),
        stopped: plan.stopped,
        left_to_earlier: plan.left_to_earlier,
        read_ms,
        ..Default::default()
    };
    let version = site.db.meta()?.catalog_version;
    if plan.stopped || plan.failures.len() == sources.len() {
        // Nothing applies: only the failures are reported.
        site.db.append_own_reports(ctx.now, failed)?;
        out.catalog_version = version;
        out.total = current.len() as u64;
        return Ok(out);
    }
    out.total = current.len() as u64 + out.counts.added;
    let changes = plan.changes;
    let c = out.counts.clone();
    let total = out.total;
    let source = out
        .sources
        .iter()
        .filter(|s| !out.failures.iter().any(|(f, _)| f == *s))
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    let (new_version, appended) = site.db.append_own_at(ctx.now, |view| {
        let v = projection::meta(view)?.catalog_version;
        let v = if changes.is_empty() { v } else { v + 1 };
        let mut reports = failed.clone();
        reports.push(ctx.status(
            6702,
            vec![Attribute::CatalogVersion(v)],
            vec![
                v.to_string(),
                c.added.to_string(),
                c.revised.to_string(),
                c.expired.to_string(),
                c.superseded.to_string(),
                total.to_string(),
            ],
        ));
        Ok(Decided {
            event: (!changes.is_empty()).then(|| {
                ConfigEvent::CatalogDelta(CatalogDelta {
                    catalog_version: v,
                    source: source.clone(),
                    changes: changes.clone(),
                })
            }),
            reports,
            out: v,
        })
    })?;
    out.catalog_version = new_version;
    out.delta = new_version != version;
    out.delta_bytes = appended.map_or(0, |(_, len)| len);
    // A clean sync: the next one may skip reading sources that are still the same.
    if let Some(sources) = prints.filter(|_| out.failures.is_empty()) {
        site.db.set_record(
            LAST_SYNC,
            &LastSync {
                catalog_version: new_version,
                sources,
            },
        )?;
    }
    out.apply_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        version = new_version,
        added = c.added,
        revised = c.revised,
        expired = c.expired,
        superseded = c.superseded,
        "catalog sync completed"
    );
    Ok(out)
}

/// Runs the sync schedule of `site.toml` (read afresh every minute, so an edit needs no
/// restart) for as long as the daemon runs.
pub async fn run_schedule(site: Arc<Site>) {
    let mut planned: Option<(String, DateTime<Utc>)> = None;
    loop {
        let due = match SiteConfig::load(&site.dir) {
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sync schedule");
                None
            }
            Ok(cfg) => match (cfg.sync.schedule.clone(), cfg.sync.schedule(), cfg.tz()) {
                (Some(text), Ok(Some(s)), Ok(tz)) => {
                    // The plan holds while neither the schedule nor the zone changes.
                    let key = format!("{text} @ {}", cfg.zone);
                    let now = Utc::now();
                    let next = match &planned {
                        Some((k, at)) if *k == key => *at,
                        _ => s.next_after(now, &tz),
                    };
                    planned = Some((key, next));
                    Some(next)
                }
                (_, Err(e), _) | (_, _, Err(e)) => {
                    tracing::warn!(error = %e, "the sync schedule is not valid");
                    None
                }
                _ => None,
            },
        };
        let now = Utc::now();
        match due {
            Some(at) if at <= now => {
                planned = None;
                match sync_now(site.clone()).await {
                    Ok(o) => tracing::info!(version = o.catalog_version, "scheduled sync done"),
                    Err(e) => tracing::warn!(error = %e, "scheduled sync failed"),
                }
            }
            Some(at) => {
                let wait = (at - now).to_std().unwrap_or_default();
                tokio::time::sleep(wait.min(std::time::Duration::from_secs(60))).await;
            }
            None => tokio::time::sleep(std::time::Duration::from_secs(60)).await,
        }
    }
}

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

/// Every site's sync status from the report log: `sites` (this site and its subtree) in
/// order, this site's own catalog version `own`. Pure.
pub fn sync_status(sites: &[SiteCode], own: u64, reports: &[ReportEnvelope]) -> Vec<SyncRow> {
    let mut rows: BTreeMap<SiteCode, SyncRow> = sites
        .iter()
        .map(|s| {
            (
                *s,
                SyncRow {
                    site: *s,
                    catalog_version: 0,
                    applied: None,
                    behind_by: 0,
                    last_sync: None,
                    last_error: None,
                },
            )
        })
        .collect();
    for env in reports {
        let Report::Status(m) = &env.body else {
            continue;
        };
        if !matches!(m.id, 6701 | 6702 | 6703 | 40400) {
            continue;
        }
        let Some(r) = rows.get_mut(&m.site) else {
            continue;
        };
        match m.id {
            6701 => {
                r.last_sync = Some(m.time);
                r.last_error = None;
            }
            6703 => {
                let e = m.text();
                r.last_error = Some(match r.last_error.take() {
                    Some(prev) => format!("{prev}; {e}"),
                    None => e,
                });
                r.last_sync.get_or_insert(m.time);
            }
            _ => {
                if let Some(v) = m.catalog_version() {
                    if v > r.catalog_version || r.applied.is_none() {
                        r.catalog_version = r.catalog_version.max(v);
                        r.applied = Some(m.time);
                    }
                }
            }
        }
    }
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
        let reports: Vec<ReportEnvelope> = self
            .db
            .reports(1, usize::MAX, |e| {
                matches!(&e.body, Report::Status(m) if matches!(m.id, 6701 | 6702 | 6703 | 40400))
            })?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let own = self.db.meta()?.catalog_version;
        Ok(sync_status(&sites, own, &reports))
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
        }
    }

    #[test]
    fn sync_status_shows_versions_lag_and_the_last_attempts_errors() {
        let sites: Vec<SiteCode> = ["CEN", "P01", "S01"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let reports = vec![
            msg("CEN", 6701, 1, None, &["1", "deb"]),
            msg("CEN", 6702, 2, Some(1), &["1"]),
            msg("P01", 40400, 3, Some(1), &["1", "5", "CEN"]),
            msg("CEN", 6701, 10, None, &["2", "deb, ms"]),
            msg("CEN", 6703, 11, None, &["ms", "no such file"]),
            msg("CEN", 6702, 12, Some(2), &["2"]),
            msg("P01", 40400, 13, Some(2), &["2", "1", "CEN"]),
        ];
        let rows = sync_status(&sites, 2, &reports);
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
        more.push(msg("CEN", 6701, 20, None, &["1", "deb"]));
        more.push(msg("CEN", 6702, 21, Some(2), &["2"]));
        let rows = sync_status(&sites, 2, &more);
        assert_eq!(rows[0].last_error, None);
        assert_eq!(rows[0].applied.unwrap().timestamp(), 1_800_000_012);
    }
}
