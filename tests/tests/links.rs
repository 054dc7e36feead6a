//! `child add`, `child list` and `parent set` write pinned links into site.toml; bad input is
//! refused with one line, exit 2, and site.toml unchanged.

use tests::TestSite;

fn identity(site: &TestSite) -> (String, String) {
    let v = site.cli(&["identity", "--json"]).json();
    (
        v["fingerprint"].as_str().unwrap().to_string(),
        v["public_key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn links_are_written_checked_and_kept() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    let (cen_fp, cen_key) = identity(&cen);
    let (p01_fp, p01_key) = identity(&p01);

    cen.cli(&[
        "child",
        "add",
        "--code",
        "P01",
        "--fingerprint",
        &p01_fp,
        "--pubkey",
        &p01_key,
    ])
    .ok();
    let children = cen.cli(&["child", "list", "--json"]).json();
    assert_eq!(children[0]["code"], "P01");
    assert_eq!(children[0]["fingerprint"], p01_fp.as_str());
    assert_eq!(children[0]["courier"], false);
    p01.cli(&[
        "parent",
        "set",
        "--code",
        "CEN",
        "--addr",
        "127.0.0.1:4710",
        "--fingerprint",
        &cen_fp.to_uppercase(),
        "--pubkey",
        &cen_key,
    ])
    .ok();
    let toml = std::fs::read_to_string(p01.data().join("site.toml")).unwrap();
    assert!(
        toml.contains("[parent]") && toml.contains(&cen_fp),
        "{toml}"
    );

    let cen_toml = std::fs::read(cen.data().join("site.toml")).unwrap();
    let p01_toml = std::fs::read(p01.data().join("site.toml")).unwrap();
    let bad_fp = "ab".repeat(31);
    let cases: Vec<(&TestSite, Vec<&str>, &[&str])> = vec![
        (
            &cen,
            vec![
                "child",
                "add",
                "--code",
                "P01",
                "--fingerprint",
                &p01_fp,
                "--pubkey",
                &p01_key,
            ],
            &["P01", "already linked"],
        ),
        (
            &cen,
            vec![
                "child",
                "add",
                "--code",
                "CEN",
                "--fingerprint",
                &cen_fp,
                "--pubkey",
                &cen_key,
            ],
            &["CEN", "this site itself"],
        ),
        (
            &cen,
            vec![
                "child",
                "add",
                "--code",
                "p02",
                "--fingerprint",
                &p01_fp,
                "--pubkey",
                &p01_key,
            ],
            &["site code"],
        ),
        (
            &cen,
            vec![
                "child",
                "add",
                "--code",
                "P02",
                "--fingerprint",
                &bad_fp,
                "--pubkey",
                &p01_key,
            ],
            &["fingerprint"],
        ),
        (
            &cen,
            vec![
                "child",
                "add",
                "--code",
                "P02",
                "--fingerprint",
                &p01_fp,
                "--pubkey",
                "00ff",
            ],
            &["public key"],
        ),
        (
            &cen,
            vec![
                "child",
                "add",
                "--code",
                "P02",
                "--fingerprint",
                &p01_fp,
                "--pubkey",
                &p01_key,
            ],
            &["P02", "fingerprint of another child"],
        ),
        (
            &p01,
            vec![
                "parent",
                "set",
                "--code",
                "P01",
                "--addr",
                "127.0.0.1:1",
                "--fingerprint",
                &cen_fp,
                "--pubkey",
                &cen_key,
            ],
            &["own parent"],
        ),
        (
            &p01,
            vec![
                "parent",
                "set",
                "--code",
                "CEN",
                "--addr",
                "nowhere",
                "--fingerprint",
                &cen_fp,
                "--pubkey",
                &cen_key,
            ],
            &["HOST:PORT"],
        ),
        (
            &p01,
            vec![
                "child",
                "add",
                "--code",
                "CEN",
                "--fingerprint",
                &cen_fp,
                "--pubkey",
                &cen_key,
            ],
            &["CEN", "parent"],
        ),
    ];
    for (site, args, needles) in &cases {
        site.cli(args).fails(2, needles);
    }
    assert_eq!(
        std::fs::read(cen.data().join("site.toml")).unwrap(),
        cen_toml
    );
    assert_eq!(
        std::fs::read(p01.data().join("site.toml")).unwrap(),
        p01_toml
    );

    // A site with links still starts, and says that new links apply at its next start.
    cen.start();
    let (s01_fp, s01_key) = identity(&TestSite::init("S01"));
    let out = cen
        .cli(&[
            "child",
            "add",
            "--code",
            "S01",
            "--fingerprint",
            &s01_fp,
            "--pubkey",
            &s01_key,
            "--courier",
        ])
        .ok();
    assert!(out.contains("restart"), "{out}");
    assert_eq!(
        cen.cli(&["child", "list", "--json"]).json()[1]["courier"],
        true
    );
    p01.start();
}

#[test]
fn bad_schedules_and_rates_are_refused_and_change_nothing() {
    let mut cen = TestSite::init("CEN");
    let p01 = TestSite::init("P01");
    tests::link_child(&cen, &p01);
    let path = cen.data().join("site.toml");
    let toml = || std::fs::read_to_string(&path).unwrap();
    cen.cli(&[
        "child",
        "set",
        "--code",
        "P01",
        "--rate",
        "mon-fri 08-18 2MiB/s; * 20MiB/s",
    ])
    .ok();
    let before = toml();
    assert!(before.contains("mon-fri 08-18 2MiB/s"), "{before}");
    // Offline (file only), then with the daemon running (through it): the same refusals.
    for running in [false, true] {
        if running {
            cen.start();
        }
        cen.cli(&[
            "child",
            "set",
            "--code",
            "P01",
            "--schedule",
            "mon-fry 08-18 high",
        ])
        .fails(2, &["mon-fry", "not a day"]);
        cen.cli(&[
            "child",
            "set",
            "--code",
            "P01",
            "--rate",
            "* 2 MiB per second",
        ])
        .fails(2, &["not a rate"]);
        cen.cli(&["child", "set", "--code", "P01", "--schedule", "08-25 all"])
            .fails(2, &["08-25"]);
        cen.cli(&["child", "set", "--code", "S99", "--rate", "* 1MiB/s"])
            .fails(2, &["S99", "child list"]);
        cen.cli(&["child", "set", "--code", "P01"])
            .fails(2, &["--schedule"]);
        assert_eq!(toml(), before, "a refused change wrote site.toml");
    }
    // A running daemon takes a good one at once.
    cen.cli(&[
        "child",
        "set",
        "--code",
        "P01",
        "--schedule",
        "* high",
        "--rate",
        "* pulse 64KiB 2s",
    ])
    .ok();
    let v = cen.cli(&["status", "senders", "--json"]).json();
    let link = &v["links"][0];
    assert_eq!(link["window"], "high");
    assert_eq!(link["rates"], "* pulse 64KiB 2s");
    // A malformed rule in site.toml stops the daemon from starting, with the file named.
    cen.stop();
    std::fs::write(&path, toml().replace("* pulse 64KiB 2s", "* fast")).unwrap();
    cen.cli(&["run"])
        .fails(2, &["site.toml", "child P01", "fast"]);
}

/// The trust root: the top's own key at the top; the top's key, given at `init --root-key` or
/// at `parent set --root-key`, below it. A bad or a different root key is refused with one
/// line, exit 2, and nothing written.
#[test]
fn the_trust_root_is_the_tops_key_given_once() {
    let cen = TestSite::init("CEN");
    let (cen_fp, cen_key) = identity(&cen);
    let root = |s: &TestSite| s.cli(&["identity", "--json"]).json()["root_key"].clone();
    assert_eq!(root(&cen), cen_key.as_str(), "the top is its own root");
    assert!(cen.cli(&["identity"]).ok().contains("(this site: the top)"));

    // init --root-key: checked before anything is created.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("P01");
    let dir_s = dir.to_string_lossy().into_owned();
    let init = |root_key: &str| {
        tests::site_server(&[
            "init",
            "--code",
            "P01",
            "--data",
            &dir_s,
            "--root-key",
            root_key,
        ])
    };
    init("00ff").fails(2, &["--root-key", "public key"]);
    assert!(!dir.exists(), "a refused init created {}", dir.display());
    init(&cen_key.to_uppercase()).ok();
    let toml = std::fs::read_to_string(dir.join("site.toml")).unwrap();
    assert!(
        toml.contains(&format!("root_key = \"{cen_key}\"")),
        "{toml}"
    );

    // A site with a parent and no root key says so; parent set --root-key gives it.
    let s01 = TestSite::init("S01");
    let (_, s01_key) = identity(&s01);
    let parent_set = |root_key: Option<&str>| {
        let mut args = vec![
            "parent",
            "set",
            "--code",
            "CEN",
            "--addr",
            "127.0.0.1:4710",
            "--fingerprint",
            &cen_fp,
            "--pubkey",
            &cen_key,
        ];
        args.extend(root_key.map(|k| ["--root-key", k]).into_iter().flatten());
        s01.cli(&args)
    };
    parent_set(None).ok();
    assert!(root(&s01).is_null());
    assert!(s01.cli(&["identity"]).ok().contains("root key     not set"));
    parent_set(Some(&cen_key)).ok();
    assert_eq!(root(&s01), cen_key.as_str());
    // Another root is another tree: refused, site.toml unchanged.
    let before = std::fs::read(s01.data().join("site.toml")).unwrap();
    parent_set(Some(&s01_key)).fails(2, &["already trusts", &cen_key]);
    parent_set(Some("zz")).fails(2, &["--root-key"]);
    assert_eq!(before, std::fs::read(s01.data().join("site.toml")).unwrap());
}
