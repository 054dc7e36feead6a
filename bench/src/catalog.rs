//! `bench catalog`: catalog sync of a real Debian `Packages` index (the main archive, tens of
//! thousands of records) at the top of a three-tier hierarchy on 127.0.0.1.
//!
//! Each run starts a fresh CEN -> P01 -> S01 and adds the index as an `apt` source at CEN.
//! Then, timed as whole `site-server sync now` processes (through the running daemon):
//! - the first sync (every record is new: one delta event), with the delta's size in the log;
//! - the time until S01, the third tier, has applied it: from CEN's 6701 (sync started) to
//!   S01's 40400 (catalog version applied), both stamped by the sites on one clock;
//! - a second sync of the same index (unchanged: no event; the sources' fingerprints match the
//!   last sync, so nothing is parsed);
//! - a third sync of the same records in other bytes (a blank line added, as a re-download
//!   that changed nothing would): parsed and compared in full, no event.
//!
//! Targets: first sync < 10 s, unchanged re-sync < 2 s on this 2-core machine.
//! No peer tool is named for this one; a floor is printed beside it: `lz4cat INDEX | wc -l`
//! (decompress and scan the text once), to show how much of the time is parsing and storing.

use crate::replicate::{cli, three_tiers, Site};
use crate::{median, site_server};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn time_of(site: &Site, id: u32) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let v = site.api_json(&format!("/v1/status/messages?id={id}"))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .next_back()
        .and_then(|m| m["time"].as_str())
        .and_then(|t| t.parse().ok()))
}

/// `lz4cat INDEX | wc -l` (or the plain file through `wc -l`): the floor.
fn floor(index: &Path) -> Result<f64> {
    let t = Instant::now();
    let lz4 = index.extension().is_some_and(|e| e == "lz4");
    let cmd = if lz4 {
        format!("lz4cat '{}' | wc -l", index.display())
    } else {
        format!("wc -l < '{}'", index.display())
    };
    let st = Command::new("sh")
        .args(["-c", &cmd])
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("{cmd} failed (is lz4 installed?)");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Writes `index`'s records with a blank line added into `to` (lz4 again if it was).
fn rebyte(index: &Path, to: &Path) -> Result<()> {
    let lz4 = index.extension().is_some_and(|e| e == "lz4");
    let cmd = if lz4 {
        format!(
            "(lz4cat '{}'; echo) | lz4 -q -f - '{}'",
            index.display(),
            to.display()
        )
    } else {
        format!("(cat '{}'; echo) > '{}'", index.display(), to.display())
    };
    let st = Command::new("sh").args(["-c", &cmd]).status()?;
    if !st.success() {
        bail!("{cmd} failed");
    }
    Ok(())
}

pub fn run(work: &Path, index: &Path, runs: usize) -> Result<()> {
    let ss = site_server()?;
    if !index.is_file() {
        bail!(
            "{} is missing: run `apt-get update` (it keeps the index there) or give --index FILE",
            index.display()
        );
    }
    let (mut first, mut second, mut third, mut tier3, mut floors) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut records, mut delta) = (0u64, 0u64);
    println!(
        "run  records  first sync s  delta event MiB  at S01 (3rd tier) s  unchanged re-sync s  same records, new bytes s  floor (lz4cat|wc) s"
    );
    for run in 0..runs {
        let root = work.join("sites");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)?;
        let (cen, p01, s01) = three_tiers(&ss, &root)?;
        // The source is a copy, so that the third sync can rewrite it.
        let copy = work.join(index.file_name().context("index name")?);
        fs::copy(index, &copy)?;
        cli(
            &ss,
            &[
                "sync",
                "source",
                "add",
                "--data",
                cen.data_str(),
                "--name",
                "debian",
                "--plugin",
                "apt",
                "--args",
                &format!(
                    "Path='{}';Classification=Update;Product=\"Debian 12\"",
                    copy.display()
                ),
            ],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let sync = || -> Result<(f64, serde_json::Value)> {
            let t = Instant::now();
            let out = cli(&ss, &["sync", "now", "--json", "--data", cen.data_str()])?;
            Ok((t.elapsed().as_secs_f64(), serde_json::from_str(&out)?))
        };
        let (t1, o1) = sync()?;
        records = o1["total"].as_u64().context("total")?;
        delta = o1["delta_bytes"].as_u64().context("delta_bytes")?;
        let started = time_of(&cen, 6701)?.context("CEN's 6701")?;
        let t = Instant::now();
        let at3 = loop {
            if let Some(applied) = time_of(&s01, 40400)? {
                break (applied - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
            }
            if t.elapsed() > Duration::from_secs(300) {
                bail!("S01 did not apply the catalog within 300 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (t2, o2) = sync()?;
        if o2["delta"].as_bool() != Some(false) {
            bail!("the unchanged re-sync appended an event: {o2}");
        }
        if o2["unchanged_sources"].as_bool() != Some(true) {
            bail!("the unchanged re-sync read its sources again: {o2}");
        }
        rebyte(index, &copy)?;
        let (t3, o3) = sync()?;
        if o3["delta"].as_bool() != Some(false) || o3["unchanged_sources"].as_bool() != Some(false)
        {
            bail!("the same records in new bytes: not parsed, or an event appended: {o3}");
        }
        let f = floor(index)?;
        println!(
            "{run:>3}  {records:>7}  {t1:>12.2}  {:>15.1}  {at3:>19.2}  {t2:>19.2}  {t3:>24.2}  {f:>19.2}",
            delta as f64 / (1 << 20) as f64
        );
        third.push(t3);
        first.push(t1);
        second.push(t2);
        tier3.push(at3);
        floors.push(f);
        drop((cen, p01, s01));
    }
    let (m1, m2, m3, m4, mf) = (
        median(first),
        median(second),
        median(tier3),
        median(third),
        median(floors),
    );
    println!(
        "\nmedians over {runs} run(s), {records} records, delta event {:.1} MiB ({} bytes per update):",
        delta as f64 / (1 << 20) as f64,
        delta / records.max(1)
    );
    println!(
        "  first sync            {m1:.2} s  (target < 10 s: {})  = {:.1}x the floor",
        if m1 < 10.0 { "met" } else { "MISSED" },
        m1 / mf
    );
    println!(
        "  unchanged re-sync     {m2:.2} s  (target < 2 s: {})  = {:.1}x the floor",
        if m2 < 2.0 { "met" } else { "MISSED" },
        m2 / mf
    );
    println!(
        "  same records, new bytes {m4:.2} s  (parsed and compared in full: {})  = {:.1}x the floor",
        if m4 < 2.0 { "< 2 s" } else { "over 2 s" },
        m4 / mf
    );
    println!("  applied at S01        {m3:.2} s after the sync started at CEN");
    Ok(())
}
