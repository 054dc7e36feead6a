//! Views: what `status`, `package`, `log` and `identity` show. Read-only: nothing here
//! writes or wakes anything.
//!
//! Called by the admin API handlers on a blocking thread. The links lock is taken alone, to
//! copy the link states out, and released before the database is read.

use crate::db::LogCounts;
use crate::sansio::decide::Refusal;
use crate::sansio::links::{LinkStatus, Role};
use crate::sansio::projection::PackageRecord;
use chrono::{DateTime, Utc};
use schema::advert::Advertisement;
use schema::event::{ConfigEvent, DistributionTarget, Priority};
use schema::manifest::Manifest;
use schema::report::{Attribute, Report};
use schema::status::Severity;
use schema::{PackageId, SiteCode};
use serde::{Deserialize, Serialize};

pub use crate::sansio::rollups::{MessageQuery, SiteSending};

use super::{OpError, Site, SiteDps};

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

/// `status sites`: this site's process and every link.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SitesView {
    pub site: ProcessView,
    pub links: Vec<SiteLinkRow>,
}

/// What this site's process costs the machine, read from `/proc/self` when asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessView {
    pub code: SiteCode,
    pub pid: u32,
    /// Resident memory now, and its peak.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub threads: u64,
    /// File descriptors open now (sockets, database files, logs), and the soft limit.
    pub open_files: u64,
    pub open_files_limit: u64,
    /// CPU time used since start (user + system).
    pub cpu_secs: f64,
    /// The database's size on disk.
    pub db_bytes: u64,
    pub logs: LogCounts,
}

/// Reads this process's memory, threads, open files and CPU time from `/proc/self`
/// (zeros where the system has no `/proc`).
fn process_now(code: SiteCode, db_bytes: u64, logs: LogCounts) -> ProcessView {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let open_files = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_files_limit = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // utime and stime, fields 14 and 15, after the command name in parentheses.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ProcessView {
        code,
        db_bytes,
        logs,
        pid: std::process::id(),
        rss_bytes: field("VmRSS:") * 1024,
        peak_rss_bytes: field("VmHWM:") * 1024,
        threads: field("Threads:"),
        open_files,
        open_files_limit,
        // The kernel's clock ticks are 100 a second on every Linux this runs on.
        cpu_secs: ticks as f64 / 100.0,
    }
}

/// The bytes of the files under `path` (0 where it cannot be read).
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(d) = std::fs::read_dir(path) else {
        return 0;
    };
    d.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
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
    /// The peer's keys as this site's log holds them (who delegated them, revoked or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<schema::trust::SiteKeyView>,
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

impl Site {
    pub fn identity(&self) -> Result<IdentityView, OpError> {
        let public = sender::identity::load_public(&self.dir.root)?;
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

    /// `status packages`: how much of each needed package version is here, how far it has
    /// been sent to each site below and installed on each DP (from the roll-ups).
    pub fn content(&self) -> Result<Vec<ContentRow>, OpError> {
        let mut rows = Vec::new();
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
                sending: match p.current() {
                    Some(v) => self.db.sendings(&p.id, v.source_version)?,
                    None => Vec::new(),
                },
                dps: Vec::new(),
            };
            if let Some(v) = p.current() {
                r.dps = self.dp_rows(
                    &r.targets,
                    &groups,
                    &known,
                    &self.db.dp_words(&p.id, v.source_version)?,
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

    /// `status messages`: one page, through the report log's indexes.
    pub fn messages(&self, q: &MessageQuery) -> Result<Vec<MessageRow>, OpError> {
        Ok(self
            .db
            .messages(q)?
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
                Report::SiteData(_) | Report::Key(_) => None,
            })
            .collect())
    }

    /// `status sites`: this site's process (memory, threads, open files, CPU, database size)
    /// and every configured link.
    pub fn sites_view(&self) -> Result<SitesView, OpError> {
        Ok(SitesView {
            site: process_now(self.cfg.code, dir_bytes(&self.dir.db()), self.db.counts()?),
            links: self.sites()?,
        })
    }

    /// Every configured link with its state, cursors and backlog.
    pub fn sites(&self) -> Result<Vec<SiteLinkRow>, OpError> {
        let ring = self.db.keyring()?.map(|r| r.view()).unwrap_or_default();
        let key_of = |site: SiteCode| ring.iter().find(|k| k.site == site).cloned();
        let now = Utc::now();
        let known = self.link_states();
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
                config_cursor: self.db.cursor(&crate::db::parent_applied())?,
                reports_cursor: self.db.cursor(&crate::db::parent_reports_acked())?,
                backlog_events: 0,
                backlog_bytes: 0,
                courier: None,
                keys: key_of(p.code),
            });
        }
        let len = self.db.counts()?.config_events;
        for c in &self.cfg.children {
            let acked = self.db.cursor(&crate::db::child_config_acked(c.code))?;
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
                reports_cursor: self.db.cursor(&crate::db::child_reports_applied(c.code))?,
                backlog_events: events,
                backlog_bytes: bytes,
                courier,
                keys: key_of(c.code),
            });
        }
        Ok(rows)
    }
}
