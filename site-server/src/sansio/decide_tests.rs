//! Tests of [`super::decide`]: for each decision, what it decides when it accepts (event,
//! status messages, answer) and each refusal it can give. They run over the in-memory
//! projections, and apply each decided event through [`projection::apply`] the way
//! `Db::append_own_at` does, so that a later decision sees the earlier ones.

use super::decide::{
    self, AdvertRequest, Ctx, DecideError, Decided, DistributeOutcome, DistributeRequest,
    PublishRequest, PublishTarget, Refusal,
};
use super::projection::{self, MemStore, PackageRecord, ProjError, Table};
use super::test_support::*;
use chrono::{Duration, NaiveDateTime};
use schema::advert::{Advertisement, ExitRules, Program, TimeBasis};
use schema::event::{ConfigEvent, DistributionTarget, DpRef, EventEnvelope, Priority};
use schema::manifest::{ChunkRef, EntryKind, FileEntry, Manifest};
use schema::report::{Attribute, Report, StatusMessage};
use schema::status::Severity;
use schema::{AdvertisementId, ChunkId, PackageId, SiteCode};
use std::collections::BTreeSet;
use std::convert::Infallible;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

type Outcome<T> = Result<Decided<T>, DecideError<Infallible>>;

fn naive(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

fn file(path: &str, parts: &[&[u8]]) -> FileEntry {
    FileEntry {
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
    }
}

/// Two files and three chunk references: `a.bin` is `tag`, `lib/b.bin` is `tag` then `tail`
/// (so `2 * tag.len() + 4` bytes).
fn manifest(tag: &[u8]) -> Manifest {
    Manifest {
        files: vec![file("a.bin", &[tag]), file("lib/b.bin", &[tag, b"tail"])],
    }
}

fn publish_req(target: PublishTarget, tag: &[u8]) -> PublishRequest {
    PublishRequest {
        target,
        priority: None,
        manifest: manifest(tag),
        new_chunks: 3,
    }
}

fn new_package(name: &str) -> PublishTarget {
    PublishTarget::New { name: name.into() }
}

fn program(name: &str) -> Program {
    Program {
        name: name.into(),
        command_line: "setup.exe /quiet".into(),
        exit: ExitRules::default(),
    }
}

fn advert_req(package: PackageId) -> AdvertRequest {
    AdvertRequest {
        name: None,
        package,
        program: program(" install "),
        collection: " All Desktops ".into(),
        start: None,
        mandatory: vec![],
        utc: false,
        run: Default::default(),
    }
}

fn sites(codes: &[&str]) -> BTreeSet<SiteCode> {
    codes.iter().map(|c| code(c)).collect()
}

fn dps(list: &[(&str, &str)]) -> BTreeSet<(SiteCode, String)> {
    list.iter().map(|(s, d)| (code(s), d.to_string())).collect()
}

fn distribute_req(package: PackageId, targets: Vec<DistributionTarget>) -> DistributeRequest {
    DistributeRequest { package, targets }
}

/// The decision, or a panic that says why there was none.
fn accepted<T>(r: Outcome<T>) -> Decided<T> {
    match r {
        Ok(d) => d,
        Err(e) => panic!("expected a decision, got: {e}"),
    }
}

/// The refusal, or a panic.
fn refused<T>(r: Outcome<T>) -> Refusal {
    match r {
        Ok(_) => panic!("expected a refusal, got a decision"),
        Err(DecideError::Refused(r)) => r,
        Err(DecideError::Proj(e)) => panic!("expected a refusal, got: {e}"),
    }
}

/// The text of a [`Refusal::Invalid`], or a panic.
fn invalid<T>(r: Outcome<T>) -> String {
    match refused(r) {
        Refusal::Invalid(m) => m,
        other => panic!("expected Refusal::Invalid, got {other:?}"),
    }
}

fn status(r: &Report) -> &StatusMessage {
    match r {
        Report::Status(m) => m,
        other => panic!("expected a status message, got {other:?}"),
    }
}

/// The ids of the status messages, in order.
fn ids(reports: &[Report]) -> Vec<u32> {
    reports.iter().map(|r| status(r).id).collect()
}

/// One site's projections in memory, with what it knows of its own log.
struct Site {
    store: MemStore,
    ctx: Ctx,
    seq: u64,
}

impl Site {
    /// Site `CEN`, at [`t0`], with nothing in its log.
    fn new() -> Self {
        Site {
            store: MemStore::default(),
            ctx: Ctx {
                site: code("CEN"),
                machine: "cen-host".into(),
                now: t0(),
            },
            seq: 0,
        }
    }

    /// Appends an event of this site, as `Db::append_own_at` does: the next sequence number,
    /// stamped with the decision's time, applied to the projections.
    fn apply_own(&mut self, body: ConfigEvent) {
        self.seq += 1;
        let env = EventEnvelope {
            origin: self.ctx.site,
            origin_seq: self.seq,
            time: self.ctx.now,
            body,
            sig: schema::trust::Signature::MISSING,
        };
        projection::apply(&self.store, self.ctx.site, &env).unwrap();
    }

    /// Applies what was decided: its event, if it has one.
    fn commit<T>(&mut self, d: &Decided<T>) {
        if let Some(body) = &d.event {
            self.apply_own(body.clone());
        }
    }

    /// Applies an event that another site decided (from the parent's log, say).
    fn receive(&self, origin: &str, seq: u64, body: ConfigEvent) {
        let env = EventEnvelope {
            origin: code(origin),
            origin_seq: seq,
            time: self.ctx.now,
            body,
            sig: schema::trust::Signature::MISSING,
        };
        projection::apply(&self.store, self.ctx.site, &env).unwrap();
    }

    /// Publishes a new package whose content is [`manifest`]`(tag)`, and applies it.
    fn publish_new(&mut self, name: &str, tag: &[u8]) -> PackageId {
        let d = accepted(decide::publish(
            &self.store,
            &self.ctx,
            &publish_req(new_package(name), tag),
        ));
        self.commit(&d);
        d.out.package
    }

    /// Publishes new content for `id`, and applies it; returns the version number.
    fn publish_again(&mut self, id: PackageId, tag: &[u8]) -> u32 {
        let d = accepted(decide::publish(
            &self.store,
            &self.ctx,
            &publish_req(PublishTarget::Existing(id), tag),
        ));
        self.commit(&d);
        d.out.source_version
    }

    fn create_group(&mut self, name: &str) {
        let d = accepted(decide::dp_group_create(&self.store, &self.ctx, name));
        self.commit(&d);
    }

    fn package(&self, id: PackageId) -> PackageRecord {
        projection::package(&self.store, &id).unwrap().unwrap()
    }

    fn targets(&self, id: PackageId) -> Vec<DistributionTarget> {
        projection::targets(&self.store, &id).unwrap()
    }

    fn group(&self, name: &str) -> Option<Vec<DpRef>> {
        projection::dp_groups(&self.store).unwrap().remove(name)
    }
}

/// Checks that a status message is stamped with the site, machine and time of `ctx`.
fn assert_stamped(m: &StatusMessage, ctx: &Ctx) {
    assert_eq!(m.site, ctx.site);
    assert_eq!(m.machine, ctx.machine);
    assert_eq!(m.time, ctx.now);
}

// ---------------------------------------------------------------------------------------
// publish
// ---------------------------------------------------------------------------------------

#[test]
fn publish_of_a_new_package_allocates_the_first_id_and_version_1() {
    let mut site = Site::new();
    let req = publish_req(new_package("  Tools  "), b"xxxxx");
    let d = accepted(decide::publish(&site.store, &site.ctx, &req));

    let out = &d.out;
    assert_eq!(out.package, pkg("CEN00001"));
    assert_eq!(out.name, "Tools", "the name is trimmed");
    assert_eq!(out.source_version, 1);
    assert_eq!(out.manifest_id, req.manifest.id());
    assert!(!out.unchanged);
    assert_eq!((out.files, out.size, out.chunks), (2, 14, 3));
    assert_eq!(out.new_chunks, 3);

    match &d.event {
        Some(ConfigEvent::PackageVersionPublished(v)) => {
            assert_eq!(v.package, pkg("CEN00001"));
            assert_eq!(v.name, "Tools");
            assert_eq!(v.source_version, 1);
            assert_eq!(v.priority, Priority::Medium, "the default priority");
            assert_eq!(v.manifest_id, req.manifest.id());
            assert_eq!(v.manifest, req.manifest);
        }
        other => panic!("expected a publish event, got {other:?}"),
    }

    assert_eq!(ids(&d.reports), [40100]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(m.severity, Severity::Info);
    assert_eq!(
        m.attributes,
        [
            Attribute::Package(pkg("CEN00001")),
            Attribute::SourceVersion(1)
        ]
    );
    assert_eq!(m.insertion, ["CEN00001", "Tools", "1", "2", "14", "3"]);
    assert_eq!(
        m.text(),
        "Package CEN00001 (Tools) version 1 published: 2 files, 14 bytes, 3 new chunks."
    );

    site.commit(&d);
    let rec = site.package(pkg("CEN00001"));
    assert_eq!(rec.name, "Tools");
    assert_eq!(rec.versions.len(), 1);
    assert_eq!(rec.versions[0].published, t0());
}

#[test]
fn publish_of_a_new_package_takes_the_requested_priority() {
    let site = Site::new();
    let req = PublishRequest {
        priority: Some(Priority::Low),
        ..publish_req(new_package("Tools"), b"x")
    };
    let d = accepted(decide::publish(&site.store, &site.ctx, &req));
    match d.event {
        Some(ConfigEvent::PackageVersionPublished(v)) => assert_eq!(v.priority, Priority::Low),
        other => panic!("expected a publish event, got {other:?}"),
    }
}

#[test]
fn publish_of_a_new_package_takes_the_number_after_this_sites_packages_only() {
    let mut site = Site::new();
    assert_eq!(site.publish_new("one", b"1"), pkg("CEN00001"));
    assert_eq!(site.publish_new("two", b"2"), pkg("CEN00002"));
    // A package of another site, with a higher number, does not move this site's counter.
    site.receive(
        "TOP",
        1,
        ConfigEvent::PackageVersionPublished(schema::event::PackageVersion {
            package: pkg("TOP00050"),
            name: "from the top".into(),
            source_version: 1,
            priority: Priority::High,
            manifest_id: manifest(b"t").id(),
            manifest: manifest(b"t"),
        }),
    );
    assert_eq!(site.publish_new("three", b"3"), pkg("CEN00003"));
}

#[test]
fn publish_of_new_content_for_a_package_makes_the_next_version_at_its_priority() {
    let mut site = Site::new();
    let req = PublishRequest {
        priority: Some(Priority::Low),
        ..publish_req(new_package("Tools"), b"v1")
    };
    let d = accepted(decide::publish(&site.store, &site.ctx, &req));
    site.commit(&d);
    let id = d.out.package;

    site.ctx.now = t0() + Duration::hours(1);
    let d = accepted(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(id), b"v2"),
    ));
    assert_eq!(d.out.source_version, 2);
    assert_eq!(d.out.name, "Tools");
    assert!(!d.out.unchanged);
    match &d.event {
        Some(ConfigEvent::PackageVersionPublished(v)) => {
            assert_eq!((v.package, v.source_version), (id, 2));
            assert_eq!(v.priority, Priority::Low, "the package's priority is kept");
            assert_eq!(v.manifest_id, manifest(b"v2").id());
        }
        other => panic!("expected a publish event, got {other:?}"),
    }
    assert_eq!(status(&d.reports[0]).insertion[2], "2");
    site.commit(&d);

    // A priority given with the publish replaces the package's.
    let req = PublishRequest {
        priority: Some(Priority::High),
        ..publish_req(PublishTarget::Existing(id), b"v3")
    };
    let d = accepted(decide::publish(&site.store, &site.ctx, &req));
    match &d.event {
        Some(ConfigEvent::PackageVersionPublished(v)) => {
            assert_eq!((v.source_version, v.priority), (3, Priority::High))
        }
        other => panic!("expected a publish event, got {other:?}"),
    }
    site.commit(&d);
    let rec = site.package(id);
    let versions: Vec<u32> = rec.versions.iter().map(|v| v.source_version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(rec.versions[1].published, t0() + Duration::hours(1));
    assert_eq!(rec.priority, Priority::High);
}

#[test]
fn publish_of_the_current_content_appends_nothing() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"same");
    let d = accepted(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(id), b"same"),
    ));
    assert!(d.event.is_none());
    assert!(d.reports.is_empty());
    assert!(d.out.unchanged);
    assert_eq!(d.out.source_version, 1);
    assert_eq!(d.out.new_chunks, 0, "nothing new when nothing changed");
    assert_eq!(d.out.manifest_id, manifest(b"same").id());
}

#[test]
fn publish_compares_with_the_current_version_not_with_retired_ones() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    assert_eq!(site.publish_again(id, b"y"), 2);
    let d = accepted(decide::retire(&site.store, &site.ctx, id, 2));
    site.commit(&d);

    // Version 1 is current again: its content is unchanged.
    let d = accepted(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(id), b"x"),
    ));
    assert!(d.out.unchanged);
    assert_eq!(d.out.source_version, 1);

    // The retired content is new again: it gets a version after the latest.
    let d = accepted(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(id), b"y"),
    ));
    assert!(!d.out.unchanged);
    assert_eq!(d.out.source_version, 3);
}

#[test]
fn publish_refuses_an_invalid_manifest() {
    let site = Site::new();
    let mut req = publish_req(new_package("Tools"), b"x");
    req.manifest.files.reverse();
    let m = invalid(decide::publish(&site.store, &site.ctx, &req));
    assert!(m.contains("\"a.bin\" twice or out of order"), "{m}");

    let mut req = publish_req(new_package("Tools"), b"x");
    req.manifest.files[0].path = "../escape".into();
    let m = invalid(decide::publish(&site.store, &site.ctx, &req));
    assert!(m.contains("not a clean relative path"), "{m}");
}

#[test]
fn publish_refuses_an_unusable_package_name() {
    let site = Site::new();
    for name in ["", "   ", "bad\nname", "tab\there", &"n".repeat(201)] {
        let m = invalid(decide::publish(
            &site.store,
            &site.ctx,
            &publish_req(new_package(name), b"x"),
        ));
        assert!(m.starts_with("package name"), "{m}");
        assert!(m.contains("1-200 printable characters"), "{m}");
    }
    // 200 characters, once trimmed, is still fine.
    let long = format!(" {} ", "n".repeat(200));
    let d = accepted(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(new_package(&long), b"x"),
    ));
    assert_eq!(d.out.name, "n".repeat(200));
}

#[test]
fn publish_refuses_an_unknown_package() {
    let mut site = Site::new();
    site.publish_new("Tools", b"x");
    let r = refused(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(pkg("CEN00009")), b"x"),
    ));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00009")));
    assert!(r.to_string().contains("site-server package list"));
}

#[test]
fn publish_refuses_a_package_of_another_site() {
    let site = Site::new();
    site.receive(
        "TOP",
        1,
        ConfigEvent::PackageVersionPublished(schema::event::PackageVersion {
            package: pkg("TOP00001"),
            name: "theirs".into(),
            source_version: 1,
            priority: Priority::Medium,
            manifest_id: manifest(b"t").id(),
            manifest: manifest(b"t"),
        }),
    );
    let r = refused(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(pkg("TOP00001")), b"mine"),
    ));
    assert_eq!(
        r,
        Refusal::NotOwner {
            package: pkg("TOP00001"),
            owner: code("TOP"),
        }
    );
    assert_eq!(
        r.to_string(),
        "package TOP00001 belongs to site TOP: publish its new versions at TOP"
    );
}

#[test]
fn publish_refuses_a_new_package_once_the_ids_are_used_up() {
    let mut site = Site::new();
    site.apply_own(ConfigEvent::PackageVersionPublished(
        schema::event::PackageVersion {
            package: pkg("CEN99999"),
            name: "last".into(),
            source_version: 1,
            priority: Priority::Medium,
            manifest_id: manifest(b"l").id(),
            manifest: manifest(b"l"),
        },
    ));
    let r = refused(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(new_package("one more"), b"x"),
    ));
    assert_eq!(r, Refusal::IdsExhausted(code("CEN"), "package"));
    assert_eq!(r.to_string(), "site CEN has used all 99999 package ids");
    // The last package can still get new versions.
    assert_eq!(site.publish_again(pkg("CEN99999"), b"x"), 2);
}

#[test]
fn decisions_report_a_damaged_projection_rather_than_guess() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.store
        .tables
        .borrow_mut()
        .insert((Table::Packages, b"CEN00001".to_vec()), b"garbage".to_vec());
    match decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(id), b"y"),
    ) {
        Err(DecideError::Proj(ProjError::Damaged(d))) => {
            assert_eq!(d.table, Table::Packages);
            assert_eq!(d.key, "CEN00001");
            assert!(d.to_string().contains("site-server rebuild"), "{d}");
        }
        Err(e) => panic!("expected a damaged projection, got {e}"),
        Ok(_) => panic!("expected a damaged projection, got a decision"),
    }
}

// ---------------------------------------------------------------------------------------
// create_advert
// ---------------------------------------------------------------------------------------

#[test]
fn create_advert_allocates_the_first_advert_id_and_fills_in_defaults() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.ctx.now = t0() + Duration::milliseconds(250);
    let d = accepted(decide::create_advert(
        &site.store,
        &site.ctx,
        &advert_req(id),
    ));
    let want = Advertisement {
        id: AdvertisementId {
            site: code("CEN"),
            number: 20001,
        },
        name: "CEN00001 - install".into(),
        package: id,
        program: program("install"),
        collection: "All Desktops".into(),
        start: naive("2026-11-21 10:00:00"),
        mandatory: vec![],
        time_basis: TimeBasis::ClientLocal,
        enabled: true,
        run: Default::default(),
    };
    assert_eq!(d.out, want, "trimmed names, start now to the second");
    assert_eq!(
        d.event,
        Some(ConfigEvent::AdvertisementCreated(want.clone()))
    );

    assert_eq!(ids(&d.reports), [40110]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(
        m.attributes,
        [
            Attribute::Advertisement(want.id),
            Attribute::Package(id),
            Attribute::Collection("All Desktops".into()),
        ]
    );
    assert_eq!(
        m.insertion,
        ["CEN20001", "CEN00001", "install", "All Desktops"]
    );

    site.commit(&d);
    assert_eq!(
        projection::advert(&site.store, &want.id).unwrap(),
        Some(want)
    );
}

#[test]
fn create_advert_takes_the_given_name_times_and_basis_and_numbers_on() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let first = accepted(decide::create_advert(
        &site.store,
        &site.ctx,
        &advert_req(id),
    ));
    site.commit(&first);

    let req = AdvertRequest {
        name: Some("Tools to desktops".into()),
        start: Some(naive("2026-12-01 08:00:00")),
        // A mandatory time equal to the start is allowed.
        mandatory: vec![naive("2026-12-01 08:00:00"), naive("2026-12-02 08:00:00")],
        utc: true,
        ..advert_req(id)
    };
    let d = accepted(decide::create_advert(&site.store, &site.ctx, &req));
    assert_eq!(d.out.id.to_string(), "CEN20002");
    assert_eq!(d.out.name, "Tools to desktops");
    assert_eq!(d.out.start, naive("2026-12-01 08:00:00"));
    assert_eq!(d.out.mandatory, req.mandatory);
    assert_eq!(d.out.time_basis, TimeBasis::Utc);
    assert!(d.out.enabled);
}

#[test]
fn create_advert_refuses_an_unknown_package() {
    let site = Site::new();
    let r = refused(decide::create_advert(
        &site.store,
        &site.ctx,
        &advert_req(pkg("CEN00001")),
    ));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00001")));
}

#[test]
fn create_advert_refuses_an_unusable_program_or_collection_name() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let req = AdvertRequest {
        program: program("  "),
        ..advert_req(id)
    };
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert!(m.starts_with("program name \"  \""), "{m}");

    let req = AdvertRequest {
        collection: "line\nbreak".into(),
        ..advert_req(id)
    };
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert!(m.starts_with("collection name \"line\\nbreak\""), "{m}");
}

#[test]
fn create_advert_refuses_an_empty_command_line() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let mut req = advert_req(id);
    req.program.command_line = " \t ".into();
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert_eq!(m, "the program's command line is empty: give --command");
}

#[test]
fn create_advert_refuses_exit_rules_that_contradict_themselves() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let mut req = advert_req(id);
    req.program.exit.success = vec![];
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert_eq!(m, "exit rules need at least one success code");

    let mut req = advert_req(id);
    req.program.exit.fail_reboot_required = vec![3010];
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert!(
        m.contains(
            "exit code 3010 is listed as both success-reboot-required and fail-reboot-required"
        ),
        "{m}"
    );
}

#[test]
fn create_advert_refuses_a_mandatory_time_before_the_start() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let req = AdvertRequest {
        start: Some(naive("2026-12-01 08:00:00")),
        mandatory: vec![naive("2026-12-02 08:00:00"), naive("2026-11-30 08:00:00")],
        ..advert_req(id)
    };
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert!(
        m.starts_with(
            "mandatory time 2026-11-30 08:00:00 is before the start time 2026-12-01 08:00:00"
        ),
        "{m}"
    );

    // Without a start, the start is now: a mandatory time in the past is refused.
    let req = AdvertRequest {
        mandatory: vec![naive("2026-11-21 09:59:59")],
        ..advert_req(id)
    };
    let m = invalid(decide::create_advert(&site.store, &site.ctx, &req));
    assert!(
        m.contains("before the start time 2026-11-21 10:00:00"),
        "{m}"
    );
}

#[test]
fn create_advert_refuses_once_the_advert_ids_are_used_up() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let last = Advertisement {
        id: AdvertisementId {
            site: code("CEN"),
            number: 99999,
        },
        ..accepted(decide::create_advert(
            &site.store,
            &site.ctx,
            &advert_req(id),
        ))
        .out
    };
    site.apply_own(ConfigEvent::AdvertisementCreated(last));
    let r = refused(decide::create_advert(
        &site.store,
        &site.ctx,
        &advert_req(id),
    ));
    assert_eq!(r, Refusal::IdsExhausted(code("CEN"), "advertisement"));
}

// ---------------------------------------------------------------------------------------
// distribute
// ---------------------------------------------------------------------------------------

#[test]
fn distribute_adds_each_new_target_and_reports_it() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.create_group("north");
    let targets = vec![to_group("north"), to_site("S02"), to_dp("S01", "DP2")];
    let d = accepted(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, targets.clone()),
        &sites(&["CEN", "S01", "S02"]),
        &dps(&[("S01", "DP1"), ("S01", "DP2")]),
    ));
    assert_eq!(
        d.event,
        Some(ConfigEvent::DistributionTargetsAdded {
            package: id,
            targets: targets.clone(),
        })
    );
    assert_eq!(
        d.out,
        DistributeOutcome {
            package: id,
            added: targets,
            already: vec![],
        }
    );

    assert_eq!(ids(&d.reports), [40120, 40120, 40120]);
    let msgs: Vec<&StatusMessage> = d.reports.iter().map(status).collect();
    assert_eq!(msgs[0].insertion, ["CEN00001", "dp-group north"]);
    assert_eq!(msgs[0].attributes, [Attribute::Package(id)]);
    assert_eq!(msgs[1].insertion, ["CEN00001", "site S02"]);
    assert_eq!(
        msgs[1].attributes,
        [
            Attribute::Package(id),
            Attribute::DestinationSite(code("S02"))
        ],
        "a site target names the destination site"
    );
    assert_eq!(msgs[2].insertion, ["CEN00001", "dp S01/DP2"]);
    assert_eq!(msgs[2].attributes, [Attribute::Package(id)]);
    assert_stamped(msgs[2], &site.ctx);

    site.commit(&d);
    assert_eq!(
        site.targets(id),
        [to_site("S02"), to_dp("S01", "DP2"), to_group("north")],
        "the projection keeps targets sorted"
    );
}

#[test]
fn distribute_appends_only_the_targets_not_already_there() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let known = sites(&["CEN", "S01", "S02"]);
    let d = accepted(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S01")]),
        &known,
        &dps(&[]),
    ));
    site.commit(&d);

    let d = accepted(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S01"), to_site("S02")]),
        &known,
        &dps(&[]),
    ));
    assert_eq!(d.out.added, [to_site("S02")]);
    assert_eq!(d.out.already, [to_site("S01")]);
    assert_eq!(
        d.event,
        Some(ConfigEvent::DistributionTargetsAdded {
            package: id,
            targets: vec![to_site("S02")],
        })
    );
    assert_eq!(ids(&d.reports), [40120]);
    site.commit(&d);

    // Everything is there already: nothing to append, nothing to report.
    let d = accepted(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S02"), to_site("S01")]),
        &known,
        &dps(&[]),
    ));
    assert!(d.event.is_none());
    assert!(d.reports.is_empty());
    assert!(d.out.added.is_empty());
    assert_eq!(d.out.already, [to_site("S02"), to_site("S01")]);
}

#[test]
fn distribute_appends_a_target_repeated_in_the_request_once() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let d = accepted(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S01"), to_site("S01")]),
        &sites(&["CEN", "S01"]),
        &dps(&[]),
    ));
    assert_eq!(d.out.added, [to_site("S01")]);
    assert_eq!(
        d.event,
        Some(ConfigEvent::DistributionTargetsAdded {
            package: id,
            targets: vec![to_site("S01")],
        })
    );
    assert_eq!(ids(&d.reports), [40120]);
}

#[test]
fn distribute_refuses_an_unknown_package() {
    let site = Site::new();
    let r = refused(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(pkg("CEN00004"), vec![to_site("CEN")]),
        &sites(&["CEN"]),
        &dps(&[]),
    ));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00004")));
}

#[test]
fn distribute_refuses_a_request_without_targets() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let m = invalid(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![]),
        &sites(&["CEN"]),
        &dps(&[]),
    ));
    assert_eq!(m, "no target given: say where with --site CODE");
}

#[test]
fn distribute_refuses_an_unknown_dp_group() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.create_group("north");
    let m = invalid(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_group("north"), to_group("south")]),
        &sites(&["CEN"]),
        &dps(&[]),
    ));
    assert!(
        m.starts_with("distribution point group \"south\" does not exist"),
        "{m}"
    );
    assert!(m.contains("site-server dp group create south"), "{m}");
}

#[test]
fn distribute_refuses_a_dp_its_known_site_has_not_reported() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let known = sites(&["CEN", "S01", "S02"]);
    let reported = dps(&[("S01", "DP1"), ("S01", "DP2"), ("S02", "DP7")]);
    let m = invalid(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_dp("S01", "DP9")]),
        &known,
        &reported,
    ));
    assert!(
        m.starts_with(
            "distribution point S01/DP9 is not known here (known at S01: S01/DP1, S01/DP2)"
        ),
        "{m}"
    );

    let m = invalid(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_dp("CEN", "DP1")]),
        &known,
        &reported,
    ));
    assert!(m.contains("(known at CEN: none)"), "{m}");
}

#[test]
fn distribute_refuses_a_site_outside_the_subtree() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let known = sites(&["CEN", "S01"]);
    let m = invalid(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S01"), to_site("X01")]),
        &known,
        &dps(&[]),
    ));
    assert!(
        m.starts_with("site X01 is not CEN or below it (known: CEN, S01)"),
        "{m}"
    );

    // A DP of an unknown site is refused for its site.
    let m = invalid(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_dp("X01", "DP1")]),
        &known,
        &dps(&[("X01", "DP1")]),
    ));
    assert!(m.starts_with("site X01 is not CEN or below it"), "{m}");
}

// ---------------------------------------------------------------------------------------
// undistribute
// ---------------------------------------------------------------------------------------

/// A site with package `CEN00001` targeted at site S01, DP S01/DP1 and group `north`.
fn site_with_targets() -> (Site, PackageId) {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.create_group("north");
    let d = accepted(decide::distribute(
        &site.store,
        &site.ctx,
        &distribute_req(
            id,
            vec![to_site("S01"), to_dp("S01", "DP1"), to_group("north")],
        ),
        &sites(&["CEN", "S01"]),
        &dps(&[("S01", "DP1")]),
    ));
    site.commit(&d);
    (site, id)
}

#[test]
fn undistribute_removes_targets_the_package_has() {
    let (mut site, id) = site_with_targets();
    let d = accepted(decide::undistribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_dp("S01", "DP1"), to_dp("S01", "DP1")]),
    ));
    assert_eq!(d.out, [to_dp("S01", "DP1")], "a repeated target once");
    assert_eq!(
        d.event,
        Some(ConfigEvent::DistributionTargetsRemoved {
            package: id,
            targets: vec![to_dp("S01", "DP1")],
        })
    );
    assert_eq!(ids(&d.reports), [40121]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(m.attributes, [Attribute::Package(id)]);
    assert_eq!(m.insertion, ["CEN00001", "dp S01/DP1"]);

    site.commit(&d);
    assert_eq!(site.targets(id), [to_site("S01"), to_group("north")]);
}

#[test]
fn undistribute_refuses_an_unknown_package() {
    let site = Site::new();
    let r = refused(decide::undistribute(
        &site.store,
        &site.ctx,
        &distribute_req(pkg("CEN00002"), vec![to_site("S01")]),
    ));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00002")));
}

#[test]
fn undistribute_refuses_a_request_without_targets() {
    let (site, id) = site_with_targets();
    let m = invalid(decide::undistribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![]),
    ));
    assert_eq!(
        m,
        "no target given: say which with --site, --dp or --dp-group"
    );
}

#[test]
fn undistribute_refuses_a_target_the_package_does_not_have() {
    let (site, id) = site_with_targets();
    let m = invalid(decide::undistribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S01"), to_site("S02")]),
    ));
    assert!(
        m.starts_with(
            "package CEN00001 is not targeted at site S02 (its targets: site S01, dp S01/DP1, dp-group north)"
        ),
        "{m}"
    );

    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let m = invalid(decide::undistribute(
        &site.store,
        &site.ctx,
        &distribute_req(id, vec![to_site("S01")]),
    ));
    assert!(m.contains("(its targets: none)"), "{m}");
}

// ---------------------------------------------------------------------------------------
// retire
// ---------------------------------------------------------------------------------------

#[test]
fn retire_withdraws_a_version_and_the_previous_becomes_current() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.publish_again(id, b"y");
    let d = accepted(decide::retire(&site.store, &site.ctx, id, 2));
    assert_eq!(
        d.event,
        Some(ConfigEvent::PackageVersionRetired {
            package: id,
            source_version: 2,
        })
    );
    assert_eq!(ids(&d.reports), [40101]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(
        m.attributes,
        [Attribute::Package(id), Attribute::SourceVersion(2)]
    );
    assert_eq!(m.insertion, ["CEN00001", "2"]);

    site.commit(&d);
    let rec = site.package(id);
    assert!(rec.versions[1].retired);
    assert_eq!(rec.current().map(|v| v.source_version), Some(1));
    assert_eq!(rec.latest_number(), 2);
}

#[test]
fn retire_refuses_an_unknown_package() {
    let site = Site::new();
    let r = refused(decide::retire(&site.store, &site.ctx, pkg("CEN00001"), 1));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00001")));
}

#[test]
fn retire_refuses_a_version_the_package_does_not_have() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    site.publish_again(id, b"y");
    for v in [0, 3, 5] {
        let m = invalid(decide::retire(&site.store, &site.ctx, id, v));
        assert!(
            m.starts_with(&format!(
                "package CEN00001 has no version {v} (it has 1 to 2)"
            )),
            "{m}"
        );
    }
}

#[test]
fn retire_refuses_a_version_already_retired() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let d = accepted(decide::retire(&site.store, &site.ctx, id, 1));
    site.commit(&d);
    let m = invalid(decide::retire(&site.store, &site.ctx, id, 1));
    assert_eq!(m, "package CEN00001 version 1 is already retired");
}

// ---------------------------------------------------------------------------------------
// boost
// ---------------------------------------------------------------------------------------

#[test]
fn boost_until_a_time_raises_a_warning_naming_it() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let until = t0() + Duration::hours(2);
    let d = accepted(decide::boost(&site.store, &site.ctx, id, Some(until)));
    assert_eq!(
        d.event,
        Some(ConfigEvent::SenderBoost {
            package: id,
            until: Some(until),
        })
    );
    assert_eq!(ids(&d.reports), [40130]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(m.severity, Severity::Warning);
    assert_eq!(m.attributes, [Attribute::Package(id)]);
    assert_eq!(m.insertion, ["CEN00001", "2026-11-21T12:00:00+00:00"]);
}

#[test]
fn boost_without_an_end_lasts_until_lifted() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let d = accepted(decide::boost(&site.store, &site.ctx, id, None));
    assert_eq!(
        d.event,
        Some(ConfigEvent::SenderBoost {
            package: id,
            until: None,
        })
    );
    assert_eq!(
        status(&d.reports[0]).text(),
        "Emergency: package CEN00001 ignores the schedules and rate limits of every link until it is lifted."
    );
}

#[test]
fn boost_refuses_an_unknown_package() {
    let site = Site::new();
    let r = refused(decide::boost(&site.store, &site.ctx, pkg("CEN00003"), None));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00003")));
}

// ---------------------------------------------------------------------------------------
// set_priority
// ---------------------------------------------------------------------------------------

#[test]
fn set_priority_changes_the_package_priority_for_later_versions() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let d = accepted(decide::set_priority(
        &site.store,
        &site.ctx,
        id,
        Priority::High,
    ));
    assert_eq!(
        d.event,
        Some(ConfigEvent::PackagePriorityChanged {
            package: id,
            priority: Priority::High,
        })
    );
    assert_eq!(ids(&d.reports), [40131]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(m.attributes, [Attribute::Package(id)]);
    assert_eq!(m.insertion, ["CEN00001", "high"]);

    site.commit(&d);
    assert_eq!(site.package(id).priority, Priority::High);
    let d = accepted(decide::publish(
        &site.store,
        &site.ctx,
        &publish_req(PublishTarget::Existing(id), b"y"),
    ));
    match d.event {
        Some(ConfigEvent::PackageVersionPublished(v)) => assert_eq!(v.priority, Priority::High),
        other => panic!("expected a publish event, got {other:?}"),
    }
}

#[test]
fn set_priority_to_the_current_priority_appends_nothing() {
    let mut site = Site::new();
    let id = site.publish_new("Tools", b"x");
    let d = accepted(decide::set_priority(
        &site.store,
        &site.ctx,
        id,
        Priority::Medium,
    ));
    assert!(d.event.is_none());
    assert!(d.reports.is_empty());
}

#[test]
fn set_priority_refuses_an_unknown_package() {
    let site = Site::new();
    let r = refused(decide::set_priority(
        &site.store,
        &site.ctx,
        pkg("CEN00001"),
        Priority::Low,
    ));
    assert_eq!(r, Refusal::UnknownPackage(pkg("CEN00001")));
}

// ---------------------------------------------------------------------------------------
// DP groups
// ---------------------------------------------------------------------------------------

#[test]
fn group_names_are_1_to_32_letters_digits_dashes_underscores_or_dots() {
    for ok in ["a", "north", "eu-west_2.b", &"g".repeat(32)] {
        assert_eq!(decide::check_group_name(ok), Ok(()), "{ok}");
    }
    for bad in ["", "has space", "a/b", "nörd", "tab\t", &"g".repeat(33)] {
        let r = decide::check_group_name(bad);
        assert_eq!(
            r,
            Err(Refusal::Invalid(format!(
                "group name {bad:?} is not valid: use 1 to 32 letters, digits, '-', '_' or '.'"
            )))
        );
    }
}

#[test]
fn dp_group_create_makes_an_empty_group() {
    let mut site = Site::new();
    let d = accepted(decide::dp_group_create(&site.store, &site.ctx, "north"));
    assert_eq!(
        d.event,
        Some(ConfigEvent::DpGroupCreated {
            group: "north".into(),
        })
    );
    assert_eq!(ids(&d.reports), [40140]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert!(m.attributes.is_empty());
    assert_eq!(m.insertion, ["north"]);

    site.commit(&d);
    assert_eq!(site.group("north"), Some(vec![]));
}

#[test]
fn dp_group_create_refuses_an_invalid_name() {
    let site = Site::new();
    let m = invalid(decide::dp_group_create(&site.store, &site.ctx, "bad name"));
    assert!(m.starts_with("group name \"bad name\" is not valid"), "{m}");
}

#[test]
fn dp_group_create_refuses_a_group_that_exists() {
    let mut site = Site::new();
    site.create_group("north");
    let m = invalid(decide::dp_group_create(&site.store, &site.ctx, "north"));
    assert_eq!(
        m,
        "distribution point group \"north\" exists already: see `site-server dp group list`"
    );
}

#[test]
fn dp_group_change_adds_known_dps_and_says_how_many_packages_follow() {
    let mut site = Site::new();
    site.create_group("north");
    let known = dps(&[("S01", "DP1"), ("S01", "DP2"), ("S02", "DP1")]);
    let add = [dp("S02", "DP1"), dp("S01", "DP1")];
    let d = accepted(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &add,
        &[],
        &known,
        3,
    ));
    assert_eq!(
        d.event,
        Some(ConfigEvent::DpGroupMembersChanged {
            group: "north".into(),
            added: add.to_vec(),
            removed: vec![],
        })
    );
    assert_eq!(ids(&d.reports), [40141, 40141]);
    let m = status(&d.reports[0]);
    assert_stamped(m, &site.ctx);
    assert_eq!(m.insertion, ["north", "S02/DP1", "3"]);
    assert_eq!(status(&d.reports[1]).insertion, ["north", "S01/DP1", "3"]);

    site.commit(&d);
    assert_eq!(
        site.group("north"),
        Some(vec![dp("S01", "DP1"), dp("S02", "DP1")])
    );
}

#[test]
fn dp_group_change_removes_members_and_skips_members_added_again() {
    let mut site = Site::new();
    site.create_group("north");
    let known = dps(&[("S01", "DP1"), ("S01", "DP2"), ("S02", "DP1")]);
    let d = accepted(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[dp("S01", "DP1"), dp("S02", "DP1")],
        &[],
        &known,
        0,
    ));
    site.commit(&d);

    let d = accepted(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[dp("S01", "DP1"), dp("S01", "DP2")],
        &[dp("S02", "DP1")],
        &known,
        2,
    ));
    assert_eq!(
        d.event,
        Some(ConfigEvent::DpGroupMembersChanged {
            group: "north".into(),
            added: vec![dp("S01", "DP2")],
            removed: vec![dp("S02", "DP1")],
        })
    );
    assert_eq!(ids(&d.reports), [40141, 40142]);
    assert_eq!(status(&d.reports[0]).insertion, ["north", "S01/DP2", "2"]);
    assert_eq!(status(&d.reports[1]).insertion, ["north", "S02/DP1"]);

    site.commit(&d);
    assert_eq!(
        site.group("north"),
        Some(vec![dp("S01", "DP1"), dp("S01", "DP2")])
    );
}

#[test]
fn dp_group_change_with_nothing_to_change_appends_nothing() {
    let mut site = Site::new();
    site.create_group("north");
    let known = dps(&[("S01", "DP1")]);
    let d = accepted(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[dp("S01", "DP1")],
        &[],
        &known,
        0,
    ));
    site.commit(&d);

    for add in [vec![dp("S01", "DP1")], vec![]] {
        let d = accepted(decide::dp_group_change(
            &site.store,
            &site.ctx,
            "north",
            &add,
            &[],
            &known,
            0,
        ));
        assert!(d.event.is_none());
        assert!(d.reports.is_empty());
    }
}

#[test]
fn dp_group_change_removes_a_member_that_is_no_longer_known() {
    let mut site = Site::new();
    site.create_group("north");
    let d = accepted(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[dp("S01", "DP1")],
        &[],
        &dps(&[("S01", "DP1")]),
        0,
    ));
    site.commit(&d);

    // The DP is gone from its site's reports: it can still leave the group.
    let d = accepted(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[],
        &[dp("S01", "DP1")],
        &dps(&[]),
        0,
    ));
    site.commit(&d);
    assert_eq!(site.group("north"), Some(vec![]));
}

#[test]
fn dp_group_change_refuses_an_unknown_group() {
    let mut site = Site::new();
    site.create_group("north");
    let m = invalid(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "south",
        &[dp("S01", "DP1")],
        &[],
        &dps(&[("S01", "DP1")]),
        0,
    ));
    assert_eq!(
        m,
        "distribution point group \"south\" does not exist: create it with `site-server dp group create south`"
    );
}

#[test]
fn dp_group_change_refuses_to_add_a_dp_not_reported_in_the_subtree() {
    let mut site = Site::new();
    site.create_group("north");
    let m = invalid(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[dp("S01", "DP1"), dp("S03", "DP1")],
        &[],
        &dps(&[("S01", "DP1"), ("S02", "DP1")]),
        0,
    ));
    assert!(
        m.starts_with("distribution point S03/DP1 is not known here"),
        "{m}"
    );
    assert_eq!(site.group("north"), Some(vec![]));
}

#[test]
fn dp_group_change_refuses_to_remove_a_dp_that_is_not_a_member() {
    let mut site = Site::new();
    site.create_group("north");
    let m = invalid(decide::dp_group_change(
        &site.store,
        &site.ctx,
        "north",
        &[],
        &[dp("S01", "DP1")],
        &dps(&[("S01", "DP1")]),
        0,
    ));
    assert_eq!(
        m,
        "distribution point S01/DP1 is not in group \"north\": see `site-server dp group list`"
    );
}
