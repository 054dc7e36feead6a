//! `bench trust`: what origin signatures cost.
//!
//! 1. Events applied per second at a child: `--events` signed events of the top (small
//!    advertisements, after the top's genesis and its delegation of the child's key), applied
//!    to a fresh child database in batches of 256 (a link's batch) by
//!    `Db::apply_parent_batch`, which checks each event's signature, its origin's authority
//!    and the order of its numbers, and by `Db::apply_parent_batch_unchecked`, the same
//!    transaction without the check (the `bench-unchecked` feature of this one build). Runs
//!    alternate; medians and their ratio are printed (target: checked >= 90% of unchecked).
//! 2. Small-event latency CEN -> S01 (three tiers of real processes on 127.0.0.1): an
//!    advertisement created at CEN until S01 lists it (target p50 < 50 ms).
//! 3. The Debian main catalog (one delta event of every record): signing it and verifying it,
//!    as the top and every site below do (target: < 50 ms each).

use crate::replicate::{cli, event_latency, three_tiers};
use crate::{median, site_server};
use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use schema::advert::{Advertisement, ExitRules, Program, TimeBasis};
use schema::event::{ConfigEvent, EventEnvelope};
use schema::trust::{Delegation, KeyRing, PublicKey};
use schema::{AdvertisementId, SiteCode};
use site_server::db::{Db, Trust};
use std::path::Path;
use std::time::{Duration, Instant};

const BATCH: usize = 256;
// (The link's batch: `site_server::net`'s, which is not public.)

fn key(site: &str) -> SigningKey {
    SigningKey::from_bytes(blake3::hash(site.as_bytes()).as_bytes())
}

fn code(s: &str) -> SiteCode {
    SiteCode::new(s).expect("site code")
}

/// The top's log: its genesis, its delegation of P01, then `n` small advertisements.
fn top_log(n: usize) -> Result<Vec<EventEnvelope>> {
    let cen = key("CEN");
    let now = chrono::Utc::now();
    let delegate = |site: &str| {
        ConfigEvent::SiteKeyDelegated(Delegation {
            site: code(site),
            key: PublicKey::of(&key(site)),
            valid_from: 1,
        })
    };
    let mut out = vec![
        EventEnvelope::signed(code("CEN"), 1, now, delegate("CEN"), &cen)?,
        EventEnvelope::signed(code("CEN"), 2, now, delegate("P01"), &cen)?,
    ];
    for i in 0..n {
        let id = AdvertisementId {
            site: code("CEN"),
            number: AdvertisementId::FIRST_NUMBER + (i % 70_000) as u32,
        };
        let advert = Advertisement {
            id,
            name: format!("CEN00001 - Install {i}"),
            package: "CEN00001".parse()?,
            program: Program {
                name: "Install".into(),
                command_line: "install.sh --quiet".into(),
                exit: ExitRules {
                    success: vec![0],
                    success_reboot_required: vec![3010],
                    fail_reboot_required: vec![],
                    already_installed: vec![],
                    not_applicable: vec![],
                    always_reboot: false,
                },
            },
            collection: "All Systems".into(),
            start: now.naive_utc(),
            mandatory: vec![],
            time_basis: TimeBasis::Utc,
            enabled: true,
            run: Default::default(),
        };
        out.push(EventEnvelope::signed(
            code("CEN"),
            3 + i as u64,
            now,
            ConfigEvent::AdvertisementCreated(advert),
            &cen,
        )?);
    }
    Ok(out)
}

/// CPU seconds (user + system) this process has used.
fn cpu_secs() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Events per second applying `log` to a fresh P01 database, checked or not, and the cores
/// kept busy meanwhile (CPU seconds over wall seconds).
fn apply_rate(dir: &Path, log: &[EventEnvelope], checked: bool) -> Result<(f64, f64)> {
    let _ = std::fs::remove_dir_all(dir);
    let db = Db::open(
        dir,
        code("P01"),
        false,
        Trust {
            signer: key("P01"),
            root_key: Some(PublicKey::of(&key("CEN"))),
        },
    )?;
    let below = Default::default();
    let now = chrono::Utc::now();
    let t = Instant::now();
    let cpu = cpu_secs();
    for (i, batch) in log.chunks(BATCH).enumerate() {
        let first = (i * BATCH) as u64 + 1;
        let o = if checked {
            db.apply_parent_batch(first, batch, &below, now, |_| None)?
        } else {
            db.apply_parent_batch_unchecked(first, batch, &below, now)?
        };
        if o.applied != batch.len() as u64 {
            bail!(
                "a batch applied {} of {} events: {o:?}",
                o.applied,
                batch.len()
            );
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let busy = (cpu_secs() - cpu) / secs;
    if db.counts()?.config_events != log.len() as u64 {
        bail!("not every event was applied");
    }
    Ok((log.len() as f64 / secs, busy))
}

/// (sign ms, verify ms, event bytes, records) of one delta event of the whole `index`.
fn catalog_delta(index: &Path) -> Result<(f64, f64, usize, usize)> {
    use schema::catalog::{CatalogChange, CatalogDelta, Classification};
    use site_server::sansio::catalog_plan::{parse_apt, AptSource};
    let text = site_server::catalog::sources::read_text(index).map_err(anyhow::Error::msg)?;
    let src = AptSource {
        classification: Classification::Update,
        product: "Debian 12".into(),
        now: chrono::Utc::now(),
    };
    let updates = parse_apt(&text, &src).map_err(anyhow::Error::msg)?;
    let records = updates.len();
    let body = ConfigEvent::CatalogDelta(CatalogDelta {
        catalog_version: 1,
        source: "debian".into(),
        changes: updates.into_iter().map(CatalogChange::Added).collect(),
    });
    let cen = key("CEN");
    let ring = KeyRing::with_root(code("CEN"), PublicKey::of(&cen));
    let (mut sign, mut verify) = (vec![], vec![]);
    let mut bytes = 0;
    for _ in 0..5 {
        let body = body.clone();
        let t = Instant::now();
        let env = EventEnvelope::signed(code("CEN"), 2, chrono::Utc::now(), body, &cen)?;
        sign.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = schema::encoding::encode(&env)?.len();
        let t = Instant::now();
        site_server::sansio::trust::verify_event(&ring, &env).map_err(anyhow::Error::msg)?;
        verify.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(sign), median(verify), bytes, records))
}

pub fn run(work: &Path, events: usize, runs: usize, latency: usize, index: &Path) -> Result<()> {
    std::fs::create_dir_all(work)?;
    let log = top_log(events)?;
    println!(
        "run  checked events/s (cores busy)  unchecked events/s (cores busy)  checked/unchecked"
    );
    let (mut checked, mut unchecked, mut ratios) = (vec![], vec![], vec![]);
    for run in 0..runs {
        // Alternate which goes first, so neither always has the warmer page cache.
        let (c, u) = if run % 2 == 0 {
            let c = apply_rate(&work.join("checked"), &log, true)?;
            (c, apply_rate(&work.join("unchecked"), &log, false)?)
        } else {
            let u = apply_rate(&work.join("unchecked"), &log, false)?;
            (apply_rate(&work.join("checked"), &log, true)?, u)
        };
        let ((c, cb), (u, ub)) = (c, u);
        println!(
            "{run:>3}  {c:>16.0} ({cb:>4.2})  {u:>24.0} ({ub:>4.2})  {:>17.3}",
            c / u
        );
        checked.push(c);
        unchecked.push(u);
        ratios.push(c / u);
    }

    // The check alone, on one core: expected keys, signed bytes and batch verification.
    let ring = KeyRing::new(PublicKey::of(&key("CEN")));
    let t = Instant::now();
    for batch in log.chunks(BATCH) {
        let expected = site_server::sansio::trust::expected_keys(&ring, batch);
        let v = site_server::sansio::trust::verify_expected(batch, &expected);
        if v.iter().any(Option::is_none) {
            bail!("a signature of the benchmark's log does not verify");
        }
    }
    let check_alone = t.elapsed().as_secs_f64() * 1e6 / log.len() as f64;

    let ss = site_server()?;
    let root = work.join("sites");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let (cen, _p01, s01) = three_tiers(&ss, &root)?;
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("install.sh"), b"#!/bin/sh\nexit 0\n")?;
    cli(
        &ss,
        &[
            "package",
            "publish",
            "--data",
            cen.data_str(),
            "--source",
            src.to_str().context("path")?,
            "--name",
            "Small",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let mut lat = vec![];
    for i in 0..latency {
        lat.push(event_latency(&ss, &cen, &s01, "CEN00001", i)?);
    }
    lat.sort_by(f64::total_cmp);

    let delta = if index.is_file() {
        Some(catalog_delta(index)?)
    } else {
        eprintln!(
            "{} is missing: the catalog delta is not timed (run `apt-get update` or give --index FILE)",
            index.display()
        );
        None
    };

    println!();
    println!(
        "summary (medians of {runs} runs, {} events each)",
        log.len()
    );
    println!(
        "  events applied at a child: checked {:.0}/s, unchecked {:.0}/s: ratio {:.3} (target >= 0.90)",
        median(checked),
        median(unchecked),
        median(ratios)
    );
    println!(
        "  the check alone (batch verification on one core): {check_alone:.1} us per event; it runs beside each batch's transaction"
    );
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "  small event CEN -> S01 (3 tiers), {} events: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (target p50 < 50 ms)",
        lat.len(),
        pct(0.5),
        pct(0.9),
        lat[lat.len() - 1]
    );
    if let Some((s, v, bytes, records)) = delta {
        println!(
            "  Debian main catalog delta ({records} records, one event of {:.1} MiB): sign {s:.1} ms, verify {v:.1} ms (target < 50 ms each)",
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
