//! Projections: the state a site derives from its config log (packages, manifests,
//! advertisements, distribution targets, catalog).
//!
//! Sans-IO: [`apply`] takes an event and a [`ProjectionStore`] (a key-value view that the
//! caller backs with a sled transaction, or with memory in tests) and never looks at the clock
//! or the disk. Replaying the same log into an empty store always yields the same bytes, which
//! is what `site-server rebuild` relies on.

use schema::advert::Advertisement;
use schema::catalog::{CatalogChange, Update};
use schema::encoding;
use schema::event::{ConfigEvent, DistributionTarget, EventEnvelope, Priority};
use schema::manifest::Manifest;
use schema::{AdvertisementId, ManifestId, PackageId, SiteCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The projection tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Packages,
    Manifests,
    Adverts,
    Targets,
    Catalog,
    Meta,
    DpGroups,
    Keys,
    Collections,
    Machines,
}

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Packages,
        Table::Manifests,
        Table::Adverts,
        Table::Targets,
        Table::Catalog,
        Table::Meta,
        Table::DpGroups,
        Table::Keys,
        Table::Collections,
        Table::Machines,
    ];
    pub fn name(&self) -> &'static str {
        match self {
            Table::Packages => "proj_packages",
            Table::Manifests => "proj_manifests",
            Table::Adverts => "proj_adverts",
            Table::Targets => "proj_targets",
            Table::Catalog => "proj_catalog",
            Table::Meta => "proj_meta",
            Table::DpGroups => "proj_dp_groups",
            Table::Keys => "proj_keys",
            Table::Collections => "proj_collections",
            Table::Machines => "proj_machines",
        }
    }
}

/// A key-value view of the projection tables. Writes take `&self` so a sled transaction can
/// back it directly.
pub trait ProjectionStore {
    type Error;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
    fn put(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), Self::Error>;
}

/// A projected value that does not decode: the projection is damaged; `rebuild` repairs it.
#[derive(Debug, thiserror::Error)]
#[error("projection {table:?} key {key:?} does not decode ({source}): run `site-server rebuild`")]
pub struct Damaged {
    pub table: Table,
    pub key: String,
    pub source: encoding::DecodeError,
}

/// Errors of a projection read or write.
#[derive(Debug, thiserror::Error)]
pub enum ProjError<E> {
    #[error(transparent)]
    Store(E),
    #[error(transparent)]
    Damaged(#[from] Damaged),
}

pub fn read<S: ProjectionStore, T: DeserializeOwned>(
    s: &S,
    t: Table,
    key: &[u8],
) -> Result<Option<T>, ProjError<S::Error>> {
    match s.get(t, key).map_err(ProjError::Store)? {
        None => Ok(None),
        Some(v) => encoding::decode(&v).map(Some).map_err(|source| {
            ProjError::Damaged(Damaged {
                table: t,
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            })
        }),
    }
}

fn write<S: ProjectionStore, T: Serialize>(
    s: &S,
    t: Table,
    key: &[u8],
    v: &T,
) -> Result<(), ProjError<S::Error>> {
    let bytes = encoding::encode(v).expect("projection records encode");
    s.put(t, key, bytes).map_err(ProjError::Store)
}

/// One source version of a package, as the packages table keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub source_version: u32,
    pub manifest_id: ManifestId,
    pub published: chrono::DateTime<chrono::Utc>,
    pub files: u64,
    pub size: u64,
    pub chunks: u64,
    pub retired: bool,
}

/// A package, as the packages table keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub id: PackageId,
    pub name: String,
    pub priority: Priority,
    pub versions: Vec<VersionRecord>,
}

impl PackageRecord {
    /// The newest version that is not retired.
    pub fn current(&self) -> Option<&VersionRecord> {
        self.versions.iter().rev().find(|v| !v.retired)
    }
    pub fn latest_number(&self) -> u32 {
        self.versions.last().map(|v| v.source_version).unwrap_or(0)
    }
}

/// Counters derived from the log (so they rebuild with it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The next package number this site allocates.
    pub next_package: u32,
    /// The next advertisement number this site allocates.
    pub next_advert: u32,
    /// The catalog version (number of catalog deltas applied).
    pub catalog_version: u64,
    /// The catalog version the last sync request asked for.
    pub sync_requested: u64,
    /// Events applied to these projections.
    pub events_applied: u64,
}

const META_KEY: &[u8] = b"meta";

pub fn package_key(id: &PackageId) -> Vec<u8> {
    id.to_string().into_bytes()
}
pub fn advert_key(id: &AdvertisementId) -> Vec<u8> {
    id.to_string().into_bytes()
}

pub fn meta<S: ProjectionStore>(s: &S) -> Result<Meta, ProjError<S::Error>> {
    Ok(read(s, Table::Meta, META_KEY)?.unwrap_or_default())
}
pub fn package<S: ProjectionStore>(
    s: &S,
    id: &PackageId,
) -> Result<Option<PackageRecord>, ProjError<S::Error>> {
    read(s, Table::Packages, &package_key(id))
}
pub fn manifest<S: ProjectionStore>(
    s: &S,
    id: &ManifestId,
) -> Result<Option<Manifest>, ProjError<S::Error>> {
    read(s, Table::Manifests, &id.0)
}
pub fn advert<S: ProjectionStore>(
    s: &S,
    id: &AdvertisementId,
) -> Result<Option<Advertisement>, ProjError<S::Error>> {
    read(s, Table::Adverts, &advert_key(id))
}
pub fn targets<S: ProjectionStore>(
    s: &S,
    id: &PackageId,
) -> Result<Vec<DistributionTarget>, ProjError<S::Error>> {
    Ok(read(s, Table::Targets, &package_key(id))?.unwrap_or_default())
}

/// Every distribution point group and its members (one record: groups are few).
pub type DpGroups = std::collections::BTreeMap<String, Vec<schema::event::DpRef>>;
const GROUPS_KEY: &[u8] = b"groups";

pub fn dp_groups<S: ProjectionStore>(s: &S) -> Result<DpGroups, ProjError<S::Error>> {
    Ok(read(s, Table::DpGroups, GROUPS_KEY)?.unwrap_or_default())
}

/// A machine approved at a site, as the machines table keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub site: SiteCode,
    pub name: String,
    pub key: schema::trust::PublicKey,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// The machines table's key of a machine: `m:SITE/NAME` (names compare without case).
pub fn machine_key(site: SiteCode, name: &str) -> Vec<u8> {
    format!("m:{site}/{}", name.to_ascii_lowercase()).into_bytes()
}
/// The machines table's key of a site's automatic-approval switch.
pub fn auto_key(site: SiteCode) -> Vec<u8> {
    format!("auto:{site}").into_bytes()
}

pub fn collection<S: ProjectionStore>(
    s: &S,
    name: &str,
) -> Result<Option<schema::machine::Collection>, ProjError<S::Error>> {
    read(s, Table::Collections, name.as_bytes())
}
pub fn approval<S: ProjectionStore>(
    s: &S,
    site: SiteCode,
    name: &str,
) -> Result<Option<Approval>, ProjError<S::Error>> {
    read(s, Table::Machines, &machine_key(site, name))
}
pub fn auto_approval<S: ProjectionStore>(
    s: &S,
    site: SiteCode,
) -> Result<bool, ProjError<S::Error>> {
    Ok(read(s, Table::Machines, &auto_key(site))?.unwrap_or(false))
}

/// Whether agents act on `ev` (or their distribution point does): the key events from the
/// genesis down, collections, advertisements, package versions, machine approvals.
pub fn is_policy(ev: &ConfigEvent) -> bool {
    matches!(
        ev,
        ConfigEvent::SiteKeyDelegated(_)
            | ConfigEvent::SiteKeyRevoked { .. }
            | ConfigEvent::CollectionSet(_)
            | ConfigEvent::AdvertisementCreated(_)
            | ConfigEvent::AdvertisementChanged(_)
            | ConfigEvent::AdvertisementDisabled { .. }
            | ConfigEvent::AdvertisementEnabled { .. }
            | ConfigEvent::PackageVersionPublished(_)
            | ConfigEvent::PackageVersionRetired { .. }
            | ConfigEvent::MachineApproved { .. }
    )
}

/// Applies one event of the log to the projections. `own` is this site's code (it decides
/// which ids this site allocates next). Total: every well-formed event applies; an event that
/// refers to something unknown (a retire of an unknown version, say) changes nothing but the
/// event count, so a child never stalls on its parent's log.
pub fn apply<S: ProjectionStore>(
    s: &S,
    own: SiteCode,
    ev: &EventEnvelope,
) -> Result<(), ProjError<S::Error>> {
    let mut m = meta(s)?;
    m.events_applied += 1;
    match &ev.body {
        ConfigEvent::PackageVersionPublished(v) => {
            let key = package_key(&v.package);
            let mut rec = package(s, &v.package)?.unwrap_or_else(|| PackageRecord {
                id: v.package,
                name: v.name.clone(),
                priority: v.priority,
                versions: Vec::new(),
            });
            if !rec
                .versions
                .iter()
                .any(|x| x.source_version == v.source_version)
            {
                rec.name = v.name.clone();
                rec.priority = v.priority;
                rec.versions.push(VersionRecord {
                    source_version: v.source_version,
                    manifest_id: v.manifest_id,
                    published: ev.time,
                    files: v.manifest.files.len() as u64,
                    size: v.manifest.total_size(),
                    chunks: v.manifest.chunk_count() as u64,
                    retired: false,
                });
                rec.versions.sort_by_key(|x| x.source_version);
                write(s, Table::Packages, &key, &rec)?;
                if s.get(Table::Manifests, &v.manifest_id.0)
                    .map_err(ProjError::Store)?
                    .is_none()
                {
                    write(s, Table::Manifests, &v.manifest_id.0, &v.manifest)?;
                }
            }
            if v.package.site == own {
                m.next_package = m.next_package.max(v.package.number + 1);
            }
        }
        ConfigEvent::PackageVersionRetired {
            package: id,
            source_version,
        } => {
            if let Some(mut rec) = package(s, id)? {
                if let Some(v) = rec
                    .versions
                    .iter_mut()
                    .find(|v| v.source_version == *source_version)
                {
                    v.retired = true;
                    write(s, Table::Packages, &package_key(id), &rec)?;
                }
            }
        }
        ConfigEvent::AdvertisementCreated(a) | ConfigEvent::AdvertisementChanged(a) => {
            write(s, Table::Adverts, &advert_key(&a.id), a)?;
            if a.id.site == own {
                m.next_advert = m.next_advert.max(a.id.number + 1);
            }
        }
        ConfigEvent::AdvertisementDisabled { id } | ConfigEvent::AdvertisementEnabled { id } => {
            if let Some(mut a) = advert(s, id)? {
                a.enabled = matches!(ev.body, ConfigEvent::AdvertisementEnabled { .. });
                write(s, Table::Adverts, &advert_key(id), &a)?;
            }
        }
        ConfigEvent::CollectionSet(c) => write(s, Table::Collections, c.name.as_bytes(), c)?,
        ConfigEvent::MachineApproved { site, name, key } => {
            let a = Approval {
                site: *site,
                name: name.clone(),
                key: *key,
                time: ev.time,
            };
            write(s, Table::Machines, &machine_key(*site, name), &a)?;
        }
        ConfigEvent::AutoApproval { site, enabled } => {
            write(s, Table::Machines, &auto_key(*site), enabled)?
        }
        ConfigEvent::DistributionTargetsAdded {
            package: id,
            targets: add,
        } => {
            let mut t = targets(s, id)?;
            for x in add {
                if !t.contains(x) {
                    t.push(x.clone());
                }
            }
            t.sort();
            write(s, Table::Targets, &package_key(id), &t)?;
        }
        ConfigEvent::DistributionTargetsRemoved {
            package: id,
            targets: rm,
        } => {
            let mut t = targets(s, id)?;
            t.retain(|x| !rm.contains(x));
            write(s, Table::Targets, &package_key(id), &t)?;
        }
        ConfigEvent::CatalogDelta(d) => {
            for c in &d.changes {
                match c {
                    CatalogChange::Added(u) | CatalogChange::Revised(u) => {
                        write(s, Table::Catalog, u.id.as_bytes(), u)?
                    }
                    CatalogChange::Expired { id } => {
                        if let Some(mut u) = read::<_, Update>(s, Table::Catalog, id.as_bytes())? {
                            u.expired = true;
                            write(s, Table::Catalog, id.as_bytes(), &u)?;
                        }
                    }
                    CatalogChange::Superseded { id, by } => {
                        if let Some(mut u) = read::<_, Update>(s, Table::Catalog, id.as_bytes())? {
                            u.superseded_by = Some(by.clone());
                            write(s, Table::Catalog, id.as_bytes(), &u)?;
                        }
                    }
                }
            }
            m.catalog_version = m.catalog_version.max(d.catalog_version);
        }
        ConfigEvent::SyncRequest { catalog_version } => {
            m.sync_requested = m.sync_requested.max(*catalog_version);
        }
        ConfigEvent::PackagePriorityChanged {
            package: id,
            priority,
        } => {
            if let Some(mut rec) = package(s, id)? {
                rec.priority = *priority;
                write(s, Table::Packages, &package_key(id), &rec)?;
            }
        }
        // A boost is the sender's business: the daemon reads boosts from the log when it
        // starts and applies new ones as they come; no projection holds them.
        ConfigEvent::SenderBoost { .. } => {}
        ConfigEvent::DpGroupCreated { group } => {
            let mut g = dp_groups(s)?;
            if !g.contains_key(group) {
                g.insert(group.clone(), vec![]);
                write(s, Table::DpGroups, GROUPS_KEY, &g)?;
            }
        }
        ConfigEvent::DpGroupMembersChanged {
            group,
            added,
            removed,
        } => {
            let mut g = dp_groups(s)?;
            if let Some(m) = g.get_mut(group) {
                m.retain(|d| !removed.contains(d));
                for d in added {
                    if !m.contains(d) {
                        m.push(d.clone());
                    }
                }
                m.sort();
                write(s, Table::DpGroups, GROUPS_KEY, &g)?;
            }
        }
        // The key ring is kept by the trust check (`keyring`, `set_keyring`), which runs
        // before this on every event.
        ConfigEvent::SiteKeyDelegated(_) | ConfigEvent::SiteKeyRevoked { .. } => {}
        ConfigEvent::Checkpoint { issued, expires } => {
            let cp = CheckpointRecord {
                origin: ev.origin,
                seq: ev.origin_seq,
                time: ev.time,
                issued: *issued,
                expires: *expires,
            };
            write(s, Table::Keys, CHECKPOINT_KEY, &cp)?;
        }
    }
    write(s, Table::Meta, META_KEY, &m)
}

const RING_KEY: &[u8] = b"ring";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The keys of the tree as this site's log has delegated them (none before the first check).
pub fn keyring<S: ProjectionStore>(
    s: &S,
) -> Result<Option<schema::trust::KeyRing>, ProjError<S::Error>> {
    read(s, Table::Keys, RING_KEY)
}

/// Stores the key ring after a trust check changed it.
pub fn set_keyring<S: ProjectionStore>(
    s: &S,
    ring: &schema::trust::KeyRing,
) -> Result<(), ProjError<S::Error>> {
    write(s, Table::Keys, RING_KEY, ring)
}

/// The newest checkpoint of the top this site holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The top site.
    pub origin: SiteCode,
    /// The checkpoint's own number.
    pub seq: u64,
    /// When the top signed it.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The newest of the top's numbers issued then.
    pub issued: u64,
    /// When it expires.
    pub expires: chrono::DateTime<chrono::Utc>,
}

/// The newest checkpoint applied, if any.
pub fn checkpoint<S: ProjectionStore>(
    s: &S,
) -> Result<Option<CheckpointRecord>, ProjError<S::Error>> {
    read(s, Table::Keys, CHECKPOINT_KEY)
}

/// The tables of a [`MemStore`].
pub type MemTables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// Projections in memory, for tests and for checking a replay without touching the database.
#[derive(Default, Debug)]
pub struct MemStore {
    pub tables: RefCell<MemTables>,
}

impl ProjectionStore for MemStore {
    type Error = std::convert::Infallible;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.tables.borrow().get(&(t, key.to_vec())).cloned())
    }
    fn put(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), Self::Error> {
        self.tables.borrow_mut().insert((t, key.to_vec()), value);
        Ok(())
    }
}
