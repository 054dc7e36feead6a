//! `bench soak`: the whole tree under `kill -9`. Not a timing: a proof, printed as counts.
//!
//! CEN -> P01 -> S01, each with a distribution point, all real processes on 127.0.0.1. The
//! top gets a stream of work (new packages targeted at S01 and at a group of every DP, new
//! versions of them, advertisements, catalog syncs of a growing apt index) while, between
//! operations, a random process (a site or a DP) is killed with SIGKILL at a random moment
//! and started again. Then the tree is left to settle and checked:
//! - every site's config log equals its parent's, in order (a prefix that has caught up);
//! - no `(origin, seq)` twice in any site's config log or report log;
//! - every site's own report sequence is contiguous at the top (1..n, no gap);
//! - every chunk in every site's store verifies;
//! - every DP serves every file of every package's current version byte for byte.
//!
//! Exit 1 if any of it fails.

use crate::replicate::{bins, three_tiers, Site};
use crate::xorshift_fill;
use anyhow::{bail, Context, Result};
use site_server::harness::{self, LocalDp};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A site-server command at `site`, retried while the daemon is coming back (up to 60 s).
fn at(site: &Site, args: &[&str]) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match site.cli_ok(args) {
            Ok(out) => return Ok(out),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Writes `files` random files (up to `kib` KiB each) into `dir`, replacing what was there.
fn fill(dir: &Path, files: usize, kib: u64, rng: &mut Rng) -> Result<()> {
    fs::create_dir_all(dir)?;
    for i in 0..files {
        let mut buf = vec![0u8; ((1 + rng.below(kib)) << 10) as usize];
        let mut s = rng.next() | 1;
        xorshift_fill(&mut buf, &mut s);
        fs::write(dir.join(format!("f{i}.bin")), &buf)?;
    }
    Ok(())
}

/// The processes the killer picks from.
struct Tree {
    sites: Vec<Site>,
    dps: Vec<LocalDp>,
}

impl Tree {
    fn names(&self) -> Vec<String> {
        self.sites
            .iter()
            .map(|s| s.code.clone())
            .chain(self.dps.iter().map(|d| format!("{}/{}", d.site, d.id)))
            .collect()
    }

    /// SIGKILL process `i` (sites first, then DPs) and start it again.
    fn kill_and_restart(&mut self, i: usize) -> Result<()> {
        if i < self.sites.len() {
            let s = &mut self.sites[i];
            s.kill9();
            s.start()?;
        } else {
            let d = &mut self.dps[i - self.sites.len()];
            d.kill9();
            d.start()?;
        }
        Ok(())
    }
}

/// The config log of `site` as (origin, seq) in order.
fn log_keys(site: &Site) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut from = 1u64;
    loop {
        let v: serde_json::Value = serde_json::from_str(&site.cli_ok(&[
            "log",
            "--json",
            "--from",
            &from.to_string(),
            "--limit",
            "1000",
        ])?)?;
        let rows = v.as_array().context("log rows")?;
        if rows.is_empty() {
            return Ok(out);
        }
        for r in rows {
            out.push((
                r["origin"].as_str().context("origin")?.to_string(),
                r["origin_seq"].as_u64().context("origin_seq")?,
            ));
        }
        from += rows.len() as u64;
    }
}

/// The report log of a stopped site as (origin, seq), in order, read from its database
/// (site data reports are not status messages, so the admin API does not list them all).
fn report_keys(site: &Site) -> Result<Vec<(String, u64)>> {
    let dir = site_server::config::DataDir::new(site.data());
    let (_lock, opened) = site_server::daemon::open_site(&dir, false)
        .map_err(|e| anyhow::anyhow!("opening {}'s database: {e}", site.code))?;
    let db = opened.db();
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let rows = db.reports(from, 10_000, |_| true)?;
        let Some((last, _)) = rows.last() else {
            return Ok(out);
        };
        from = last + 1;
        out.extend(
            rows.into_iter()
                .map(|(_, r)| (r.origin.to_string(), r.origin_seq)),
        );
    }
}

fn duplicates(keys: &[(String, u64)]) -> usize {
    let mut seen = HashSet::new();
    keys.iter().filter(|k| !seen.insert((*k).clone())).count()
}

/// Per origin, the numbers missing from 1..=max.
fn gaps(keys: &[(String, u64)]) -> BTreeMap<String, u64> {
    let mut per: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (o, s) in keys {
        per.entry(o).or_default().insert(*s);
    }
    per.into_iter()
        .map(|(o, seqs)| {
            let max = seqs.iter().copied().max().unwrap_or(0);
            (o.to_string(), max - seqs.len() as u64)
        })
        .collect()
}

/// Whether every package is complete at every site and installed (current version) on
/// every DP.
fn settled(tree: &Tree, packages: &BTreeMap<String, (PathBuf, u32)>) -> Result<Option<String>> {
    for s in &tree.sites {
        let rows = s.cli_json(&["status", "packages", "--json"])?;
        for (pkg, (_, version)) in packages {
            let done = rows.as_array().into_iter().flatten().any(|r| {
                r["package"] == pkg.as_str()
                    && r["source_version"] == *version
                    && r["chunks"].as_u64() > Some(0)
                    && r["chunks_present"] == r["chunks"]
            });
            if !done {
                return Ok(Some(format!("{pkg} v{version} not complete at {}", s.code)));
            }
        }
    }
    for d in &tree.dps {
        for (pkg, (_, version)) in packages {
            let (code, _) = d.get(&format!("/packages/{pkg}/{version}/manifest"), &[])?;
            if code != 200 {
                return Ok(Some(format!(
                    "{pkg} v{version} not installed on {}/{}",
                    d.site, d.id
                )));
            }
        }
    }
    // Every report has reached the parent (the acknowledged position is the log's end).
    for s in &tree.sites[1..] {
        let have = s.api_json("/v1/identity")?["logs"]["reports"].as_u64();
        let rows = s.cli_json(&["status", "sites", "--json"])?["links"].clone();
        let acked = rows
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["role"] == "parent")
            .and_then(|r| r["reports_cursor"].as_u64());
        if have.is_none() || acked != have {
            return Ok(Some(format!(
                "{}'s parent acknowledged reports up to {acked:?} of {have:?}",
                s.code
            )));
        }
    }
    let logs: Vec<usize> = tree
        .sites
        .iter()
        .map(|s| log_keys(s).map(|l| l.len()))
        .collect::<Result<_>>()?;
    if logs.windows(2).all(|w| w[0] == w[1]) {
        Ok(None)
    } else {
        Ok(Some(format!("config logs of {logs:?} events")))
    }
}

pub fn run(work: &Path, kills: usize, seed: u64, settle: u64) -> Result<()> {
    let ss = std::env::current_exe()?
        .parent()
        .context("bench's directory")?
        .join("site-server");
    if !ss.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p site-server)",
            ss.display()
        );
    }
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work)?;
    let root = work.join("sites");
    let src = work.join("src");
    let mut rng = Rng(seed | 1);

    // The tree: three sites, a DP each, a group of every DP, a catalog source.
    let (cen, p01, s01) = three_tiers(&ss, &root)?;
    let mut sites = vec![cen, p01, s01];
    let mut dps = Vec::new();
    for s in sites.iter_mut() {
        s.pin_listen_port()?;
        let dp = LocalDp::init(&bins(&ss), &root, s, "DP1")?;
        harness::attach_dps(s, &[(&dp, &[])])?;
        dps.push(dp);
    }
    for d in dps.iter_mut() {
        d.start()?;
    }
    let cen = &sites[0];
    harness::cli_when_known(cen, &["dp", "group", "create", "All"], 30)?;
    for name in ["CEN/DP1", "P01/DP1", "S01/DP1"] {
        harness::cli_when_known(cen, &["dp", "group", "add", "All", "--dp", name], 60)?;
    }
    let index = work.join("Packages");
    fs::write(&index, "")?;
    at(
        cen,
        &[
            "sync",
            "source",
            "add",
            "--name",
            "soak",
            "--plugin",
            "apt",
            "--args",
            &format!(
                "Path='{}';Classification=Update;Product=\"Soak\"",
                index.display()
            ),
        ],
    )?;
    let mut tree = Tree { sites, dps };
    let names = tree.names();

    let mut packages: BTreeMap<String, (PathBuf, u32)> = BTreeMap::new();
    let mut ops: BTreeMap<&str, u64> = BTreeMap::new();
    let mut killed: BTreeMap<String, u64> = BTreeMap::new();
    let mut apt_records = 0u64;
    let started = Instant::now();
    for k in 0..kills {
        // One or two operations at the top.
        for _ in 0..1 + rng.below(2) {
            let cen = &tree.sites[0];
            let kind = if packages.is_empty() { 0 } else { rng.below(4) };
            match kind {
                0 => {
                    let dir = src.join(format!("p{}", packages.len()));
                    fill(&dir, 1 + rng.below(3) as usize, 1536, &mut rng)?;
                    let out: serde_json::Value = serde_json::from_str(&at(
                        cen,
                        &[
                            "package",
                            "publish",
                            "--source",
                            &dir.to_string_lossy(),
                            "--name",
                            &format!("Soak {}", packages.len()),
                            "--json",
                        ],
                    )?)?;
                    let pkg = out["package"].as_str().context("package id")?.to_string();
                    at(cen, &["package", "distribute", &pkg, "--site", "S01"])?;
                    at(cen, &["package", "distribute", &pkg, "--dp-group", "All"])?;
                    packages.insert(pkg, (dir, 1));
                    *ops.entry("packages").or_default() += 1;
                }
                1 => {
                    let i = rng.below(packages.len() as u64) as usize;
                    let (pkg, (dir, v)) = packages.iter_mut().nth(i).expect("in range");
                    fill(dir, 1, 1024, &mut rng)?;
                    at(
                        cen,
                        &[
                            "package",
                            "publish",
                            "--source",
                            &dir.to_string_lossy(),
                            "--package",
                            pkg,
                        ],
                    )?;
                    *v += 1;
                    *ops.entry("versions").or_default() += 1;
                }
                2 => {
                    let i = rng.below(packages.len() as u64) as usize;
                    let pkg = packages.keys().nth(i).expect("in range").clone();
                    at(
                        cen,
                        &[
                            "adv",
                            "create",
                            "--package",
                            &pkg,
                            "--program",
                            "Install",
                            "--collection",
                            "All Systems",
                            "--name",
                            &format!("Soak advert {k}"),
                        ],
                    )?;
                    *ops.entry("adverts").or_default() += 1;
                }
                _ => {
                    apt_records += 1;
                    let mut text = fs::read_to_string(&index)?;
                    text.push_str(&format!(
                        "Package: soak{apt_records}\nVersion: 1.{apt_records}\nArchitecture: amd64\nSize: 1000\nFilename: pool/soak{apt_records}.deb\n\n"
                    ));
                    fs::write(&index, text)?;
                    at(cen, &["sync", "now"])?;
                    *ops.entry("catalog syncs").or_default() += 1;
                }
            }
        }
        // A kill at a random moment of whatever that set going.
        std::thread::sleep(Duration::from_millis(100 + rng.below(1500)));
        let victim = rng.below(names.len() as u64) as usize;
        tree.kill_and_restart(victim)?;
        *killed.entry(names[victim].clone()).or_default() += 1;
        if (k + 1) % 10 == 0 {
            eprintln!("soak: {} kills, {:?}", k + 1, ops);
        }
    }
    let worked = started.elapsed();

    // Settle.
    let t = Instant::now();
    let deadline = t + Duration::from_secs(settle);
    loop {
        let Some(why) = settled(&tree, &packages)? else {
            break;
        };
        if Instant::now() > deadline {
            bail!(
                "the tree did not settle within {settle} s after the kills ({why}): see the logs under {}",
                root.display()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let settled_in = t.elapsed();

    // Check.
    let mut failed = Vec::new();
    let logs: Vec<Vec<(String, u64)>> = tree.sites.iter().map(log_keys).collect::<Result<_>>()?;
    for (i, w) in logs.windows(2).enumerate() {
        if w[1].len() > w[0].len() || w[0][..w[1].len()] != w[1][..] {
            failed.push(format!(
                "{}'s log is not a prefix of {}'s",
                names[i + 1],
                names[i]
            ));
        }
    }
    let mut chunks = Vec::new();
    for s in &tree.sites {
        let v = s.cli_json(&["store", "verify", "--json"])?;
        let problems = v["problems"].as_array().map_or(0, |p| p.len());
        if problems > 0 {
            failed.push(format!("{} problems in {}'s store", problems, s.code));
        }
        chunks.push(v["chunks_ok"].as_u64().unwrap_or(0));
    }
    let (mut served, mut wrong) = (0u64, 0u64);
    for d in &tree.dps {
        for (pkg, (dir, version)) in &packages {
            for e in fs::read_dir(dir)? {
                let p = e?.path();
                let name = p
                    .file_name()
                    .context("name")?
                    .to_string_lossy()
                    .into_owned();
                let (code, body) =
                    d.get(&format!("/packages/{pkg}/{version}/files/{name}"), &[])?;
                served += 1;
                if code != 200 || blake3::hash(&body) != blake3::hash(&fs::read(&p)?) {
                    wrong += 1;
                }
            }
        }
    }
    if wrong > 0 {
        failed.push(format!("{wrong} files served wrong"));
    }

    // The report logs, read from the databases once the sites are down (kill -9 once more:
    // a clean stop would raise a message that has nowhere to go).
    for s in tree.sites.iter_mut() {
        s.kill9();
    }
    let mut dup_events = 0;
    let mut dup_reports = 0;
    let mut report_counts = Vec::new();
    let mut reports = Vec::new();
    for (i, s) in tree.sites.iter().enumerate() {
        dup_events += duplicates(&logs[i]);
        let r = report_keys(s)?;
        dup_reports += duplicates(&r);
        report_counts.push(r.len());
        reports.push(r);
    }
    let top_gaps = gaps(&reports[0]);
    for (origin, missing) in &top_gaps {
        if *missing > 0 {
            failed.push(format!(
                "{missing} of {origin}'s report numbers are missing at the top"
            ));
        }
    }
    // Lost: a site's own reports that never reached the top.
    let mut lost = 0u64;
    for (i, s) in tree.sites.iter().enumerate().skip(1) {
        let own = |r: &[(String, u64)]| {
            r.iter()
                .filter(|(o, _)| *o == s.code)
                .map(|(_, q)| *q)
                .max()
                .unwrap_or(0)
        };
        lost += own(&reports[i]).saturating_sub(own(&reports[0]));
    }
    if lost > 0 {
        failed.push(format!("{lost} reports never reached the top"));
    }
    if dup_events + dup_reports > 0 {
        failed.push(format!(
            "{dup_events} events and {dup_reports} reports twice"
        ));
    }

    println!(
        "soak: {} kills in {:.0} s ({}), then settled in {:.1} s",
        kills,
        worked.as_secs_f64(),
        killed
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        settled_in.as_secs_f64()
    );
    println!(
        "work at the top: {}",
        ops.iter()
            .map(|(n, c)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "config logs: {} events at each of CEN, P01, S01 ({}); lost 0 = every site has all of them",
        logs[0].len(),
        if logs.windows(2).all(|w| w[0] == w[1]) {
            "equal, in order"
        } else {
            "DIFFERENT"
        }
    );
    println!(
        "reports: {} at CEN, {} at P01, {} at S01; lost {lost}; duplicated events {dup_events}, duplicated reports {dup_reports}; gaps in any origin's report numbers at the top: {}",
        report_counts[0],
        report_counts[1],
        report_counts[2],
        top_gaps.values().sum::<u64>()
    );
    println!(
        "chunks verified: CEN {}, P01 {}, S01 {}; DP files served and compared: {served}, wrong {wrong}",
        chunks[0], chunks[1], chunks[2]
    );
    if failed.is_empty() {
        println!("soak: every invariant holds");
        Ok(())
    } else {
        bail!("soak: {}", failed.join("; "))
    }
}
