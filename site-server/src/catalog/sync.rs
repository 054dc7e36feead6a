//! Catalog sync, the shell: runs a sync at the top site (by hand or on schedule), and answers
//! what operators ask of the catalog and of every site's sync status.
//!
//! A sync reloads `[sync]` from `site.toml`, reads its sources in order (the plug-ins of
//! [`crate::catalog::sources`]), works out the changes with the pure
//! [`crate::sansio::catalog_plan::plan`], and appends them as one `CatalogDelta` event (catalog
//! version N+1) with its 6702 in one transaction. An unchanged catalog appends no event, only
//! the 6702. Each source that fails raises a 6703. The deltas replicate like any event;
//! every site below raises 40400 as it applies one ([`Site::apply_parent_events`]), and those
//! reports flow up: [`sync_status`] reads them.

use crate::catalog::sources::{self, Configured};
use crate::config::SiteConfig;
use crate::sansio::catalog_plan::{self, ChangeCounts, SourceRead};
use crate::sansio::decide::{Decided, Refusal};
use crate::sansio::projection;
use crate::site::{OpError, Site, Wake};
use chrono::{DateTime, Utc};
use schema::catalog::{CatalogDelta, Update};
use schema::event::ConfigEvent;
use schema::report::{Attribute, Report};
use schema::status;
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
    if let Some(p) = &site.cfg().parent {
        return Err(Refusal::Invalid(format!(
            "{} is not the top site: the catalog is synced at the top of the hierarchy and reaches {} as delta events through its parent {}; run `site-server sync now` at the top site",
            site.cfg().code, site.cfg().code, p.code
        ))
        .into());
    }
    let _one = site.sync_turn().await;
    let path = site.dir().config();
    let cfg = SiteConfig::load(site.dir()).map_err(|e| Refusal::Invalid(e.to_string()))?;
    if cfg.sync.sources.is_empty() {
        return Err(Refusal::Invalid(format!(
            "no catalog sources: add a [[sync.source]] to {} (name = \"debian\", plugin = \"apt\" or \"json\", args = \"Path=...\")",
            path.display()
        ))
        .into());
    }
    let mut sources: Vec<Configured> = Vec::new();
    for s in &cfg.sync.sources {
        match sources::build(s) {
            Ok(c) => sources.push(c),
            Err(e) => {
                site.raise(
                    status::CATALOG_SYNC_FAILED,
                    vec![],
                    vec![s.name.clone(), e.clone()],
                )?;
                return Err(Refusal::Invalid(format!("{e} (in {})", path.display())).into());
            }
        }
    }
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    site.raise(
        status::CATALOG_SYNC_STARTED,
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
    let version = site.db().meta()?.catalog_version;
    let last: Option<LastSync> = site.db().record(&crate::db::catalog_last_sync())?;
    if let (Some(p), Some(l)) = (&prints, last) {
        if l.catalog_version == version && l.sources == *p {
            let total = site.db().catalog_len()?;
            site.raise(
                status::CATALOG_SYNC_COMPLETED,
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
        .await??;
    site.wake(Wake::LogGrew);
    site.wake(Wake::ReportsGrew);
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
        .db()
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
    let plan = catalog_plan::plan(&current, reads);
    let ctx = site.ctx();
    let failed: Vec<Report> = plan
        .failures
        .iter()
        .map(|(name, why)| {
            ctx.status(
                status::CATALOG_SYNC_FAILED,
                vec![],
                vec![name.clone(), why.clone()],
            )
        })
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
    let version = site.db().meta()?.catalog_version;
    if plan.stopped || plan.failures.len() == sources.len() {
        // Nothing applies: only the failures are reported.
        site.db().append_own_reports(ctx.now, failed)?;
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
    let (new_version, appended) = site.db().append_own_at(ctx.now, |view| {
        let v = projection::meta(view)?.catalog_version;
        let v = if changes.is_empty() { v } else { v + 1 };
        let mut reports = failed.clone();
        reports.push(ctx.status(
            status::CATALOG_SYNC_COMPLETED,
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
        site.db().set_record(
            &crate::db::catalog_last_sync(),
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
        let due = match SiteConfig::load(site.dir()) {
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
