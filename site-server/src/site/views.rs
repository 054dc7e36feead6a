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
use schema::report::{Attribute, Report, ReportEnvelope};
use schema::status;
use schema::status::Severity;
use schema::{PackageId, SiteCode};
use serde::{Deserialize, Serialize};

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

/// Filters of `status messages`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MessageQuery {
    pub since: Option<DateTime<Utc>>,
    pub id: Option<u32>,
    pub limit: Option<usize>,
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

    /// `status packages`: how much of each needed package version is here.
    /// The last sender message per (package, version, destination), from the report log
    /// (this site's and its subtree's).
    fn sending_progress(&self) -> Result<SendingProgress, OpError> {
        let keep = |e: &ReportEnvelope| matches!(&e.body, Report::Status(m) if (status::SENDER_PROGRESS..=status::SENDER_COMPLETE).contains(&m.id));
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
                status::SENDER_PROGRESS => (
                    m.insertion
                        .get(3)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(prev),
                    "sending",
                    None,
                ),
                status::SENDER_ERROR => (prev, "error", m.insertion.get(3).cloned()),
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
            Report::SiteData(_) | Report::Key(_) => false,
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
                Report::SiteData(_) | Report::Key(_) => None,
            })
            .collect())
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
