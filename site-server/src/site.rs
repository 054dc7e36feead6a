//! The running site: its configuration, database and content store, and the operations the
//! admin API exposes. Handlers stay thin; what a request does is here.

use crate::config::{DataDir, SiteConfig};
use crate::db::{Db, DbError, LogCounts};
use crate::decide::{
    self, AdvertRequest, Ctx, DistributeOutcome, DistributeRequest, PublishOutcome, PublishRequest,
    Refusal,
};
use crate::links::{LinkStatus, Role};
use crate::projection::PackageRecord;
use chrono::{DateTime, Utc};
use dist_point::ContentStore;
use schema::advert::Advertisement;
use schema::event::{ConfigEvent, DistributionTarget, Priority};
use schema::manifest::Manifest;
use schema::report::{Attribute, Report, ReportEnvelope, SiteData};
use schema::status::Severity;
use schema::{PackageId, SiteCode};
use serde::{Deserialize, Serialize};

pub struct Site {
    pub cfg: SiteConfig,
    pub dir: DataDir,
    pub db: Db,
    pub store: ContentStore,
    pub machine: String,
    /// Woken whenever the config log grows, so links to children send at once.
    pub log_grew: tokio::sync::Notify,
    /// Woken whenever the report log grows, so the link to the parent sends at once.
    pub reports_grew: tokio::sync::Notify,
    /// The state of every link (parent and children), in memory.
    pub links: std::sync::Mutex<std::collections::BTreeMap<SiteCode, LinkStatus>>,
    /// What this site still has to fetch from its parent (sans-IO plan, see `fetch`).
    pub fetch: std::sync::Mutex<crate::fetch::FetchPlan>,
    /// Woken when the fetch plan has new wants (or answers to wait for).
    pub fetch_wake: tokio::sync::Notify,
    /// Woken when chunks became durable in the content store (or the parent said it lacks
    /// one), so that links serving children look again at what they wait for.
    pub content_grew: tokio::sync::Notify,
    /// What this site sends to its children, and when (sans-IO, see `sender::scheduler`).
    pub sender: std::sync::Mutex<sender::scheduler::Scheduler>,
    /// Woken when the sender's configuration changed (a schedule, a rate, a boost, a retry).
    pub sender_wake: tokio::sync::Notify,
    /// Held by the catalog sync that runs (one at a time: by hand or on schedule).
    pub sync_lock: tokio::sync::Mutex<()>,
}

/// A change to a child link's schedule and rate (`child set`); `None` keeps what is set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkPolicyRequest {
    pub schedule: Option<String>,
    pub rate: Option<String>,
}

/// Changes a child link's schedule and/or rate in `site.toml` (checked first; nothing is
/// written if either does not parse). Returns the link as saved.
pub fn set_child_policy(
    dir: &DataDir,
    code: SiteCode,
    req: &LinkPolicyRequest,
) -> Result<crate::config::ChildLink, OpError> {
    let mut cfg = SiteConfig::load(dir).map_err(|e| OpError::Failed(e.to_string()))?;
    let Some(child) = cfg.children.iter_mut().find(|c| c.code == code) else {
        return Err(Refusal::Invalid(format!(
            "{code} is not a child of {}: see `site-server child list`",
            cfg.code
        ))
        .into());
    };
    let mut changed = child.clone();
    if let Some(s) = &req.schedule {
        changed.schedule = s.trim().to_string();
    }
    if let Some(r) = &req.rate {
        changed.rate = r.trim().to_string();
        if changed.rate == "unlimited" {
            changed.rate.clear();
        }
    }
    changed.policy().map_err(Refusal::Invalid)?;
    *child = changed.clone();
    cfg.save(dir).map_err(OpError::Failed)?;
    Ok(changed)
}

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

/// `status senders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendersView {
    pub zone: String,
    pub links: Vec<sender::scheduler::LinkView>,
    pub boosts: Vec<BoostView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoostView {
    pub package: PackageId,
    pub until: Option<DateTime<Utc>>,
}

/// `sender retry`: which failed sendings to retry (all when both are `None`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RetryRequest {
    pub site: Option<SiteCode>,
    pub package: Option<PackageId>,
}

/// One row of `status packages`: a package version this site holds or passes on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentRow {
    pub package: PackageId,
    pub name: String,
    pub source_version: u32,
    /// Targets of the package at this site or below it.
    pub targets: Vec<DistributionTarget>,
    pub chunks: u64,
    pub chunks_present: u64,
    pub bytes: u64,
    pub bytes_present: u64,
    /// Per site the version is sent to (anywhere below), the last word of its sender
    /// (3531/3532/3533), as the seed's "% of content sent per site" report.
    #[serde(default)]
    pub sending: Vec<SiteSending>,
    /// Per site with DPs the package is targeted at: targeted, installed, % installed.
    #[serde(default)]
    pub dps: Vec<SiteDps>,
}

/// Per (package, version, site, DP): the time and state of its last distribution message.
type DpProgress =
    std::collections::HashMap<(PackageId, u32, SiteCode, String), (DateTime<Utc>, String)>;

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

/// Per package version, per destination site: the last word of its sender.
type SendingProgress =
    std::collections::HashMap<(PackageId, u32), std::collections::BTreeMap<SiteCode, SiteSending>>;

/// How far a package version has been sent to one site.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

/// One row of `status sites`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteLinkRow {
    #[serde(flatten)]
    pub link: LinkStatus,
    /// Parent link: the last parent log position applied here. Child link: the last position
    /// of this site's log the child acknowledged.
    pub config_cursor: u64,
    /// Parent link: the last report position the parent acknowledged. Child link: the last
    /// position of the child's report log applied here.
    pub reports_cursor: u64,
    /// Child link: events of this site's log the child has not acknowledged, and their bytes.
    pub backlog_events: u64,
    pub backlog_bytes: u64,
    /// A courier child: its last export and receipt, and the backlog the next export carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier: Option<CourierLinkView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CourierLinkView {
    pub last_export: Option<DateTime<Utc>>,
    pub last_receipt: Option<DateTime<Utc>>,
    /// The child's applied position, from its last receipt.
    pub receipt_applied: u64,
    pub next_events: u64,
    pub next_chunks: u64,
    pub next_chunk_bytes: u64,
}

/// The host name, for the "machine" of status messages.
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdentityView {
    pub code: SiteCode,
    pub fingerprint: String,
    pub public_key: String,
    pub listen: String,
    pub api: String,
    pub logs: LogCounts,
    pub catalog_version: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageSummary {
    pub id: PackageId,
    pub name: String,
    pub priority: Priority,
    /// The newest version that is not retired (0: none).
    pub source_version: u32,
    pub versions: usize,
    pub files: u64,
    pub size: u64,
    pub chunks: u64,
    pub published: Option<DateTime<Utc>>,
    pub targets: Vec<DistributionTarget>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PackageDetail {
    pub package: PackageRecord,
    pub targets: Vec<DistributionTarget>,
    /// The manifest of the newest version that is not retired.
    pub manifest: Option<Manifest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub position: u64,
    pub origin: SiteCode,
    pub origin_seq: u64,
    pub time: DateTime<Utc>,
    pub kind: String,
    pub summary: String,
    pub event: ConfigEvent,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MessageRow {
    pub position: u64,
    pub origin: SiteCode,
    pub origin_seq: u64,
    pub id: u32,
    pub severity: Severity,
    pub component: String,
    pub site: SiteCode,
    pub machine: String,
    pub time: DateTime<Utc>,
    pub text: String,
    pub attributes: Vec<Attribute>,
    pub insertion: Vec<String>,
}

/// Filters of `status messages`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MessageQuery {
    pub since: Option<DateTime<Utc>>,
    pub id: Option<u32>,
    pub limit: Option<usize>,
}

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request is wrong (unknown id, invalid value): HTTP 4xx, CLI exit 2.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Something failed on the site: HTTP 500, CLI exit 1.
    #[error("{0}")]
    Failed(String),
}

impl From<DbError> for OpError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Refused(r) => OpError::Refused(r),
            other => OpError::Failed(other.to_string()),
        }
    }
}

impl Site {
    /// `child set` on a running site: the file, then the sender, at once.
    pub fn set_child_policy(
        &self,
        code: SiteCode,
        req: &LinkPolicyRequest,
    ) -> Result<crate::config::ChildLink, OpError> {
        let link = set_child_policy(&self.dir, code, req)?;
        let policy = link.policy().map_err(Refusal::Invalid)?;
        self.sender
            .lock()
            .expect("sender lock")
            .set_policy(code, policy);
        self.sender_wake.notify_waiters();
        tracing::info!(child = %code, schedule = %link.schedule, rate = %link.rate, "link policy changed");
        Ok(link)
    }

    /// `status senders`: every link this site sends on.
    pub fn senders(&self) -> SendersView {
        let s = self.sender.lock().expect("sender lock");
        let wall = Utc::now();
        SendersView {
            zone: self.cfg.zone.clone(),
            links: s.view(std::time::Instant::now(), wall),
            boosts: s
                .boosts(wall)
                .into_iter()
                .map(|(package, until)| BoostView { package, until })
                .collect(),
        }
    }

    /// `sender retry`: failed sendings go again now.
    pub fn sender_retry(&self, req: &RetryRequest) -> Result<usize, OpError> {
        let n = self
            .sender
            .lock()
            .expect("sender lock")
            .retry(req.site, req.package);
        self.sender_wake.notify_waiters();
        Ok(n)
    }

    /// Applies a boost event to this site's sender.
    pub fn apply_boost(&self, event: &ConfigEvent) {
        if let ConfigEvent::SenderBoost { package, until } = event {
            let mut s = self.sender.lock().expect("sender lock");
            match until {
                Some(t) if *t <= Utc::now() => s.unboost(package),
                _ => s.boost(*package, *until),
            }
            drop(s);
            self.sender_wake.notify_waiters();
        }
    }

    pub(crate) fn ctx(&self) -> Ctx {
        Ctx {
            site: self.cfg.code,
            machine: self.machine.clone(),
            now: Utc::now(),
        }
    }

    pub fn identity(&self) -> Result<IdentityView, OpError> {
        let public = sender::identity::load_public(&self.dir.root)
            .map_err(|e| OpError::Failed(e.to_string()))?;
        Ok(IdentityView {
            code: self.cfg.code,
            fingerprint: public.fingerprint,
            public_key: public.public_key,
            listen: self.cfg.listen.to_string(),
            api: self.cfg.api.to_string(),
            logs: self.db.counts()?,
            catalog_version: self.db.meta()?.catalog_version,
        })
    }

    /// Records a package version whose chunks the caller has put in the content store.
    pub fn publish(&self, req: &PublishRequest) -> Result<PublishOutcome, OpError> {
        let chunks = req.manifest.unique_chunks();
        let missing: Vec<_> = chunks.iter().filter(|c| !self.store.has(&c.id)).collect();
        if let Some(first) = missing.first() {
            return Err(Refusal::MissingChunks {
                missing: missing.len(),
                first: first.id.to_hex(),
            }
            .into());
        }
        let ctx = self.ctx();
        let out = self
            .db
            .append_own(ctx.now, |view| decide::publish(view, &ctx, req))?;
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(out)
    }

    pub fn create_advert(&self, req: &AdvertRequest) -> Result<Advertisement, OpError> {
        let ctx = self.ctx();
        let out = self
            .db
            .append_own(ctx.now, |view| decide::create_advert(view, &ctx, req))?;
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(out)
    }

    /// Targets a package (see [`decide::distribute`]).
    pub fn distribute(&self, req: &DistributeRequest) -> Result<DistributeOutcome, OpError> {
        let known = self.known_sites()?;
        let dps = self.known_dps(&known)?;
        let ctx = self.ctx();
        let out = self.db.append_own(ctx.now, |view| {
            decide::distribute(view, &ctx, req, &known, &dps)
        })?;
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(out)
    }

    /// `package undistribute`.
    pub fn undistribute(
        &self,
        req: &DistributeRequest,
    ) -> Result<Vec<DistributionTarget>, OpError> {
        let ctx = self.ctx();
        let out = self
            .db
            .append_own(ctx.now, |view| decide::undistribute(view, &ctx, req))?;
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(out)
    }

    /// `package retire`.
    pub fn retire(&self, package: PackageId, version: u32) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db
            .append_own(ctx.now, |view| decide::retire(view, &ctx, package, version))?;
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(())
    }

    /// `sender boost`: decided here, applied here and by every site the event reaches.
    pub fn boost(&self, package: PackageId, until: Option<DateTime<Utc>>) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db
            .append_own(ctx.now, |view| decide::boost(view, &ctx, package, until))?;
        self.apply_boost(&ConfigEvent::SenderBoost { package, until });
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(())
    }

    /// `package priority`: decided here; every sender on the way follows it.
    pub fn set_priority(&self, package: PackageId, priority: Priority) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db.append_own(ctx.now, |view| {
            decide::set_priority(view, &ctx, package, priority)
        })?;
        self.apply_priority(package, priority);
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(())
    }

    /// A package's priority changed: its open sendings follow.
    pub fn apply_priority(&self, package: PackageId, priority: Priority) {
        self.sender
            .lock()
            .expect("sender lock")
            .set_priority(package, priority);
        self.sender_wake.notify_waiters();
    }

    /// Applies a batch of the parent's config log (see [`Db::apply_parent_batch`]). A catalog
    /// delta newly applied raises 40400 (the catalog version this site now has) in the same
    /// transaction, which is how every site reports its catalog version up the tree.
    pub fn apply_parent_events(
        &self,
        first: u64,
        events: &[schema::event::EventEnvelope],
    ) -> Result<crate::db::BatchOutcome, DbError> {
        let ctx = self.ctx();
        let o = self
            .db
            .apply_parent_batch(first, events, ctx.now, |env| match &env.body {
                ConfigEvent::CatalogDelta(d) => Some(ctx.status(
                    40400,
                    vec![Attribute::CatalogVersion(d.catalog_version)],
                    vec![
                        d.catalog_version.to_string(),
                        d.changes.len().to_string(),
                        env.origin.to_string(),
                    ],
                )),
                _ => None,
            })?;
        if o.applied > 0 {
            self.reports_grew.notify_waiters();
        }
        Ok(o)
    }

    /// What the sender must know of events applied from the parent (boosts, priorities).
    pub fn after_parent_events(&self, events: &[ConfigEvent]) {
        for e in events {
            match e {
                ConfigEvent::SenderBoost { .. } => self.apply_boost(e),
                ConfigEvent::PackagePriorityChanged { package, priority } => {
                    self.apply_priority(*package, *priority)
                }
                _ => {}
            }
        }
    }

    /// At start: the boosts the log holds.
    pub fn load_boosts(&self) -> Result<(), OpError> {
        let mut from = 1;
        loop {
            let batch = self.db.log(from, 1024)?;
            let Some((last, _)) = batch.last() else {
                return Ok(());
            };
            from = last + 1;
            for (_, e) in &batch {
                self.apply_boost(&e.body);
            }
        }
    }

    /// This site and every site below it that it knows of.
    pub fn known_sites(&self) -> Result<std::collections::BTreeSet<SiteCode>, OpError> {
        let mut known = self.db.subtree(&self.child_codes())?;
        known.insert(self.cfg.code);
        Ok(known)
    }

    fn child_codes(&self) -> Vec<SiteCode> {
        let mut c: Vec<SiteCode> = self.cfg.children.iter().map(|c| c.code).collect();
        c.sort();
        c
    }

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
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
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
        self.log_grew.notify_waiters();
        self.reports_grew.notify_waiters();
        Ok(())
    }

    /// `dp group list`.
    pub fn dp_groups(&self) -> Result<crate::projection::DpGroups, OpError> {
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
        self.reports_grew.notify_waiters();
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
        self.reports_grew.notify_waiters();
        Ok(())
    }

    /// The current version of every package targeted at this site or below it, with its
    /// manifest and those targets: what this site must hold (and pass on).
    pub fn needed_versions(
        &self,
    ) -> Result<Vec<(PackageRecord, Manifest, Vec<DistributionTarget>)>, OpError> {
        let known = self.known_sites()?;
        let groups = self.db.dp_groups()?;
        let mut out = Vec::new();
        for p in self.db.packages()? {
            let targets: Vec<DistributionTarget> = self
                .db
                .targets(&p.id)?
                .into_iter()
                .filter(|t| match t {
                    DistributionTarget::Site(s)
                    | DistributionTarget::DistributionPoint { site: s, .. } => known.contains(s),
                    // A group brings the content to the site of each of its members.
                    DistributionTarget::DpGroup(g) => groups
                        .get(g)
                        .is_some_and(|m| m.iter().any(|d| known.contains(&d.site))),
                })
                .collect();
            if targets.is_empty() {
                continue;
            }
            let Some(v) = p.current() else { continue };
            let Some(m) = self.db.manifest(&v.manifest_id)? else {
                continue;
            };
            out.push((p.clone(), m, targets));
        }
        Ok(out)
    }

    /// `status packages`: how much of each needed package version is here.
    /// The last sender message per (package, version, destination), from the report log
    /// (this site's and its subtree's).
    fn sending_progress(&self) -> Result<SendingProgress, OpError> {
        let keep = |e: &ReportEnvelope| matches!(&e.body, Report::Status(m) if (3531..=3533).contains(&m.id));
        let mut out: std::collections::HashMap<_, std::collections::BTreeMap<_, SiteSending>> =
            Default::default();
        for (_, e) in self.db.reports(1, usize::MAX, keep)? {
            let Report::Status(m) = e.body else { continue };
            let (mut pkg, mut ver, mut dest) = (None, None, None);
            for a in &m.attributes {
                match a {
                    Attribute::Package(p) => pkg = Some(*p),
                    Attribute::SourceVersion(v) => ver = Some(*v),
                    Attribute::DestinationSite(d) => dest = Some(*d),
                    _ => {}
                }
            }
            let (Some(pkg), Some(ver), Some(dest)) = (pkg, ver, dest) else {
                continue;
            };
            let per = out.entry((pkg, ver)).or_default();
            let prev = per.get(&dest).map_or(0, |p| p.pct);
            if per.get(&dest).is_some_and(|p| p.time > m.time) {
                continue;
            }
            let (pct, state, error) = match m.id {
                3531 => (
                    m.insertion
                        .get(3)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(prev),
                    "sending",
                    None,
                ),
                3532 => (prev, "error", m.insertion.get(3).cloned()),
                _ => (100, "sent", None),
            };
            per.insert(
                dest,
                SiteSending {
                    site: dest,
                    from: m.site,
                    pct,
                    state: state.into(),
                    error,
                    time: m.time,
                },
            );
        }
        Ok(out)
    }

    /// The last distribution word (2342, 2330, 40150-40152) per (package, version, site, DP),
    /// from the report log.
    fn dp_progress(&self) -> Result<DpProgress, OpError> {
        let keep = |e: &ReportEnvelope| matches!(&e.body, Report::Status(m) if matches!(m.id, 2330 | 2342 | 40150..=40152));
        let mut out: DpProgress = Default::default();
        for (_, e) in self.db.reports(1, usize::MAX, keep)? {
            let Report::Status(m) = e.body else { continue };
            let (mut pkg, mut ver, mut dp) = (None, None, None);
            for a in &m.attributes {
                match a {
                    Attribute::Package(p) => pkg = Some(*p),
                    Attribute::SourceVersion(v) => ver = Some(*v),
                    Attribute::DistributionPoint(d) => dp = Some(d.clone()),
                    _ => {}
                }
            }
            let (Some(pkg), Some(ver), Some(dp)) = (pkg, ver, dp) else {
                continue;
            };
            // A DP names itself SITE/ID in its messages; the machine is its id at its site.
            let dp = dp.rsplit('/').next().unwrap_or(&dp).to_string();
            let state = match m.id {
                2342 => "pulling".to_string(),
                2330 => "installed".to_string(),
                40150 => format!(
                    "failed: {}",
                    m.insertion.get(3).cloned().unwrap_or_default()
                ),
                40151 => "damaged, fetching again".to_string(),
                _ => "removed".to_string(),
            };
            let slot = out
                .entry((pkg, ver, m.site, dp))
                .or_insert((m.time, String::new()));
            if slot.0 <= m.time {
                *slot = (m.time, state);
            }
        }
        Ok(out)
    }

    /// Per site of the subtree, the DPs `package` is targeted at there (directly or through
    /// a group) and how far `version` is installed on them.
    fn dp_rows(
        &self,
        package: &PackageId,
        version: u32,
        targets: &[DistributionTarget],
        groups: &crate::projection::DpGroups,
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
                    .get(&(*package, version, *site, d.id.clone()))
                    .map_or("waiting for its site".to_string(), |(_, s)| s.clone());
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

    pub fn content(&self) -> Result<Vec<ContentRow>, OpError> {
        let mut rows = Vec::new();
        let progress = self.sending_progress()?;
        let dp_progress = self.dp_progress()?;
        let groups = self.db.dp_groups()?;
        let known = self.known_sites()?;
        for (p, m, targets) in self.needed_versions()? {
            let mut r = ContentRow {
                package: p.id,
                name: p.name.clone(),
                source_version: p.current().map(|v| v.source_version).unwrap_or(0),
                targets,
                chunks: 0,
                chunks_present: 0,
                bytes: 0,
                bytes_present: 0,
                sending: p
                    .current()
                    .and_then(|v| progress.get(&(p.id, v.source_version)))
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default(),
                dps: Vec::new(),
            };
            if let Some(v) = p.current() {
                r.dps = self.dp_rows(
                    &p.id,
                    v.source_version,
                    &r.targets,
                    &groups,
                    &known,
                    &dp_progress,
                )?;
            }
            for c in m.unique_chunks() {
                r.chunks += 1;
                r.bytes += c.len as u64;
                if self.store.has(&c.id) {
                    r.chunks_present += 1;
                    r.bytes_present += c.len as u64;
                }
            }
            rows.push(r);
        }
        Ok(rows)
    }

    pub fn packages(&self) -> Result<Vec<PackageSummary>, OpError> {
        let mut out = Vec::new();
        for p in self.db.packages()? {
            let cur = p.current();
            out.push(PackageSummary {
                id: p.id,
                name: p.name.clone(),
                priority: p.priority,
                source_version: cur.map(|v| v.source_version).unwrap_or(0),
                versions: p.versions.len(),
                files: cur.map(|v| v.files).unwrap_or(0),
                size: cur.map(|v| v.size).unwrap_or(0),
                chunks: cur.map(|v| v.chunks).unwrap_or(0),
                published: cur.map(|v| v.published),
                targets: self.db.targets(&p.id)?,
            });
        }
        Ok(out)
    }

    pub fn package(&self, id: &PackageId) -> Result<PackageDetail, OpError> {
        let package = self.db.package(id)?.ok_or(Refusal::UnknownPackage(*id))?;
        let manifest = match package.current() {
            Some(v) => self.db.manifest(&v.manifest_id)?,
            None => None,
        };
        Ok(PackageDetail {
            targets: self.db.targets(id)?,
            package,
            manifest,
        })
    }

    pub fn adverts(&self) -> Result<Vec<Advertisement>, OpError> {
        Ok(self.db.adverts()?)
    }

    pub fn log(&self, from: u64, limit: usize) -> Result<Vec<LogEntry>, OpError> {
        Ok(self
            .db
            .log(from, limit)?
            .into_iter()
            .map(|(position, e)| LogEntry {
                position,
                origin: e.origin,
                origin_seq: e.origin_seq,
                time: e.time,
                kind: e.body.kind().to_string(),
                summary: e.body.summary(),
                event: e.body,
            })
            .collect())
    }

    pub fn messages(&self, q: &MessageQuery) -> Result<Vec<MessageRow>, OpError> {
        let keep = |e: &ReportEnvelope| match &e.body {
            Report::Status(m) => {
                q.since.is_none_or(|s| m.time >= s) && q.id.is_none_or(|id| m.id == id)
            }
            Report::SiteData(_) => false,
        };
        let rows = self.db.reports(1, q.limit.unwrap_or(usize::MAX), keep)?;
        Ok(rows
            .into_iter()
            .filter_map(|(position, e)| match e.body {
                Report::Status(m) => Some(MessageRow {
                    position,
                    origin: e.origin,
                    origin_seq: e.origin_seq,
                    id: m.id,
                    severity: m.severity,
                    text: m.text(),
                    component: m.component,
                    site: m.site,
                    machine: m.machine,
                    time: m.time,
                    attributes: m.attributes,
                    insertion: m.insertion,
                }),
                Report::SiteData(_) => None,
            })
            .collect())
    }

    /// Records a link event (sans-IO state machine in `links`).
    pub fn link_update(&self, peer: SiteCode, role: Role, f: impl FnOnce(&mut LinkStatus)) {
        let mut links = self.links.lock().expect("links lock");
        let l = links
            .entry(peer)
            .or_insert_with(|| LinkStatus::new(peer, role, Utc::now()));
        f(l);
    }

    /// Every configured link with its state, cursors and backlog.
    pub fn sites(&self) -> Result<Vec<SiteLinkRow>, OpError> {
        let now = Utc::now();
        let known = self.links.lock().expect("links lock").clone();
        let status = |peer: SiteCode, role| {
            known
                .get(&peer)
                .cloned()
                .unwrap_or_else(|| LinkStatus::new(peer, role, now))
        };
        let mut rows = Vec::new();
        if let Some(p) = &self.cfg.parent {
            rows.push(SiteLinkRow {
                link: status(p.code, Role::Parent),
                config_cursor: self.db.cursor(crate::db::PARENT_APPLIED)?,
                reports_cursor: self.db.cursor(crate::db::PARENT_REPORTS_ACKED)?,
                backlog_events: 0,
                backlog_bytes: 0,
                courier: None,
            });
        }
        let len = self.db.counts()?.config_events;
        for c in &self.cfg.children {
            let acked = self
                .db
                .cursor(format!("child:{}:config_acked", c.code).as_bytes())?;
            let (events, bytes) = self.db.log_bytes(acked + 1)?;
            debug_assert!(events <= len);
            // A courier child: what the next export would carry, and when the last ones were.
            let courier = if c.courier {
                let st = self.courier_state(c.code)?;
                let plan = self.courier_plan(c.code, false)?;
                Some(CourierLinkView {
                    last_export: st.last_export,
                    last_receipt: st.last_receipt,
                    receipt_applied: st.receipt_applied,
                    next_events: plan.events.len() as u64,
                    next_chunks: plan.chunks.len() as u64,
                    next_chunk_bytes: plan.chunks.iter().map(|c| c.1).sum(),
                })
            } else {
                None
            };
            rows.push(SiteLinkRow {
                link: status(c.code, Role::Child),
                config_cursor: acked,
                reports_cursor: self.db.cursor(&crate::db::child_reports_key(c.code))?,
                backlog_events: events,
                backlog_bytes: bytes,
                courier,
            });
        }
        Ok(rows)
    }

    /// Raises a status message of this site (not tied to a config event).
    pub fn raise(
        &self,
        id: u32,
        attributes: Vec<Attribute>,
        insertion: Vec<String>,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let r = ctx.status(id, attributes, insertion);
        self.db.append_own_reports(ctx.now, vec![r])?;
        self.reports_grew.notify_waiters();
        Ok(())
    }
}
