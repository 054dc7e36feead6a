//! Catalog sync end to end: the top site syncs an apt index (gzip, as apt keeps it) and a
//! JSON catalog; a modified index gives exactly its changes as one delta event; an unchanged
//! one adds no event; the deltas reach every tier, the courier-only site by bundle, and every
//! site's catalog version shows in the top's `status sync`; a child's `sync now` is refused;
//! a failed source is reported and, with StopOnFailure, applies nothing.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tests::{messages, TestSite};

const INDEX_V1: &str = "\
Package: curl
Version: 7.88.1-10+deb12u5
Architecture: amd64
Priority: optional
Size: 315000
Filename: pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb
SHA256: 8c1c0f2b1f4f1bd1d6f9b4c1c9c1a0b6d3f0e7c2a9b8c7d6e5f4a3b2c1d0e9f8
Description: command line tool for transferring data with URL syntax
 curl is a command line tool for transferring data with URL syntax.

Package: bash
Version: 5.2.15-2+b2
Architecture: amd64
Priority: required
Size: 1500000
Description: GNU Bourne Again SHell

Package: old-tool
Version: 1.0-1
Architecture: all
Size: 1000
Description: a tool that goes away
";

const VENDOR: &str = r#"{"updates": [
  {"id": "KB5001", "title": "2026-11 Security Update", "product": "Windows 11",
   "classification": "Security", "severity": "Critical", "bulletin": "MS26-001", "kb": "5001",
   "posted": "2020-01-14T00:00:00Z", "files": [{"name": "kb5001.msu", "size": 4096, "hash": "ab12"}]}
]}"#;

/// Writes `text` gzip-compressed to `path` (with the system's gzip, as apt's lists are).
fn write_gz(path: &Path, text: &str) {
    let plain = path.with_extension("");
    std::fs::write(&plain, text).unwrap();
    let st = Command::new("gzip")
        .args(["-f", "-n"])
        .arg(&plain)
        .status()
        .expect("gzip");
    assert!(st.success());
    assert!(path.exists(), "{}", path.display());
}

/// `sync source add` at `site`.
fn add_source(site: &TestSite, name: &str, plugin: &str, args: &str) {
    site.cli(&[
        "sync", "source", "add", "--name", name, "--plugin", plugin, "--args", args,
    ])
    .ok();
}

fn sync_now(site: &TestSite) -> Value {
    site.cli(&["sync", "now", "--json"]).json()
}

/// Every update of a site's catalog, whatever its state (id -> JSON).
fn catalog(site: &TestSite) -> Value {
    let r = site.cli(&["catalog", "list", "--all", "--json"]);
    if r.code != 0 {
        return Value::Null;
    }
    r.json()
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn log_len(s: &TestSite) -> usize {
    s.cli(&["log", "--json"]).json().as_array().unwrap().len()
}

fn sync_rows(site: &TestSite) -> Vec<(String, u64, u64)> {
    site.cli(&["status", "sync", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap().to_string(),
                r["catalog_version"].as_u64().unwrap(),
                r["behind_by"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_sync_inserts_exactly_what_changed_and_every_tier_reaches_the_same_catalog() {
    let mut s02 = TestSite::init("S02");
    let (cen, p01, s01) = tests::three_tiers_with(|_, p01, _| {
        tests::courier_child_add(p01, &s02);
    });
    // S02's `parent set` once P01 knows the top: it takes its trust root from P01.
    tests::courier_parent_set(&s02, &p01);
    s02.start();
    let work = cen.tmp.path().to_path_buf();
    let index = work.join("Packages.gz");
    write_gz(&index, INDEX_V1);
    let vendor = work.join("vendor.json");
    std::fs::write(&vendor, VENDOR).unwrap();
    add_source(
        &cen,
        "debian",
        "apt",
        &format!(
            "Path={};Classification=Security;Product=\"Debian 12\"",
            index.display()
        ),
    );
    add_source(
        &cen,
        "vendor",
        "json",
        &format!("Path='{}'", vendor.display()),
    );

    // First sync: everything is new, one delta event.
    let before = log_len(&cen);
    let o = sync_now(&cen);
    assert_eq!(o["catalog_version"], 1, "{o}");
    assert_eq!(o["counts"]["added"], 4, "{o}");
    assert_eq!(log_len(&cen), before + 1);

    // The index changes: curl upgraded, old-tool removed, zstd new.
    let v2 = INDEX_V1
        .replace("7.88.1-10+deb12u5", "7.88.1-10+deb12u6")
        .replace(
            "Package: old-tool\nVersion: 1.0-1\nArchitecture: all\nSize: 1000\nDescription: a tool that goes away\n",
            "Package: zstd\nVersion: 1.5.4+dfsg2-5\nArchitecture: amd64\nSize: 2000\nDescription: fast lossless compression\n",
        );
    write_gz(&index, &v2);
    let o = sync_now(&cen);
    assert_eq!(o["catalog_version"], 2, "{o}");
    assert_eq!(
        o["counts"],
        serde_json::json!({"added": 2, "revised": 0, "expired": 1, "superseded": 1}),
        "{o}"
    );
    assert_eq!(log_len(&cen), before + 2);
    let old_curl = "curl_7.88.1-10+deb12u5_amd64";
    let new_curl = "curl_7.88.1-10+deb12u6_amd64";
    let shown = cen.cli(&["catalog", "show", old_curl, "--json"]).json();
    assert_eq!(shown["update"]["superseded_by"], new_curl, "{shown}");
    assert!(!shown["update"]["expired"].as_bool().unwrap());
    let shown = cen.cli(&["catalog", "show", new_curl, "--json"]).json();
    assert_eq!(
        shown["supersedes"],
        serde_json::json!([old_curl]),
        "{shown}"
    );
    let expired = cen.cli(&["catalog", "list", "--expired", "--json"]).json();
    assert_eq!(ids(&expired), vec!["old-tool_1.0-1_all"]);
    let superseded = cen
        .cli(&["catalog", "list", "--superseded", "--json"])
        .json();
    assert_eq!(ids(&superseded), vec![old_curl]);

    // Unchanged: no event, only a report.
    let n6702 = messages(&cen, 6702).len();
    let o = sync_now(&cen);
    assert_eq!(
        (o["catalog_version"].as_u64(), o["delta"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(o["unchanged_sources"], true, "{o}");
    assert_eq!(log_len(&cen), before + 2);
    assert_eq!(messages(&cen, 6702).len(), n6702 + 1);

    // Down the tree: P01 and S01 get the same catalog; the top's status shows every site.
    let top = catalog(&cen);
    assert_eq!(top.as_array().unwrap().len(), 6);
    for s in [&p01, &s01] {
        s.wait_until(30, "the catalog at version 2", || catalog(s) == top);
    }
    cen.wait_until(
        30,
        "P01 and S01 at catalog version 2 in CEN's status",
        || {
            let rows = sync_rows(&cen);
            ["CEN", "P01", "S01"]
                .iter()
                .all(|c| rows.iter().any(|r| r.0 == *c && r.1 == 2 && r.2 == 0))
        },
    );
    let table = cen.cli(&["status", "sync"]).ok();
    for want in ["CATALOG VERSION", "BEHIND BY", "S01", "S02"] {
        assert!(table.contains(want), "{table}");
    }
    // S02 is courier-only: behind until a bundle brings the deltas.
    assert!(sync_rows(&cen).contains(&("S02".into(), 0, 2)));
    let bundle = work.join("b.bundle");
    p01.cli(&[
        "courier",
        "export",
        "--to",
        "S02",
        "--out",
        bundle.to_str().unwrap(),
    ])
    .ok();
    s02.cli(&["courier", "import", bundle.to_str().unwrap()])
        .ok();
    assert_eq!(catalog(&s02), top);
    let receipt = work.join("r.receipt");
    s02.cli(&["courier", "receipt", "--out", receipt.to_str().unwrap()])
        .ok();
    p01.cli(&["courier", "import", receipt.to_str().unwrap()])
        .ok();
    cen.wait_until(30, "S02 at catalog version 2 in CEN's status", || {
        sync_rows(&cen).contains(&("S02".into(), 2, 0))
    });

    // Queries at the third tier: the new updates of the last 7 days, by product and class.
    let recent = s01
        .cli(&[
            "catalog",
            "list",
            "--since",
            "7d",
            "--product",
            "debian 12",
            "--classification",
            "security",
            "--json",
        ])
        .json();
    assert_eq!(
        ids(&recent),
        vec![
            "bash_5.2.15-2+b2_amd64",
            new_curl,
            "zstd_1.5.4+dfsg2-5_amd64"
        ]
    );
    let all_recent = s01.cli(&["catalog", "list", "--since", "7d"]).ok();
    assert!(all_recent.contains("3 update(s)"), "{all_recent}");

    // A child does not sync: it says where to.
    s01.cli(&["sync", "now"]).fails(
        2,
        &["S01 is not the top site", "parent P01", "at the top site"],
    );

    // A source that fails: reported (6703, and in status sync), the other one applies.
    let vendor_gone = work.join("moved.json");
    std::fs::rename(&vendor, &vendor_gone).unwrap();
    write_gz(&index, &v2.replace("5.2.15-2+b2", "5.2.15-2+b3"));
    let r = cen.cli(&["sync", "now"]);
    r.fails(
        1,
        &[
            "catalog source vendor failed",
            "vendor.json",
            "other sources were applied",
        ],
    );
    assert!(r.stdout.contains("catalog version 3"), "{}", r.stdout);
    assert!(messages(&cen, 6703)
        .iter()
        .any(|m| m["text"].as_str().unwrap().contains("vendor")));
    let rows: Value = cen.cli(&["status", "sync", "--json"]).json();
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("vendor"),
        "{rows}"
    );
    // The failed source's update is left as it was, not expired.
    let kb = cen.cli(&["catalog", "show", "KB5001", "--json"]).json();
    assert!(!kb["update"]["expired"].as_bool().unwrap(), "{kb}");

    // With StopOnFailure=True nothing applies, even the source that could be read.
    cen.cli(&["sync", "source", "remove", "--name", "vendor"])
        .ok();
    add_source(
        &cen,
        "vendor",
        "json",
        &format!("Path='{}';StopOnFailure=True", vendor.display()),
    );
    write_gz(&index, INDEX_V1);
    let len = log_len(&cen);
    let cat = catalog(&cen);
    cen.cli(&["sync", "now"]).fails(
        1,
        &[
            "catalog source vendor failed",
            "StopOnFailure=True",
            "nothing was applied",
        ],
    );
    assert_eq!((log_len(&cen), catalog(&cen)), (len, cat));
    // Back in place: the next sync is clean and the status error clears.
    std::fs::rename(&vendor_gone, &vendor).unwrap();
    let o = sync_now(&cen);
    assert_eq!(o["catalog_version"], 4, "{o}");
    let rows: Value = cen.cli(&["status", "sync", "--json"]).json();
    assert!(rows[0]["last_error"].is_null(), "{rows}");
    // The same file with other settings (edited in site.toml, same order) is read again:
    // its three updates are revised.
    let toml_path = cen.data().join("site.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    assert!(toml.contains("Debian 12"), "{toml}");
    std::fs::write(&toml_path, toml.replace("Debian 12", "Debian 12.1")).unwrap();
    let o = sync_now(&cen);
    assert_eq!(
        (
            o["catalog_version"].as_u64(),
            o["counts"]["revised"].as_u64()
        ),
        (Some(5), Some(3)),
        "{o}"
    );
}

#[test]
fn bad_sources_are_refused_with_one_line_and_change_nothing() {
    let mut cen = TestSite::init("CEN");
    let toml = std::fs::read_to_string(cen.data().join("site.toml")).unwrap();
    for (args, want) in [
        (
            vec!["--plugin", "apt", "--args", "Classification=Security"],
            "needs Path",
        ),
        (
            vec!["--plugin", "apt", "--args", "Path=/x;Colour=red"],
            "takes no argument Colour",
        ),
        (
            vec!["--plugin", "wsus", "--args", "Path=/x"],
            "no plug-in named \"wsus\"",
        ),
        (vec!["--plugin", "json", "--args", "Path=\"/x"], "quote"),
        (
            vec!["--plugin", "json", "--args", "Path=/x;Path=/y"],
            "given twice",
        ),
    ] {
        let mut a = vec!["sync", "source", "add", "--name", "s"];
        a.extend(args);
        cen.cli(&a).fails(2, &["sync source s", want]);
    }
    assert_eq!(
        std::fs::read_to_string(cen.data().join("site.toml")).unwrap(),
        toml
    );
    // No source: `sync now` (here without a daemon) says how to add one.
    cen.cli(&["sync", "now"])
        .fails(2, &["no catalog sources", "[[sync.source]]"]);
    cen.cli(&["sync", "schedule", "at two"])
        .fails(2, &["sync schedule \"at two\"", "daily 02:00"]);
    // A source added by hand with a bad index: the sync fails, naming the record.
    let idx = cen.tmp.path().join("Packages");
    std::fs::write(&idx, "Package: a\nVersion: 1\n\nPackage: b\nSize: 3\n").unwrap();
    add_source(&cen, "deb", "apt", &format!("Path={}", idx.display()));
    cen.cli(&["sync", "schedule", "daily 02:00"]).ok();
    let r = cen.cli(&["sync", "now"]);
    r.fails(
        1,
        &[
            "catalog source deb failed",
            "line 4",
            "no Version",
            "nothing was applied",
        ],
    );
    cen.start();
    // Only the top's own trust events (its genesis, a checkpoint): no catalog delta.
    let log = cen.cli(&["log", "--json"]).ok();
    assert!(!log.contains("catalog_delta"), "{log}");
    assert_eq!(messages(&cen, 6703).len(), 1);
}
