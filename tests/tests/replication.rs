//! Config log replication over QUIC between real processes on 127.0.0.1: CEN -> P01 -> S01.

use tests::{link_child, link_child_as, link_parent, log_keys, sample_tree, three_tiers, TestSite};

/// Events of `site`'s log as (origin, origin_seq).
/// The keys of `keys` whose origin is `origin`.
fn of(keys: &[(String, u64)], origin: &str) -> Vec<(String, u64)> {
    keys.iter().filter(|k| k.0 == origin).cloned().collect()
}

/// Origin sequence numbers of the status messages at `site` that `origin` raised.
fn report_seqs(site: &TestSite, origin: &str) -> Vec<u64> {
    site.cli(&["status", "messages", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["origin"] == origin)
        .map(|r| r["origin_seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn events_flow_down_three_tiers_once_and_in_order() {
    let (cen, mut p01, mut s01) = three_tiers();

    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let src_s = src.display().to_string();
    cen.cli(&["package", "publish", "--source", &src_s, "--name", "Tools"])
        .ok();
    cen.cli(&[
        "adv",
        "create",
        "--package",
        "CEN00001",
        "--program",
        "Go",
        "--collection",
        "All",
    ])
    .ok();
    // CEN's log: its trust events (its genesis, P01's key, a checkpoint), then the two.
    let want = log_keys(&cen);
    assert_eq!(want.len(), 5, "{want:?}");
    s01.wait_until(20, "CEN's events at S01", || {
        of(&log_keys(&s01), "CEN") == want
    });
    assert_eq!(of(&log_keys(&p01), "CEN"), want);
    let pkgs = s01.cli(&["package", "list", "--json"]).json();
    assert_eq!(pkgs[0]["id"], "CEN00001");

    // Link status on both ends: active, cursors at the end of the log, no backlog.
    cen.wait_until(20, "P01's acknowledgement at CEN", || {
        let sites = cen.cli(&["status", "sites", "--json"]).json()["links"].clone();
        sites[0]["peer"] == "P01"
            && sites[0]["role"] == "child"
            && sites[0]["state"] == "active"
            && sites[0]["config_cursor"] == want.len()
            && sites[0]["backlog_events"] == 0
    });
    let up = s01.cli(&["status", "sites", "--json"]).json()["links"].clone();
    assert_eq!(up[0]["peer"], "P01");
    assert_eq!(up[0]["role"], "parent");
    assert_eq!(up[0]["state"], "active");
    // P01's log: CEN's events and P01's delegation of S01's key.
    assert_eq!(up[0]["config_cursor"], log_keys(&p01).len());
    assert!(s01.cli(&["status", "sites"]).ok().contains("active"));

    // Reports flow up: S01's start message reaches CEN, with its origin, once.
    cen.wait_until(20, "S01's status messages at CEN", || {
        let m = cen.cli(&["status", "messages", "--json"]).json();
        m.as_array()
            .unwrap()
            .iter()
            .any(|r| r["origin"] == "S01" && r["id"] == 40001 && r["site"] == "S01")
    });

    // An event originated at the middle site flows to its subtree only.
    std::fs::write(src.join("README"), b"p01 edition\n").unwrap();
    p01.cli(&["package", "publish", "--source", &src_s, "--name", "Local"])
        .ok();
    let want_s01 = log_keys(&p01);
    assert_eq!(
        of(&want_s01, "P01"),
        [("P01".to_string(), 1), ("P01".to_string(), 2)]
    );
    s01.wait_until(20, "P01's event at S01", || log_keys(&s01) == want_s01);
    assert_eq!(log_keys(&cen), want, "nothing flows up the config log");

    // Restart the middle site and the leaf: they resume from their cursors, nothing twice.
    p01.stop();
    s01.stop();
    cen.cli(&[
        "package",
        "publish",
        "--source",
        &src_s,
        "--package",
        "CEN00001",
    ])
    .ok();
    p01.start();
    // P01 listens on an ephemeral port in tests: point S01 at its new one.
    link_parent(&s01, &p01);
    s01.start();
    let cen_all: Vec<u64> = log_keys(&cen).iter().map(|k| k.1).collect();
    s01.wait_until(20, "CEN's new event at S01", || {
        log_keys(&s01).iter().filter(|k| k.0 == "CEN").count() == cen_all.len()
    });
    let keys = log_keys(&s01);
    let mut dedup = keys.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), keys.len(), "no event applied twice: {keys:?}");
    let cen_seqs: Vec<u64> = keys.iter().filter(|k| k.0 == "CEN").map(|k| k.1).collect();
    assert_eq!(cen_seqs, cen_all, "in the parent's order");

    // After the restarts, every report of S01 is at CEN exactly once.
    let s01_own = report_seqs(&s01, "S01");
    cen.wait_until(20, "all of S01's reports at CEN", || {
        let at_cen = report_seqs(&cen, "S01");
        s01_own.iter().all(|q| at_cen.contains(q))
    });
    let at_cen = report_seqs(&cen, "S01");
    let mut unique = at_cen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), at_cen.len(), "no report twice: {at_cen:?}");
}

#[test]
fn a_pinned_certificate_claiming_another_code_is_refused() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    // CEN pins P01's certificate under the code P02: P01's Hello says P01.
    link_child_as(&cen, &p01, "P02");
    cen.start();
    link_parent(&p01, &cen);
    cen.cli(&[
        "package",
        "publish",
        "--source",
        cen.data_str(),
        "--name",
        "X",
    ])
    .ok();
    p01.start();
    cen.wait_until(20, "a refusal status message at CEN", || {
        let m = cen
            .cli(&["status", "messages", "--id", "40202", "--json"])
            .json();
        m.as_array()
            .unwrap()
            .iter()
            .any(|r| r["text"].as_str().unwrap_or("").contains("pinned for P02"))
    });
    assert!(
        log_keys(&p01).is_empty(),
        "nothing applied at the refused child"
    );
}

#[test]
fn an_unpinned_child_is_refused_with_a_status_message() {
    let mut cen = TestSite::init("CEN");
    let mut stranger = TestSite::init("P01");
    cen.start();
    link_parent(&stranger, &cen);
    stranger.start();
    cen.wait_until(20, "a refusal status message at CEN", || {
        let m = cen
            .cli(&["status", "messages", "--id", "40202", "--json"])
            .json();
        !m.as_array().unwrap().is_empty()
    });
    assert!(log_keys(&stranger).is_empty());
}

#[test]
fn a_child_killed_while_catching_up_applies_every_event_once() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    link_child(&cen, &p01);
    cen.start();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    cen.cli(&[
        "package",
        "publish",
        "--source",
        src.to_str().unwrap(),
        "--name",
        "T",
    ])
    .ok();
    for i in 0..60 {
        cen.cli(&[
            "adv",
            "create",
            "--package",
            "CEN00001",
            "--program",
            &format!("P{i}"),
            "--collection",
            "All",
        ])
        .ok();
    }
    link_parent(&p01, &cen);
    // Kill the child (SIGKILL) at different moments of its catching up.
    for delay_ms in [0u64, 30, 80] {
        p01.start();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        p01.kill9();
    }
    p01.start();
    // 61 decided, after CEN's genesis, its delegation of P01 and its first checkpoint.
    let n = log_keys(&cen).len();
    assert_eq!(n, 64);
    p01.wait_until(30, "all of CEN's events at P01", || {
        log_keys(&p01).len() >= n
    });
    let keys = log_keys(&p01);
    let seqs: Vec<u64> = keys.iter().map(|k| k.1).collect();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "each once, in order"
    );
    let advs = p01.cli(&["adv", "list", "--json"]).json();
    assert_eq!(advs.as_array().unwrap().len(), 60);
}
