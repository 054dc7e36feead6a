//! Content store-and-forward between real processes on 127.0.0.1: CEN -> P01 -> S01.

use serde_json::Value;
use tests::{
    big_tree, complete, content_row, distribute, link_child, link_parent, messages, publish,
    sample_tree, three_tiers, TestSite,
};

/// Every chunk file at `site` re-hashes to its name.
fn store_verifies(site: &TestSite) -> u64 {
    let v = site.cli(&["store", "verify", "--json"]).json();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    v["chunks_ok"].as_u64().unwrap()
}

#[test]
fn a_package_targeted_at_s01_reaches_it_through_p01_and_a_new_version_moves_only_changes() {
    let (cen, p01, s01) = three_tiers();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    // A typo is refused and changes nothing.
    cen.cli(&["package", "distribute", &pkg, "--site", "S02"])
        .fails(2, &["site S02", "status sites"]);
    distribute(&cen, &pkg, "S01");
    s01.wait_until(30, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    assert!(complete(&p01, &pkg, 1), "the middle site holds it too");
    let chunks = content_row(&s01, &pkg).unwrap()["chunks"].as_u64().unwrap();
    assert_eq!(
        store_verifies(&s01),
        chunks,
        "exactly the package's chunks, all verified"
    );
    assert_eq!(store_verifies(&p01), chunks);
    // S01's "complete" message reaches the top, with its origin.
    cen.wait_until(20, "S01's 40210 at CEN", || {
        messages(&cen, 40210).iter().any(|m| m["origin"] == "S01")
    });
    // Again, no-op.
    let again = cen
        .cli(&["package", "distribute", &pkg, "--site", "S01"])
        .ok();
    assert!(again.contains("already targeted"), "{again}");

    // Version 2 changes one small file: S01 fetches only the changed chunks.
    std::fs::write(src.join("README"), b"read me, version 2\n").unwrap();
    publish(&cen, &src, &["--package", &pkg]);
    s01.wait_until(30, "version 2 complete at S01", || complete(&s01, &pkg, 2));
    let fetching: Vec<Value> = messages(&s01, 40211)
        .into_iter()
        .filter(|m| m["insertion"][1] == "2")
        .collect();
    assert_eq!(fetching.len(), 1, "{fetching:?}");
    assert_eq!(
        fetching[0]["insertion"][3], "1",
        "one chunk missing: {fetching:?}"
    );
    assert_eq!(store_verifies(&s01), chunks + 1);
}

#[test]
fn a_corrupt_chunk_from_the_parent_is_refused_and_asked_for_again_on_the_same_link() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    link_child(&cen, &p01);
    // CEN flips a byte in the first three chunks it sends.
    cen.start_with_env(&[("SITEREP_FAULT_CORRUPT_SENDS", "3")]);
    link_parent(&p01, &cen);
    p01.start();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    distribute(&cen, &pkg, "P01");
    p01.wait_until(30, "the package complete at P01", || {
        complete(&p01, &pkg, 1)
    });
    let refused = messages(&p01, 40203);
    assert_eq!(
        refused.len(),
        3,
        "every corrupt copy refused: {refused:?} (none at all: the site-server binary was built \
         without the `fault-injection` feature; build it with `cargo test --workspace`)"
    );
    let chunks = content_row(&p01, &pkg).unwrap()["chunks"].as_u64().unwrap();
    assert_eq!(store_verifies(&p01), chunks, "nothing unverified stored");
    // The link survived: P01 connected once.
    let ups: Vec<Value> = messages(&cen, 40200);
    assert_eq!(ups.len(), 1, "one connection: {ups:?}");
}

/// Polls `status packages` at `site` until some but not all of `pkg` is there.
fn wait_partial(site: &TestSite, pkg: &str) {
    site.wait_until(60, "a partial transfer", || {
        content_row(site, pkg).is_some_and(|r| {
            let (have, all) = (
                r["chunks_present"].as_u64().unwrap(),
                r["chunks"].as_u64().unwrap(),
            );
            have > 0 && have < all / 2
        })
    });
}

#[test]
fn a_child_killed_mid_transfer_resumes_without_starting_over() {
    let (cen, p01, mut s01) = three_tiers();
    let src = cen.tmp.path().join("big");
    big_tree(&src, 256);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    distribute(&cen, &pkg, "S01");
    wait_partial(&s01, &pkg);
    s01.kill9();
    s01.start();
    s01.wait_until(120, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    let fetching = messages(&s01, 40211);
    assert_eq!(fetching.len(), 2, "once per start: {fetching:?}");
    let missing: Vec<u64> = fetching
        .iter()
        .map(|m| m["insertion"][3].as_str().unwrap().parse().unwrap())
        .collect();
    let total: u64 = fetching[0]["insertion"][4]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(missing[0], total);
    assert!(
        missing[1] < total,
        "resumed, not started over: {missing:?} of {total}"
    );
    assert_eq!(store_verifies(&s01), total, "no chunk stored unverified");
    assert_eq!(store_verifies(&p01), total);
    // Every event once: the log holds each (origin, seq) once and counts agree.
    let log = s01.cli(&["log", "--json"]).json();
    let mut keys: Vec<(String, u64)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["origin"].as_str().unwrap().into(),
                e["origin_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "no event twice");
    // CEN's events each once (the rest are P01's own: the delegation of S01's key).
    let cen_log = cen.cli(&["log", "--json"]).json();
    assert_eq!(
        keys.iter().filter(|(o, _)| o == "CEN").count(),
        cen_log.as_array().unwrap().len(),
        "CEN's events, each once"
    );
}

#[test]
fn the_middle_site_killed_mid_transfer_restarts_and_its_child_catches_up() {
    let (cen, mut p01, s01) = three_tiers();
    // Restart P01 on the same port, so that S01 (not restarted) finds it again.
    p01.pin_listen_port();
    let src = cen.tmp.path().join("big");
    big_tree(&src, 256);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    distribute(&cen, &pkg, "S01");
    wait_partial(&s01, &pkg);
    p01.kill9();
    std::thread::sleep(std::time::Duration::from_millis(300));
    p01.start();
    s01.wait_until(120, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    let total = content_row(&s01, &pkg).unwrap()["chunks"].as_u64().unwrap();
    assert_eq!(store_verifies(&s01), total);
    assert_eq!(store_verifies(&p01), total);
    // An event published after the restart reaches S01 too.
    let src2 = cen.tmp.path().join("small");
    sample_tree(&src2);
    let pkg2 = publish(&cen, &src2, &["--name", "After"]);
    s01.wait_until(30, "the new package's event at S01", || {
        s01.cli(&["package", "show", &pkg2]).code == 0
    });
}
