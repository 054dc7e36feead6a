//! `bench replicate`: content replication between real site-server processes on 127.0.0.1,
//! beside a raw quinn single-stream transfer of the same bytes and `rsync -a` of the same
//! tree, in the same run.
//!
//! Each run starts a fresh hierarchy CEN -> P01 -> S01 and publishes two incompressible
//! trees A and B at CEN (untimed). Then:
//! - 1 hop: A is targeted at P01; time from the target (CEN's 40120 message) to P01's
//!   "complete" message (40210) — both stamped by the sites themselves, on one clock;
//! - 3 tiers: B is targeted at S01; the same, to P01's and to S01's 40210 for B;
//! - raw quinn: A's files sent on one QUIC stream (same TLS setup as the sites, ring,
//!   pinned certificates) to a receiver in this process that counts the bytes;
//! - rsync: `rsync -a A/ DST/` into an empty directory;
//! - small events: an advertisement created at CEN, time until S01's log has it (the
//!   event's own timestamp at CEN to the moment S01's API lists it).

use crate::{median, site_server, xorshift_fill};
use anyhow::{bail, Context, Result};
use site_server::harness::{self, Bins};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A site of the benchmark's hierarchy: the shared harness's.
pub(crate) use site_server::harness::LocalSite as Site;
pub(crate) use site_server::harness::{link_child, link_parent};

/// The binaries the harness runs: this `site-server` (DPs as `site-server dist-point`).
pub(crate) fn bins(ss: &Path) -> Bins {
    Bins::this_site_server(ss.to_path_buf())
}

/// `site-server ARGS`; its stdout, or the error if it did not exit 0.
pub(crate) fn cli(ss: &Path, args: &[&str]) -> Result<String> {
    let mut c = std::process::Command::new(ss);
    c.args(args);
    Ok(harness::run(c)?.success(&format!("site-server {}", args.join(" ")))?)
}

/// A new site `code` in `root` whose QUIC port the system chooses.
pub(crate) fn new_site(ss: &Path, root: &Path, code: &str) -> Result<Site> {
    Ok(Site::init(&bins(ss), root, code, "127.0.0.1:0")?)
}

/// The time of the first message `id` at `site` with package `pkg`, if any.
pub(crate) fn message_time(
    site: &Site,
    id: u32,
    pkg: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let v = site.api_json(&format!("/v1/status/messages?id={id}"))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .find(|m| m["insertion"][0] == pkg)
        .and_then(|m| m["time"].as_str())
        .and_then(|t| t.parse().ok()))
}

/// A fresh CEN -> P01 -> S01 in `root`, all three running and linked.
pub(crate) fn three_tiers(ss: &Path, root: &Path) -> Result<(Site, Site, Site)> {
    Ok(harness::three_tiers(&bins(ss), root, |_, _, _| Ok(()))?)
}

pub(crate) fn noise_tree(dir: &Path, mib: u64, seed: u64) -> Result<()> {
    let marker = dir.join(format!(".complete-{mib}-{seed}"));
    if marker.exists() {
        return Ok(());
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let mut buf = vec![0u8; 16 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15 ^ seed;
    for i in 0..mib.div_ceil(16) {
        xorshift_fill(&mut buf, &mut state);
        fs::write(dir.join(format!("part{i:04}.bin")), &buf)?;
    }
    fs::write(marker, b"")?;
    Ok(())
}

pub(crate) fn files_of(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    v.sort();
    Ok(v)
}

/// Seconds from CEN's target message to `site`'s 40210 for `pkg`.
pub(crate) fn wait_complete(cen: &Site, site: &Site, pkg: &str) -> Result<f64> {
    let t = Instant::now();
    loop {
        if let (Some(a), Some(b)) = (
            message_time(cen, 40120, pkg)?,
            message_time(site, 40210, pkg)?,
        ) {
            return Ok((b - a).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("{pkg} not complete at {} after 600 s", site.code);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn distribute(ss: &Path, cen: &Site, pkg: &str, to: &str) -> Result<()> {
    let t = Instant::now();
    loop {
        match cli(
            ss,
            &[
                "package",
                "distribute",
                pkg,
                "--site",
                to,
                "--data",
                cen.data_str(),
            ],
        ) {
            Ok(_) => return Ok(()),
            Err(e) if t.elapsed() > Duration::from_secs(30) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Sends `files` on one QUIC stream to a receiver in this process; returns seconds.
pub(crate) fn raw_quinn(files: &[PathBuf], total: u64) -> Result<f64> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ca = schema::SiteCode::new("AAA").expect("code");
    let cb = schema::SiteCode::new("BBB").expect("code");
    let pa = sender::identity::create(&a, ca)?;
    let pb = sender::identity::create(&b, cb)?;
    let ia = sender::tls::TlsIdentity::load(&a)?;
    let ib = sender::tls::TlsIdentity::load(&b)?;
    let rt = tokio::runtime::Runtime::new()?;
    let files = files.to_vec();
    rt.block_on(async move {
        let pins_b = sender::tls::Pins::new();
        pins_b.insert(&pa.fingerprint, "AAA");
        // The same socket setup as the sites' (larger kernel buffers).
        let server = sender::socket::endpoint(
            "127.0.0.1:0".parse()?,
            Some(sender::tls::server_config(&ib, pins_b)?),
        )?;
        let addr = server.local_addr()?;
        let pins_a = sender::tls::Pins::new();
        pins_a.insert(&pb.fingerprint, "BBB");
        let mut client = sender::socket::endpoint("127.0.0.1:0".parse()?, None)?;
        client.set_default_client_config(sender::tls::client_config(&ia, pins_a)?);
        let recv = tokio::spawn(async move {
            let conn = server.accept().await.context("accept")?.await?;
            let mut s = conn.accept_uni().await?;
            let mut n = 0u64;
            while let Some(c) = s.read_chunk(1 << 20, true).await? {
                n += c.bytes.len() as u64;
            }
            anyhow::Ok((n, Instant::now()))
        });
        let t0 = Instant::now();
        let conn = client.connect(addr, sender::tls::SERVER_NAME)?.await?;
        let mut s = conn.open_uni().await?;
        let mut buf = vec![0u8; 1 << 20];
        for f in &files {
            let mut file = fs::File::open(f)?;
            loop {
                let k = file.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                s.write_all(&buf[..k]).await?;
            }
        }
        s.finish()?;
        let (n, t1) = recv.await??;
        if n != total {
            bail!("raw quinn moved {n} bytes, expected {total}");
        }
        conn.close(0u32.into(), b"done");
        Ok((t1 - t0).as_secs_f64())
    })
}

fn rsync(src: &Path, dst: &Path) -> Result<f64> {
    let _ = fs::remove_dir_all(dst);
    let t = Instant::now();
    let st = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(dst)
        .status()
        .context("rsync (install it: apt-get install rsync)")?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("rsync failed: {st}");
    }
    let _ = fs::remove_dir_all(dst);
    Ok(secs)
}

/// Creates an advertisement at CEN and waits until S01's log lists it: milliseconds from
/// the event's timestamp at CEN to S01 answering with it.
pub(crate) fn event_latency(ss: &Path, cen: &Site, s01: &Site, pkg: &str, n: usize) -> Result<f64> {
    let log = s01.api_json("/v1/log?from=1&limit=100000")?;
    let next = log.as_array().map(|a| a.len()).unwrap_or(0) + 1;
    cli(
        ss,
        &[
            "adv",
            "create",
            "--data",
            cen.data_str(),
            "--package",
            pkg,
            "--program",
            &format!("P{n}"),
            "--collection",
            "Bench",
        ],
    )?;
    let t = Instant::now();
    loop {
        let v = s01.api_json(&format!("/v1/log?from={next}&limit=1"))?;
        if let Some(e) = v.as_array().and_then(|a| a.first()) {
            let seen = chrono::Utc::now();
            let at: chrono::DateTime<chrono::Utc> = e["time"].as_str().context("time")?.parse()?;
            return Ok((seen - at).num_microseconds().unwrap_or(0) as f64 / 1e3);
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the event did not reach S01 in 30 s");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

pub(crate) fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

pub fn run(work: &Path, mib: u64, runs: usize, events: usize) -> Result<()> {
    let ss = site_server()?;
    let (ta, tb) = (work.join("tree-a"), work.join("tree-b"));
    eprintln!(
        "building two {mib} MiB incompressible trees in {}",
        work.display()
    );
    noise_tree(&ta, mib, 1)?;
    noise_tree(&tb, mib, 2)?;
    let files_a = files_of(&ta)?;
    let total: u64 = files_a
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let (mut one, mut p01_3, mut s01_3, mut quic, mut rs, mut lat) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut ratios_quinn = vec![];
    let mut ratios_rsync = vec![];
    let mut ratios_tiers = vec![];
    println!(
        "run  1hop(P01) MB/s  raw-quinn MB/s  rsync MB/s   3tier: P01 s  S01 s  S01(3t)/P01(1hop)"
    );
    for run in 0..runs {
        let root = work.join("sites");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)?;
        let (cen, p01, s01) = three_tiers(&ss, &root)?;
        for (t, name) in [(&ta, "A"), (&tb, "B")] {
            cli(
                &ss,
                &[
                    "package",
                    "publish",
                    "--data",
                    cen.data_str(),
                    "--source",
                    t.to_str().unwrap(),
                    "--name",
                    name,
                ],
            )?;
        }
        let (pa, pb) = ("CEN00001", "CEN00002");
        std::thread::sleep(Duration::from_millis(500));

        distribute(&ss, &cen, pa, "P01")?;
        let t1 = wait_complete(&cen, &p01, pa)?;
        distribute(&ss, &cen, pb, "S01")?;
        let tp = wait_complete(&cen, &p01, pb)?;
        let ts = wait_complete(&cen, &s01, pb)?;
        let tq = raw_quinn(&files_a, total)?;
        let tr = rsync(&ta, &work.join("rsync-dst"))?;
        for i in 0..events {
            lat.push(event_latency(&ss, &cen, &s01, pa, run * events + i)?);
        }
        println!(
            "{run:>3}  {:>14.0}  {:>14.0}  {:>10.0}   {:>11.2}  {:>5.2}  {:>17.2}",
            mbps(total, t1),
            mbps(total, tq),
            mbps(total, tr),
            tp,
            ts,
            ts / t1
        );
        ratios_quinn.push(tq / t1);
        ratios_rsync.push(tr / t1);
        ratios_tiers.push(ts / t1);
        one.push(t1);
        p01_3.push(tp);
        s01_3.push(ts);
        quic.push(tq);
        rs.push(tr);
        drop((cen, p01, s01));
        let _ = fs::remove_dir_all(&root);
    }
    println!();
    println!("{} MiB package, {} runs, medians:", total >> 20, runs);
    println!(
        "  CEN -> P01 (1 hop)        {:>6.0} MB/s  ({:.2} s)",
        mbps(total, median(one.clone())),
        median(one)
    );
    println!(
        "  raw quinn, one stream     {:>6.0} MB/s  ({:.2} s)",
        mbps(total, median(quic.clone())),
        median(quic)
    );
    println!(
        "  rsync -a, local dirs      {:>6.0} MB/s  ({:.2} s)",
        mbps(total, median(rs.clone())),
        median(rs)
    );
    println!(
        "  replication / raw quinn   {:>6.2}  (median of per-run ratios; target >= 0.70)",
        median(ratios_quinn)
    );
    println!(
        "  replication / rsync       {:>6.2}  (> 1: faster than rsync)",
        median(ratios_rsync)
    );
    println!(
        "  3 tiers: complete at P01 {:.2} s, at S01 {:.2} s; S01 (3 tiers) / P01 (1 hop) {:.2} (target <= 1.3)",
        median(p01_3),
        median(s01_3),
        median(ratios_tiers)
    );
    let n = lat.len();
    let mut sorted = lat.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if n > 0 {
        println!(
            "  small event CEN -> S01 (3 tiers), {n} events: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (target p50 < 50 ms)",
            sorted[n / 2],
            sorted[(n * 9 / 10).min(n - 1)],
            sorted[n - 1]
        );
    }
    Ok(())
}
