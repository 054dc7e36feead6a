//! `site-server rebuild` replays the log into fresh projections and yields the same state.

use tests::{sample_tree, TestSite};

#[test]
fn rebuild_reproduces_the_projections() {
    let mut site = TestSite::init("CEN");
    site.start();
    let src = site.tmp.path().join("src");
    sample_tree(&src);
    let src_s = src.display().to_string();
    site.cli(&["package", "publish", "--source", &src_s, "--name", "A"])
        .ok();
    std::fs::write(src.join("README"), b"changed\n").unwrap();
    site.cli(&[
        "package",
        "publish",
        "--source",
        &src_s,
        "--package",
        "CEN00001",
    ])
    .ok();
    site.cli(&[
        "package",
        "publish",
        "--source",
        &src_s,
        "--name",
        "B",
        "--priority",
        "high",
    ])
    .ok();
    site.cli(&[
        "adv",
        "create",
        "--package",
        "CEN00002",
        "--program",
        "Go",
        "--collection",
        "All",
    ])
    .ok();
    let packages = site.cli(&["package", "list", "--json"]).json();
    let show = site.cli(&["package", "show", "CEN00001", "--json"]).json();
    let advs = site.cli(&["adv", "list", "--json"]).json();
    site.stop();

    let out = site.cli(&["rebuild"]).ok();
    // Four decided here, after the top's genesis and its first checkpoint.
    assert!(out.contains("from 6 events"), "{out}");
    assert!(out.contains("(identical)"), "{out}");
    // Twice is the same again.
    assert!(site.cli(&["rebuild"]).ok().contains("(identical)"));

    site.start();
    assert_eq!(site.cli(&["package", "list", "--json"]).json(), packages);
    assert_eq!(
        site.cli(&["package", "show", "CEN00001", "--json"]).json(),
        show
    );
    assert_eq!(site.cli(&["adv", "list", "--json"]).json(), advs);
    // Ids keep counting from where they were.
    site.cli(&["package", "publish", "--source", &src_s, "--name", "C"])
        .ok();
    let list = site.cli(&["package", "list", "--json"]).json();
    assert_eq!(list[2]["id"], "CEN00003");
}
