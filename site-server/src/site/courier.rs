//! Courier operations of a site: what the next bundle for a courier child carries, recording
//! an export, applying an imported bundle or receipt. The bundle files themselves are
//! written and read by [`crate::courier`].
//!
//! Called by the admin API (the CLI's `courier export|import|receipt` talk to the running
//! daemon) on a blocking thread. An import wakes [`Wake::LogGrew`] and
//! [`Wake::ContentGrew`]; a receipt wakes [`Wake::ReportsGrew`]. No lock of the site is
//! taken.

use ::courier::format::BundleHeader;
use chrono::{DateTime, Utc};
use schema::event::EventEnvelope;
use schema::report::{Attribute, ReportEnvelope};
use schema::status;
use schema::{ChunkId, PackageId, SiteCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{OpError, Site, Wake};

/// What the parent knows of a courier child.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourierState {
    /// The last config position carried by an export.
    pub exported: u64,
    /// The child's applied position, from its last receipt.
    pub receipt_applied: u64,
    /// Package versions complete at the child, from its last receipt.
    pub inventory: BTreeSet<(PackageId, u32)>,
    /// Package versions a bundle carried since that receipt.
    pub exported_versions: BTreeSet<(PackageId, u32)>,
    pub last_export: Option<DateTime<Utc>>,
    pub last_receipt: Option<DateTime<Utc>>,
    /// The last report position of the newest receipt taken: an older receipt imported
    /// later still brings its reports, but not its (older) position and inventory.
    pub receipt_last: u64,
}

/// The events section of a bundle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BundleEvents {
    pub events: Vec<EventEnvelope>,
    /// The parent's cursor of this child's reports: the next receipt starts after it.
    pub reports_acked: u64,
}

/// The state section of a receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptState {
    /// The last parent config position applied at the child.
    pub applied: u64,
    /// Package versions complete in the child's store.
    pub inventory: BTreeSet<(PackageId, u32)>,
    pub chunks: u64,
    pub bytes: u64,
}

/// What an export will carry (the daemon works it out; the CLI writes it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportPlan {
    pub source: SiteCode,
    pub destination: SiteCode,
    pub first: u64,
    pub last: u64,
    pub events: Vec<EventEnvelope>,
    pub reports_acked: u64,
    /// Chunks to carry, with their store file sizes.
    pub chunks: Vec<(ChunkId, u64)>,
    /// The versions whose chunks are all carried (or known at the child already).
    pub versions: Vec<(PackageId, u32)>,
    /// Versions the child needs whose chunks this site does not all have yet.
    pub not_yet_here: Vec<(PackageId, u32)>,
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportOutcome {
    pub bundle_id: String,
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
}

/// A receipt read and verified.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub source: SiteCode,
    pub first: u64,
    pub last: u64,
    pub reports: Vec<ReportEnvelope>,
    pub state: ReceiptState,
}

/// What an import did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub already: bool,
    pub applied: u64,
    pub skipped: u64,
    pub cursor: u64,
}

impl Site {
    fn courier_child(&self, to: SiteCode) -> Result<&crate::config::ChildLink, OpError> {
        self.cfg
            .children
            .iter()
            .find(|c| c.code == to)
            .ok_or_else(|| {
                OpError::Refused(crate::sansio::decide::Refusal::Invalid(format!(
                    "{to} is not a child of {}: see `site-server child list`",
                    self.cfg.code
                )))
            })
    }

    pub fn courier_state(&self, child: SiteCode) -> Result<CourierState, OpError> {
        Ok(self
            .db
            .record(&crate::db::courier_state(child))?
            .unwrap_or_default())
    }

    /// What the next export to `to` carries.
    pub fn courier_plan(&self, to: SiteCode, since_receipt: bool) -> Result<ExportPlan, OpError> {
        self.courier_child(to)?;
        let st = self.courier_state(to)?;
        let net = self.db.cursor(&crate::db::child_config_acked(to))?;
        let from = if since_receipt {
            st.receipt_applied
        } else {
            st.receipt_applied.max(st.exported).max(net)
        } + 1;
        let log = self.db.log(from, usize::MAX)?;
        let last = log.last().map_or(from - 1, |(p, _)| *p);
        let events: Vec<EventEnvelope> = log.into_iter().map(|(_, e)| e).collect();
        // What the child's subtree needs, less what it is known to have.
        let mut subtree = self.db.subtree(&[to])?;
        subtree.insert(to);
        let known: BTreeSet<(PackageId, u32)> = if since_receipt {
            st.inventory.clone()
        } else {
            st.inventory.union(&st.exported_versions).cloned().collect()
        };
        let mut have = BTreeSet::new();
        for (p, v) in &known {
            if let Some(rec) = self.db.package(p)? {
                if let Some(vr) = rec.versions.iter().find(|x| x.source_version == *v) {
                    if let Some(m) = self.db.manifest(&vr.manifest_id)? {
                        have.extend(m.unique_chunks().into_iter().map(|c| c.id));
                    }
                }
            }
        }
        let groups = self.db.dp_groups()?;
        let (mut chunks, mut versions, mut not_yet) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = BTreeSet::new();
        for (p, m, targets) in self.needed_versions()? {
            let for_child = targets.iter().any(|t| match t {
                schema::event::DistributionTarget::Site(s)
                | schema::event::DistributionTarget::DistributionPoint { site: s, .. } => {
                    subtree.contains(s)
                }
                schema::event::DistributionTarget::DpGroup(g) => groups
                    .get(g)
                    .is_some_and(|ms| ms.iter().any(|d| subtree.contains(&d.site))),
            });
            let Some(v) = p.current() else { continue };
            if !for_child || known.contains(&(p.id, v.source_version)) {
                continue;
            }
            let missing: Vec<ChunkId> = m
                .unique_chunks()
                .into_iter()
                .map(|c| c.id)
                .filter(|id| !have.contains(id))
                .collect();
            if missing.iter().any(|id| !self.store.has(id)) {
                not_yet.push((p.id, v.source_version));
                continue;
            }
            for id in missing {
                if seen.insert(id) {
                    let size = std::fs::metadata(self.store.path_of(&id))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    chunks.push((id, size));
                }
            }
            versions.push((p.id, v.source_version));
        }
        Ok(ExportPlan {
            source: self.cfg.code,
            destination: to,
            first: from,
            last,
            events,
            reports_acked: self.db.cursor(&crate::db::child_reports_applied(to))?,
            chunks,
            versions,
            not_yet_here: not_yet,
        })
    }

    /// Records a written export (the next one starts after it) and raises 40300.
    pub fn courier_exported(&self, plan: &ExportPlan, out: &ExportOutcome) -> Result<(), OpError> {
        let to = plan.destination;
        let mut st = self.courier_state(to)?;
        st.exported = st.exported.max(plan.last);
        st.exported_versions.extend(plan.versions.iter().cloned());
        st.last_export = Some(Utc::now());
        self.db.set_record(&crate::db::courier_state(to), &st)?;
        self.raise(
            status::COURIER_BUNDLE_EXPORTED,
            vec![Attribute::DestinationSite(to)],
            vec![
                out.bundle_id.clone(),
                to.to_string(),
                format!("{}..{}", plan.first, plan.last),
                out.chunks.to_string(),
                out.files.len().to_string(),
            ],
        )
    }

    /// Applies a verified bundle's events (after its chunks are durable): one transaction
    /// with the parent cursor, as a network batch.
    pub fn courier_apply(
        &self,
        header: &BundleHeader,
        ev: &BundleEvents,
    ) -> Result<ImportOutcome, OpError> {
        let cursor = self.db.cursor(&crate::db::parent_applied())?;
        if header.first > cursor + 1 {
            return Err(OpError::Refused(crate::sansio::decide::Refusal::Invalid(format!(
                "bundle {} starts at position {} but this site is at {cursor}: positions {}..{} are missing",
                header.id_hex(),
                header.first,
                cursor + 1,
                header.first - 1
            ))));
        }
        let acked = self.db.cursor(&crate::db::parent_reports_acked())?;
        if ev.reports_acked > acked {
            self.db
                .set_cursor(&crate::db::parent_reports_acked(), ev.reports_acked)?;
        }
        if (header.last < header.first || header.last <= cursor) && header.chunks == 0 {
            return Ok(ImportOutcome {
                already: true,
                applied: 0,
                skipped: ev.events.len() as u64,
                cursor,
            });
        }
        let o = if header.last < header.first || header.last <= cursor {
            crate::db::BatchOutcome {
                applied: 0,
                skipped: ev.events.len() as u64,
                cursor,
                ..Default::default()
            }
        } else {
            self.apply_parent_events(header.first, &ev.events)?
        };
        self.wake(Wake::LogGrew);
        self.wake(Wake::ContentGrew);
        self.raise(
            status::COURIER_BUNDLE_IMPORTED,
            vec![Attribute::DestinationSite(header.source)],
            vec![
                header.id_hex(),
                header.source.to_string(),
                o.applied.to_string(),
                header.chunks.to_string(),
                o.cursor.to_string(),
            ],
        )?;
        Ok(ImportOutcome {
            already: false,
            applied: o.applied,
            skipped: o.skipped,
            cursor: o.cursor,
        })
    }

    /// The refusal of a bundle or receipt, said in the report log (40302).
    pub fn courier_refused(&self, what: &str, reason: &str) -> Result<(), OpError> {
        self.raise(
            status::COURIER_FILE_REFUSED,
            vec![],
            vec![what.to_string(), reason.to_string()],
        )
    }

    /// The parent cursor a bundle's range is checked against.
    pub fn parent_applied(&self) -> Result<u64, OpError> {
        Ok(self.db.cursor(&crate::db::parent_applied())?)
    }

    /// What the next receipt carries.
    pub fn receipt_plan(
        &self,
    ) -> Result<(BundleHeader, Vec<ReportEnvelope>, ReceiptState), OpError> {
        let parent = self.cfg.parent.as_ref().ok_or_else(|| {
            OpError::Refused(crate::sansio::decide::Refusal::Invalid(format!(
                "{} has no parent: a receipt goes to the parent (`site-server parent set`)",
                self.cfg.code
            )))
        })?;
        let acked = self.db.cursor(&crate::db::parent_reports_acked())?;
        let reports: Vec<ReportEnvelope> = self
            .db
            .reports(acked + 1, usize::MAX, |_| true)?
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let last = acked + reports.len() as u64;
        let mut inventory = BTreeSet::new();
        let (mut chunks, mut bytes) = (0, 0);
        for p in self.db.packages()? {
            for v in p.versions.iter().filter(|v| !v.retired) {
                let Some(m) = self.db.manifest(&v.manifest_id)? else {
                    continue;
                };
                let u = m.unique_chunks();
                if u.iter().all(|c| self.store.has(&c.id)) {
                    inventory.insert((p.id, v.source_version));
                    chunks += u.len() as u64;
                    bytes += u.iter().map(|c| c.len as u64).sum::<u64>();
                }
            }
        }
        let header = BundleHeader {
            bundle_id: new_id(self.cfg.code, last),
            source: self.cfg.code,
            destination: parent.code,
            first: acked + 1,
            last,
            chunks: 0,
            created: Utc::now(),
            volume: 1,
            volumes: 1,
        };
        let state = ReceiptState {
            applied: self.db.cursor(&crate::db::parent_applied())?,
            inventory,
            chunks,
            bytes,
        };
        Ok((header, reports, state))
    }

    /// Applies a verified receipt from child `r.source`.
    pub fn receipt_apply(&self, r: &ReadReceipt) -> Result<ImportOutcome, OpError> {
        self.courier_child(r.source)?;
        let o = self.apply_child_reports(r.source, r.first, &r.reports)?;
        let mut st = self.courier_state(r.source)?;
        if r.last >= st.receipt_last {
            st.receipt_last = r.last;
            st.receipt_applied = st.receipt_applied.max(r.state.applied);
            st.inventory = r.state.inventory.clone();
            st.exported_versions.retain(|v| !st.inventory.contains(v));
            st.last_receipt = Some(Utc::now());
            self.db
                .set_record(&crate::db::courier_state(r.source), &st)?;
        }
        self.wake(Wake::ReportsGrew);
        self.raise(
            status::COURIER_RECEIPT_IMPORTED,
            vec![Attribute::DestinationSite(r.source)],
            vec![
                r.source.to_string(),
                o.applied.to_string(),
                r.state.applied.to_string(),
                r.state.inventory.len().to_string(),
            ],
        )?;
        Ok(ImportOutcome {
            already: o.applied == 0 && !r.reports.is_empty(),
            applied: o.applied,
            skipped: o.skipped,
            cursor: o.cursor,
        })
    }
}

/// A bundle id: BLAKE3 of the source, a position and the time, cut to 16 bytes.
pub(crate) fn new_id(source: SiteCode, pos: u64) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(source.as_str().as_bytes());
    h.update(&pos.to_le_bytes());
    h.update(Utc::now().to_rfc3339().as_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}
