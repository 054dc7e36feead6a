//! Machines and advertisements at a site: collections, approvals, the advertisement
//! lifecycle, what this site's distribution points serve their agents, the machines' reports
//! they pass on, and the views of `status adverts` and `status machine`.

use super::{OpError, Site, Wake};
use crate::sansio::agents::{
    self, AdvertMachine, AdvertSiteRow, ApprovedBy, Lifecycle, MachineRecord,
};
use crate::sansio::projection::{self, Approval};
use schema::advert::Advertisement;
use schema::event::{ConfigEvent, EventEnvelope};
use schema::machine::{Collection, Inventory, SignedMachineReport};
use schema::status;
use schema::trust::PublicKey;
use schema::AdvertisementId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The config log's events that agents act on ([`projection::is_policy`]), as far as the
/// log has been read.
#[derive(Default)]
pub(super) struct PolicyCache {
    /// The last log position read.
    scanned: u64,
    events: Vec<EventEnvelope>,
}

/// `machine list`: approved machines of this site, and those waiting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachinesView {
    pub site: schema::SiteCode,
    pub auto_approval: bool,
    pub approved: Vec<Approval>,
    pub pending: Vec<(String, PublicKey)>,
    /// What every machine of the subtree last reported (inventory, last seen).
    pub known: Vec<MachineRecord>,
}

/// `status adverts`: the rows per advertisement per site, and (with `--failed`) the machines
/// whose last run failed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdvertsView {
    pub adverts: Vec<Advertisement>,
    pub rows: Vec<AdvertSiteRow>,
    pub failed: Vec<AdvertMachine>,
}

/// What `adv` lifecycle requests carry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LifecycleRequest {
    pub id: AdvertisementId,
    pub what: Lifecycle,
}

/// What `machine approve` carries: a machine, or the automatic switch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApproveRequest {
    pub name: Option<String>,
    pub key: Option<PublicKey>,
    pub auto: Option<bool>,
}

impl Site {
    /// `collection create|change`.
    pub fn set_collection(&self, c: &Collection, replace: bool) -> Result<Collection, OpError> {
        let ctx = self.ctx();
        let out = self
            .db
            .append_own(ctx.now, |v| agents::set_collection(v, &ctx, c, replace))?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(out)
    }

    pub fn collections(&self) -> Result<Vec<Collection>, OpError> {
        Ok(self.db.collections()?)
    }

    /// `machine approve`.
    pub fn approve(&self, req: &ApproveRequest) -> Result<MachinesView, OpError> {
        let ctx = self.ctx();
        if let Some(on) = req.auto {
            self.db
                .append_own(ctx.now, |v| agents::set_auto_approval(v, &ctx, on))?;
        }
        if let Some(name) = &req.name {
            let Some(key) = req.key else {
                return Err(crate::sansio::decide::Refusal::Invalid(format!(
                    "no key for machine {name}: give --pubkey as `site-agent init` printed it"
                ))
                .into());
            };
            self.db.append_own(ctx.now, |v| {
                agents::approve_machine(v, &ctx, name, key, ApprovedBy::Operator)
            })?;
        }
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        self.machines()
    }

    /// `machine list`.
    pub fn machines(&self) -> Result<MachinesView, OpError> {
        let site = self.cfg.code;
        Ok(MachinesView {
            site,
            auto_approval: self.db.auto_approval(site)?,
            approved: self.db.approvals(site)?,
            pending: self.db.pending_machines()?,
            known: self.db.machine_records(None)?,
        })
    }

    /// `adv enable|disable|change|rerun`.
    pub fn advert_lifecycle(&self, req: &LifecycleRequest) -> Result<Advertisement, OpError> {
        let ctx = self.ctx();
        let out = self
            .db
            .append_own(ctx.now, |v| agents::lifecycle(v, &ctx, req.id, &req.what))?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(out)
    }

    /// What this site's distribution points serve their agents: the key events, the
    /// collections and advertisements, the versions of the packages advertised, and this
    /// site's machine approvals, in log order. The policy events are kept in memory and
    /// extended from the log as it grows (the log is read once at the first call).
    pub fn dp_policy(&self) -> Result<Vec<EventEnvelope>, OpError> {
        let from = super::locked(&self.policy, "policy", |p| p.scanned) + 1;
        let mut new = Vec::new();
        let mut next = from;
        loop {
            let batch = self.db.log(next, 512)?;
            let Some((last, _)) = batch.last() else { break };
            next = last + 1;
            new.extend(
                batch
                    .into_iter()
                    .filter(|(_, e)| projection::is_policy(&e.body))
                    .map(|(_, e)| e),
            );
        }
        let all = super::locked(&self.policy, "policy", |p| {
            // Another task may have extended it meanwhile: take only what it has not.
            if p.scanned + 1 == from {
                p.events.extend(new);
                p.scanned = next - 1;
            }
            p.events.clone()
        });
        let advertised: BTreeSet<schema::PackageId> = all
            .iter()
            .filter_map(|e| match &e.body {
                ConfigEvent::AdvertisementCreated(a) | ConfigEvent::AdvertisementChanged(a) => {
                    Some(a.package)
                }
                _ => None,
            })
            .collect();
        let own = self.cfg.code;
        Ok(all
            .into_iter()
            .filter(|e| match &e.body {
                ConfigEvent::PackageVersionPublished(v) => advertised.contains(&v.package),
                ConfigEvent::PackageVersionRetired { package, .. } => advertised.contains(package),
                ConfigEvent::MachineApproved { site, .. } => *site == own,
                _ => true,
            })
            .collect())
    }

    /// A machine that is not approved (with `key`) asked through a DP: approved at once if
    /// this site approves automatically and the name is new, else noted (40510 once per
    /// name and key).
    pub fn machine_seen(&self, name: &str, key: PublicKey, inv: &Inventory) -> Result<(), OpError> {
        schema::machine::check_name(name).map_err(crate::sansio::decide::Refusal::Invalid)?;
        let site = self.cfg.code;
        // Automatic approval takes new names only: a new key for a name already approved (a
        // reinstalled machine, or another claiming its name) waits for the operator.
        let taken = self
            .db
            .approvals(site)?
            .iter()
            .any(|a| a.name.eq_ignore_ascii_case(name) && a.key != key);
        if !taken && self.db.auto_approval(site)? {
            let ctx = self.ctx();
            let new = self.db.append_own(ctx.now, |v| {
                agents::approve_machine(v, &ctx, name, key, ApprovedBy::Automatic)
            })?;
            if new {
                tracing::info!(machine = name, os = %inv.os, "machine approved automatically");
                self.wake(Wake::LogGrew);
                self.wake(Wake::ReportsGrew);
            }
            return Ok(());
        }
        if self.db.note_pending(name, &key)? {
            self.note(
                status::MACHINE_AWAITS_APPROVAL,
                vec![],
                vec![name.to_string(), key.to_string()],
            );
        }
        Ok(())
    }

    /// Stores an approved machine's reports; see [`crate::db::Db::apply_machine_reports`].
    pub fn machine_reports(
        &self,
        machine: &str,
        reports: &[SignedMachineReport],
    ) -> Result<crate::db::agents::MachineReportsOutcome, OpError> {
        let o = self
            .db
            .apply_machine_reports(machine, reports, chrono::Utc::now())?;
        if o.stored > 0 {
            self.wake(Wake::ReportsGrew);
        }
        Ok(o)
    }

    /// `status adverts [--id A] [--failed]`, for this site's subtree, from the roll-ups.
    pub fn adverts_view(
        &self,
        id: Option<AdvertisementId>,
        failed: bool,
    ) -> Result<AdvertsView, OpError> {
        let adverts: Vec<Advertisement> = self
            .db
            .adverts()?
            .into_iter()
            .filter(|a| id.is_none_or(|i| a.id == i))
            .collect();
        let collections: BTreeMap<String, Collection> = self
            .db
            .collections()?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let states = self.db.advert_machines(id.as_ref())?;
        let machines = self.db.machine_inventories()?;
        let rows = agents::advert_rows(&adverts, &collections, &states, &machines);
        let failed = if failed {
            states
                .into_iter()
                .filter(|s| s.state == schema::machine::MachineState::Failed)
                .collect()
        } else {
            vec![]
        };
        Ok(AdvertsView {
            adverts,
            rows,
            failed,
        })
    }

    /// `status machine NAME`: the machine's record at every site of the subtree that has one,
    /// and where it stands with each advertisement.
    pub fn machine_view(
        &self,
        name: &str,
    ) -> Result<(Vec<MachineRecord>, Vec<AdvertMachine>), OpError> {
        let recs: Vec<MachineRecord> = self
            .db
            .machine_records(None)?
            .into_iter()
            .filter(|m| m.name.eq_ignore_ascii_case(name))
            .collect();
        let states = self
            .db
            .advert_machines(None)?
            .into_iter()
            .filter(|s| s.machine.eq_ignore_ascii_case(name))
            .collect();
        Ok((recs, states))
    }
}
