//! Bad input: one clear line on stderr, the documented exit code (0 ok, 1 failed, 2 usage or config), and nothing changed.

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use tests::{http, sample_tree, site_server, site_server_cmd, TestSite};

/// Log length, report count and store listing: what "nothing changed" compares.
fn snapshot(site: &TestSite) -> (usize, Vec<(std::path::PathBuf, u64)>) {
    let log = site.cli(&["log", "--json"]).json();
    (log.as_array().unwrap().len(), site.store_listing())
}

#[test]
fn invalid_site_code_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("site");
    for bad in ["cen", "CENT", "C-1", ""] {
        let r = site_server(&["init", "--code", bad, "--data", data.to_str().unwrap()]);
        r.fails(2, &["site code", "3 characters"]);
        assert!(!data.exists(), "nothing created for {bad:?}");
    }
}

#[test]
fn init_refuses_an_existing_site() {
    let site = TestSite::init("CEN");
    let before = std::fs::read(site.data().join("site.toml")).unwrap();
    site.cli(&["init", "--code", "P01"])
        .fails(2, &["already holds a site"]);
    assert_eq!(
        std::fs::read(site.data().join("site.toml")).unwrap(),
        before
    );
}

#[test]
fn publish_refuses_bad_sources_and_stores_nothing() {
    let mut site = TestSite::init("CEN");
    site.start();
    let src = site.tmp.path().join("src");
    sample_tree(&src);
    let src_s = src.display().to_string();
    let before = snapshot(&site);

    // A missing path.
    site.cli(&[
        "package",
        "publish",
        "--source",
        "/no/such/dir",
        "--name",
        "X",
    ])
    .fails(2, &["/no/such/dir", "does not exist"]);
    assert_eq!(snapshot(&site), before);

    // A symlink that leaves the tree.
    symlink("/etc/hostname", src.join("bin/escape")).unwrap();
    site.cli(&["package", "publish", "--source", &src_s, "--name", "X"])
        .fails(2, &["bin/escape", "outside the source tree"]);
    assert_eq!(snapshot(&site), before);
    std::fs::remove_file(src.join("bin/escape")).unwrap();

    // An unknown package.
    site.cli(&[
        "package",
        "publish",
        "--source",
        &src_s,
        "--package",
        "CEN00077",
    ])
    .fails(2, &["CEN00077", "does not exist"]);
    site.cli(&["package", "show", "CEN00077"])
        .fails(2, &["CEN00077"]);
    site.cli(&["package", "show", "nonsense"])
        .fails(2, &["package id"]);
    site.cli(&[
        "package",
        "publish",
        "--source",
        &src_s,
        "--name",
        "X",
        "--priority",
        "urgent",
    ])
    .fails(2, &["priority"]);
    assert_eq!(snapshot(&site), before);

    // An unreadable file. Root reads everything, so drop the capabilities that let it.
    let secret = src.join("docs/secret.txt");
    std::fs::write(&secret, b"top secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let data = site.data_str().to_string();
    let r = site_server_cmd(
        &[
            "package", "publish", "--source", &src_s, "--name", "X", "--data", &data,
        ],
        |c| unsafe {
            c.pre_exec(|| {
                // CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) out of the bounding set:
                // after exec even root is held to the file's mode bits.
                for cap in [1, 2] {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                }
                Ok(())
            });
        },
    );
    r.fails(1, &["secret.txt", "cannot read"]);
    assert_eq!(snapshot(&site), before);
}

#[test]
fn run_refuses_uninitialized_in_use_and_malformed_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("nothing");
    site_server(&["run", "--data", empty.to_str().unwrap()])
        .fails(2, &["not an initialized", "site-server init"]);
    assert!(!empty.exists());

    let mut site = TestSite::init("CEN");
    site.start();
    let pid = site.pid().unwrap().to_string();
    site.cli(&["run"]).fails(1, &["in use", &pid]);
    site.cli(&["rebuild"]).fails(1, &["in use"]);
    // The running daemon is unaffected.
    site.cli(&["package", "list"]).ok();
    site.stop();

    std::fs::write(
        site.data().join("site.toml"),
        "code = \"CEN\"\nlisten = 5\n",
    )
    .unwrap();
    site.cli(&["run"]).fails(2, &["site.toml", "malformed"]);
    site.cli(&["package", "list"])
        .fails(2, &["site.toml", "malformed"]);
}

#[test]
fn admin_calls_need_the_token() {
    let mut site = TestSite::init("CEN");
    site.start();
    let (addr, token) = site.admin();
    let before = site.cli(&["log", "--json"]).json();
    let body = r#"{"name":null,"package":"CEN00001","program":{"name":"p","command_line":"x","exit":{"success":[0],"success_reboot_required":[],"fail_reboot_required":[],"already_installed":[],"not_applicable":[],"always_reboot":false}},"collection":"c","start":null,"mandatory":[],"utc":true}"#;
    for t in [None, Some("wrong"), Some(&token[..10])] {
        let (status, resp) = http(&addr, "POST", "/v1/adverts", t, body);
        assert_eq!(status, 401, "{resp}");
        assert!(resp.contains("token"));
        let (status, _) = http(&addr, "GET", "/v1/packages", t, "");
        assert_eq!(status, 401);
    }
    assert_eq!(site.cli(&["log", "--json"]).json(), before, "nothing done");
    // With the token the same call reaches the handler (and is refused for the unknown package).
    let (status, resp) = http(&addr, "POST", "/v1/adverts", Some(&token), body);
    assert_eq!(status, 404, "{resp}");
    let (status, _) = http(&addr, "GET", "/v1/packages", Some(&token), "");
    assert_eq!(status, 200);

    // The admin file is for the owner only.
    let mode = std::fs::metadata(site.data().join("admin.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn commands_say_when_the_daemon_is_not_running() {
    let site = TestSite::init("CEN");
    site.cli(&["package", "list"])
        .fails(1, &["not running", "site-server run"]);
}

#[test]
fn a_corrupt_chunk_is_named_by_verify() {
    let mut site = TestSite::init("CEN");
    site.start();
    let src = site.tmp.path().join("src");
    sample_tree(&src);
    site.cli(&[
        "package",
        "publish",
        "--source",
        src.to_str().unwrap(),
        "--name",
        "T",
    ])
    .ok();
    site.cli(&["store", "verify"]).ok();
    let files = site.store_listing();
    let (victim, _) = files.iter().find(|(_, len)| *len > 1000).unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let listing = site.store_listing();
    let r = site.cli(&["store", "verify"]);
    let name = victim.file_name().unwrap().to_str().unwrap();
    r.fails(1, &[name, "corrupt"]);
    let json = site.cli(&["store", "verify", "--json"]).json();
    assert_eq!(json["problems"].as_array().unwrap().len(), 1);
    assert_eq!(site.store_listing(), listing, "verify changes nothing");
}
