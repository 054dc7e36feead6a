//! `bench sender`: the sender between real site-server processes on 127.0.0.1 (CEN -> P01).
//!
//! - Rate-limit accuracy: one incompressible package is sent under a limit changed live
//!   (`child set --rate`) to 1, 8 and 64 MiB/s; after 1.5 s to settle, the bytes stored at
//!   P01 over the next 10 s are divided by the limit (target within +/-5%).
//! - Preemption latency: a low package is sending at 8 MiB/s; small high packages are
//!   published and targeted one after another; for each, CEN's sender reports how long its
//!   first chunk waited from being asked for to its first byte on the wire (the chunk
//!   boundary of the low transfer plus the rate's debt); also the time from the target to
//!   the chunk stored at P01 (target p99 < 250 ms).
//! - Unthrottled throughput: the package CEN -> P01 with no limit (40120 at CEN to 40210 at
//!   P01) beside a raw quinn single-stream transfer of the same bytes (target >= 90%).

use crate::median;
use crate::replicate::{
    cli, distribute, files_of, link_child, link_parent, mbps, new_site, noise_tree, raw_quinn,
    wait_complete, Site,
};
use crate::site_server;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// A fresh CEN -> P01 under `root`, with `rate` on CEN's link to P01 (empty: none set, for
/// a build from before the sender, which has no `child set`).
fn pair(ss: &Path, root: &Path, rate: &str) -> Result<(Site, Site)> {
    let _ = fs::remove_dir_all(root);
    fs::create_dir_all(root)?;
    let mut cen = new_site(ss, root, "CEN")?;
    let mut p01 = new_site(ss, root, "P01")?;
    link_child(&cen, &p01)?;
    if !rate.is_empty() {
        set_rate(ss, &cen, rate)?;
    }
    cen.start()?;
    link_parent(&p01, &cen)?;
    p01.start()?;
    Ok((cen, p01))
}

/// `child set --rate` on CEN's link to P01 (live when CEN runs).
fn set_rate(ss: &Path, cen: &Site, rate: &str) -> Result<()> {
    let args = [
        "child",
        "set",
        "--data",
        cen.data_str(),
        "--code",
        "P01",
        "--rate",
        rate,
    ];
    cli(ss, &args).map(|_| ())
}

fn publish(ss: &Path, cen: &Site, src: &Path, name: &str, priority: &str) -> Result<String> {
    let src = src.to_str().context("path")?;
    let mut args = vec![
        "package",
        "publish",
        "--data",
        cen.data_str(),
        "--source",
        src,
        "--name",
        name,
        "--json",
    ];
    if !priority.is_empty() {
        args.extend(["--priority", priority]);
    }
    let out = cli(ss, &args)?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["package"].as_str().context("package id")?.to_string())
}

/// Bytes of `pkg` stored at `site`, and its size.
fn present(site: &Site, pkg: &str) -> Result<(u64, u64)> {
    let rows = site.api_json("/v1/status/packages")?;
    Ok(rows
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["package"] == pkg)
        .map_or((0, 0), |r| {
            (
                r["bytes_present"].as_u64().unwrap_or(0),
                r["bytes"].as_u64().unwrap_or(0),
            )
        }))
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let t = Instant::now();
    while !f()? {
        if t.elapsed() > Duration::from_secs(secs) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn rates(ss: &Path, work: &Path, tree: &Path) -> Result<Vec<(u64, f64)>> {
    let (cen, p01) = pair(ss, &work.join("sites"), "* 1MiB/s")?;
    let pkg = publish(ss, &cen, tree, "Rates", "medium")?;
    distribute(ss, &cen, &pkg, "P01")?;
    wait_until("the first bytes at P01", 60, || {
        Ok(present(&p01, &pkg)?.0 > 0)
    })?;
    let mut out = vec![];
    for mib in [1u64, 8, 64] {
        set_rate(ss, &cen, &format!("* {mib}MiB/s"))?;
        std::thread::sleep(Duration::from_millis(1500));
        let (b0, all) = present(&p01, &pkg)?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let (b1, _) = present(&p01, &pkg)?;
        let secs = t0.elapsed().as_secs_f64();
        if b1 >= all {
            bail!("the package ran out during the {mib} MiB/s window: use a larger --mib");
        }
        let achieved = (b1 - b0) as f64 / secs;
        let ratio = achieved / (mib << 20) as f64;
        println!(
            "  limit {mib:>2} MiB/s: {:>6.2} MiB/s received over {secs:.1} s  achieved/limit {ratio:.3}",
            achieved / (1 << 20) as f64
        );
        out.push((mib, ratio));
    }
    Ok(out)
}

fn preemption(
    ss: &Path,
    work: &Path,
    low_tree: &Path,
    samples: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (cen, p01) = pair(ss, &work.join("sites"), "* 8MiB/s")?;
    let low = publish(ss, &cen, low_tree, "Low", "low")?;
    distribute(ss, &cen, &low, "P01")?;
    wait_until("the low transfer under way", 60, || {
        Ok(present(&p01, &low)?.0 > 0)
    })?;
    let small = work.join("small");
    let mut waits = vec![];
    let mut e2e = vec![];
    let mut state = 0x5eed_u64;
    for i in 0..samples {
        let _ = fs::remove_dir_all(&small);
        fs::create_dir_all(&small)?;
        let mut buf = vec![0u8; 200 << 10];
        state ^= i as u64 + 1;
        crate::xorshift_fill(&mut buf, &mut state);
        fs::write(small.join("hotfix.bin"), &buf)?;
        let pkg = publish(ss, &cen, &small, &format!("Hotfix {i}"), "high")?;
        let t0 = Instant::now();
        distribute(ss, &cen, &pkg, "P01")?;
        if let Err(e) = wait_until("a high package at P01", 30, || {
            let (have, all) = present(&p01, &pkg)?;
            Ok(all > 0 && have == all)
        }) {
            eprintln!(
                "high package {i} ({pkg}) did not arrive; P01 has {:?} of it",
                present(&p01, &pkg)?
            );
            let _ = fs::write(
                work.join("failed-senders.json"),
                cen.api_json("/v1/status/senders")?.to_string(),
            );
            return Err(e);
        }
        e2e.push(t0.elapsed().as_secs_f64() * 1000.0);
        let v = cen.api_json("/v1/status/senders")?;
        let wait = v["links"][0]["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["package"] == pkg.as_str())
            .and_then(|j| j["wait_ms"].as_f64())
            .context("the high job's wait in CEN's sender")?;
        waits.push(wait);
    }
    let (have, all) = present(&p01, &low)?;
    if have >= all {
        bail!("the low transfer finished during the samples: use a larger --mib");
    }
    Ok((waits, e2e))
}

/// Seconds for `tree` CEN -> P01, unthrottled, with the site-server at `ss`.
fn unthrottled(ss: &Path, work: &Path, tree: &Path, current: bool) -> Result<f64> {
    let (rate, prio) = if current {
        ("unlimited", "medium")
    } else {
        ("", "")
    };
    let (cen, p01) = pair(ss, &work.join("sites"), rate)?;
    let pkg = publish(ss, &cen, tree, "Throughput", prio)?;
    std::thread::sleep(Duration::from_millis(300));
    distribute(ss, &cen, &pkg, "P01")?;
    wait_complete(&cen, &p01, &pkg)
}

pub fn run(
    work: &Path,
    mib: u64,
    samples: usize,
    runs: usize,
    baseline: Option<&Path>,
) -> Result<()> {
    let ss = site_server()?;
    let tree = work.join("tree");
    eprintln!(
        "building a {mib} MiB incompressible tree in {}",
        work.display()
    );
    noise_tree(&tree, mib, 7)?;
    let files = files_of(&tree)?;
    let total: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();

    println!(
        "rate-limit accuracy ({} MiB package, limit changed live):",
        total >> 20
    );
    let only_throughput = std::env::var_os("BENCH_ONLY_THROUGHPUT").is_some();
    let r = if only_throughput {
        vec![]
    } else {
        rates(&ss, work, &tree)?
    };

    println!("preemption at 8 MiB/s ({samples} high packages of 200 KiB behind a low one):");
    let (mut waits, mut e2e) = if only_throughput {
        (vec![0.0], vec![0.0])
    } else {
        preemption(&ss, work, &tree, samples)?
    };

    println!("unthrottled throughput, CEN -> P01 vs raw quinn ({runs} runs):");
    let (mut ours, mut raw, mut ratios) = (vec![], vec![], vec![]);
    let (mut base, mut base_ratios) = (vec![], vec![]);
    for run in 0..runs {
        let t = unthrottled(&ss, work, &tree, true)?;
        let q = raw_quinn(&files, total)?;
        let mut line = format!(
            "  run {run}: scheduler on {:>5.0} MB/s   raw quinn {:>5.0} MB/s   ratio {:.2}",
            mbps(total, t),
            mbps(total, q),
            q / t
        );
        if let Some(b) = baseline {
            let tb = unthrottled(b, work, &tree, false)?;
            line += &format!(
                "   without the scheduler {:>5.0} MB/s   ratio {:.2}",
                mbps(total, tb),
                tb / t
            );
            base.push(tb);
            base_ratios.push(tb / t);
        }
        println!("{line}");
        ours.push(t);
        raw.push(q);
        ratios.push(q / t);
    }
    let _ = fs::remove_dir_all(work.join("sites"));

    println!();
    println!("summary:");
    for (mib, ratio) in &r {
        println!(
            "  rate {mib:>2} MiB/s: achieved/limit {ratio:.3} ({:+.1}%; target within +/-5%)",
            (ratio - 1.0) * 100.0
        );
    }
    let n = waits.len();
    println!(
        "  preemption wait in CEN's sender, {n} high jobs: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 < 250 ms)",
        pct(&mut waits, 0.5),
        pct(&mut waits, 0.99),
        pct(&mut waits, 1.0)
    );
    println!(
        "  target -> stored at P01 (event down, request up, chunk down): p50 {:.0} ms, p99 {:.0} ms",
        pct(&mut e2e, 0.5),
        pct(&mut e2e, 0.99)
    );
    println!(
        "  unthrottled: scheduler on {:.0} MB/s, raw quinn {:.0} MB/s; ratio {:.2} (median of per-run ratios; target >= 0.90)",
        mbps(total, median(ours)),
        mbps(total, median(raw)),
        median(ratios)
    );
    if !base.is_empty() {
        println!(
            "  unthrottled: scheduler on / the same transfer without it (build {}): {:.2} (median of per-run ratios; {:.0} MB/s without)",
            baseline.map(|b| b.display().to_string()).unwrap_or_default(),
            median(base_ratios),
            mbps(total, median(base))
        );
    }
    Ok(())
}
