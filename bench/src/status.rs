//! `bench status`: status at the scale of a big tree. A real top site (CEN) with one real
//! child link: this benchmark dials CEN as its child P01 (with P01's own certificate and
//! origin key, from a data directory `site-server init` made) and replays, through that
//! link, the reports of a subtree of `sites` sites: P01's report of its children, its key
//! delegations, then `messages` signed status messages (senders, DPs, catalog, machines) over
//! the last 7 days. CEN checks, stores, indexes and rolls up each one as it would from a real
//! child. Then it times `status messages --id 3532 --since 1h`, `status packages`, `status
//! sync` and `status adverts` (API answers, medians of 5), prints the log's size on disk and
//! the time of a rebuild, and finally simulates a week of traffic against retention
//! (`[reports] keep`), printing the log's size day by day.

use crate::replicate::{bins, cli};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration as Days, Utc};
use ed25519_dalek::SigningKey;
use schema::report::{Attribute, KeyReport, Report, ReportEnvelope, SiteData, StatusMessage};
use schema::status;
use schema::trust::{Delegation, PublicKey};
use schema::wire::Frame;
use schema::{PackageId, SiteCode};
use sender::link::{FrameReader, FrameWriter};
use site_server::harness::{link_child, LocalSite};
use site_server::site::dir_bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sub_key(code: SiteCode) -> SigningKey {
    SigningKey::from_bytes(blake3::hash(code.as_bytes().as_slice()).as_bytes())
}

/// Message `i` of the stream, raised at `site` at `time`: a mix like a big tree's (sender
/// progress and errors, DP installs, catalog versions, machines running advertisements).
fn message(
    i: u64,
    site: SiteCode,
    time: DateTime<Utc>,
    packages: &[PackageId],
    adverts: &[schema::AdvertisementId],
) -> StatusMessage {
    let pkg = packages[(i / 7) as usize % packages.len()];
    let (id, attrs, ins): (u32, Vec<Attribute>, Vec<String>) = match i % 10 {
        0..=2 => (
            status::SENDER_PROGRESS,
            vec![
                Attribute::Package(pkg),
                Attribute::SourceVersion(1),
                Attribute::DestinationSite(site),
            ],
            vec![
                pkg.to_string(),
                "1".into(),
                site.to_string(),
                format!("{}", i % 100),
            ],
        ),
        3 => (
            status::SENDER_ERROR,
            vec![
                Attribute::Package(pkg),
                Attribute::SourceVersion(1),
                Attribute::DestinationSite(site),
            ],
            vec![
                pkg.to_string(),
                "1".into(),
                site.to_string(),
                "timed out".into(),
            ],
        ),
        4 => (
            status::SENDER_COMPLETE,
            vec![
                Attribute::Package(pkg),
                Attribute::SourceVersion(1),
                Attribute::DestinationSite(site),
            ],
            vec![pkg.to_string(), "1".into(), site.to_string()],
        ),
        5 => (
            status::DP_DISTRIBUTION_COMPLETE,
            vec![
                Attribute::Package(pkg),
                Attribute::SourceVersion(1),
                Attribute::DistributionPoint(format!("{site}/DP{}", i % 3)),
            ],
            vec![pkg.to_string(), "1".into(), format!("DP{}", i % 3)],
        ),
        6 => (
            status::CATALOG_VERSION_APPLIED,
            vec![Attribute::CatalogVersion(1 + i / 100_000)],
            vec![format!("{}", 1 + i / 100_000), "10".into(), "CEN".into()],
        ),
        k => {
            let adv = adverts[(i / 10) as usize % adverts.len()];
            let id = [
                status::PROGRAM_RECEIVED,
                status::PROGRAM_STARTED,
                status::PROGRAM_SUCCEEDED,
            ][(k - 7) as usize];
            (
                id,
                vec![Attribute::Advertisement(adv), Attribute::Rerun(0)],
                vec![adv.to_string(), "Install".into(), "0".into()],
            )
        }
    };
    let machine = format!("m{}", (i / 10) % 50);
    let mut m = StatusMessage::new(id, site, machine, time, attrs, ins);
    m.time = time;
    m
}

/// What the replayed messages are about, and when they were raised.
struct Stream {
    messages: u64,
    packages: Vec<PackageId>,
    adverts: Vec<schema::AdvertisementId>,
    start: DateTime<Utc>,
    span: Days,
}

/// Replays the subtree's reports into CEN through a child link, as P01.
async fn replay(cen: &LocalSite, p01: &LocalSite, subs: &[SiteCode], st: &Stream) -> Result<f64> {
    let (messages, start, span) = (st.messages, st.start, st.span);
    let (packages, adverts) = (&st.packages[..], &st.adverts[..]);
    let me = sender::tls::TlsIdentity::load(p01.data())?;
    let (fp, _) = cen.keys()?;
    let pins = sender::tls::Pins::new();
    pins.insert(&fp, "CEN");
    let mut endpoint = sender::socket::endpoint("127.0.0.1:0".parse()?, None)?;
    endpoint.set_default_client_config(sender::tls::client_config(&me, pins)?);
    let addr: std::net::SocketAddr = cen.listen_addr()?.parse()?;
    let conn = endpoint.connect(addr, sender::tls::SERVER_NAME)?.await?;
    let (send, recv) = conn.open_bi().await?;
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    w.send(&Frame::Hello {
        site: SiteCode::new("P01")?,
        config_applied: 0,
        reports_acked: 0,
    })
    .await?;
    // CEN's events and acknowledgements: the events are read and dropped, the acks counted.
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = acked.clone();
    tokio::spawn(async move {
        while let Ok(f) = r.recv().await {
            if let Frame::ReportsAck { upto } = f {
                seen.store(upto, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let (p01_code, p01_key) = (
        SiteCode::new("P01")?,
        site_server::site::load_origin_keys(&site_server::config::DataDir::new(p01.data()))?.0,
    );
    let mut pos = 0u64;
    let mut p01_seq = 0u64;
    let mut batch: Vec<ReportEnvelope> = Vec::new();
    let mut own = |body: Report, batch: &mut Vec<ReportEnvelope>| -> Result<()> {
        p01_seq += 1;
        batch.push(ReportEnvelope::signed(
            p01_code, p01_seq, start, body, &p01_key,
        )?);
        Ok(())
    };
    own(
        Report::SiteData(SiteData::Children(subs.to_vec())),
        &mut batch,
    )?;
    for s in subs {
        own(
            Report::Key(KeyReport::Delegated(Delegation {
                site: *s,
                key: PublicKey::of(&sub_key(*s)),
                valid_from: 1,
            })),
            &mut batch,
        )?;
    }
    let keys: Vec<SigningKey> = subs.iter().map(|s| sub_key(*s)).collect();
    let mut seqs = vec![0u64; subs.len()];
    let t = Instant::now();
    const BATCH: usize = 1000;
    let mut i = 0u64;
    while i < messages || !batch.is_empty() {
        while batch.len() < BATCH && i < messages {
            let k = (i as usize) % subs.len();
            let time = start + span * (i as i32) / (messages as i32);
            let m = message(i, subs[k], time, packages, adverts);
            seqs[k] += 1;
            batch.push(ReportEnvelope::signed(
                subs[k],
                seqs[k],
                time,
                Report::Status(m),
                &keys[k],
            )?);
            i += 1;
        }
        let n = batch.len() as u64;
        w.send(&Frame::Reports {
            first: pos + 1,
            reports: std::mem::take(&mut batch),
        })
        .await?;
        pos += n;
        // At most four batches in flight.
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.load(std::sync::atomic::Ordering::Relaxed) + 4 * (BATCH as u64) < pos {
            if Instant::now() > deadline {
                bail!("CEN acknowledged nothing for 120 s (at {pos})");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if pos % 100_000 < BATCH as u64 {
            eprintln!(
                "  {pos} reports sent, {:.0}/s",
                pos as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < pos {
        if Instant::now() > deadline {
            bail!("CEN did not acknowledge every report");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    Ok(secs)
}

/// The median of 5 answers of `path` at `site`, in ms, and the answer's size.
fn timed(site: &LocalSite, path: &str) -> Result<(f64, usize)> {
    let mut v = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (st, body) = site.api_get(path)?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
        if st != 200 {
            bail!("GET {path}: {st} {body}");
        }
        size = body.len();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok((v[2], size))
}

pub fn run(work: &Path, messages: u64, sites: usize, keep: bool) -> Result<()> {
    let ss = crate::site_server()?;
    let root = work.join("sites");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let mut cen = LocalSite::init(&bins(&ss), &root, "CEN", "127.0.0.1:0")?;
    let p01 = LocalSite::init(&bins(&ss), &root, "P01", "127.0.0.1:0")?;
    link_child(&cen, &p01)?;
    cen.start()?;
    let subs: Vec<SiteCode> = (0..sites.saturating_sub(1).max(1))
        .map(|i| SiteCode::new(&site_server::harness::code_at(2, i)))
        .collect::<Result<_, _>>()?;
    // Packages and advertisements the messages are about (five packages, three adverts).
    let src = work.join("pkg");
    std::fs::create_dir_all(&src)?;
    let mut packages = Vec::new();
    for k in 0..5 {
        std::fs::write(src.join("setup.sh"), format!("#!/bin/sh\n# {k}\nexit 0\n"))?;
        let id = crate::tree::publish(&ss, &cen, &src, &format!("App{k}"))?;
        packages.push(id.parse::<PackageId>()?);
    }
    for p in &packages[..3] {
        cli(
            &ss,
            &[
                "adv",
                "create",
                "--data",
                cen.data_str(),
                "--package",
                &p.to_string(),
                "--program",
                "Install",
                "--collection",
                "All",
            ],
        )?;
    }
    let adverts: Vec<schema::AdvertisementId> = cen
        .api_json("/v1/adverts")?
        .as_array()
        .context("adverts")?
        .iter()
        .filter_map(|a| a["id"].as_str().and_then(|s| s.parse().ok()))
        .collect();
    if adverts.is_empty() {
        bail!("no advertisements at CEN");
    }
    let now = Utc::now();
    let span = Days::days(7);
    let start = now - span;
    println!(
        "replaying {messages} status messages from {} sites (P01 and {} below it) into CEN through its child link ...",
        subs.len() + 1,
        subs.len()
    );
    let rt = tokio::runtime::Runtime::new()?;
    let stream = Stream {
        messages,
        packages: packages.clone(),
        adverts,
        start,
        span,
    };
    let secs = rt.block_on(replay(&cen, &p01, &subs, &stream))?;
    println!(
        "stored {messages} messages at CEN in {secs:.1} s ({:.0} reports/s: each verified, stored once, indexed and rolled up)",
        messages as f64 / secs
    );
    // Every package targeted at the subtree's first sites, so status packages has rows.
    for p in &packages {
        let mut args = vec![
            "package".to_string(),
            "distribute".into(),
            p.to_string(),
            "--data".into(),
            cen.data_str().into(),
        ];
        for s in subs.iter().take(20) {
            args.extend(["--site".to_string(), s.to_string()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&ss, &a)?;
    }
    let since = (Utc::now() - Days::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let queries = [
        (
            "status messages --id 3532 --since 1h",
            format!("/v1/status/messages?id=3532&since={since}"),
        ),
        ("status packages", "/v1/status/packages".to_string()),
        ("status sync", "/v1/status/sync".to_string()),
        ("status adverts", "/v1/status/adverts".to_string()),
        (
            "status messages --site S01 --severity error",
            "/v1/status/messages?site=S01&severity=error".to_string(),
        ),
    ];
    for (what, path) in &queries {
        let (ms, bytes) = timed(&cen, path)?;
        println!("{what:<45} {ms:>7.1} ms (median of 5, {bytes} bytes of JSON)");
    }
    let v = cen.api_json("/v1/status/sites")?;
    println!(
        "CEN holding them: {:.0} MiB resident (peak {:.0} MiB), {} open files",
        v["site"]["rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        v["site"]["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        v["site"]["open_files"]
    );
    cen.stop()?;
    let db = cen.data().join("db");
    println!(
        "report log on disk: {:.0} MiB for {} reports ({:.0} bytes per report, indexes and roll-ups included)",
        dir_bytes(&db) as f64 / 1048576.0,
        messages,
        dir_bytes(&db) as f64 / messages as f64
    );
    let (secs, peak_kib) = crate::run_timed(std::process::Command::new(&ss).args([
        "rebuild",
        "--data",
        cen.data_str(),
    ]))?;
    println!(
        "rebuild (the config log, then every report re-indexed and rolled up again): {secs:.1} s, peak RSS {:.0} MiB",
        peak_kib as f64 / 1024.0
    );

    week(&cen)?;
    if !keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

/// A simulated week against retention: each day 100,000 reports arrive (appended as CEN's
/// own, offline, with the day's times), then retention runs as the daemon runs it, with that
/// day's end as its clock and `[reports] keep = "2d"`.
fn week(cen: &LocalSite) -> Result<()> {
    let dir = site_server::config::DataDir::new(cen.data());
    // keep = 2d for the simulation.
    let toml = dir.config();
    let text = std::fs::read_to_string(&toml)?;
    std::fs::write(&toml, format!("{text}\n[reports]\nkeep = \"2d\"\n"))?;
    let (_lock, site) =
        site_server::daemon::open_site(&dir, false).map_err(|e| anyhow::anyhow!("{e}"))?;
    let before = site.db().counts()?.reports;
    let start = Utc::now();
    let packages: Vec<PackageId> = vec!["CEN00001".parse()?];
    let adverts: Vec<schema::AdvertisementId> = site.db().adverts()?.iter().map(|a| a.id).collect();
    let cen_code = SiteCode::new("CEN")?;
    println!("a simulated week, 100,000 reports a day, [reports] keep = \"2d\" (the log held {before} before):");
    for day in 1..=7 {
        for hour in 0..24 {
            let t = start + Days::days(day - 1) + Days::hours(hour);
            let reports: Vec<Report> = (0..4166u64)
                .map(|i| Report::Status(message(i, cen_code, t, &packages, &adverts)))
                .collect();
            for chunk in reports.chunks(500) {
                site.db().append_own_reports(t, chunk.to_vec())?;
            }
        }
        let p = site
            .prune_reports(start + Days::days(day))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "  day {day}: removed {:>7}, log holds {:>7} reports, {:>5.0} MiB on disk",
            p.removed,
            site.db().counts()?.reports + 1 - p.first_kept.max(1),
            dir_bytes(&dir.db()) as f64 / 1048576.0
        );
    }
    Ok(())
}
