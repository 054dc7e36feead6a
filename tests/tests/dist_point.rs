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
