//! What a distribution point holds, and what it must do about it (sans-IO).
//!
//! [`Holdings`] takes the site's assignment list and the store's answers (which chunks are
//! here) as arguments and says, as [`Effect`]s, which status messages to raise and which
//! versions to drop. The rules:
//!
//! - an assigned version that misses chunks is *pulling* (2342 once when it starts); when its
//!   last chunk is stored it is *installed* (2330) and served;
//! - a version no longer assigned is dropped (40152) as soon as nothing needs it: at once if
//!   retired or unassigned, but an older version the site says to `keep` stays (and is
//!   served) until the newer one is installed, so clients never see the package vanish;
//! - a chunk found damaged (validation, or while serving) makes every version that uses it
//!   pulling again, and it is not served until the chunk is back;
//! - a failure (disk full, the site lacking content) is one 40150 per affected version, not
//!   one per retry.

use schema::event::Priority;
use schema::manifest::Manifest;
use schema::report::Attribute;
use schema::status;
use schema::wire::DpAssignment;
use schema::{ChunkId, ManifestId, PackageId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

/// Where a version stands on this DP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pulling,
    Installed,
    /// Pulling, after a failure that was reported (the reason).
    Failed(String),
}

/// One version held (or being pulled) here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub package: PackageId,
    pub name: String,
    pub version: u32,
    pub priority: Priority,
    pub manifest_id: ManifestId,
    pub manifest: Arc<Manifest>,
    pub phase: Phase,
    /// In the site's current assignment list (as `version`, not only as `keep`).
    pub assigned: bool,
    /// The chunks not here yet (worked out again from the store at start).
    #[serde(skip)]
    pub missing: BTreeSet<ChunkId>,
}

impl Held {
    pub fn total_bytes(&self) -> u64 {
        self.manifest
            .unique_chunks()
            .iter()
            .map(|c| c.len as u64)
            .sum()
    }
}

/// What the shell must do after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Raise status message `id` (attributes: package, version, DP).
    Message {
        id: u32,
        package: PackageId,
        version: u32,
        insertion: Vec<String>,
    },
    /// This version is gone from the holdings: delete the chunks nothing else uses
    /// ([`Holdings::referenced`]) and raise 40152 with how many.
    Dropped {
        package: PackageId,
        version: u32,
        manifest: Arc<Manifest>,
    },
}

impl Effect {
    /// The attributes of a message about `package` `version` on DP `dp`.
    pub fn attributes(package: PackageId, version: u32, dp: &str) -> Vec<Attribute> {
        vec![
            Attribute::Package(package),
            Attribute::SourceVersion(version),
            Attribute::DistributionPoint(dp.to_string()),
        ]
    }
}

/// Every version held here, by (package, version).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Holdings {
    versions: BTreeMap<(PackageId, u32), Held>,
    /// Per package, the versions the site allows to stay besides the assigned one.
    keep: BTreeMap<PackageId, Vec<u32>>,
    /// How this DP names itself in messages (`S01/DP1`).
    pub name: String,
    /// The chunks of installed versions, built at the first ask after a change (every `&mut`
    /// method clears it): `/chunks/{id}` is asked by anyone who reaches the DP, and must not
    /// scan every manifest under the node's lock each time.
    #[serde(skip)]
    served: Option<HashSet<ChunkId>>,
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

/// The chunks of `m` the store does not have.
fn missing_of(m: &Manifest, has: &dyn Fn(&ChunkId) -> bool) -> BTreeSet<ChunkId> {
    m.unique_chunks()
        .into_iter()
        .map(|c| c.id)
        .filter(|id| !has(id))
        .collect()
}

impl Holdings {
    pub fn new(name: impl Into<String>) -> Self {
        Holdings {
            name: name.into(),
            ..Default::default()
        }
    }

    fn msg(&self, id: u32, h: &Held, extra: Option<String>) -> Effect {
        let mut insertion = vec![
            h.package.to_string(),
            h.version.to_string(),
            self.name.clone(),
        ];
        insertion.extend(extra);
        Effect::Message {
            id,
            package: h.package,
            version: h.version,
            insertion,
        }
    }

    /// After a restart: recomputes what each held version misses, from the store.
    pub fn reload(&mut self, has: &dyn Fn(&ChunkId) -> bool) -> Vec<Effect> {
        self.served = None;
        let keys: Vec<_> = self.versions.keys().copied().collect();
        let mut out = Vec::new();
        for k in keys {
            let h = self.versions.get_mut(&k).expect("key listed");
            h.missing = missing_of(&h.manifest, has);
            if h.missing.is_empty() && h.phase != Phase::Installed {
                h.phase = Phase::Installed;
                let h = h.clone();
                out.push(self.msg(status::DP_DISTRIBUTION_COMPLETE, &h, None));
            } else if !h.missing.is_empty() && h.phase == Phase::Installed {
                h.phase = Phase::Pulling;
            }
        }
        out.extend(self.drop_unneeded());
        out
    }

    /// The site's assignment list replaced the previous one.
    pub fn assign(&mut self, list: &[DpAssignment], has: &dyn Fn(&ChunkId) -> bool) -> Vec<Effect> {
        self.served = None;
        let mut out = Vec::new();
        self.keep = list.iter().map(|a| (a.package, a.keep.clone())).collect();
        for h in self.versions.values_mut() {
            h.assigned = false;
        }
        for a in list {
            let key = (a.package, a.version);
            if let Some(h) = self.versions.get_mut(&key) {
                h.assigned = true;
                h.priority = a.priority;
                continue;
            }
            let missing = missing_of(&a.manifest, has);
            let h = Held {
                package: a.package,
                name: a.name.clone(),
                version: a.version,
                priority: a.priority,
                manifest_id: a.manifest_id,
                manifest: Arc::new(a.manifest.clone()),
                phase: if missing.is_empty() {
                    Phase::Installed
                } else {
                    Phase::Pulling
                },
                assigned: true,
                missing,
            };
            let missing = h.missing.len();
            let bytes = h.total_bytes();
            out.push(self.msg(status::DP_DISTRIBUTION_STARTED, &h, None));
            if h.phase == Phase::Installed {
                out.push(self.msg(status::DP_DISTRIBUTION_COMPLETE, &h, None));
            }
            tracing::debug!(package = %a.package, version = a.version, missing, bytes, "assigned");
            self.versions.insert(key, h);
        }
        out.extend(self.drop_unneeded());
        out
    }

    /// Drops every version nothing needs any more.
    fn drop_unneeded(&mut self) -> Vec<Effect> {
        let mut gone = Vec::new();
        for (k, h) in &self.versions {
            if h.assigned {
                continue;
            }
            let kept = self.keep.get(&k.0).is_some_and(|v| v.contains(&k.1));
            // The assigned version of the same package, if any, and whether it is served.
            let newer_installed = self
                .versions
                .values()
                .any(|o| o.package == k.0 && o.assigned && o.phase == Phase::Installed);
            let is_newest_installed_old = h.phase == Phase::Installed
                && !self.versions.values().any(|o| {
                    o.package == k.0
                        && !o.assigned
                        && o.version > k.1
                        && o.phase == Phase::Installed
                });
            if kept && !newer_installed && is_newest_installed_old {
                continue;
            }
            gone.push(*k);
        }
        gone.into_iter()
            .filter_map(|k| {
                let h = self.versions.remove(&k)?;
                Some(Effect::Dropped {
                    package: k.0,
                    version: k.1,
                    manifest: h.manifest,
                })
            })
            .collect()
    }

    /// Chunk `id` is now stored and verified here.
    pub fn on_stored(&mut self, id: &ChunkId) -> Vec<Effect> {
        self.served = None;
        let mut done = Vec::new();
        for h in self.versions.values_mut() {
            if h.missing.remove(id) && h.missing.is_empty() {
                h.phase = Phase::Installed;
                done.push(h.clone());
            }
        }
        if done.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Effect> = done
            .iter()
            .map(|h| self.msg(status::DP_DISTRIBUTION_COMPLETE, h, None))
            .collect();
        out.extend(self.drop_unneeded());
        out
    }

    /// These chunks are no longer (intact) in the store: every version that uses one is not
    /// served until it is back. Returns, per version hit, how many of `corrupt` and of
    /// `missing` it uses.
    pub fn on_damaged(
        &mut self,
        corrupt: &HashSet<ChunkId>,
        missing: &HashSet<ChunkId>,
    ) -> Vec<(PackageId, u32, usize, usize)> {
        self.served = None;
        let mut out = Vec::new();
        for h in self.versions.values_mut() {
            let (mut c, mut m) = (0, 0);
            for r in h.manifest.unique_chunks() {
                if corrupt.contains(&r.id) {
                    c += 1;
                } else if missing.contains(&r.id) {
                    m += 1;
                } else {
                    continue;
                }
                h.missing.insert(r.id);
            }
            if c + m > 0 {
                if h.phase == Phase::Installed {
                    h.phase = Phase::Pulling;
                }
                out.push((h.package, h.version, c, m));
            }
        }
        out
    }

    /// A pull failure: each version still pulling that has not reported this reason gets
    /// one 40150.
    pub fn on_failure(&mut self, reason: &str) -> Vec<Effect> {
        self.served = None;
        let mut hit = Vec::new();
        for h in self.versions.values_mut() {
            if h.missing.is_empty() || h.phase == Phase::Failed(reason.to_string()) {
                continue;
            }
            h.phase = Phase::Failed(reason.to_string());
            hit.push(h.clone());
        }
        hit.iter()
            .map(|h| self.msg(status::DP_DISTRIBUTION_FAILED, h, Some(reason.to_string())))
            .collect()
    }

    /// The chunks to fetch, most urgent first (priority, then package and version), each once.
    pub fn wanted(&self) -> Vec<ChunkId> {
        let mut order: Vec<&Held> = self
            .versions
            .values()
            .filter(|h| !h.missing.is_empty())
            .collect();
        order.sort_by_key(|h| (rank(h.priority), h.package, h.version));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for h in order {
            for id in &h.missing {
                if seen.insert(*id) {
                    out.push(*id);
                }
            }
        }
        out
    }

    /// Every chunk a held version uses (what garbage collection keeps).
    pub fn referenced(&self) -> HashSet<ChunkId> {
        self.versions
            .values()
            .flat_map(|h| {
                h.manifest
                    .files
                    .iter()
                    .flat_map(|f| f.chunks().iter().map(|c| c.id))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether `id` is a chunk of an installed version: only those are served to other DPs
    /// (a chunk of a version still being pulled, or of none, is not this DP's to give).
    pub fn serves_chunk(&mut self, id: &ChunkId) -> bool {
        let versions = &self.versions;
        self.served
            .get_or_insert_with(|| {
                versions
                    .values()
                    .filter(|h| h.phase == Phase::Installed)
                    .flat_map(|h| h.manifest.files.iter())
                    .flat_map(|f| f.chunks().iter().map(|c| c.id))
                    .collect()
            })
            .contains(id)
    }

    /// Versions served: installed ones.
    pub fn installed(&self, package: &PackageId) -> Vec<(u32, Arc<Manifest>)> {
        self.versions
            .range((*package, 0)..=(*package, u32::MAX))
            .filter(|(_, h)| h.phase == Phase::Installed)
            .map(|(k, h)| (k.1, h.manifest.clone()))
            .collect()
    }

    pub fn versions(&self) -> impl Iterator<Item = &Held> {
        self.versions.values()
    }

    pub fn get(&self, package: &PackageId, version: u32) -> Option<&Held> {
        self.versions.get(&(*package, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::manifest::{ChunkRef, EntryKind, FileEntry};

    fn manifest(chunks: &[&[u8]]) -> Manifest {
        let refs: Vec<ChunkRef> = chunks
            .iter()
            .map(|c| ChunkRef {
                id: ChunkId::of(c),
                len: c.len() as u32,
            })
            .collect();
        Manifest {
            files: vec![FileEntry {
                path: "f".into(),
                mode: 0o644,
                size: refs.iter().map(|c| c.len as u64).sum(),
                kind: EntryKind::File { chunks: refs },
            }],
        }
    }

    fn assignment(pkg: &PackageId, v: u32, chunks: &[&[u8]], keep: Vec<u32>) -> DpAssignment {
        let m = manifest(chunks);
        DpAssignment {
            package: *pkg,
            name: "p".into(),
            version: v,
            priority: Priority::Medium,
            manifest_id: m.id(),
            manifest: m,
            keep,
        }
    }

    fn ids(e: &[Effect]) -> Vec<u32> {
        e.iter()
            .map(|e| match e {
                Effect::Message { id, .. } => *id,
                Effect::Dropped { .. } => 0,
            })
            .collect()
    }

    #[test]
    fn a_version_is_served_only_when_every_chunk_is_here_and_an_old_one_stays_until_then() {
        let pkg: PackageId = "CEN00001".parse().unwrap();
        let mut h = Holdings::new("S01/DP1");
        let none = |_: &ChunkId| false;
        let e = h.assign(&[assignment(&pkg, 1, &[b"a", b"b"], vec![])], &none);
        assert_eq!(ids(&e), vec![status::DP_DISTRIBUTION_STARTED]);
        assert!(h.installed(&pkg).is_empty());
        assert_eq!(h.wanted().len(), 2);
        assert!(h.on_stored(&ChunkId::of(b"a")).is_empty());
        // Held but not installed: not served to other DPs yet.
        assert!(!h.serves_chunk(&ChunkId::of(b"a")));
        assert_eq!(
            ids(&h.on_stored(&ChunkId::of(b"b"))),
            vec![status::DP_DISTRIBUTION_COMPLETE]
        );
        assert_eq!(h.installed(&pkg).len(), 1);
        assert!(h.serves_chunk(&ChunkId::of(b"a")) && h.serves_chunk(&ChunkId::of(b"b")));
        assert!(!h.serves_chunk(&ChunkId::of(b"c")));

        // v2 shares "b": only "c" is wanted; v1 is kept and served until v2 is in.
        let have = |id: &ChunkId| *id == ChunkId::of(b"a") || *id == ChunkId::of(b"b");
        let e = h.assign(&[assignment(&pkg, 2, &[b"b", b"c"], vec![1])], &have);
        assert_eq!(ids(&e), vec![status::DP_DISTRIBUTION_STARTED]);
        assert_eq!(h.wanted(), vec![ChunkId::of(b"c")]);
        assert_eq!(h.installed(&pkg)[0].0, 1);
        let e = h.on_stored(&ChunkId::of(b"c"));
        assert_eq!(ids(&e), vec![status::DP_DISTRIBUTION_COMPLETE, 0]);
        assert_eq!(
            h.installed(&pkg).iter().map(|v| v.0).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(!h.referenced().contains(&ChunkId::of(b"a")));
        assert!(h.referenced().contains(&ChunkId::of(b"b")));
        // What is served follows: v1's "a" no longer, v2's "c" now.
        assert!(!h.serves_chunk(&ChunkId::of(b"a")));
        assert!(h.serves_chunk(&ChunkId::of(b"c")));

        // Unassigned: dropped at once.
        let e = h.assign(&[], &have);
        assert_eq!(ids(&e), vec![0]);
        assert!(h.referenced().is_empty());
        assert!(!h.serves_chunk(&ChunkId::of(b"c")));
    }

    #[test]
    fn a_retired_old_version_goes_even_before_the_new_one_is_in() {
        let pkg: PackageId = "CEN00001".parse().unwrap();
        let mut h = Holdings::new("S01/DP1");
        let all = |_: &ChunkId| true;
        h.assign(&[assignment(&pkg, 1, &[b"a"], vec![])], &all);
        let e = h.assign(&[assignment(&pkg, 2, &[b"c"], vec![])], &|id| {
            *id == ChunkId::of(b"a")
        });
        assert_eq!(ids(&e), vec![status::DP_DISTRIBUTION_STARTED, 0]);
        assert!(h.installed(&pkg).is_empty());
    }

    #[test]
    fn damage_stops_serving_until_refetched_and_failures_report_once() {
        let pkg: PackageId = "CEN00001".parse().unwrap();
        let mut h = Holdings::new("S01/DP1");
        h.assign(&[assignment(&pkg, 1, &[b"a", b"b"], vec![])], &|_| true);
        assert_eq!(h.installed(&pkg).len(), 1);
        let hit = h.on_damaged(&[ChunkId::of(b"a")].into(), &HashSet::new());
        assert_eq!(hit, vec![(pkg, 1, 1, 0)]);
        assert!(h.installed(&pkg).is_empty());
        assert_eq!(
            ids(&h.on_failure("disk full")),
            vec![status::DP_DISTRIBUTION_FAILED]
        );
        assert!(h.on_failure("disk full").is_empty());
        assert_eq!(
            ids(&h.on_stored(&ChunkId::of(b"a"))),
            vec![status::DP_DISTRIBUTION_COMPLETE]
        );
        assert_eq!(h.installed(&pkg).len(), 1);
    }

    #[test]
    fn high_priority_chunks_come_first_and_shared_ones_once() {
        let (p1, p2): (PackageId, PackageId) =
            ("CEN00001".parse().unwrap(), "CEN00002".parse().unwrap());
        let mut h = Holdings::new("S01/DP1");
        let mut hi = assignment(&p2, 1, &[b"x", b"s"], vec![]);
        hi.priority = Priority::High;
        h.assign(&[assignment(&p1, 1, &[b"s", b"y"], vec![]), hi], &|_| false);
        let w = h.wanted();
        assert_eq!(w.len(), 3);
        assert!(w[..2].contains(&ChunkId::of(b"x")) && w[..2].contains(&ChunkId::of(b"s")));
        assert_eq!(w[2], ChunkId::of(b"y"));
    }
}
