//! Distribution points as the tree sees them: attached at a site, reported up, listed and
//! targeted from the top; a DP target brings the content to its site.

use serde_json::Value;
use tests::{complete, publish, sample_tree, three_tiers_with};

const FP: &str = "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";

#[test]
fn a_dp_is_reported_up_listed_at_the_top_and_its_site_gets_the_content() {
    let (cen, _p01, s01) = three_tiers_with(|_, _, s01| {
        s01.cli(&[
            "dp",
            "add",
            "--id",
            "DP1",
            "--fingerprint",
            FP,
            "--address",
            "127.0.0.1:8081",
        ])
        .ok();
        // Bad input at `dp add`: one line, exit 2, nothing written.
        let toml = std::fs::read_to_string(s01.data().join("site.toml")).unwrap();
        s01.cli(&["dp", "add", "--id", "DP1", "--fingerprint", FP])
            .fails(2, &["DP1", "already"]);
        s01.cli(&["dp", "add", "--id", "DP 2", "--fingerprint", FP])
            .fails(2, &["DP 2", "letters"]);
        s01.cli(&["dp", "add", "--id", "DP2", "--fingerprint", "xyz"])
            .fails(2, &["fingerprint"]);
        assert_eq!(
            std::fs::read_to_string(s01.data().join("site.toml")).unwrap(),
            toml
        );
    });
    cen.wait_until(20, "S01/DP1 listed at CEN", || {
        let rows: Value = cen.cli(&["dp", "list", "--json"]).json();
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["site"] == "S01" && r["id"] == "DP1" && r["address"] == "127.0.0.1:8081")
    });

    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    cen.cli(&["package", "distribute", &pkg, "--dp", "S01/DP9"])
        .fails(2, &["S01/DP9", "S01/DP1"]);
    cen.cli(&["package", "distribute", &pkg, "--dp", "S01"])
        .fails(2, &["SITE/ID"]);
    cen.cli(&["package", "distribute", &pkg, "--dp", "S01/DP1"])
        .ok();
    s01.wait_until(30, "the package at S01, for its DP", || {
        complete(&s01, &pkg, 1)
    });
    let shown: Value = cen.cli(&["package", "show", &pkg, "--json"]).json();
    assert!(
        shown.to_string().contains("DP1"),
        "the DP target is recorded: {shown}"
    );

    // Groups: a package targeted at an empty group goes nowhere; a DP that joins gets it
    // (an explicit choice, said by 40141).
    let src2 = cen.tmp.path().join("src2");
    tests::big_tree(&src2, 16);
    let pkg2 = publish(&cen, &src2, &["--name", "Second"]);
    cen.cli(&["package", "distribute", &pkg2, "--dp-group", "Nowhere"])
        .fails(2, &["Nowhere", "dp group create"]);
    cen.cli(&["dp", "group", "create", "Branches"]).ok();
    cen.cli(&["dp", "group", "create", "Branches"])
        .fails(2, &["Branches", "exists"]);
    cen.cli(&["dp", "group", "add", "Branches", "--dp", "S01/DP7"])
        .fails(2, &["S01/DP7", "dp list"]);
    cen.cli(&["package", "distribute", &pkg2, "--dp-group", "Branches"])
        .ok();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!complete(&s01, &pkg2, 1), "an empty group brought content");
    cen.cli(&["dp", "group", "add", "Branches", "--dp", "S01/DP1"])
        .ok();
    s01.wait_until(30, "the group's package at S01", || {
        complete(&s01, &pkg2, 1)
    });
    let joined = tests::messages(&cen, 40141);
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["insertion"][2], "1", "{joined:?}");
    let groups: Value = cen.cli(&["dp", "group", "list", "--json"]).json();
    assert_eq!(groups["Branches"][0]["dp"], "DP1");
}
