//! The README's quickstart, end to end: init, run, publish, list, re-publish, show, adverts,
//! log and status messages, against a real daemon on 127.0.0.1.

use tests::{sample_tree, TestSite};

#[test]
fn publish_list_republish_and_change() {
    let mut site = TestSite::init("CEN");
    let id = site.cli(&["identity", "--json"]).json();
    assert_eq!(id["code"], "CEN");
    assert_eq!(id["fingerprint"].as_str().unwrap().len(), 64);
    site.start();

    let src = site.tmp.path().join("src");
    sample_tree(&src);
    let src_s = src.display().to_string();
    let out = site
        .cli(&[
            "package", "publish", "--source", &src_s, "--name", "Tools", "--json",
        ])
        .json();
    assert_eq!(out["package"], "CEN00001");
    assert_eq!(out["source_version"], 1);
    assert_eq!(out["unchanged"], false);
    let first_new = out["new_chunks"].as_u64().unwrap();
    assert!(first_new > 3);
    let store_after_first = site.store_listing();

    let list = site.cli(&["package", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "CEN00001");
    assert_eq!(list[0]["name"], "Tools");
    assert_eq!(list[0]["files"], 3);

    // Same content again: no new version, no new chunk, and it says so.
    let again = site.cli(&[
        "package",
        "publish",
        "--source",
        &src_s,
        "--package",
        "CEN00001",
    ]);
    let text = again.ok();
    assert!(text.contains("unchanged"), "{text}");
    assert_eq!(site.store_listing(), store_after_first, "no chunk added");
    let rehash = site
        .cli(&[
            "package",
            "publish",
            "--source",
            &src_s,
            "--package",
            "CEN00001",
            "--rehash",
            "--json",
        ])
        .json();
    assert_eq!(rehash["unchanged"], true);

    // One edited line in the middle of a large file: a new version with few new chunks.
    let guide = src.join("docs/en/guide.txt");
    let t = std::fs::read_to_string(&guide)
        .unwrap()
        .replace("line 15000 ", "line 15000 (edited) ");
    std::fs::write(&guide, t).unwrap();
    let v2 = site
        .cli(&[
            "package",
            "publish",
            "--source",
            &src_s,
            "--package",
            "CEN00001",
            "--json",
        ])
        .json();
    assert_eq!(v2["source_version"], 2);
    let new = v2["new_chunks"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&new),
        "only the changed chunks are new: {new}"
    );
    assert_eq!(
        site.store_listing().len(),
        store_after_first.len() + new as usize
    );

    let show = site.cli(&["package", "show", "CEN00001", "--json"]).json();
    assert_eq!(show["package"]["versions"].as_array().unwrap().len(), 2);
    let files = show["manifest"]["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["README", "bin/tool.bin", "docs/en/guide.txt"]);

    let adv = site
        .cli(&[
            "adv",
            "create",
            "--package",
            "CEN00001",
            "--program",
            "Install",
            "--command",
            "install.sh",
            "--collection",
            "All Servers",
            "--start",
            "2026-12-01T22:00",
            "--mandatory",
            "2026-12-02T03:00",
            "--utc",
            "--json",
        ])
        .json();
    assert_eq!(adv["id"], "CEN20001");
    assert_eq!(adv["time_basis"], "utc");
    assert_eq!(adv["program"]["exit"]["success_reboot_required"][0], 3010);
    let advs = site.cli(&["adv", "list", "--json"]).json();
    assert_eq!(advs.as_array().unwrap().len(), 1);

    let log = site.cli(&["log", "--json"]).json();
    let kinds: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "site-key-delegated",
            "checkpoint",
            "package-version-published",
            "package-version-published",
            "advertisement-created"
        ]
    );
    let seqs: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["origin_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    let msgs = site
        .cli(&["status", "messages", "--id", "40100", "--json"])
        .json();
    assert_eq!(msgs.as_array().unwrap().len(), 2);
    assert_eq!(msgs[0]["site"], "CEN");
    assert!(msgs[1]["text"]
        .as_str()
        .unwrap()
        .contains("version 2 published"));
    let recent = site
        .cli(&["status", "messages", "--since", "1h", "--json"])
        .json();
    assert!(recent.as_array().unwrap().len() >= 4);

    // Everything survives a restart.
    site.stop();
    site.start();
    let list2 = site.cli(&["package", "list", "--json"]).json();
    assert_eq!(list2[0]["source_version"], 2);
}

#[test]
fn demo_runs_to_completion() {
    let run = tests::site_server(&["demo"]);
    let out = run.ok();
    assert!(out.contains("published CEN00001"), "{out}");
    assert!(out.contains("S01 holds every chunk, verified"), "{out}");
    assert!(out.contains("18 chunks (1 new)"), "{out}");
    assert!(
        out.contains("S01: 18/18 chunks of CEN00001 version 2"),
        "{out}"
    );
    assert!(out.contains("demo complete"), "{out}");
}
