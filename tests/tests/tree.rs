//! A tree of 21 real sites (one top, 4 primaries, 4 secondaries under each) on 127.0.0.1,
//! built and started by the harness `bench tree` uses: it converges. Every link comes up, an
//! advertisement created at the top is applied at every site, a package targeted at every
//! leaf is complete at every leaf, and the top's status (read from roll-ups and indexes,
//! never a scan of its report log) shows every site's start and every leaf's content sent.
//! This checks convergence, not time: the times are `bench tree`'s.

use serde_json::Value;
use site_server::harness::SiteTree;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tests::{bins, sample_tree};

fn wait(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what} did not happen within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_tree_of_21_sites_converges() {
    let root = tempfile::tempdir().unwrap();
    let mut tree = SiteTree::build(&bins(), root.path(), &[4, 4], 2).unwrap();
    assert_eq!(tree.sites.len(), 21);
    tree.start_all(4).unwrap();
    tree.wait_all_active(Duration::from_secs(120)).unwrap();
    let codes: BTreeSet<String> = tree.sites.iter().map(|s| s.code.clone()).collect();
    let top = &tree.sites[0];

    // Every site's start reaches the top, through the site index of its message log.
    wait(60, "every site's 40001 at the top", || {
        let seen: BTreeSet<String> = top
            .api_json("/v1/status/messages?id=40001&limit=1000")
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["site"].as_str().map(String::from))
            .collect();
        if seen != codes {
            eprintln!(
                "missing at the top: {:?}",
                codes.difference(&seen).collect::<Vec<_>>()
            );
        }
        seen == codes
    });
    let one = top
        .api_json("/v1/status/messages?site=S0G&id=40001")
        .unwrap();
    assert!(
        one.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|m| m["site"] == "S0G")),
        "{one}"
    );

    // A package targeted at every leaf.
    let src = root.path().join("src");
    sample_tree(&src);
    let out = top
        .cli_json(&[
            "package",
            "publish",
            "--source",
            src.to_str().unwrap(),
            "--name",
            "Tool",
            "--json",
        ])
        .unwrap();
    let pkg = out["package"].as_str().unwrap().to_string();
    let leaves: Vec<String> = tree
        .leaves()
        .iter()
        .map(|i| tree.sites[*i].code.clone())
        .collect();
    assert_eq!(leaves.len(), 16);
    let mut args = vec!["package", "distribute", pkg.as_str()];
    for l in &leaves {
        args.extend(["--site", l.as_str()]);
    }
    // The top knows the leaves once their parents' reports of their children have come up.
    wait(60, "the top to know every leaf", || {
        top.cli(&args).is_ok_and(|r| r.code == 0)
    });

    // An advertisement: applied at every site.
    top.cli_ok(&[
        "adv",
        "create",
        "--package",
        &pkg,
        "--program",
        "Install",
        "--collection",
        "All",
    ])
    .unwrap();
    for s in &tree.sites {
        wait(60, &format!("the advertisement at {}", s.code), || {
            s.api_json("/v1/adverts")
                .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == 1))
        });
    }

    // The content: complete at every leaf.
    let complete = |s: &site_server::harness::LocalSite| {
        s.api_json("/v1/status/packages").is_ok_and(|v| {
            v.as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r["package"] == pkg.as_str()
                        && r["chunks"].as_u64() > Some(0)
                        && r["chunks_present"] == r["chunks"]
                })
            })
        })
    };
    for i in tree.leaves() {
        let s = &tree.sites[i];
        wait(120, &format!("{pkg} complete at {}", s.code), || {
            complete(s)
        });
    }

    // The top's roll-up of the senders: every leaf sent, as its parent's sender said.
    wait(60, "every leaf sent, at the top", || {
        let rows = top.api_json("/v1/status/packages").unwrap_or(Value::Null);
        let sent: BTreeSet<String> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["package"] == pkg.as_str())
            .flat_map(|r| r["sending"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["state"] == "sent")
            .filter_map(|s| s["site"].as_str().map(String::from))
            .collect();
        leaves.iter().all(|l| sent.contains(l))
    });

    // Every site says what it costs.
    let v = top.api_json("/v1/status/sites").unwrap();
    assert_eq!(v["site"]["code"], "CEN");
    assert!(v["site"]["rss_bytes"].as_u64() > Some(0), "{v}");
    assert!(v["site"]["open_files"].as_u64() > Some(0), "{v}");
    assert_eq!(v["links"].as_array().map(Vec::len), Some(4));
    tree.stop_all(4).unwrap();
}
