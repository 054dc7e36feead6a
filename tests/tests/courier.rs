//! Courier end to end: a courier-only site S02 under P01 (CEN -> P01 over the network) gets
//! a package by bundle, sends a receipt back; bundles applied twice, tampered, cut off,
//! signed by another key, for another site or out of order are refused and change nothing;
//! multi-volume bundles import only whole.

use serde_json::Value;
use tests::{complete, link_child, link_parent, messages, publish, sample_tree, TestSite};

/// The config log and content store of `s`: what a refused import must not change.
fn snapshot(s: &TestSite) -> (String, Vec<(std::path::PathBuf, u64)>) {
    (s.cli(&["log", "--json"]).ok(), s.store_listing())
}

fn log_len(s: &TestSite) -> usize {
    s.cli(&["log", "--json"]).json().as_array().unwrap().len()
}

#[test]
fn a_courier_site_gets_content_by_bundle_and_reports_back_by_receipt() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    let mut s02 = TestSite::init("S02");
    link_child(&cen, &p01);
    cen.start();
    link_parent(&p01, &cen);
    // After P01 knows the top: S02 takes its trust root from P01.
    let pkey = tests::link_courier(&p01, &s02);
    p01.start();
    s02.start();
    let work = cen.tmp.path().to_path_buf();

    let src = work.join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    tests::distribute(&cen, &pkg, "S02");
    p01.wait_until(30, "the package at P01 (on the way to S02)", || {
        complete(&p01, &pkg, 1)
    });

    // Export at P01, import at S02: the events and the chunks arrive, verified.
    let b1 = work.join("b1.bundle");
    let out = p01
        .cli(&[
            "courier",
            "export",
            "--to",
            "S02",
            "--out",
            b1.to_str().unwrap(),
        ])
        .ok();
    assert!(out.contains("chunk(s)"), "{out}");
    let out = s02.cli(&["courier", "import", b1.to_str().unwrap()]).ok();
    assert!(out.contains("applied"), "{out}");
    assert!(complete(&s02, &pkg, 1), "the package is complete at S02");
    assert_eq!(log_len(&s02), log_len(&p01));
    assert_eq!(s02.cli(&["store", "verify"]).code, 0);
    // The same bundle again: a no-op that says so.
    let before = snapshot(&s02);
    let out = s02.cli(&["courier", "import", b1.to_str().unwrap()]).ok();
    assert!(out.contains("already applied"), "{out}");
    assert_eq!(snapshot(&s02), before);

    // The receipt brings S02's messages up: its 40301 reaches P01 and then CEN.
    let r1 = work.join("r1.receipt");
    s02.cli(&["courier", "receipt", "--out", r1.to_str().unwrap()])
        .ok();
    let out = p01.cli(&["courier", "import", r1.to_str().unwrap()]).ok();
    assert!(out.contains("receipt from S02"), "{out}");
    cen.wait_until(20, "S02's 40301 at CEN", || {
        messages(&cen, 40301).iter().any(|m| m["site"] == "S02")
    });
    assert!(!messages(&p01, 40303).is_empty());

    // A second export carries only what is new: one event, no chunk.
    tests::advertise(&cen, &pkg, "Install").ok();
    p01.wait_until(20, "the advert at P01", || {
        log_len(&p01) == log_len(&s02) + 1
    });
    // `status sites` at P01: the last export and receipt, and what the next export carries.
    let rows: Value = p01.cli(&["status", "sites", "--json"]).json()["links"].clone();
    let c = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["peer"] == "S02")
        .expect("S02 row")["courier"]
        .clone();
    assert!(
        !c["last_export"].is_null() && !c["last_receipt"].is_null(),
        "{c}"
    );
    assert_eq!(
        (c["next_events"].as_u64(), c["next_chunks"].as_u64()),
        (Some(1), Some(0)),
        "{c}"
    );
    assert!(p01
        .cli(&["status", "sites"])
        .ok()
        .contains("NEXT EXPORT CARRIES"));
    let b2 = work.join("b2.bundle");
    let out = p01
        .cli(&[
            "courier",
            "export",
            "--to",
            "S02",
            "--out",
            b2.to_str().unwrap(),
        ])
        .ok();
    assert!(out.contains("(1 events), 0 chunk(s)"), "{out}");

    // Refused, each with one line, exit 2, nothing changed: a flipped byte anywhere in a
    // few places, a cut-off file, another signer, a bundle for another site.
    let before = snapshot(&s02);
    let bytes = std::fs::read(&b2).unwrap();
    for (i, at) in [20, bytes.len() / 2, bytes.len() - 80]
        .into_iter()
        .enumerate()
    {
        let mut x = bytes.clone();
        x[at] ^= 0x10;
        let p = work.join(format!("tampered{i}"));
        std::fs::write(&p, x).unwrap();
        s02.cli(&["courier", "import", p.to_str().unwrap()])
            .fails(2, &["tampered"]);
    }
    let cut = work.join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    s02.cli(&["courier", "import", cut.to_str().unwrap()])
        .fails(2, &["cut"]);
    let for_p01 = work.join("for-p01.bundle");
    cen.cli(&[
        "courier",
        "export",
        "--to",
        "P01",
        "--out",
        for_p01.to_str().unwrap(),
    ])
    .ok();
    s02.cli(&["courier", "import", for_p01.to_str().unwrap()])
        .fails(2, &["for site P01, not S02"]);
    assert_eq!(snapshot(&s02), before);
    // Another signer: S02 trusting CEN's key as P01's.
    s02.stop();
    let toml_path = s02.data().join("site.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let (_, cen_key) = cen.keys();
    std::fs::write(&toml_path, toml.replace(&pkey, &cen_key)).unwrap();
    s02.cli(&["courier", "import", b2.to_str().unwrap()])
        .fails(2, &["signature", "P01"]);
    std::fs::write(&toml_path, &toml).unwrap();
    s02.start();
    assert_eq!(snapshot(&s02), before);

    // Out of order: b3 after b2 is refused until b2 is in, naming the missing positions.
    tests::advertise(&cen, &pkg, "Repair").ok();
    p01.wait_until(20, "the second advert at P01", || {
        log_len(&p01) == log_len(&s02) + 2
    });
    let b3 = work.join("b3.bundle");
    p01.cli(&[
        "courier",
        "export",
        "--to",
        "S02",
        "--out",
        b3.to_str().unwrap(),
    ])
    .ok();
    let n = log_len(&s02);
    s02.cli(&["courier", "import", b3.to_str().unwrap()])
        .fails(2, &["missing", &format!("{}..{}", n + 1, n + 1)]);
    assert_eq!(snapshot(&s02), before);
    s02.cli(&["courier", "import", b2.to_str().unwrap()]).ok();
    s02.cli(&["courier", "import", b3.to_str().unwrap()]).ok();
    assert_eq!(log_len(&s02), log_len(&p01));
    assert!(
        !messages(&s02, 40302).is_empty(),
        "refusals are said in the report log"
    );
}

#[test]
fn a_multi_volume_bundle_imports_only_whole() {
    let mut p01 = TestSite::init("P01");
    let mut s02 = TestSite::init("S02");
    tests::link_courier(&p01, &s02);
    p01.start();
    let work = p01.tmp.path().to_path_buf();
    let src = work.join("big");
    tests::big_tree(&src, 32);
    let pkg = publish(&p01, &src, &["--name", "Big"]);
    p01.cli(&["package", "distribute", &pkg, "--site", "S02"])
        .ok();
    let out_path = work.join("big.bundle");
    let out = p01
        .cli(&[
            "courier",
            "export",
            "--to",
            "S02",
            "--out",
            out_path.to_str().unwrap(),
            "--max-volume",
            "12MiB",
        ])
        .ok();
    let vols: Vec<std::path::PathBuf> = out
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix(out_path.to_str().unwrap())
                .map(|s| format!("{}{s}", out_path.display()).into())
        })
        .collect();
    assert!(vols.len() >= 3, "{out}");
    for v in &vols {
        assert!(
            std::fs::metadata(v).unwrap().len() <= 12 << 20,
            "{} over the limit",
            v.display()
        );
    }
    // S02 offline (no daemon): a missing volume is named, nothing changes; all of them import.
    let before = snapshot_offline(&s02);
    let some: Vec<&str> = vols.iter().skip(1).map(|v| v.to_str().unwrap()).collect();
    let mut args = vec!["courier", "import"];
    args.extend(some);
    s02.cli(&args).fails(2, &["missing: 1"]);
    assert_eq!(snapshot_offline(&s02), before);
    let mut args = vec!["courier", "import"];
    args.extend(vols.iter().map(|v| v.to_str().unwrap()));
    let out = s02.cli(&args).ok();
    assert!(out.contains("applied"), "{out}");
    s02.start();
    assert!(complete(&s02, &pkg, 1));
    let v: Value = s02.cli(&["log", "--json"]).json();
    assert_eq!(v.as_array().unwrap().len(), log_len(&p01));
}

fn snapshot_offline(s: &TestSite) -> Vec<(std::path::PathBuf, u64)> {
    s.store_listing()
}

#[test]
fn a_network_link_that_comes_back_after_a_courier_import_resends_nothing() {
    // S01 is a network child of P01 whose link is down (its daemon is stopped): it gets a
    // bundle, then comes up.
    let mut p01 = TestSite::init("P01");
    let mut s01 = TestSite::init("S01");
    link_child(&p01, &s01);
    p01.start();
    link_parent(&s01, &p01);
    let work = p01.tmp.path().to_path_buf();
    let src = work.join("src");
    sample_tree(&src);
    let pkg = publish(&p01, &src, &["--name", "Sample"]);
    p01.cli(&["package", "distribute", &pkg, "--site", "S01"])
        .ok();
    let b = work.join("b.bundle");
    p01.cli(&[
        "courier",
        "export",
        "--to",
        "S01",
        "--out",
        b.to_str().unwrap(),
    ])
    .ok();
    s01.cli(&["courier", "import", b.to_str().unwrap()]).ok();
    let n = log_len(&p01);
    s01.start();
    p01.wait_until(20, "S01's link up", || !messages(&p01, 40200).is_empty());
    let up = &messages(&p01, 40200)[0];
    assert_eq!(
        up["insertion"][1],
        n.to_string(),
        "S01 said it had applied everything the bundle carried: {up}"
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(log_len(&s01), n, "no event applied twice");
    assert!(complete(&s01, &pkg, 1));
    assert!(
        messages(&p01, 3531).is_empty() && messages(&p01, 3533).is_empty(),
        "no content was sent over the link"
    );
}
