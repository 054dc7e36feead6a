//! Tests of [`super::projection`]: what applying each kind of config event does to the
//! projections (over [`MemStore`]), what a damaged record gives, and that the same log always
//! gives the same bytes.

use super::projection::{
    self, apply, Damaged, MemStore, MemTables, Meta, PackageRecord, ProjError, ProjectionStore,
    Table, VersionRecord,
};
use super::test_support::*;
use chrono::{Duration, NaiveDateTime};
use schema::advert::{Advertisement, ExitRules, Program, TimeBasis};
use schema::catalog::{CatalogChange, CatalogDelta, Classification, Update};
use schema::encoding::{self, DecodeError};
use schema::event::{
    ConfigEvent, DistributionTarget, DpRef, EventEnvelope, PackageVersion, Priority,
};
use schema::manifest::{ChunkRef, EntryKind, FileEntry, Manifest};
use schema::{AdvertisementId, ChunkId};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The site whose projections these are.
const OWN: &str = "CEN";

fn adv_id(s: &str) -> AdvertisementId {
    s.parse().unwrap()
}

/// An event of `origin`, decided `seq` minutes after [`t0`].
fn env(origin: &str, seq: u64, body: ConfigEvent) -> EventEnvelope {
    EventEnvelope {
        origin: code(origin),
        origin_seq: seq,
        time: t0() + Duration::minutes(seq as i64),
        body,
        sig: schema::trust::Signature::MISSING,
    }
}

/// Applies events, in order, to the projections of site [`OWN`].
fn apply_all(s: &MemStore, events: &[EventEnvelope]) {
    for e in events {
        apply(s, code(OWN), e).unwrap();
    }
}

/// Applies one event of this site (sequence number 1) to `s`.
fn apply_one(s: &MemStore, body: ConfigEvent) {
    apply_all(s, &[env(OWN, 1, body)]);
}

/// Two files and three chunk references: `a.bin` is `tag`, `lib/b.bin` is `tag` then `tail`
/// (so `2 * tag.len() + 4` bytes).
fn manifest(tag: &[u8]) -> Manifest {
    let file = |path: &str, parts: &[&[u8]]| FileEntry {
        path: path.into(),
        mode: 0o644,
        size: parts.iter().map(|p| p.len() as u64).sum(),
        kind: EntryKind::File {
            chunks: parts
                .iter()
                .map(|p| ChunkRef {
                    id: ChunkId::of(p),
                    len: p.len() as u32,
                })
                .collect(),
        },
    };
    Manifest {
        files: vec![file("a.bin", &[tag]), file("lib/b.bin", &[tag, b"tail"])],
    }
}

fn published(
    package: &str,
    name: &str,
    version: u32,
    priority: Priority,
    tag: &[u8],
) -> ConfigEvent {
    ConfigEvent::PackageVersionPublished(PackageVersion {
        package: pkg(package),
        name: name.into(),
        source_version: version,
        priority,
        manifest_id: manifest(tag).id(),
        manifest: manifest(tag),
    })
}

fn retired(package: &str, version: u32) -> ConfigEvent {
    ConfigEvent::PackageVersionRetired {
        package: pkg(package),
        source_version: version,
    }
}

fn advert(id: &str, package: &str) -> Advertisement {
    Advertisement {
        id: adv_id(id),
        name: format!("{package} - install"),
        package: pkg(package),
        program: Program {
            name: "install".into(),
            command_line: "setup.exe /quiet".into(),
            exit: ExitRules::default(),
        },
        collection: "All Desktops".into(),
        start: NaiveDateTime::parse_from_str("2026-12-01 08:00:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        mandatory: vec![],
        time_basis: TimeBasis::Utc,
        enabled: true,
        run: Default::default(),
    }
}

fn targets_added(package: &str, targets: Vec<DistributionTarget>) -> ConfigEvent {
    ConfigEvent::DistributionTargetsAdded {
        package: pkg(package),
        targets,
    }
}

fn targets_removed(package: &str, targets: Vec<DistributionTarget>) -> ConfigEvent {
    ConfigEvent::DistributionTargetsRemoved {
        package: pkg(package),
        targets,
    }
}

fn members_changed(group: &str, added: Vec<DpRef>, removed: Vec<DpRef>) -> ConfigEvent {
    ConfigEvent::DpGroupMembersChanged {
        group: group.into(),
        added,
        removed,
    }
}

fn update(id: &str) -> Update {
    Update {
        id: id.into(),
        title: format!("fix {id}"),
        product: "os".into(),
        classification: Classification::Security,
        severity: Some("critical".into()),
        bulletin: None,
        kb: Some(id.trim_start_matches("KB").into()),
        posted: t0(),
        revised: t0(),
        superseded_by: None,
        expired: false,
        size: 10,
        files: vec![],
        source: "vendor".into(),
    }
}

fn delta(version: u64, changes: Vec<CatalogChange>) -> ConfigEvent {
    ConfigEvent::CatalogDelta(CatalogDelta {
        catalog_version: version,
        source: "vendor".into(),
        changes,
    })
}

fn catalog_entry(s: &MemStore, id: &str) -> Option<Update> {
    projection::read(s, Table::Catalog, id.as_bytes()).unwrap()
}

fn meta(s: &MemStore) -> Meta {
    projection::meta(s).unwrap()
}

fn package(s: &MemStore, id: &str) -> Option<PackageRecord> {
    projection::package(s, &pkg(id)).unwrap()
}

fn targets(s: &MemStore, id: &str) -> Vec<DistributionTarget> {
    projection::targets(s, &pkg(id)).unwrap()
}

fn groups(s: &MemStore) -> projection::DpGroups {
    projection::dp_groups(s).unwrap()
}

/// Every row but the meta record.
fn rows_but_meta(s: &MemStore) -> MemTables {
    s.tables
        .borrow()
        .iter()
        .filter(|((t, _), _)| *t != Table::Meta)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How many rows `t` has.
fn row_count(s: &MemStore, t: Table) -> usize {
    s.tables.borrow().keys().filter(|(x, _)| *x == t).count()
}

/// Applies `body` and checks that it changed nothing but the count of events applied.
fn assert_changes_nothing_but_the_count(s: &MemStore, body: ConfigEvent) {
    let rows = rows_but_meta(s);
    let before = meta(s);
    apply_one(s, body);
    assert_eq!(rows_but_meta(s), rows);
    assert_eq!(
        meta(s),
        Meta {
            events_applied: before.events_applied + 1,
            ..before
        }
    );
}

/// The damaged-record error of `r`, or a panic.
fn damaged<T: std::fmt::Debug>(r: Result<T, ProjError<std::convert::Infallible>>) -> Damaged {
    match r {
        Err(ProjError::Damaged(d)) => d,
        Err(ProjError::Store(never)) => match never {},
        Ok(v) => panic!("expected a damaged projection, got {v:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The store and empty reads
// ---------------------------------------------------------------------------------------

#[test]
fn an_empty_store_reads_as_defaults() {
    let s = MemStore::default();
    assert_eq!(meta(&s), Meta::default());
    assert_eq!(package(&s, "CEN00001"), None);
    assert_eq!(
        projection::manifest(&s, &manifest(b"x").id()).unwrap(),
        None
    );
    assert_eq!(projection::advert(&s, &adv_id("CEN20001")).unwrap(), None);
    assert!(targets(&s, "CEN00001").is_empty());
    assert!(groups(&s).is_empty());
    assert!(s.tables.borrow().is_empty(), "reads write nothing");
}

#[test]
fn mem_store_keeps_each_table_apart() {
    let s = MemStore::default();
    s.put(Table::Packages, b"k", b"one".to_vec()).unwrap();
    s.put(Table::Targets, b"k", b"two".to_vec()).unwrap();
    assert_eq!(s.get(Table::Packages, b"k").unwrap(), Some(b"one".to_vec()));
    assert_eq!(s.get(Table::Targets, b"k").unwrap(), Some(b"two".to_vec()));
    assert_eq!(s.get(Table::Adverts, b"k").unwrap(), None);
    s.put(Table::Packages, b"k", b"three".to_vec()).unwrap();
    assert_eq!(
        s.get(Table::Packages, b"k").unwrap(),
        Some(b"three".to_vec())
    );
}

#[test]
fn table_names_are_distinct_and_prefixed() {
    let names: BTreeSet<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names.len(), Table::ALL.len());
    assert!(names.iter().all(|n| n.starts_with("proj_")), "{names:?}");
}

// ---------------------------------------------------------------------------------------
// PackageVersionPublished
// ---------------------------------------------------------------------------------------

#[test]
fn a_first_version_records_the_package_its_version_and_manifest() {
    let s = MemStore::default();
    let e = env(
        OWN,
        1,
        published("CEN00001", "Tools", 1, Priority::Low, b"xxxxx"),
    );
    apply_all(&s, std::slice::from_ref(&e));

    assert_eq!(
        package(&s, "CEN00001"),
        Some(PackageRecord {
            id: pkg("CEN00001"),
            name: "Tools".into(),
            priority: Priority::Low,
            versions: vec![VersionRecord {
                source_version: 1,
                manifest_id: manifest(b"xxxxx").id(),
                published: e.time,
                files: 2,
                size: 14,
                chunks: 3,
                retired: false,
            }],
        })
    );
    assert_eq!(
        projection::manifest(&s, &manifest(b"xxxxx").id()).unwrap(),
        Some(manifest(b"xxxxx"))
    );
    assert_eq!(
        meta(&s),
        Meta {
            next_package: 2,
            events_applied: 1,
            ..Meta::default()
        }
    );
}

#[test]
fn a_later_version_is_appended_and_brings_the_name_and_priority() {
    let s = MemStore::default();
    apply_all(
        &s,
        &[
            env(
                OWN,
                1,
                published("CEN00001", "Tools", 1, Priority::Low, b"v1"),
            ),
            env(
                OWN,
                2,
                published("CEN00001", "Tools 2", 2, Priority::High, b"v2"),
            ),
        ],
    );
    let rec = package(&s, "CEN00001").unwrap();
    assert_eq!(rec.name, "Tools 2");
    assert_eq!(rec.priority, Priority::High);
    let versions: Vec<(u32, _)> = rec
        .versions
        .iter()
        .map(|v| (v.source_version, v.manifest_id))
        .collect();
    assert_eq!(
        versions,
        [(1, manifest(b"v1").id()), (2, manifest(b"v2").id())]
    );
    assert_eq!(rec.versions[1].published, t0() + Duration::minutes(2));
    assert_eq!(rec.current().map(|v| v.source_version), Some(2));
    assert_eq!(rec.latest_number(), 2);
    assert_eq!(row_count(&s, Table::Manifests), 2);
}

#[test]
fn a_version_already_recorded_changes_nothing_but_the_count() {
    let s = MemStore::default();
    apply_one(&s, published("CEN00001", "Tools", 1, Priority::Low, b"v1"));
    assert_changes_nothing_but_the_count(
        &s,
        published("CEN00001", "Renamed", 1, Priority::High, b"other"),
    );
    assert_eq!(package(&s, "CEN00001").unwrap().name, "Tools");
    assert_eq!(
        projection::manifest(&s, &manifest(b"other").id()).unwrap(),
        None
    );
}

#[test]
fn versions_are_kept_in_version_order_whatever_the_arrival_order() {
    let s = MemStore::default();
    apply_all(
        &s,
        &[
            env(
                "TOP",
                1,
                published("TOP00001", "Tools", 3, Priority::Medium, b"v3"),
            ),
            env(
                "TOP",
                2,
                published("TOP00001", "Tools", 1, Priority::Medium, b"v1"),
            ),
        ],
    );
    let rec = package(&s, "TOP00001").unwrap();
    let numbers: Vec<u32> = rec.versions.iter().map(|v| v.source_version).collect();
    assert_eq!(numbers, [1, 3]);
    assert_eq!(rec.latest_number(), 3);
}

#[test]
fn a_manifest_shared_by_two_versions_is_stored_once() {
    let s = MemStore::default();
    apply_all(
        &s,
        &[
            env(
                OWN,
                1,
                published("CEN00001", "one", 1, Priority::Medium, b"same"),
            ),
            env(
                OWN,
                2,
                published("CEN00002", "two", 1, Priority::Medium, b"same"),
            ),
        ],
    );
    assert_eq!(row_count(&s, Table::Manifests), 1);
    assert_eq!(row_count(&s, Table::Packages), 2);
}

#[test]
fn only_this_sites_packages_move_its_next_package_number() {
    let s = MemStore::default();
    apply_one(
        &s,
        published("CEN00007", "seven", 1, Priority::Medium, b"7"),
    );
    assert_eq!(meta(&s).next_package, 8);
    // Another site's package, however high its number, does not count.
    apply_one(
        &s,
        published("TOP00050", "theirs", 1, Priority::Medium, b"t"),
    );
    assert_eq!(meta(&s).next_package, 8);
    // A lower number of this site's does not move it back.
    apply_one(
        &s,
        published("CEN00003", "three", 1, Priority::Medium, b"3"),
    );
    assert_eq!(meta(&s).next_package, 8);
    assert_eq!(meta(&s).events_applied, 3);
}

// ---------------------------------------------------------------------------------------
// PackageVersionRetired
// ---------------------------------------------------------------------------------------

#[test]
fn retiring_a_version_marks_it_and_the_current_version_falls_back() {
    let s = MemStore::default();
    apply_all(
        &s,
        &[
            env(
                OWN,
                1,
                published("CEN00001", "Tools", 1, Priority::Medium, b"v1"),
            ),
            env(
                OWN,
                2,
                published("CEN00001", "Tools", 2, Priority::Medium, b"v2"),
            ),
            env(OWN, 3, retired("CEN00001", 2)),
        ],
    );
    let rec = package(&s, "CEN00001").unwrap();
    let flags: Vec<(u32, bool)> = rec
        .versions
        .iter()
        .map(|v| (v.source_version, v.retired))
        .collect();
    assert_eq!(flags, [(1, false), (2, true)]);
    assert_eq!(rec.current().map(|v| v.source_version), Some(1));

    apply_one(&s, retired("CEN00001", 1));
    let rec = package(&s, "CEN00001").unwrap();
    assert_eq!(
        rec.current(),
        None,
        "every version retired: none is current"
    );
    assert_eq!(rec.latest_number(), 2, "numbering goes on after the latest");
    assert_eq!(
        projection::manifest(&s, &manifest(b"v2").id()).unwrap(),
        Some(manifest(b"v2")),
        "a retired version's manifest stays"
    );
}

#[test]
fn retiring_an_unknown_version_or_package_changes_nothing_but_the_count() {
    let s = MemStore::default();
    apply_one(
        &s,
        published("CEN00001", "Tools", 1, Priority::Medium, b"v1"),
    );
    assert_changes_nothing_but_the_count(&s, retired("CEN00001", 4));
    assert_changes_nothing_but_the_count(&s, retired("CEN00002", 1));
}

// ---------------------------------------------------------------------------------------
// AdvertisementCreated, AdvertisementChanged, AdvertisementDisabled
// ---------------------------------------------------------------------------------------

#[test]
fn a_created_advert_is_recorded_and_only_this_sites_ids_move_the_next_number() {
    let s = MemStore::default();
    apply_one(
        &s,
        ConfigEvent::AdvertisementCreated(advert("CEN20001", "CEN00001")),
    );
    assert_eq!(
        projection::advert(&s, &adv_id("CEN20001")).unwrap(),
        Some(advert("CEN20001", "CEN00001"))
    );
    assert_eq!(meta(&s).next_advert, 20002);

    apply_one(
        &s,
        ConfigEvent::AdvertisementCreated(advert("TOP20009", "TOP00001")),
    );
    assert_eq!(
        projection::advert(&s, &adv_id("TOP20009")).unwrap(),
        Some(advert("TOP20009", "TOP00001"))
    );
    assert_eq!(meta(&s).next_advert, 20002, "another site's id");
    assert_eq!(row_count(&s, Table::Adverts), 2);
}

#[test]
fn a_changed_advert_replaces_the_old_one_whole() {
    let s = MemStore::default();
    apply_one(
        &s,
        ConfigEvent::AdvertisementCreated(advert("CEN20001", "CEN00001")),
    );
    let changed = Advertisement {
        name: "renamed".into(),
        collection: "Servers".into(),
        mandatory: vec![advert("CEN20001", "CEN00001").start],
        time_basis: TimeBasis::ClientLocal,
        ..advert("CEN20001", "CEN00001")
    };
    apply_one(&s, ConfigEvent::AdvertisementChanged(changed.clone()));
    assert_eq!(
        projection::advert(&s, &adv_id("CEN20001")).unwrap(),
        Some(changed)
    );
    assert_eq!(row_count(&s, Table::Adverts), 1);
    assert_eq!(meta(&s).next_advert, 20002);
}

#[test]
fn a_disabled_advert_is_kept_with_enabled_false() {
    let s = MemStore::default();
    apply_one(
        &s,
        ConfigEvent::AdvertisementCreated(advert("CEN20001", "CEN00001")),
    );
    apply_one(
        &s,
        ConfigEvent::AdvertisementDisabled {
            id: adv_id("CEN20001"),
        },
    );
    assert_eq!(
        projection::advert(&s, &adv_id("CEN20001")).unwrap(),
        Some(Advertisement {
            enabled: false,
            ..advert("CEN20001", "CEN00001")
        })
    );
}

#[test]
fn disabling_an_unknown_advert_changes_nothing_but_the_count() {
    let s = MemStore::default();
    apply_one(
        &s,
        ConfigEvent::AdvertisementCreated(advert("CEN20001", "CEN00001")),
    );
    assert_changes_nothing_but_the_count(
        &s,
        ConfigEvent::AdvertisementDisabled {
            id: adv_id("CEN20002"),
        },
    );
}

// ---------------------------------------------------------------------------------------
// DistributionTargetsAdded, DistributionTargetsRemoved
// ---------------------------------------------------------------------------------------

#[test]
fn added_targets_are_merged_without_duplicates_and_sorted() {
    let s = MemStore::default();
    apply_one(
        &s,
        targets_added(
            "CEN00001",
            vec![to_group("north"), to_site("S02"), to_site("S01")],
        ),
    );
    assert_eq!(
        targets(&s, "CEN00001"),
        [to_site("S01"), to_site("S02"), to_group("north")]
    );
    apply_one(
        &s,
        targets_added(
            "CEN00001",
            vec![to_site("S01"), to_dp("S01", "DP1"), to_dp("S01", "DP1")],
        ),
    );
    assert_eq!(
        targets(&s, "CEN00001"),
        [
            to_site("S01"),
            to_site("S02"),
            to_dp("S01", "DP1"),
            to_group("north")
        ]
    );
    assert!(targets(&s, "CEN00002").is_empty(), "per package");
}

#[test]
fn removed_targets_go_and_the_rest_stay_in_order() {
    let s = MemStore::default();
    apply_one(
        &s,
        targets_added(
            "CEN00001",
            vec![to_site("S01"), to_dp("S01", "DP1"), to_group("north")],
        ),
    );
    apply_one(
        &s,
        targets_removed("CEN00001", vec![to_dp("S01", "DP1"), to_site("S09")]),
    );
    assert_eq!(
        targets(&s, "CEN00001"),
        [to_site("S01"), to_group("north")],
        "a target the package does not have is ignored"
    );
    apply_one(
        &s,
        targets_removed("CEN00001", vec![to_site("S01"), to_group("north")]),
    );
    assert!(targets(&s, "CEN00001").is_empty());
    // Removing from a package without targets leaves it without targets.
    apply_one(&s, targets_removed("CEN00002", vec![to_site("S01")]));
    assert!(targets(&s, "CEN00002").is_empty());
    assert_eq!(meta(&s).events_applied, 4);
}

// ---------------------------------------------------------------------------------------
// CatalogDelta, SyncRequest
// ---------------------------------------------------------------------------------------

#[test]
fn a_catalog_delta_adds_and_revises_updates_and_sets_the_catalog_version() {
    let s = MemStore::default();
    apply_one(
        &s,
        delta(
            1,
            vec![
                CatalogChange::Added(update("KB1")),
                CatalogChange::Added(update("KB2")),
            ],
        ),
    );
    assert_eq!(catalog_entry(&s, "KB1"), Some(update("KB1")));
    assert_eq!(catalog_entry(&s, "KB2"), Some(update("KB2")));
    assert_eq!(meta(&s).catalog_version, 1);

    let revised = Update {
        title: "fix KB1, second revision".into(),
        revised: t0() + Duration::days(1),
        size: 12,
        ..update("KB1")
    };
    apply_one(&s, delta(2, vec![CatalogChange::Revised(revised.clone())]));
    assert_eq!(catalog_entry(&s, "KB1"), Some(revised));
    assert_eq!(catalog_entry(&s, "KB2"), Some(update("KB2")));
    assert_eq!(meta(&s).catalog_version, 2);
    assert_eq!(row_count(&s, Table::Catalog), 2);
}

#[test]
fn a_catalog_delta_marks_expired_and_superseded_updates() {
    let s = MemStore::default();
    apply_one(
        &s,
        delta(
            1,
            vec![
                CatalogChange::Added(update("KB1")),
                CatalogChange::Added(update("KB2")),
            ],
        ),
    );
    apply_one(
        &s,
        delta(
            2,
            vec![
                CatalogChange::Added(update("KB3")),
                CatalogChange::Expired { id: "KB1".into() },
                CatalogChange::Superseded {
                    id: "KB2".into(),
                    by: "KB3".into(),
                },
            ],
        ),
    );
    assert_eq!(
        catalog_entry(&s, "KB1"),
        Some(Update {
            expired: true,
            ..update("KB1")
        })
    );
    assert_eq!(
        catalog_entry(&s, "KB2"),
        Some(Update {
            superseded_by: Some("KB3".into()),
            ..update("KB2")
        })
    );
    assert_eq!(catalog_entry(&s, "KB3"), Some(update("KB3")));
    assert_eq!(meta(&s).catalog_version, 2);
}

#[test]
fn catalog_changes_to_unknown_updates_are_ignored() {
    let s = MemStore::default();
    apply_one(&s, delta(1, vec![CatalogChange::Added(update("KB1"))]));
    apply_one(
        &s,
        delta(
            2,
            vec![
                CatalogChange::Expired { id: "KB8".into() },
                CatalogChange::Superseded {
                    id: "KB9".into(),
                    by: "KB1".into(),
                },
            ],
        ),
    );
    assert_eq!(catalog_entry(&s, "KB8"), None);
    assert_eq!(catalog_entry(&s, "KB9"), None);
    assert_eq!(catalog_entry(&s, "KB1"), Some(update("KB1")));
    assert_eq!(row_count(&s, Table::Catalog), 1);
    assert_eq!(meta(&s).catalog_version, 2, "the version still moves");
}

#[test]
fn the_catalog_version_never_goes_back() {
    let s = MemStore::default();
    apply_one(&s, delta(3, vec![]));
    apply_one(&s, delta(2, vec![CatalogChange::Added(update("KB1"))]));
    assert_eq!(meta(&s).catalog_version, 3);
    assert_eq!(catalog_entry(&s, "KB1"), Some(update("KB1")));
}

#[test]
fn a_sync_request_records_the_highest_version_asked_for() {
    let s = MemStore::default();
    apply_one(&s, ConfigEvent::SyncRequest { catalog_version: 5 });
    assert_eq!(meta(&s).sync_requested, 5);
    apply_one(&s, ConfigEvent::SyncRequest { catalog_version: 3 });
    assert_eq!(
        meta(&s),
        Meta {
            sync_requested: 5,
            events_applied: 2,
            ..Meta::default()
        }
    );
    assert!(rows_but_meta(&s).is_empty());
}

// ---------------------------------------------------------------------------------------
// PackagePriorityChanged, SenderBoost
// ---------------------------------------------------------------------------------------

#[test]
fn a_priority_change_sets_the_package_priority() {
    let s = MemStore::default();
    apply_one(
        &s,
        published("CEN00001", "Tools", 1, Priority::Medium, b"v1"),
    );
    apply_one(
        &s,
        ConfigEvent::PackagePriorityChanged {
            package: pkg("CEN00001"),
            priority: Priority::High,
        },
    );
    let rec = package(&s, "CEN00001").unwrap();
    assert_eq!(rec.priority, Priority::High);
    assert_eq!(rec.versions.len(), 1, "versions untouched");
}

#[test]
fn a_priority_change_of_an_unknown_package_changes_nothing_but_the_count() {
    let s = MemStore::default();
    apply_one(
        &s,
        published("CEN00001", "Tools", 1, Priority::Medium, b"v1"),
    );
    assert_changes_nothing_but_the_count(
        &s,
        ConfigEvent::PackagePriorityChanged {
            package: pkg("CEN00002"),
            priority: Priority::High,
        },
    );
}

#[test]
fn a_sender_boost_changes_nothing_but_the_count() {
    let s = MemStore::default();
    apply_one(
        &s,
        published("CEN00001", "Tools", 1, Priority::Medium, b"v1"),
    );
    assert_changes_nothing_but_the_count(
        &s,
        ConfigEvent::SenderBoost {
            package: pkg("CEN00001"),
            until: Some(t0() + Duration::hours(2)),
        },
    );
    assert_changes_nothing_but_the_count(
        &s,
        ConfigEvent::SenderBoost {
            package: pkg("CEN00001"),
            until: None,
        },
    );
}

// ---------------------------------------------------------------------------------------
// DpGroupCreated, DpGroupMembersChanged
// ---------------------------------------------------------------------------------------

#[test]
fn a_created_group_is_empty_and_creating_it_again_keeps_its_members() {
    let s = MemStore::default();
    apply_one(
        &s,
        ConfigEvent::DpGroupCreated {
            group: "north".into(),
        },
    );
    assert_eq!(groups(&s).get("north"), Some(&vec![]));

    apply_one(&s, members_changed("north", vec![dp("S01", "DP1")], vec![]));
    assert_changes_nothing_but_the_count(
        &s,
        ConfigEvent::DpGroupCreated {
            group: "north".into(),
        },
    );
    assert_eq!(groups(&s).get("north"), Some(&vec![dp("S01", "DP1")]));
}

#[test]
fn member_changes_remove_then_add_and_keep_members_sorted_and_unique() {
    let s = MemStore::default();
    for g in ["north", "south"] {
        apply_one(&s, ConfigEvent::DpGroupCreated { group: g.into() });
    }
    apply_one(
        &s,
        members_changed(
            "north",
            vec![
                dp("S02", "DP1"),
                dp("S01", "DP2"),
                dp("S01", "DP1"),
                dp("S01", "DP2"),
            ],
            vec![],
        ),
    );
    assert_eq!(
        groups(&s).get("north"),
        Some(&vec![dp("S01", "DP1"), dp("S01", "DP2"), dp("S02", "DP1")])
    );

    // Removals go first: a DP both removed and added stays.
    apply_one(
        &s,
        members_changed(
            "north",
            vec![dp("S01", "DP1")],
            vec![dp("S01", "DP1"), dp("S02", "DP1"), dp("S09", "DP9")],
        ),
    );
    assert_eq!(
        groups(&s).get("north"),
        Some(&vec![dp("S01", "DP1"), dp("S01", "DP2")])
    );
    assert_eq!(
        groups(&s).get("south"),
        Some(&vec![]),
        "other groups untouched"
    );
}

#[test]
fn member_changes_of_an_unknown_group_change_nothing_but_the_count() {
    let s = MemStore::default();
    apply_one(
        &s,
        ConfigEvent::DpGroupCreated {
            group: "north".into(),
        },
    );
    assert_changes_nothing_but_the_count(
        &s,
        members_changed("south", vec![dp("S01", "DP1")], vec![]),
    );
    assert!(!groups(&s).contains_key("south"));
}

// ---------------------------------------------------------------------------------------
// Damaged records
// ---------------------------------------------------------------------------------------

#[test]
fn reads_report_a_record_that_does_not_decode() {
    let s = MemStore::default();
    s.put(Table::Meta, b"meta", b"garbage".to_vec()).unwrap();
    let d = damaged(projection::meta(&s));
    assert_eq!((d.table, d.key.as_str()), (Table::Meta, "meta"));
    assert!(
        matches!(d.source, DecodeError::Magic(m) if &m == b"ga"),
        "{d}"
    );
    assert!(d.to_string().contains("run `site-server rebuild`"), "{d}");

    // A well-formed record of the wrong type is damaged too.
    let wrong = encoding::encode(&"not a package record").unwrap();
    s.put(Table::Packages, b"CEN00001", wrong).unwrap();
    let d = damaged(projection::package(&s, &pkg("CEN00001")));
    assert_eq!((d.table, d.key.as_str()), (Table::Packages, "CEN00001"));
}

#[test]
fn apply_reports_a_damaged_record_it_reads_and_writes_nothing() {
    let garbage = b"SR\x01\x00\xff\xff\xff".to_vec();
    let cases: Vec<(Table, &[u8], ConfigEvent)> = vec![
        (
            Table::Meta,
            b"meta",
            ConfigEvent::SyncRequest { catalog_version: 1 },
        ),
        (
            Table::Packages,
            b"CEN00001",
            published("CEN00001", "Tools", 2, Priority::Medium, b"v2"),
        ),
        (Table::Packages, b"CEN00001", retired("CEN00001", 1)),
        (
            Table::Packages,
            b"CEN00001",
            ConfigEvent::PackagePriorityChanged {
                package: pkg("CEN00001"),
                priority: Priority::Low,
            },
        ),
        (
            Table::Adverts,
            b"CEN20001",
            ConfigEvent::AdvertisementDisabled {
                id: adv_id("CEN20001"),
            },
        ),
        (
            Table::Targets,
            b"CEN00001",
            targets_added("CEN00001", vec![to_site("S01")]),
        ),
        (
            Table::Targets,
            b"CEN00001",
            targets_removed("CEN00001", vec![to_site("S01")]),
        ),
        (
            Table::Catalog,
            b"KB1",
            delta(1, vec![CatalogChange::Expired { id: "KB1".into() }]),
        ),
        (
            Table::Catalog,
            b"KB1",
            delta(
                1,
                vec![CatalogChange::Superseded {
                    id: "KB1".into(),
                    by: "KB2".into(),
                }],
            ),
        ),
        (
            Table::DpGroups,
            b"groups",
            ConfigEvent::DpGroupCreated {
                group: "north".into(),
            },
        ),
        (
            Table::DpGroups,
            b"groups",
            members_changed("north", vec![dp("S01", "DP1")], vec![]),
        ),
    ];
    for (table, key, body) in cases {
        let s = MemStore::default();
        s.put(table, key, garbage.clone()).unwrap();
        let before = s.tables.borrow().clone();
        let d = damaged(apply(&s, code(OWN), &env(OWN, 1, body.clone())));
        assert_eq!(d.table, table, "{}", body.kind());
        assert_eq!(d.key.as_bytes(), key, "{}", body.kind());
        assert_eq!(
            *s.tables.borrow(),
            before,
            "{}: nothing written",
            body.kind()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------

/// A log with every kind of event, from this site and from its parent.
fn every_kind_log() -> Vec<EventEnvelope> {
    let changed = Advertisement {
        name: "renamed".into(),
        ..advert("CEN20001", "CEN00001")
    };
    vec![
        env(
            OWN,
            1,
            published("CEN00001", "Tools", 1, Priority::Medium, b"v1"),
        ),
        env(
            OWN,
            2,
            published("CEN00001", "Tools", 2, Priority::Medium, b"v2"),
        ),
        env(
            "TOP",
            1,
            published("TOP00001", "Theirs", 1, Priority::High, b"t1"),
        ),
        env(OWN, 3, retired("CEN00001", 1)),
        env(
            OWN,
            4,
            ConfigEvent::AdvertisementCreated(advert("CEN20001", "CEN00001")),
        ),
        env(
            "TOP",
            2,
            ConfigEvent::AdvertisementCreated(advert("TOP20001", "TOP00001")),
        ),
        env(OWN, 5, ConfigEvent::AdvertisementChanged(changed)),
        env(
            "TOP",
            3,
            ConfigEvent::AdvertisementDisabled {
                id: adv_id("TOP20001"),
            },
        ),
        env(
            OWN,
            6,
            ConfigEvent::DpGroupCreated {
                group: "north".into(),
            },
        ),
        env(
            OWN,
            7,
            members_changed("north", vec![dp("S01", "DP2"), dp("S01", "DP1")], vec![]),
        ),
        env(
            OWN,
            8,
            targets_added(
                "CEN00001",
                vec![to_group("north"), to_site("S01"), to_dp("S02", "DP1")],
            ),
        ),
        env(OWN, 9, targets_removed("CEN00001", vec![to_site("S01")])),
        env(
            "TOP",
            4,
            delta(
                1,
                vec![
                    CatalogChange::Added(update("KB1")),
                    CatalogChange::Added(update("KB2")),
                ],
            ),
        ),
        env(
            "TOP",
            5,
            delta(
                2,
                vec![
                    CatalogChange::Revised(Update {
                        title: "revised".into(),
                        ..update("KB1")
                    }),
                    CatalogChange::Expired { id: "KB1".into() },
                    CatalogChange::Superseded {
                        id: "KB2".into(),
                        by: "KB1".into(),
                    },
                ],
            ),
        ),
        env("TOP", 6, ConfigEvent::SyncRequest { catalog_version: 3 }),
        env(
            OWN,
            10,
            ConfigEvent::PackagePriorityChanged {
                package: pkg("CEN00001"),
                priority: Priority::Low,
            },
        ),
        env(
            OWN,
            11,
            ConfigEvent::SenderBoost {
                package: pkg("CEN00001"),
                until: None,
            },
        ),
        env(
            "TOP",
            7,
            ConfigEvent::SiteKeyDelegated(schema::trust::Delegation {
                site: code("CEN"),
                key: schema::trust::PublicKey([7; 32]),
                valid_from: 1,
            }),
        ),
        env("TOP", 8, ConfigEvent::SiteKeyRevoked { site: code("S01") }),
        env(
            "TOP",
            9,
            ConfigEvent::Checkpoint {
                issued: 9,
                expires: t0() + Duration::hours(24),
            },
        ),
        env(
            "TOP",
            10,
            ConfigEvent::CollectionSet(schema::machine::Collection {
                name: "web".into(),
                rules: vec![schema::machine::Rule::parse("os=linux").unwrap()],
                members: vec![],
            }),
        ),
        env(
            OWN,
            12,
            ConfigEvent::MachineApproved {
                site: code(OWN),
                name: "web-1".into(),
                key: schema::trust::PublicKey([9; 32]),
            },
        ),
        env(
            OWN,
            13,
            ConfigEvent::AutoApproval {
                site: code(OWN),
                enabled: true,
            },
        ),
        env(
            OWN,
            14,
            ConfigEvent::AdvertisementEnabled {
                id: adv_id("CEN20001"),
            },
        ),
    ]
}

#[test]
fn the_same_log_gives_the_same_bytes_in_two_fresh_stores() {
    let log = every_kind_log();
    let kinds: BTreeSet<&str> = log.iter().map(|e| e.body.kind()).collect();
    assert_eq!(
        kinds.len(),
        20,
        "the log has every kind of event: {kinds:?}"
    );

    let a = MemStore::default();
    let b = MemStore::default();
    apply_all(&a, &log);
    apply_all(&b, &log);
    assert_eq!(*a.tables.borrow(), *b.tables.borrow());

    // And the state is what the log says.
    assert_eq!(
        meta(&a),
        Meta {
            next_package: 2,
            next_advert: 20002,
            catalog_version: 2,
            sync_requested: 3,
            events_applied: log.len() as u64,
        }
    );
    let tables: BTreeSet<Table> = a.tables.borrow().keys().map(|(t, _)| *t).collect();
    assert_eq!(
        tables,
        Table::ALL.into_iter().collect(),
        "every table has rows"
    );
    let rec = package(&a, "CEN00001").unwrap();
    assert_eq!(rec.priority, Priority::Low);
    assert_eq!(rec.current().map(|v| v.source_version), Some(2));
    assert_eq!(
        targets(&a, "CEN00001"),
        [to_dp("S02", "DP1"), to_group("north")]
    );
    assert_eq!(
        groups(&a).get("north"),
        Some(&vec![dp("S01", "DP1"), dp("S01", "DP2")])
    );
    assert_eq!(
        projection::advert(&a, &adv_id("CEN20001"))
            .unwrap()
            .unwrap()
            .name,
        "renamed"
    );
    assert!(
        !projection::advert(&a, &adv_id("TOP20001"))
            .unwrap()
            .unwrap()
            .enabled
    );
    let kb1 = catalog_entry(&a, "KB1").unwrap();
    assert_eq!((kb1.title.as_str(), kb1.expired), ("revised", true));
    assert_eq!(
        catalog_entry(&a, "KB2").unwrap().superseded_by.as_deref(),
        Some("KB1")
    );
}

#[test]
fn replaying_a_log_again_changes_only_the_event_count() {
    // What `rebuild` would see if it replayed onto projections it had not cleared: every
    // record comes out as after one replay; only the count of events applied doubles.
    let log = every_kind_log();
    let once = MemStore::default();
    apply_all(&once, &log);
    let twice = MemStore::default();
    apply_all(&twice, &log);
    apply_all(&twice, &log);
    assert_eq!(meta(&twice).events_applied, 2 * log.len() as u64);
    assert_eq!(
        targets(&twice, "CEN00001"),
        [to_dp("S02", "DP1"), to_group("north")],
        "the removal comes after the addition again"
    );
    assert_eq!(rows_but_meta(&twice), rows_but_meta(&once));
}
