//! Operations: what the admin API asks a site to decide (publish, advertise, distribute,
//! retire, boost, priorities, link policies) and what it applies from its parent.
//!
//! Called by the admin API handlers (on a blocking thread) and by `net::parent_link`. Each
//! decision runs in one database transaction ([`crate::db::Db::append_own`]); then it wakes
//! [`Wake::LogGrew`] and [`Wake::ReportsGrew`], and, for what the sender must know,
//! [`Wake::Sender`]. The sender lock is taken alone, after the database write, never around it.

use crate::config::{DataDir, SiteConfig};
use crate::db::DbError;
use crate::sansio::decide::{
    self, AdvertRequest, DistributeOutcome, DistributeRequest, PublishOutcome, PublishRequest,
    Refusal,
};
use crate::sansio::scope::ChildScope;
use chrono::{DateTime, Utc};
use schema::advert::Advertisement;
use schema::event::{ConfigEvent, DistributionTarget, Priority};
use schema::report::Attribute;
use schema::status;
use schema::{PackageId, SiteCode};
use serde::{Deserialize, Serialize};

use super::{OpError, Site, Wake};

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
    let mut cfg = SiteConfig::load(dir)?;
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
    cfg.save(dir)?;
    Ok(changed)
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

impl Site {
    /// `child set` on a running site: the file, then the sender, at once.
    pub fn set_child_policy(
        &self,
        code: SiteCode,
        req: &LinkPolicyRequest,
    ) -> Result<crate::config::ChildLink, OpError> {
        let link = set_child_policy(&self.dir, code, req)?;
        let policy = link.policy().map_err(Refusal::Invalid)?;
        self.sender(|s| s.set_policy(code, policy));
        self.wake(Wake::Sender);
        tracing::info!(child = %code, schedule = %link.schedule, rate = %link.rate, "link policy changed");
        Ok(link)
    }

    /// `status senders`: every link this site sends on.
    pub fn senders(&self) -> SendersView {
        let wall = Utc::now();
        let (links, boosts) =
            self.sender(|s| (s.view(std::time::Instant::now(), wall), s.boosts(wall)));
        SendersView {
            zone: self.cfg.zone.clone(),
            links,
            boosts: boosts
                .into_iter()
                .map(|(package, until)| BoostView { package, until })
                .collect(),
        }
    }

    /// Retention of the report log (`[reports]`): removes what the parent has acknowledged (the
    /// whole log at the top) and is older than `keep` or beyond the newest `max`, as of `now`.
    pub fn prune_reports(&self, now: DateTime<Utc>) -> Result<crate::db::status::Pruned, OpError> {
        let r = self.cfg.reports.retention().map_err(Refusal::Invalid)?;
        let acked = match &self.cfg.parent {
            Some(_) => self.db.cursor(&crate::db::parent_reports_acked())?,
            None => u64::MAX,
        };
        let cutoff = r
            .keep
            .and_then(|k| chrono::Duration::from_std(k).ok())
            .and_then(|k| now.checked_sub_signed(k));
        Ok(self.db.prune_reports(acked, cutoff, r.max)?)
    }

    /// `sender retry`: failed sendings go again now.
    pub fn sender_retry(&self, req: &RetryRequest) -> Result<usize, OpError> {
        let n = self.sender(|s| s.retry(req.site, req.package));
        self.wake(Wake::Sender);
        Ok(n)
    }

    /// Applies a boost event to this site's sender.
    pub fn apply_boost(&self, event: &ConfigEvent) {
        if let ConfigEvent::SenderBoost { package, until } = event {
            self.sender(|s| match until {
                Some(t) if *t <= Utc::now() => s.unboost(package),
                _ => s.boost(*package, *until),
            });
            self.wake(Wake::Sender);
        }
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
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(out)
    }

    pub fn create_advert(&self, req: &AdvertRequest) -> Result<Advertisement, OpError> {
        let ctx = self.ctx();
        let out = self
            .db
            .append_own(ctx.now, |view| decide::create_advert(view, &ctx, req))?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
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
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
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
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(out)
    }

    /// `package retire`.
    pub fn retire(&self, package: PackageId, version: u32) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db
            .append_own(ctx.now, |view| decide::retire(view, &ctx, package, version))?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// `sender boost`: decided here, applied here and by every site the event reaches.
    pub fn boost(&self, package: PackageId, until: Option<DateTime<Utc>>) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db
            .append_own(ctx.now, |view| decide::boost(view, &ctx, package, until))?;
        self.apply_boost(&ConfigEvent::SenderBoost { package, until });
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// `package priority`: decided here; every sender on the way follows it.
    pub fn set_priority(&self, package: PackageId, priority: Priority) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db.append_own(ctx.now, |view| {
            decide::set_priority(view, &ctx, package, priority)
        })?;
        self.apply_priority(package, priority);
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// A package's priority changed: its open sendings follow.
    pub fn apply_priority(&self, package: PackageId, priority: Priority) {
        self.sender(|s| s.set_priority(package, priority));
        self.wake(Wake::Sender);
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
        let below = self.db.subtree(&self.child_codes())?;
        let o = self
            .db
            .apply_parent_batch(first, events, &below, ctx.now, |env| match &env.body {
                ConfigEvent::CatalogDelta(d) => Some(ctx.status(
                    status::CATALOG_VERSION_APPLIED,
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
            self.wake(Wake::ReportsGrew);
            // A delegation may have arrived: of this site's rotated key, or of its own key
            // (then it owes its children theirs); a checkpoint may clear the freeze alarm.
            if let Err(e) = self
                .promote_rotation()
                .and_then(|_| self.owe_delegations())
                .and_then(|_| self.check_view(ctx.now).map(drop))
            {
                tracing::warn!(error = %e, "cannot act on the keys after a batch from above");
            }
        }
        if let Some((id, why)) = &o.stopped {
            return Err(self.refused_from_parent(id, why));
        }
        Ok(o)
    }

    /// Stores a batch of child `child`'s reports (from its link or a courier receipt), each
    /// only if `child` may speak for its origin ([`ChildScope`]). Refused ones are skipped
    /// (the cursor moves past them) and raise one 40208 per batch.
    pub fn apply_child_reports(
        &self,
        child: SiteCode,
        first: u64,
        reports: &[schema::report::ReportEnvelope],
    ) -> Result<crate::db::BatchOutcome, OpError> {
        let scope = self.child_scope(child)?;
        let o = self.db.apply_child_reports(child, first, reports, &scope)?;
        if let Some(why) = o.refused.first() {
            tracing::warn!(%child, refused = o.refused.len(), first = %why, "refused reports from a child");
            self.note(
                status::REPORTS_REFUSED,
                vec![Attribute::DestinationSite(child)],
                vec![child.to_string(), o.refused.len().to_string(), why.clone()],
            );
        }
        if o.applied > 0 {
            self.wake(Wake::ReportsGrew);
        }
        self.delegate_rotations(&o.rotations);
        Ok(o)
    }

    /// Whether this site's log delegates a key to `child` (revoked or not), or this site has
    /// no trust root (then nothing is verified by key).
    pub fn knows_child_key(&self, child: SiteCode) -> Result<bool, OpError> {
        Ok(self.db.keyring()?.is_none_or(|r| r.knows(child)))
    }

    /// Who child `child` may speak for, as this site knows the tree now.
    fn child_scope(&self, child: SiteCode) -> Result<ChildScope, OpError> {
        let mut ancestors = self.db.config_origins()?;
        if let Some(p) = &self.cfg.parent {
            ancestors.insert(p.code);
        }
        let below = self.db.subtree(&[child])?;
        let others: Vec<SiteCode> = self
            .child_codes()
            .into_iter()
            .filter(|c| *c != child)
            .collect();
        let elsewhere = self.db.subtree(&others)?;
        Ok(ChildScope::new(
            self.cfg.code,
            ancestors,
            child,
            below,
            elsewhere,
        ))
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
}
