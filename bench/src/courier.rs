//! `bench courier`: export and import of a package by courier bundle, beside `cp` of the same
//! bytes, in the same run.
//!
//! A site P01 (its daemon running) publishes one incompressible tree and targets it at its
//! courier-only child S02 (untimed). Then, `runs` times, alternated:
//! - `site-server courier export --to S02 --since-receipt` (every chunk, every time) into a
//!   new bundle file: MB/s of package bytes and peak RSS (wait4);
//! - `site-server courier import` of it into a fresh S02 (no daemon: the import opens the
//!   site itself), with full verification (signature, section hashes, every chunk's BLAKE3,
//!   one sync): MB/s and peak RSS;
//! - `cp -r` of the source tree to a new directory.

use crate::replicate::{cli, new_site, noise_tree};
use crate::{median, run_timed, site_server};
use anyhow::Result;
use std::fs;
use std::path::Path;
use std::process::Command;

pub fn run(work: &Path, mib: u64, runs: usize) -> Result<()> {
    let ss = site_server()?;
    let tree = work.join("tree");
    eprintln!(
        "building a {mib} MiB incompressible tree in {}",
        tree.display()
    );
    noise_tree(&tree, mib, 7)?;
    let total: u64 = fs::read_dir(&tree)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let root = work.join("sites");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    let mut p01 = new_site(&ss, &root, "P01")?;
    let s02 = new_site(&ss, &root, "S02")?;
    let (fp, key) = s02.keys()?;
    cli(
        &ss,
        &[
            "child",
            "add",
            "--data",
            p01.data_str(),
            "--code",
            "S02",
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
            "--courier",
        ],
    )?;
    let (pfp, pkey) = p01.keys()?;
    p01.start()?;
    let out = cli(
        &ss,
        &[
            "package",
            "publish",
            "--json",
            "--data",
            p01.data_str(),
            "--source",
            tree.to_str().unwrap(),
            "--name",
            "Big",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let pkg = v["package"].as_str().unwrap_or_default().to_string();
    cli(
        &ss,
        &[
            "package",
            "distribute",
            &pkg,
            "--data",
            p01.data_str(),
            "--site",
            "S02",
        ],
    )?;
    let mb = |secs: f64| total as f64 / secs / 1e6;
    let (mut ex, mut im, mut cp, mut ex_rss, mut im_rss, mut rex, mut rim) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    println!("run  export MB/s  import MB/s  cp MB/s  export/cp  import/cp  export RSS MiB  import RSS MiB");
    for run in 0..runs {
        let bundle = work.join("bundle");
        let _ = fs::remove_file(&bundle);
        let (te, re) = run_timed(
            Command::new(&ss)
                .args([
                    "courier",
                    "export",
                    "--to",
                    "S02",
                    "--since-receipt",
                    "--data",
                    p01.data_str(),
                    "--out",
                ])
                .arg(&bundle),
        )?;
        // A fresh child each run: everything is imported.
        let child = root.join(format!("S02-{run}"));
        let _ = fs::remove_dir_all(&child);
        cli(
            &ss,
            &[
                "init",
                "--code",
                "S02",
                "--listen",
                "127.0.0.1:0",
                "--data",
                child.to_str().unwrap(),
            ],
        )?;
        // The same identity as the S02 the parent knows is not needed to import: the bundle
        // is checked against the parent's key.
        cli(
            &ss,
            &[
                "parent",
                "set",
                "--courier",
                "--code",
                "P01",
                "--fingerprint",
                &pfp,
                "--pubkey",
                &pkey,
                "--data",
                child.to_str().unwrap(),
            ],
        )?;
        let (ti, ri) = run_timed(
            Command::new(&ss)
                .args(["courier", "import", "--data", child.to_str().unwrap()])
                .arg(&bundle),
        )?;
        let dst = work.join("cp-dst");
        let _ = fs::remove_dir_all(&dst);
        let (tc, _) = run_timed(Command::new("cp").arg("-r").arg(&tree).arg(&dst))?;
        println!(
            "{run:>3}  {:>11.0}  {:>11.0}  {:>7.0}  {:>9.2}  {:>9.2}  {:>14}  {:>14}",
            mb(te),
            mb(ti),
            mb(tc),
            tc / te,
            tc / ti,
            re / 1024,
            ri / 1024
        );
        ex.push(te);
        im.push(ti);
        cp.push(tc);
        rex.push(tc / te);
        rim.push(tc / ti);
        ex_rss.push(re / 1024);
        im_rss.push(ri / 1024);
        let _ = fs::remove_dir_all(&child);
        let _ = fs::remove_dir_all(&dst);
    }
    println!();
    println!("{} MiB package, {runs} runs, medians:", total >> 20);
    println!("  courier export              {:>6.0} MB/s", mb(median(ex)));
    println!("  courier import (verified)   {:>6.0} MB/s", mb(median(im)));
    println!("  cp -r of the same bytes     {:>6.0} MB/s", mb(median(cp)));
    println!(
        "  export / cp                 {:>6.2}  (median of per-run ratios; target >= 0.70)",
        median(rex)
    );
    println!(
        "  import / cp                 {:>6.2}  (median of per-run ratios; target >= 0.50)",
        median(rim)
    );
    println!(
        "  peak RSS: export {} MiB, import {} MiB (max over runs; target <= 150)",
        ex_rss.iter().max().unwrap_or(&0),
        im_rss.iter().max().unwrap_or(&0)
    );
    drop(p01);
    Ok(())
}
