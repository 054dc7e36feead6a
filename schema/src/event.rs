//! Config events: what a site decides, appended to its config log and replicated down the tree.

use crate::advert::Advertisement;
use crate::catalog::CatalogDelta;
use crate::ids::{AdvertisementId, ManifestId, PackageId, SiteCode};
use crate::machine::Collection;
use crate::manifest::Manifest;
use crate::trust::{self, Delegation, PublicKey, Signature, TrustError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One entry of a config log: who decided it, their sequence number for it, when, and what.
///
/// `(origin, origin_seq)` is the dedupe key: a site applies an event with a given key once.
/// Each origin numbers its own events 1, 2, 3, ... with no gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The site that decided it.
    pub origin: SiteCode,
    /// The origin's number for it: 1, 2, 3, ... with no gaps.
    pub origin_seq: u64,
    /// When the origin decided it.
    pub time: DateTime<Utc>,
    /// What was decided.
    pub body: ConfigEvent,
    /// The origin's signature over [`EventEnvelope::signed_bytes`], under the key the tree
    /// delegated to it; passed on verbatim by every site.
    pub sig: Signature,
}

impl EventEnvelope {
    /// The envelope of `body`, signed by `key` as `origin`'s number `seq`.
    pub fn signed(
        origin: SiteCode,
        origin_seq: u64,
        time: DateTime<Utc>,
        body: ConfigEvent,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<Self, TrustError> {
        let bytes = trust::event_bytes(origin, origin_seq, &time, &body)?;
        Ok(EventEnvelope {
            origin,
            origin_seq,
            time,
            body,
            sig: trust::sign(key, &bytes),
        })
    }

    /// What the origin signed ([`trust::event_bytes`]).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, TrustError> {
        trust::event_bytes(self.origin, self.origin_seq, &self.time, &self.body)
    }
}

/// Priority of a package (and of the jobs that carry it), as SMS's High/Medium/Low.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Goes first.
    High,
    /// The default.
    #[default]
    Medium,
    /// Goes when nothing higher waits.
    Low,
}

impl Priority {
    /// `high`, `medium` or `low`: the name JSON, the command line and tables use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}
impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Ok(Priority::High),
            "medium" => Ok(Priority::Medium),
            "low" => Ok(Priority::Low),
            _ => Err(format!("invalid priority {s:?}: use high, medium or low")),
        }
    }
}

/// A published source version of a package. The manifest travels with the event, so a site
/// that has applied the event knows exactly which chunks the version needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    /// The package it is a version of.
    pub package: PackageId,
    /// The package's name, for people.
    pub name: String,
    /// 1 for the first publish, then +1 for every publish whose content changed.
    pub source_version: u32,
    /// The package's priority: that of the jobs that send this version.
    pub priority: Priority,
    /// The id of `manifest`.
    pub manifest_id: ManifestId,
    /// The version's files and the chunks that make each one.
    pub manifest: Manifest,
}

/// Where a package should be present.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistributionTarget {
    /// The site server's content store of this site.
    Site(SiteCode),
    /// One distribution point of a site.
    DistributionPoint {
        /// The site the DP belongs to.
        site: SiteCode,
        /// The DP's id at that site (`DP1`).
        dp: String,
    },
    /// Every member of a DP group.
    DpGroup(String),
}

impl fmt::Display for DistributionTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistributionTarget::Site(s) => write!(f, "site {s}"),
            DistributionTarget::DistributionPoint { site, dp } => write!(f, "dp {site}/{dp}"),
            DistributionTarget::DpGroup(g) => write!(f, "dp-group {g}"),
        }
    }
}

/// Every kind of config event. Variants only ever grow at the end: they are encoded by
/// position, so a new one in the middle would change the meaning of every stored log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigEvent {
    /// A new source version of a package, manifest included.
    PackageVersionPublished(PackageVersion),
    /// A source version is withdrawn everywhere: distribution points delete it, and the
    /// newest version not retired is the package's current one.
    PackageVersionRetired {
        /// The package.
        package: PackageId,
        /// The version withdrawn.
        source_version: u32,
    },
    /// A new advertisement.
    AdvertisementCreated(Advertisement),
    /// The new state of an existing advertisement; it replaces the old one whole.
    AdvertisementChanged(Advertisement),
    /// An advertisement is turned off (it is kept, with `enabled` false).
    AdvertisementDisabled {
        /// The advertisement.
        id: AdvertisementId,
    },
    /// The package should also be present at these targets.
    DistributionTargetsAdded {
        /// The package.
        package: PackageId,
        /// Where it should now be present too.
        targets: Vec<DistributionTarget>,
    },
    /// The package should no longer be present at these targets.
    DistributionTargetsRemoved {
        /// The package.
        package: PackageId,
        /// Where it should no longer be present.
        targets: Vec<DistributionTarget>,
    },
    /// One sync's changes to the software-update catalog.
    CatalogDelta(CatalogDelta),
    /// Asks for the catalog to be synced to a version. A site records the highest version
    /// asked for.
    SyncRequest {
        /// The catalog version asked for.
        catalog_version: u64,
    },
    /// The package's priority changes; every sender on the way moves its open jobs for the
    /// package to it.
    PackagePriorityChanged {
        /// The package.
        package: PackageId,
        /// Its new priority.
        priority: Priority,
    },
    /// An emergency: the package ignores the schedule and rate limit of every link on its
    /// way until `until` (forever when `None`; a time in the past ends a boost).
    SenderBoost {
        /// The package boosted.
        package: PackageId,
        /// When the boost ends; `None`: never.
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// A distribution point group, empty.
    DpGroupCreated {
        /// The group's name.
        group: String,
    },
    /// Distribution points join or leave a group. Packages targeted at the group go to the
    /// ones that join (the site decides so explicitly; SMS did not).
    DpGroupMembersChanged {
        /// The group's name.
        group: String,
        /// The distribution points that join it.
        added: Vec<DpRef>,
        /// The distribution points that leave it.
        removed: Vec<DpRef>,
    },
    /// A key is delegated to a site (its first, or a rotation's next): signed by the site
    /// above it, or by the top for itself (the genesis, the first event of the tree).
    SiteKeyDelegated(Delegation),
    /// A site's delegation is revoked from this point of the log on: its later events are
    /// refused until a new delegation. Signed by a site above it.
    SiteKeyRevoked {
        /// The site revoked.
        site: SiteCode,
    },
    /// The top's signed word on how far its log has got: every site can tell how far behind
    /// it is, and raises the alarm when the newest one it holds has expired.
    Checkpoint {
        /// The newest of the top's own sequence numbers issued (this checkpoint's).
        issued: u64,
        /// When a site holding no newer checkpoint should say its view is stale.
        expires: DateTime<Utc>,
    },
    /// A collection is created, or its rules and members replaced whole.
    CollectionSet(Collection),
    /// A machine may use the distribution points of `site`, with `key`: its agent's requests
    /// and reports are believed when signed by it. A later approval of the same name
    /// replaces the key.
    MachineApproved {
        /// The machine's site.
        site: SiteCode,
        /// Its name.
        name: String,
        /// Its agent's key.
        key: PublicKey,
    },
    /// Whether `site` approves every new machine by itself (ConfigMgr's automatic approval).
    AutoApproval {
        /// The site.
        site: SiteCode,
        /// On or off.
        enabled: bool,
    },
    /// A disabled advertisement is enabled again.
    AdvertisementEnabled {
        /// The advertisement.
        id: AdvertisementId,
    },
}

/// A distribution point in the tree: its site and its id there (`S01/DP1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DpRef {
    /// The site the DP belongs to.
    pub site: SiteCode,
    /// The DP's id at that site (`DP1`).
    pub dp: String,
}

impl fmt::Display for DpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.site, self.dp)
    }
}

impl ConfigEvent {
    /// A short name for logs and tables.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigEvent::PackageVersionPublished(_) => "package-version-published",
            ConfigEvent::PackageVersionRetired { .. } => "package-version-retired",
            ConfigEvent::AdvertisementCreated(_) => "advertisement-created",
            ConfigEvent::AdvertisementChanged(_) => "advertisement-changed",
            ConfigEvent::AdvertisementDisabled { .. } => "advertisement-disabled",
            ConfigEvent::DistributionTargetsAdded { .. } => "distribution-targets-added",
            ConfigEvent::DistributionTargetsRemoved { .. } => "distribution-targets-removed",
            ConfigEvent::CatalogDelta(_) => "catalog-delta",
            ConfigEvent::SyncRequest { .. } => "sync-request",
            ConfigEvent::PackagePriorityChanged { .. } => "package-priority-changed",
            ConfigEvent::SenderBoost { .. } => "sender-boost",
            ConfigEvent::DpGroupCreated { .. } => "dp-group-created",
            ConfigEvent::DpGroupMembersChanged { .. } => "dp-group-members-changed",
            ConfigEvent::SiteKeyDelegated(_) => "site-key-delegated",
            ConfigEvent::SiteKeyRevoked { .. } => "site-key-revoked",
            ConfigEvent::Checkpoint { .. } => "checkpoint",
            ConfigEvent::CollectionSet(_) => "collection-set",
            ConfigEvent::MachineApproved { .. } => "machine-approved",
            ConfigEvent::AutoApproval { .. } => "auto-approval",
            ConfigEvent::AdvertisementEnabled { .. } => "advertisement-enabled",
        }
    }

    /// One line saying what the event is about, for `site-server log`.
    pub fn summary(&self) -> String {
        match self {
            ConfigEvent::PackageVersionPublished(v) => format!(
                "{} {:?} version {} ({} files, {} bytes, manifest {})",
                v.package,
                v.name,
                v.source_version,
                v.manifest.files.len(),
                v.manifest.total_size(),
                v.manifest_id.short()
            ),
            ConfigEvent::PackageVersionRetired {
                package,
                source_version,
            } => format!("{package} version {source_version}"),
            ConfigEvent::AdvertisementCreated(a) | ConfigEvent::AdvertisementChanged(a) => {
                format!(
                    "{} {:?}: package {} program {:?} to {:?}",
                    a.id, a.name, a.package, a.program.name, a.collection
                )
            }
            ConfigEvent::AdvertisementDisabled { id } => id.to_string(),
            ConfigEvent::DistributionTargetsAdded { package, targets }
            | ConfigEvent::DistributionTargetsRemoved { package, targets } => {
                let t: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
                format!("{package}: {}", t.join(", "))
            }
            ConfigEvent::CatalogDelta(d) => format!(
                "catalog version {} from {:?}: {} changes",
                d.catalog_version,
                d.source,
                d.changes.len()
            ),
            ConfigEvent::SyncRequest { catalog_version } => {
                format!("sync to catalog version {catalog_version}")
            }
            ConfigEvent::PackagePriorityChanged { package, priority } => {
                format!("{package} priority {priority}")
            }
            ConfigEvent::SenderBoost { package, until } => match until {
                Some(t) => format!("{package} ignores schedules and rate limits until {t}"),
                None => format!("{package} ignores schedules and rate limits"),
            },
            ConfigEvent::DpGroupCreated { group } => format!("group {group}"),
            ConfigEvent::DpGroupMembersChanged {
                group,
                added,
                removed,
            } => {
                let list = |v: &[DpRef]| {
                    v.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("group {group}: +[{}] -[{}]", list(added), list(removed))
            }
            ConfigEvent::SiteKeyDelegated(d) => format!(
                "{} signs with {} from its number {}",
                d.site,
                &d.key.to_string()[..16],
                d.valid_from
            ),
            ConfigEvent::SiteKeyRevoked { site } => format!("{site}'s key is revoked"),
            ConfigEvent::Checkpoint { issued, expires } => {
                format!("the top has issued up to {issued}; this view expires {expires}")
            }
            ConfigEvent::CollectionSet(c) => {
                let rules: Vec<String> = c.rules.iter().map(|r| r.to_string()).collect();
                format!(
                    "collection {:?}: rules [{}] members [{}]",
                    c.name,
                    rules.join("; "),
                    c.members.join(", ")
                )
            }
            ConfigEvent::MachineApproved { site, name, key } => {
                format!(
                    "machine {site}/{name} approved with {}",
                    &key.to_string()[..16]
                )
            }
            ConfigEvent::AutoApproval { site, enabled } => format!(
                "{site} approves new machines {}",
                if *enabled {
                    "automatically"
                } else {
                    "only by the operator"
                }
            ),
            ConfigEvent::AdvertisementEnabled { id } => id.to_string(),
        }
    }
}

/// What a distribution point serves its agents: the signed events an agent acts on, in the
/// order of its site's log (the key delegations from the top's genesis down, collections,
/// advertisements and the package versions they run), and the site they come from. The
/// agent believes an event only if its signature chains to the trust root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The distribution point's site.
    pub site: Option<SiteCode>,
    /// The events, in the site's log order.
    pub events: Vec<EventEnvelope>,
}
