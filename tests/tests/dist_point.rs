//! Distribution points end to end: real `site-server` and `dist-point` processes on
//! 127.0.0.1. A package assigned from the top reaches a DP three tiers down and is served
//! byte for byte; ranges, `latest`, bad paths; chunks shared between versions and packages
//! stored once; retire and unassign delete; a pull DP falls back; validation finds and
//! re-fetches a damaged chunk that is never served; a full disk stops and resumes the pull.

use serde_json::Value;
use tests::{attach_dps, messages, publish, sample_tree, three_tiers, TestDp, TestSite};

fn blake(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// The `dps` rows of `status packages --json` at `site` for `pkg`.
fn dp_rows(site: &TestSite, pkg: &str) -> Vec<Value> {
    tests::content_row(site, pkg)
        .and_then(|r| r["dps"].as_array().cloned())
        .unwrap_or_default()
}

fn installed_at(dp: &TestDp, pkg: &str, version: u64) -> bool {
    dp.get(&format!("/packages/{pkg}/{version}/manifest"), &[])
        .0
        == 200
}

/// CEN -> P01 -> S01 running, with DPs `ids` at S01 (running), each with its sources.
fn tree_with_dps(ids: &[(&str, &[&str])]) -> (TestSite, TestSite, TestSite, Vec<TestDp>) {
    let (cen, p01, mut s01) = three_tiers();
    s01.pin_listen_port();
    let mut dps: Vec<TestDp> = ids.iter().map(|(id, _)| TestDp::init(&s01, id)).collect();
    let with: Vec<(&TestDp, &[&str])> = dps.iter().zip(ids).map(|(d, (_, s))| (d, *s)).collect();
    attach_dps(&mut s01, &with);
    for d in dps.iter_mut() {
        d.start();
    }
    (cen, p01, s01, dps)
}

#[test]
fn a_package_assigned_at_the_top_is_served_by_the_dp_byte_for_byte() {
    let (cen, _p01, s01, dps) = tree_with_dps(&[("DP1", &[])]);
    let dp1 = &dps[0];
    cen.wait_until(30, "S01/DP1 known at CEN", || {
        cen.cli(&["dp", "list", "--json"]).stdout.contains("DP1")
    });
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    cen.cli(&["package", "distribute", &pkg, "--dp", "S01/DP1"])
        .ok();
    dp1.wait_until(60, "the package installed on DP1", || {
        installed_at(dp1, &pkg, 1)
    });

    // Every file, byte for byte (compared by hash with the source).
    for f in ["bin/tool.bin", "docs/en/guide.txt", "README"] {
        let (code, body) = dp1.get(&format!("/packages/{pkg}/1/files/{f}"), &[]);
        assert_eq!(code, 200, "{f}");
        assert_eq!(
            blake(&body),
            blake(&std::fs::read(src.join(f)).unwrap()),
            "{f}"
        );
    }
    let tool = std::fs::read(src.join("bin/tool.bin")).unwrap();
    // A range: exactly the bytes asked for; `latest`; a suffix range.
    let (code, body) = dp1.get(
        &format!("/packages/{pkg}/latest/files/bin/tool.bin"),
        &[("Range", "bytes=1048570-1048689")],
    );
    assert_eq!(code, 206);
    assert_eq!(body, tool[1048570..1048690]);
    let (code, body) = dp1.get(
        &format!("/packages/{pkg}/1/files/bin/tool.bin"),
        &[("Range", "bytes=-10")],
    );
    assert_eq!((code, body.as_slice()), (206, &tool[tool.len() - 10..]));
    // Bad paths read nothing; what is not here is a 404.
    for bad in ["../../site/site.toml", "bin/../README", "/etc/passwd"] {
        let (code, _) = dp1.get(&format!("/packages/{pkg}/1/files/{bad}"), &[]);
        assert!(code == 400 || code == 404, "{bad}: {code}");
    }
    assert_eq!(
        dp1.get(&format!("/packages/{pkg}/1/files/..%2Fsecret"), &[])
            .0,
        400
    );
    assert_eq!(
        dp1.get(&format!("/packages/{pkg}/2/files/README"), &[]).0,
        404
    );
    assert_eq!(
        dp1.get("/packages/CEN99999/latest/files/README", &[]).0,
        404
    );

    // 2342 and 2330 reach the top, naming the DP and the package.
    cen.wait_until(30, "2330 from S01/DP1 at CEN", || {
        !messages(&cen, 2330).is_empty()
    });
    let m = &messages(&cen, 2330)[0];
    assert_eq!(m["site"], "S01");
    assert_eq!(m["machine"], "DP1");
    let attrs = m["attributes"].to_string();
    assert!(attrs.contains(&pkg) && attrs.contains("S01/DP1"), "{attrs}");
    assert!(!messages(&cen, 2342).is_empty());
    // The top's status packages: per site, DPs targeted, installed, %.
    cen.wait_until(10, "CEN counts the DP installed", || {
        dp_rows(&cen, &pkg).iter().any(|r| {
            r["site"] == "S01"
                && r["targeted"] == 1
                && r["installed"] == 1
                && r["pct_installed"] == 100
        })
    });
    let table = cen.cli(&["status", "packages"]).ok();
    assert!(
        table.contains("DPS INSTALLED") && table.contains("DP1 installed"),
        "{table}"
    );
    let st = dp1.status();
    assert_eq!(st["site_link"], "up");
    assert_eq!(st["versions"][0]["state"], "installed");
    // Its /metrics: requests and bytes by status code, versions by state.
    let (code, body) = dp1.get("/metrics", &[]);
    assert_eq!(code, 200);
    let m = tests::prometheus_text(&String::from_utf8_lossy(&body));
    let v = |name: &str, labels: &[(&str, &str)]| tests::prometheus_value(&m, name, labels);
    assert!(v("siterep_dp_http_requests_total", &[("code", "200")]) >= 3.0);
    assert_eq!(v("siterep_dp_http_requests_total", &[("code", "206")]), 2.0);
    assert!(v("siterep_dp_http_requests_total", &[("code", "404")]) >= 2.0);
    let files: u64 = ["bin/tool.bin", "docs/en/guide.txt", "README"]
        .iter()
        .map(|f| std::fs::metadata(src.join(f)).unwrap().len())
        .sum();
    assert!(v("siterep_dp_http_sent_bytes_total", &[("code", "200")]) >= files as f64);
    assert_eq!(
        v("siterep_dp_http_sent_bytes_total", &[("code", "206")]),
        130.0
    );
    assert_eq!(v("siterep_dp_versions", &[("state", "installed")]), 1.0);
    assert_eq!(v("siterep_dp_site_link_up", &[]), 1.0);
    assert!(v("siterep_dp_chunks_pulled_total", &[]) > 0.0);
    // Every DP metric the alert rules and the dashboard under contrib/ use exists.
    for name in tests::contrib_metric_names() {
        if name.starts_with("siterep_dp_") {
            assert!(
                tests::scrape_has(&m, &name),
                "contrib/ uses {name}, which dist-point does not serve"
            );
        }
    }
    let _ = s01;
}

#[test]
fn a_dp_with_a_wrong_pin_or_a_wrong_id_is_refused() {
    let (_cen, _p01, mut s01) = three_tiers();
    s01.pin_listen_port();
    // DP1 is pinned; a second DP presents another certificate; a third says it is DP1
    // while its certificate is pinned as DP3.
    let dp1 = TestDp::init(&s01, "DP1");
    let mut stranger = TestDp::init(&s01, "DP2");
    let mut liar = TestDp::init(&s01, "DP3");
    s01.cli(&[
        "dp",
        "add",
        "--id",
        "DP1",
        "--fingerprint",
        &dp1.fingerprint,
    ])
    .ok();
    s01.cli(&[
        "dp",
        "add",
        "--id",
        "DP3",
        "--fingerprint",
        &liar.fingerprint,
    ])
    .ok();
    let toml = std::fs::read_to_string(liar.data().join("dp.toml")).unwrap();
    std::fs::write(
        liar.data().join("dp.toml"),
        toml.replace("id = \"DP3\"", "id = \"DP1\""),
    )
    .unwrap();
    s01.stop();
    s01.start();
    stranger.start();
    liar.start();
    stranger.wait_until(20, "the stranger to be refused", || {
        stranger.status()["site_link"]
            .as_str()
            .unwrap_or("")
            .contains("down")
    });
    liar.wait_until(20, "the liar to be refused", || {
        liar.status()["site_link"]
            .as_str()
            .unwrap_or("")
            .contains("DP3")
    });
    s01.wait_until(10, "40202 for the stranger", || {
        !messages(&s01, 40202).is_empty()
    });
    // And bad input at `dp add`/`dp set`: a loop of sources, a source at another site.
    s01.cli(&[
        "dp",
        "add",
        "--id",
        "DP4",
        "--fingerprint",
        &stranger.fingerprint,
        "--source",
        "DP4",
    ])
    .fails(2, &["DP4", "own source"]);
    s01.cli(&[
        "dp",
        "add",
        "--id",
        "DP5",
        "--fingerprint",
        &stranger.fingerprint,
        "--source",
        "P01/DP1",
    ])
    .fails(2, &["P01/DP1", "own site"]);
}

/// Chunk ids of a package version, from its manifest on `dp`.
fn chunks_of(dp: &TestDp, pkg: &str, version: u64) -> std::collections::BTreeSet<String> {
    let (code, body) = dp.get(&format!("/packages/{pkg}/{version}/manifest"), &[]);
    assert_eq!(code, 200);
    let m: Value = serde_json::from_slice(&body).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for f in m["files"].as_array().unwrap() {
        if let Some(cs) = f["kind"]["file"]["chunks"].as_array() {
            for c in cs {
                out.insert(c["id"].to_string());
            }
        }
    }
    assert!(!out.is_empty(), "manifest has chunks: {m}");
    out
}

#[test]
fn shared_chunks_are_stored_once_and_retired_or_unassigned_versions_are_deleted() {
    let (cen, _p01, _s01, dps) = tree_with_dps(&[("DP1", &[])]);
    let dp1 = &dps[0];
    cen.wait_until(30, "S01/DP1 known at CEN", || {
        cen.cli(&["dp", "list", "--json"]).stdout.contains("DP1")
    });
    // A: two big files. B: one of A's files and one of its own.
    let a = cen.tmp.path().join("a");
    let b = cen.tmp.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let shared = tests::noise(6 << 20, 101);
    std::fs::write(a.join("shared.bin"), &shared).unwrap();
    std::fs::write(a.join("own.bin"), tests::noise(3 << 20, 202)).unwrap();
    std::fs::write(b.join("shared.bin"), &shared).unwrap();
    std::fs::write(b.join("other.bin"), tests::noise(3 << 20, 303)).unwrap();
    let pa = publish(&cen, &a, &["--name", "A"]);
    let pb = publish(&cen, &b, &["--name", "B"]);
    cen.cli(&["dp", "group", "create", "Branches"]).ok();
    cen.cli(&["dp", "group", "add", "Branches", "--dp", "S01/DP1"])
        .ok();
    cen.cli(&["package", "distribute", &pa, "--dp", "S01/DP1"])
        .ok();
    cen.cli(&["package", "distribute", &pb, "--dp-group", "Branches"])
        .ok();
    dp1.wait_until(60, "A and B on DP1", || {
        installed_at(dp1, &pa, 1) && installed_at(dp1, &pb, 1)
    });
    let ca = chunks_of(dp1, &pa, 1);
    let cb = chunks_of(dp1, &pb, 1);
    let union: std::collections::BTreeSet<_> = ca.union(&cb).cloned().collect();
    assert!(
        union.len() < ca.len() + cb.len(),
        "the packages share chunks"
    );
    assert_eq!(dp1.chunk_files(), union.len(), "each chunk stored once");

    // A version 2: own.bin changes; shared.bin's chunks are not fetched again. When v2 is
    // in, v1 goes, and with it only the chunks nothing else uses.
    std::fs::write(a.join("own.bin"), tests::noise(3 << 20, 404)).unwrap();
    let pulled_before = dp1.status()["pulled"]["site"].as_u64().unwrap();
    publish(&cen, &a, &["--package", &pa]);
    dp1.wait_until(60, "A v2 on DP1 and v1 gone", || {
        installed_at(dp1, &pa, 2) && !installed_at(dp1, &pa, 1)
    });
    let ca2 = chunks_of(dp1, &pa, 2);
    let pulled = dp1.status()["pulled"]["site"].as_u64().unwrap() - pulled_before;
    assert_eq!(
        pulled as usize,
        ca2.difference(&ca).count(),
        "only new chunks fetched"
    );
    let union2: std::collections::BTreeSet<_> = ca2.union(&cb).cloned().collect();
    dp1.wait_until(10, "v1's own chunks deleted", || {
        dp1.chunk_files() == union2.len()
    });

    // Retire v2: v1 is current again and comes back; unassign B: it goes, shared chunks stay.
    cen.cli(&["package", "retire", &pa, "--version", "9"])
        .fails(2, &["version 9"]);
    cen.cli(&["package", "retire", &pa, "--version", "2"]).ok();
    dp1.wait_until(60, "A v1 back, v2 gone", || {
        installed_at(dp1, &pa, 1) && !installed_at(dp1, &pa, 2)
    });
    cen.cli(&["package", "undistribute", &pb, "--dp", "S01/DP1"])
        .fails(2, &["not targeted at dp S01/DP1"]);
    cen.cli(&["package", "undistribute", &pb, "--dp-group", "Branches"])
        .ok();
    dp1.wait_until(30, "B gone from DP1", || !installed_at(dp1, &pb, 1));
    dp1.wait_until(10, "only A v1's chunks left", || {
        dp1.chunk_files() == ca.len()
    });
    let (code, body) = dp1.get(&format!("/packages/{pa}/latest/files/shared.bin"), &[]);
    assert_eq!(code, 200);
    assert_eq!(blake(&body), blake(&shared));
    cen.wait_until(30, "40152 at CEN", || messages(&cen, 40152).len() >= 3);
}

#[test]
fn a_pull_dp_takes_chunks_from_its_source_and_falls_back_when_it_is_killed() {
    let (cen, _p01, s01, mut dps) = tree_with_dps(&[("DP1", &[]), ("DP2", &["S01/DP1"])]);
    cen.wait_until(30, "both DPs known at CEN", || {
        let s = cen.cli(&["dp", "list", "--json"]).stdout;
        s.contains("DP1") && s.contains("DP2")
    });
    // A chain that would loop is refused, and site.toml is unchanged.
    let toml = std::fs::read_to_string(s01.data().join("site.toml")).unwrap();
    s01.cli(&["dp", "set", "--id", "DP1", "--source", "DP2"])
        .fails(2, &["loop", "DP1 -> DP2 -> DP1"]);
    assert_eq!(
        std::fs::read_to_string(s01.data().join("site.toml")).unwrap(),
        toml
    );

    let a = cen.tmp.path().join("a");
    tests::big_tree(&a, 16);
    let pa = publish(&cen, &a, &["--name", "A"]);
    cen.cli(&["package", "distribute", &pa, "--dp", "S01/DP1"])
        .ok();
    dps[0].wait_until(60, "A on DP1", || installed_at(&dps[0], &pa, 1));
    cen.cli(&["package", "distribute", &pa, "--dp", "S01/DP2"])
        .ok();
    dps[1].wait_until(60, "A on DP2", || installed_at(&dps[1], &pa, 1));
    let st = dps[1].status();
    let n = chunks_of(&dps[1], &pa, 1).len() as u64;
    assert_eq!(
        st["pulled"]["DP1"].as_u64(),
        Some(n),
        "all from its source: {st}"
    );
    assert!(st["pulled"]["site"].is_null(), "{st}");

    // DP1 dies: DP2 gets the next package from the site server.
    dps[0].kill9();
    let b = cen.tmp.path().join("b");
    tests::big_tree(&b, 16);
    let pb = publish(&cen, &b, &["--name", "B"]);
    cen.cli(&[
        "package",
        "distribute",
        &pb,
        "--dp",
        "S01/DP1",
        "--dp",
        "S01/DP2",
    ])
    .ok();
    dps[1].wait_until(60, "B on DP2 without DP1", || installed_at(&dps[1], &pb, 1));
    let st = dps[1].status();
    assert_eq!(st["pulled"]["DP1"].as_u64(), Some(n), "{st}");
    assert!(
        st["pulled"]["site"].as_u64().unwrap() >= chunks_of(&dps[1], &pb, 1).len() as u64,
        "{st}"
    );
    let (code, body) = dps[1].get(&format!("/packages/{pb}/1/files/part000.bin"), &[]);
    assert_eq!(code, 200);
    assert_eq!(
        blake(&body),
        blake(&std::fs::read(b.join("part000.bin")).unwrap())
    );
}

/// Flips a byte in the payload of chunk `id` (hex) in `dp`'s store.
fn corrupt_chunk(dp: &TestDp, id: &str) {
    let path = dp.data().join("content").join(&id[..2]).join(id);
    let mut b = std::fs::read(&path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x5a;
    std::fs::write(&path, b).unwrap();
}

/// The chunk ids (hex) of `file` in version 1 of `pkg` on `dp`.
fn file_chunks(dp: &TestDp, pkg: &str, file: &str) -> Vec<String> {
    let (_, body) = dp.get(&format!("/packages/{pkg}/1/manifest"), &[]);
    let m: Value = serde_json::from_slice(&body).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == file)
        .unwrap();
    f["kind"]["file"]["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// GETs `path` until it is a 200, checking that every answer on the way is a 404 or a 500,
/// never other bytes than `want`.
fn poll_until_served(dp: &TestDp, path: &str, want: &[u8]) -> Vec<u16> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, body) = dp.get(path, &[]);
        seen.push(code);
        match code {
            200 => {
                assert_eq!(
                    blake(&body),
                    blake(want),
                    "served bytes that are not the file"
                );
                return seen;
            }
            404 | 500 => {}
            c => panic!("unexpected {c}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served again: {seen:?}\n{}",
            dp.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_damaged_chunk_is_found_by_validate_fetched_again_and_never_served() {
    let (cen, _p01, _s01, dps) = tree_with_dps(&[("DP1", &[])]);
    let dp1 = &dps[0];
    cen.wait_until(30, "S01/DP1 known at CEN", || {
        cen.cli(&["dp", "list", "--json"]).stdout.contains("DP1")
    });
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let tool = std::fs::read(src.join("bin/tool.bin")).unwrap();
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    cen.cli(&["package", "distribute", &pkg, "--dp", "S01/DP1"])
        .ok();
    dp1.wait_until(60, "installed on DP1", || installed_at(dp1, &pkg, 1));
    let ids = file_chunks(dp1, &pkg, "bin/tool.bin");
    assert!(ids.len() >= 2, "tool.bin has several chunks");
    let path = format!("/packages/{pkg}/1/files/bin/tool.bin");

    // Rot on disk, found by validation (nothing asked for the file in between).
    corrupt_chunk(dp1, &ids[0]);
    let r = dp1.cli(&["validate", "--json"]).json();
    assert_eq!(r["corrupt"], 1, "{r}");
    assert_eq!(r["versions"][0][0], pkg.as_str(), "{r}");
    let seen = poll_until_served(dp1, &path, &tool);
    assert!(
        !seen.contains(&500),
        "validation removed it before anyone asked: {seen:?}"
    );
    cen.wait_until(30, "40151 and 40153 at CEN", || {
        !messages(&cen, 40151).is_empty() && !messages(&cen, 40153).is_empty()
    });
    let m = &messages(&cen, 40151)[0];
    assert!(m["text"].as_str().unwrap().contains("1 corrupt"), "{m}");
    let clean = dp1.cli(&["validate", "--json"]).json();
    assert_eq!(
        (clean["corrupt"].as_u64(), clean["missing"].as_u64()),
        (Some(0), Some(0))
    );

    // Rot found by a client's request: a 500, never the bad bytes, then fetched again.
    corrupt_chunk(dp1, &ids[1]);
    let (code, body) = dp1.get(&path, &[]);
    assert_eq!(code, 500, "{}", String::from_utf8_lossy(&body));
    poll_until_served(dp1, &path, &tool);
    // A chunk deleted by hand: validation reports it missing and it comes back.
    let gone = dp1.data().join("content").join(&ids[0][..2]).join(&ids[0]);
    std::fs::remove_file(&gone).unwrap();
    let r = dp1.cli(&["validate", "--json"]).json();
    assert_eq!(r["missing"], 1, "{r}");
    poll_until_served(dp1, &path, &tool);
    assert!(gone.exists());
    // /metrics counts the validations: two found damage, one was clean.
    let (code, body) = dp1.get("/metrics", &[]);
    assert_eq!(code, 200);
    let m = tests::prometheus_text(&String::from_utf8_lossy(&body));
    let v = |name: &str, labels: &[(&str, &str)]| tests::prometheus_value(&m, name, labels);
    assert_eq!(
        v("siterep_dp_validations_total", &[("result", "damaged")]),
        2.0
    );
    assert_eq!(
        v("siterep_dp_validations_total", &[("result", "clean")]),
        1.0
    );
    assert_eq!(
        v(
            "siterep_dp_validation_bad_chunks_total",
            &[("kind", "corrupt")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "siterep_dp_validation_bad_chunks_total",
            &[("kind", "missing")]
        ),
        1.0
    );
    assert!(v("siterep_dp_http_requests_total", &[("code", "500")]) >= 1.0);
}

#[test]
fn a_full_disk_stops_the_pull_with_a_message_keeps_nothing_half_written_and_resumes() {
    let (cen, _p01, mut s01) = three_tiers();
    s01.pin_listen_port();
    let mut dp1 = TestDp::init(&s01, "DP1");
    attach_dps(&mut s01, &[(&dp1, &[])]);
    let flag = dp1.tmp.path().join("disk-full");
    std::fs::write(&flag, b"").unwrap();
    dp1.start_with_env(&[("DP_FAULT_DISK_FULL", flag.to_str().unwrap())]);
    cen.wait_until(30, "S01/DP1 known at CEN", || {
        cen.cli(&["dp", "list", "--json"]).stdout.contains("DP1")
    });
    let src = cen.tmp.path().join("src");
    tests::big_tree(&src, 32);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    cen.cli(&["package", "distribute", &pkg, "--dp", "S01/DP1"])
        .ok();
    cen.wait_until(60, "40150 (disk full) at CEN", || {
        messages(&cen, 40150)
            .iter()
            .any(|m| m["text"].as_str().unwrap_or("").contains("disk is full"))
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        dp1.chunk_files(),
        0,
        "nothing stored while the disk is full"
    );
    assert_eq!(dp1.temp_files(), 0, "nothing half-written kept");
    assert!(!installed_at(&dp1, &pkg, 1));
    assert_eq!(
        messages(&cen, 40150).len(),
        1,
        "one message, not one per retry"
    );
    let st = dp1.status();
    assert!(
        st["versions"][0]["state"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{st}"
    );
    // Space is freed: the pull resumes by itself (retry = 10s).
    std::fs::remove_file(&flag).unwrap();
    dp1.wait_until(60, "installed after space came back", || {
        installed_at(&dp1, &pkg, 1)
    });
    let (code, body) = dp1.get(&format!("/packages/{pkg}/1/files/part001.bin"), &[]);
    assert_eq!(code, 200);
    assert_eq!(
        blake(&body),
        blake(&std::fs::read(src.join("part001.bin")).unwrap())
    );
    cen.wait_until(30, "2330 at CEN", || !messages(&cen, 2330).is_empty());
}
