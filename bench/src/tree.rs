//! `bench tree`: a whole tree of real `site-server` processes on 127.0.0.1 (default 301: one
//! top, 15 primaries, 19 secondaries under each), built and started by the shared harness
//! with pinned links. Prints: the time until every link is active; idle RSS and open files
//! per site (median, max, total); the top's and the whole tree's CPU while idle; the time
//! for an advertisement created at the top to be applied at every site (p50, p99, max, from
//! each site's log line); the time for a 16 MiB package targeted at every leaf to be
//! complete everywhere, beside the same size to one leaf; the top's console at that size
//! (the hierarchy page and `/metrics` beside `status sites`, CPU with live pages open). The
//! work directory is removed at the end.

use crate::replicate::{bins, cli, message_time, noise_tree};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use site_server::harness::{self, LocalSite, SiteTree};
use std::path::Path;
use std::time::{Duration, Instant};

fn proc_field(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) of a process so far.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<f64>().ok())
                .sum::<f64>()
                / 100.0
        })
        .unwrap_or(0.0)
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn mib(b: f64) -> f64 {
    b / 1048576.0
}

/// The daemon log line at which `site` applied its parent's batch holding `origin`'s event
/// `seq` (the first batch whose newest event of `origin` is at or past it): its time.
fn applied_at(site: &LocalSite, origin: &str, seq: u64) -> Option<DateTime<Utc>> {
    let log = site.daemon_log();
    for line in log
        .lines()
        .filter(|l| l.contains("applied the parent's events"))
    {
        // Colour codes around the fields: strip every ESC[...m.
        let mut clean = String::with_capacity(line.len());
        let mut esc = false;
        for c in line.chars() {
            match (esc, c) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => clean.push(c),
            }
        }
        let Some(newest) = clean.split("newest=").nth(1) else {
            continue;
        };
        let newest = newest.split_whitespace().next().unwrap_or("");
        let reached = newest.split(',').any(|o| {
            o.split_once(':')
                .is_some_and(|(who, n)| who == origin && n.parse::<u64>().is_ok_and(|n| n >= seq))
        });
        if reached {
            return clean.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Seconds from `start` until `pkg` is complete (its 40210) at each of `leaves`.
fn complete_times(
    tree: &SiteTree,
    leaves: &[usize],
    pkg: &str,
    start: DateTime<Utc>,
) -> Result<Vec<f64>> {
    let t = Instant::now();
    let mut out = vec![None; leaves.len()];
    while out.iter().any(Option::is_none) {
        for (k, i) in leaves.iter().enumerate() {
            if out[k].is_none() {
                if let Some(at) = message_time(&tree.sites[*i], 40210, pkg)? {
                    out[k] = Some((at - start).num_microseconds().unwrap_or(0) as f64 / 1e6);
                }
            }
        }
        if t.elapsed() > Duration::from_secs(900) {
            bail!("{pkg} not complete at every leaf after 900 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(out.into_iter().flatten().collect())
}

/// The time of the top's 40120 (targeted) for `pkg`.
fn targeted_at(top: &LocalSite, pkg: &str) -> Result<DateTime<Utc>> {
    let t = Instant::now();
    loop {
        if let Some(at) = message_time(top, 40120, pkg)? {
            return Ok(at);
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("no 40120 for {pkg} at the top");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `package publish` of `src` at `top` under `name`; the package id.
pub(crate) fn publish(ss: &Path, top: &LocalSite, src: &Path, name: &str) -> Result<String> {
    let out = cli(
        ss,
        &[
            "package",
            "publish",
            "--data",
            top.data_str(),
            "--source",
            src.to_str().context("path")?,
            "--name",
            name,
            "--json",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["package"].as_str().context("package id")?.to_string())
}

fn distribute(ss: &Path, top: &LocalSite, pkg: &str, sites: &[String]) -> Result<()> {
    let mut args = vec!["package", "distribute", pkg, "--data", top.data_str()];
    for s in sites {
        args.extend(["--site", s.as_str()]);
    }
    let t = Instant::now();
    loop {
        match cli(ss, &args) {
            Ok(_) => return Ok(()),
            Err(e) if t.elapsed() > Duration::from_secs(60) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub fn run(work: &Path, shape: &str, mib_size: u64, idle_secs: u64, threads: usize) -> Result<()> {
    let ss = crate::site_server()?;
    let shape = harness::parse_shape(shape).map_err(anyhow::Error::msg)?;
    let n = harness::size_of(&shape);
    let root = work.join("sites");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    eprintln!("building {n} sites in {} ...", root.display());
    let t = Instant::now();
    let mut tree = SiteTree::build(&bins(&ss), &root, &shape, threads)?;
    println!(
        "tree: {n} sites, shape 1,{}",
        shape
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "built (init, child add, parent set) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    tree.start_all(threads.max(4))?;
    let started = t.elapsed();
    let active = tree.wait_all_active(Duration::from_secs(600))?;
    println!(
        "every link active {:.1} s after the first start ({:.1} s to start {n} daemons)",
        (started + active).as_secs_f64(),
        started.as_secs_f64()
    );

    // Idle: let the start-up reports and delegations settle, then measure.
    std::thread::sleep(Duration::from_secs(10));
    let pids: Vec<u32> = tree.sites.iter().filter_map(|s| s.pid()).collect();
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_of(*p)).collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = t.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = pids.iter().map(|p| cpu_of(*p)).collect();
    let top_cpu = (cpu1[0] - cpu0[0]) / wall * 100.0;
    let all_cpu: f64 = cpu1.iter().zip(&cpu0).map(|(a, b)| a - b).sum::<f64>() / wall * 100.0;
    let mut rss: Vec<f64> = pids
        .iter()
        .map(|p| proc_field(*p, "VmRSS:") as f64 * 1024.0)
        .collect();
    let total: f64 = rss.iter().sum();
    let top_rss = rss[0];
    let mut fds: Vec<f64> = pids.iter().map(|p| open_files(*p) as f64).collect();
    let children_of_top = tree.parent.iter().filter(|p| **p == Some(0)).count();
    println!(
        "idle RSS per site: median {:.1} MiB, max {:.1} MiB, total {:.0} MiB; the top ({children_of_top} children) {:.1} MiB",
        mib(pct(&mut rss, 0.5)),
        mib(pct(&mut rss, 1.0)),
        mib(total),
        mib(top_rss)
    );
    println!(
        "open files per site: median {:.0}, max {:.0}",
        pct(&mut fds, 0.5),
        pct(&mut fds, 1.0)
    );
    println!(
        "idle CPU over {wall:.0} s: the top {top_cpu:.2}% of a core, all {n} sites {all_cpu:.1}% of a core"
    );

    console(&tree, pids[0], idle_secs, top_cpu)?;

    // An advertisement at the top, applied everywhere.
    let top = &tree.sites[0];
    let small = work.join("small");
    std::fs::create_dir_all(&small)?;
    std::fs::write(small.join("setup.sh"), b"#!/bin/sh\nexit 0\n")?;
    let tool = publish(&ss, top, &small, "Tool")?;
    cli(
        &ss,
        &[
            "adv",
            "create",
            "--data",
            top.data_str(),
            "--package",
            &tool,
            "--program",
            "Install",
            "--collection",
            "All",
        ],
    )?;
    let log = top.api_json("/v1/log?from=1&limit=1000000")?;
    let last = log
        .as_array()
        .and_then(|a| a.last())
        .context("the top's log is empty")?;
    let seq = last["origin_seq"].as_u64().context("origin_seq")?;
    let created: DateTime<Utc> = last["time"].as_str().context("time")?.parse()?;
    let mut lat = Vec::new();
    let t = Instant::now();
    for s in &tree.sites[1..] {
        loop {
            if let Some(at) = applied_at(s, "CEN", seq) {
                lat.push((at - created).num_microseconds().unwrap_or(0) as f64 / 1e3);
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("the advertisement did not reach {} in 120 s", s.code);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "advertisement created at the top -> applied at all {} other sites: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );

    // A package of `mib_size` MiB to one leaf, then another to every leaf.
    let leaves = tree.leaves();
    let codes: Vec<String> = leaves.iter().map(|i| tree.sites[*i].code.clone()).collect();
    let (one, all) = (work.join("pkg-one"), work.join("pkg-all"));
    noise_tree(&one, mib_size, 31)?;
    noise_tree(&all, mib_size, 32)?;
    let p1 = publish(&ss, top, &one, "OneLeaf")?;
    distribute(&ss, top, &p1, &codes[..1])?;
    let at = targeted_at(top, &p1)?;
    let one_leaf = complete_times(&tree, &leaves[..1], &p1, at)?[0];
    let p2 = publish(&ss, top, &all, "EveryLeaf")?;
    distribute(&ss, top, &p2, &codes)?;
    let at = targeted_at(top, &p2)?;
    let mut every = complete_times(&tree, &leaves, &p2, at)?;
    let last = pct(&mut every, 1.0);
    println!(
        "{mib_size} MiB package: to one leaf {one_leaf:.2} s; to all {} leaves {last:.2} s (p50 {:.2} s); all/one {:.1}x, {:.0} MB/s leaving the top's children together",
        leaves.len(),
        pct(&mut every, 0.5),
        last / one_leaf,
        (mib_size << 20) as f64 * leaves.len() as f64 / last / 1e6
    );
    tree.stop_all(threads.max(4))?;
    // Hundreds of sites' databases: gigabytes that nothing reads again.
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// One raw HTTP/1.1 request to the console: (status, head and body).
fn console_request(addr: &str, req: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, out))
}

/// The top's console at the tree's size: how long the hierarchy page and `/metrics` take
/// (median of 20), beside the admin API's `status sites` (the same links, without the
/// subtree), and the top's CPU with 5 live hierarchy pages open, beside idle.
fn console(tree: &SiteTree, top_pid: u32, idle_secs: u64, idle_cpu: f64) -> Result<()> {
    let top = &tree.sites[0];
    let url = top.ui_url()?;
    let addr = url.trim_start_matches("http://").to_string();
    let token = top.ui_token()?;
    let body = format!("token={token}");
    let (_, answer) = console_request(
        &addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )?;
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .context("the console set no cookie")?
        .to_string();
    let time = |addr: &str, req: &str, what: &str| -> Result<f64> {
        let mut ms = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let (code, out) = console_request(addr, req)?;
            if code != 200 {
                bail!("{what}: {code}: {}", out.lines().next().unwrap_or_default());
            }
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(pct(&mut ms, 0.5))
    };
    let page = time(
        &addr,
        &format!("GET /hierarchy HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
        "hierarchy page",
    )?;
    let metrics = time(
        &addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        "metrics",
    )?;
    let (api, api_token) = top.admin()?;
    let sites = time(
        &api,
        &format!("GET /v1/status/sites HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {api_token}\r\nConnection: close\r\n\r\n"),
        "status sites",
    )?;
    println!(
        "the top's console, {} sites: hierarchy page p50 {page:.1} ms, /metrics p50 {metrics:.1} ms; status sites (admin API, its own links only) p50 {sites:.1} ms: page/status sites {:.1}x",
        tree.sites.len(),
        page / sites
    );
    // Five live pages open: each re-renders every second, pushed when it changed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..5 {
        let (addr, cookie, stop) = (addr.clone(), cookie.clone(), stop.clone());
        readers.push(std::thread::spawn(move || -> Result<u64> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.write_all(
                format!("GET /live/hierarchy HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n")
                    .as_bytes(),
            )?;
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(_) => {}
                }
            }
            Ok(n)
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    let c0 = cpu_of(top_pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wall = t.elapsed().as_secs_f64();
    let live_cpu = (cpu_of(top_pid) - c0) / wall * 100.0;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut bytes = 0;
    for r in readers {
        bytes += r
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
    }
    println!(
        "the top's CPU with 5 live hierarchy pages open: {live_cpu:.2}% of a core (idle {idle_cpu:.2}%); {bytes} bytes pushed"
    );
    Ok(())
}
