//! The last mile end to end: real `site-agent` processes beside real sites and distribution
//! points on 127.0.0.1. Two agents at S01 and one at P01 are in a collection by rule; an
//! advertisement made at CEN runs an install script that writes a marker file; it succeeds
//! on two machines and fails on one; CEN's `status adverts` shows 2 succeeded and 1 failed
//! with the exit code and output; a re-run of the failed, once fixed, turns it green; a
//! disabled advertisement runs nowhere. Then the bad inputs: an agent not approved, a
//! request signed by another key, a policy that does not chain to the trust root, a command
//! that is not in the package, a time limit, an agent killed during a run, and a DP gone bad
//! (a proxy that alters package files: the chunk fails its hash and nothing runs).

use serde_json::Value;
use tests::{attach_dps, publish, three_tiers, TestAgent, TestDp, TestSite};

/// The install script: writes a line to `$SITEREP_TEST_MARKER`; fails with exit code 3
/// ("fatal error during installation") while the file `$SITEREP_TEST_FAIL` names exists.
const INSTALL: &str = r#"#!/bin/sh
echo "installing on $SITEREP_TEST_MACHINE"
if [ -n "$SITEREP_TEST_FAIL" ] && [ -e "$SITEREP_TEST_FAIL" ]; then
  echo "fatal error during installation" >&2
  exit 3
fi
echo run >> "$SITEREP_TEST_MARKER"
exit 0
"#;

/// The tests of this file run one at a time: each starts five processes and makes many
/// short connections, and a DP's port is chosen free before the DP binds it (at its start,
/// after its site's restart); parallel tests' outgoing connections could take it meanwhile.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

struct Tree {
    cen: TestSite,
    p01: TestSite,
    s01: TestSite,
    dp_s01: TestDp,
    dp_p01: TestDp,
    pkg: String,
    root: String,
}

/// CEN -> P01 -> S01, a DP at S01 and one at P01, a package with `install.sh` published at
/// CEN and held by both DPs.
fn tree() -> Tree {
    let (cen, mut p01, mut s01) = three_tiers();
    s01.pin_listen_port();
    p01.pin_listen_port();
    let mut dp_s01 = TestDp::init(&s01, "DP1");
    let mut dp_p01 = TestDp::init(&p01, "DP1");
    attach_dps(&mut s01, &[(&dp_s01, &[])]);
    attach_dps(&mut p01, &[(&dp_p01, &[])]);
    dp_s01.start();
    dp_p01.start();
    let src = cen.tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let script = src.join("install.sh");
    std::fs::write(&script, INSTALL).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("payload.txt"), "the software\n").unwrap();
    let pkg = publish(&cen, &src, &["--name", "Tool"]);
    for dp in ["S01/DP1", "P01/DP1"] {
        cen.wait_until(60, &format!("{dp} known at CEN"), || {
            cen.cli(&["package", "distribute", &pkg, "--dp", dp]).code == 0
        });
    }
    for dp in [&dp_s01, &dp_p01] {
        dp.wait_until(60, "the package on the DP", || {
            dp.get(&format!("/packages/{pkg}/1/manifest"), &[]).0 == 200
        });
    }
    let root = cen.cli(&["identity", "--json"]).json()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    Tree {
        cen,
        p01,
        s01,
        dp_s01,
        dp_p01,
        pkg,
        root,
    }
}

fn agent(name: &str, dp: &str, root: &str) -> TestAgent {
    tagged(name, dp, root, &["role=web"])
}

fn tagged(name: &str, dp: &str, root: &str, tags: &[&str]) -> TestAgent {
    let mut a = TestAgent::init(name, dp, root, tags);
    let marker = a.tmp.path().join("marker");
    a.set_env("SITEREP_TEST_MARKER", marker.to_str().unwrap());
    a.set_env("SITEREP_TEST_MACHINE", name);
    a
}

fn runs(a: &TestAgent) -> usize {
    std::fs::read_to_string(a.tmp.path().join("marker"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `adv create` at CEN of program `program` running `command` for `collection`, start
/// now (UTC); returns the advertisement id.
fn adv_create(t: &Tree, program: &str, collection: &str, command: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "adv",
        "create",
        "--package",
        &t.pkg,
        "--program",
        program,
        "--command",
        command,
        "--collection",
        collection,
        "--utc",
        "--json",
    ];
    args.extend_from_slice(extra);
    t.cen.cli(&args).json()["id"].as_str().unwrap().to_string()
}

/// Runs `a` once a second until its last run of `adv` ended `end`.
fn until_ran(site: &TestSite, a: &TestAgent, adv: &str, end: &str) {
    site.wait_until(60, &format!("{adv} {end} on {}", a.name), || {
        let r = a.run_once();
        if a.last_end(adv).as_deref() == Some(end) {
            return true;
        }
        eprintln!("{}: {} {}", a.name, r.stdout.trim(), r.stderr.trim());
        std::thread::sleep(std::time::Duration::from_millis(500));
        false
    });
}

/// CEN's `status adverts --json` row for `adv` at `site`.
fn row(cen: &TestSite, adv: &str, site: &str) -> Value {
    let v = cen
        .cli(&["status", "adverts", "--id", adv, "--json"])
        .json();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["site"] == site)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn an_advertisement_runs_on_the_collection_and_its_status_reaches_the_top() {
    let _one = one_at_a_time();
    let t = tree();
    // S01 approves every new machine; P01 approves by hand.
    t.s01.cli(&["machine", "approve", "--auto"]).ok();
    let web1 = agent("web-1", &t.dp_s01.addr, &t.root);
    let mut web2 = agent("web-2", &t.dp_s01.addr, &t.root);
    let mut web3 = agent("web-3", &t.dp_p01.addr, &t.root);
    let broken = web3.tmp.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    web3.set_env("SITEREP_TEST_FAIL", broken.to_str().unwrap());

    // Not approved at P01 yet: refused, with the command that approves it; P01 says so.
    let r = web3.run_once();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not approved") && r.stderr.contains("machine approve"),
        "{}",
        r.stderr
    );
    t.p01.wait_until(20, "40510 at P01", || {
        tests::messages(&t.p01, 40510)
            .iter()
            .any(|m| m["text"].as_str().unwrap_or_default().contains("web-3"))
    });
    t.p01
        .cli(&[
            "machine", "approve", "--name", "web-3", "--pubkey", &web3.key,
        ])
        .ok();

    t.cen
        .cli(&[
            "collection",
            "create",
            "web",
            "--rule",
            "tag:role=web,os=linux",
        ])
        .ok();
    let adv = adv_create(&t, "Install", "web", "install.sh", &[]);
    web2.start();
    until_ran(&t.s01, &web1, &adv, "done");
    until_ran(&t.p01, &web3, &adv, "failed");
    t.cen.wait_until(
        60,
        "2 succeeded at S01, 1 failed at P01 (seen at CEN)",
        || {
            let s = row(&t.cen, &adv, "S01");
            let p = row(&t.cen, &adv, "P01");
            s["succeeded"] == 2 && p["failed"] == 1 && s["in_collection"] == 2
        },
    );
    assert_eq!((runs(&web1), runs(&web2), runs(&web3)), (1, 1, 0));
    let failed = t
        .cen
        .cli(&["status", "adverts", "--id", &adv, "--failed", "--json"])
        .json();
    let f = &failed["failed"][0];
    assert_eq!(f["machine"], "web-3", "{failed}");
    assert_eq!(f["exit"], 3, "{failed}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("fatal error during installation"),
        "{failed}"
    );
    let text = t
        .cen
        .cli(&["status", "adverts", "--id", &adv, "--failed"])
        .ok();
    assert!(
        text.contains("web-3") && text.contains("fatal error"),
        "{text}"
    );
    // The SMS ids, as status messages at the top.
    for id in [10002, 10005, 10006, 10008] {
        assert!(!tests::messages(&t.cen, id).is_empty(), "{id} at CEN");
    }

    // Fixed, then re-run on the failed only: web-3 turns green, the others do not run again.
    std::fs::remove_file(&broken).unwrap();
    t.cen.cli(&["adv", "rerun", &adv, "--failed-only"]).ok();
    until_ran(&t.p01, &web3, &adv, "done");
    t.cen.wait_until(60, "3 succeeded (seen at CEN)", || {
        row(&t.cen, &adv, "P01")["succeeded"] == 1 && row(&t.cen, &adv, "S01")["succeeded"] == 2
    });
    web1.run_once();
    assert_eq!((runs(&web1), runs(&web2), runs(&web3)), (1, 1, 1));
    let history = t.cen.cli(&["status", "machine", "web-3"]).ok();
    assert!(
        history.contains("failed with exit code 3") && history.contains("completed successfully"),
        "{history}"
    );

    // Disabled: a re-run of every machine runs nowhere; enabled again, it runs everywhere.
    web2.kill9();
    t.cen.cli(&["adv", "disable", &adv]).ok();
    t.cen.cli(&["adv", "rerun", &adv]).ok();
    t.s01.wait_until(30, "the change at S01", || {
        t.s01
            .cli(&["adv", "list", "--json"])
            .stdout
            .contains("\"rerun\": 2")
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    for a in [&web1, &web2, &web3] {
        a.run_once();
    }
    assert_eq!(
        (runs(&web1), runs(&web2), runs(&web3)),
        (1, 1, 1),
        "disabled: nothing ran"
    );
    t.cen.cli(&["adv", "enable", &adv]).ok();
    for (site, a) in [(&t.s01, &web1), (&t.s01, &web2), (&t.p01, &web3)] {
        site.wait_until(60, "the re-run after enable", || {
            a.run_once();
            runs(a) == 2
        });
    }
}

#[test]
fn bad_inputs_are_refused_and_nothing_half_installed_is_reported_installed() {
    let _one = one_at_a_time();
    let t = tree();
    t.s01.cli(&["machine", "approve", "--auto"]).ok();
    t.cen
        .cli(&["collection", "create", "web", "--rule", "tag:role=web"])
        .ok();
    t.cen
        .cli(&["collection", "create", "solo", "--member", "web-9"])
        .ok();

    // A policy that does not chain to the trust root: nothing of it is believed or kept.
    let p01_key = t.p01.cli(&["identity", "--json"]).json()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let stranger = agent("web-5", &t.dp_s01.addr, &p01_key);
    let mut r = stranger.run_once();
    t.s01.wait_until(30, "web-5 approved and polled", || {
        r = stranger.run_once();
        r.stderr.contains("trust root")
    });
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("does not chain to the trust root"),
        "{}",
        r.stderr
    );
    assert!(!stranger.data().join("policy.bin").exists());

    // A request signed by another key than the one approved: refused, and said at P01.
    let web3 = agent("web-3", &t.dp_p01.addr, &t.root);
    t.p01
        .cli(&[
            "machine", "approve", "--name", "web-3", "--pubkey", &web3.key,
        ])
        .ok();
    t.p01
        .wait_until(30, "web-3 approved at its DP", || web3.run_once().code == 0);
    std::fs::write(web3.data().join("machine.key"), "11".repeat(32)).unwrap();
    let r = web3.run_once();
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not approved at P01 with key"),
        "{}",
        r.stderr
    );
    let refused = t.dp_p01.log();
    assert!(refused.contains("agent request refused"), "{refused}");

    // A command that is not in the package, and a time limit.
    let web1 = agent("web-1", &t.dp_s01.addr, &t.root);
    let bad = adv_create(&t, "Setup", "web", "setup.exe", &[]);
    let slow = adv_create(
        &t,
        "Slow",
        "web",
        "/bin/sh -c 'echo begun; sleep 30'",
        &["--timeout", "2s"],
    );
    until_ran(&t.s01, &web1, &slow, "failed");
    assert_eq!(web1.last_end(&bad).as_deref(), Some("failed"));
    t.cen.wait_until(60, "both failures at CEN with why", || {
        let b = t
            .cen
            .cli(&["status", "adverts", "--id", &bad, "--failed", "--json"])
            .json();
        let s = t
            .cen
            .cli(&["status", "adverts", "--id", &slow, "--failed", "--json"])
            .json();
        b["failed"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not a file of the package"))
            && s["failed"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("time limit") && d.contains("begun"))
    });
    assert_eq!(runs(&web1), 0, "nothing installed");

    // Automatic approval takes new names only: another key claiming web-1 waits for the
    // operator.
    std::fs::write(web1.data().join("machine.key"), "22".repeat(32)).unwrap();
    let r = web1.run_once();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not approved at S01 with key"),
        "{}",
        r.stderr
    );
    t.s01.wait_until(20, "40510 for web-1 at S01", || {
        tests::messages(&t.s01, 40510)
            .iter()
            .any(|m| m["text"].as_str().unwrap_or_default().contains("web-1"))
    });
    assert!(
        web1.run_once().code == 1,
        "still refused after the site heard of it"
    );

    // The agent killed during a run: after its restart the run is reported as not
    // completed (never as installed), and the program it left is stopped.
    // Not in `web` (no tag): only the one advertisement runs there.
    let mut web9 = tagged("web-9", &t.dp_s01.addr, &t.root, &[]);
    let long = adv_create(
        &t,
        "Long",
        "solo",
        "/bin/sh -c 'sleep 5; echo run >> \"$SITEREP_TEST_MARKER\"'",
        &[],
    );
    web9.start();
    // Running with its pid recorded: before that, the agent is still reporting the start
    // (a kill then leaves no program behind to stop).
    t.s01.wait_until(60, "web-9 running the program", || {
        !web9.status()["running"]["pid"].is_null()
    });
    web9.kill9();
    let r = web9.run_once();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(web9.last_end(&long).as_deref(), Some("failed"));
    t.cen.wait_until(60, "the interrupted run at CEN", || {
        let v = t
            .cen
            .cli(&["status", "adverts", "--id", &long, "--failed", "--json"])
            .json();
        v["failed"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("stopped during the run"))
    });
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert_eq!(runs(&web9), 0, "the program left behind was stopped");
    let states = t.cen.cli(&["status", "machine", "web-9", "--json"]).json();
    assert!(
        !states.to_string().contains("\"succeeded\""),
        "nothing reported installed: {states}"
    );
}

/// An HTTP proxy in front of `dp` that passes every request on (one per connection) and
/// flips the last byte of every package file it hands back: a DP gone bad.
fn corrupting_proxy(dp: &str) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let dp = dp.to_string();
    let find = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let dp = dp.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut c = c;
                let (mut buf, mut b) = (Vec::new(), [0u8; 4096]);
                let end = loop {
                    let n = c.read(&mut b)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&b[..n]);
                    if let Some(p) = find(&buf) {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < end + len {
                    let n = c.read(&mut b)?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&b[..n]);
                }
                let lines: Vec<&str> = head
                    .trim_end()
                    .split("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .collect();
                let mut up = std::net::TcpStream::connect(&dp)?;
                up.write_all(
                    format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n")).as_bytes(),
                )?;
                up.write_all(&buf[end..])?;
                let mut resp = Vec::new();
                up.read_to_end(&mut resp)?;
                if head.contains("/files/") {
                    if let Some(p) = find(&resp) {
                        if resp.len() > p + 4 {
                            *resp.last_mut().unwrap() ^= 1;
                        }
                    }
                }
                c.write_all(&resp)?;
                Ok(())
            });
        }
    });
    addr
}

#[test]
fn a_package_that_fails_its_hash_is_never_run() {
    let _one = one_at_a_time();
    let t = tree();
    t.s01.cli(&["machine", "approve", "--auto"]).ok();
    t.cen
        .cli(&["collection", "create", "web", "--rule", "tag:role=web"])
        .ok();
    // The agent's DP is the proxy: policy and reports pass, package files come back altered.
    let proxy = corrupting_proxy(&t.dp_s01.addr);
    let web1 = agent("web-1", &proxy, &t.root);
    let adv = adv_create(&t, "Install", "web", "install.sh", &[]);
    until_ran(&t.s01, &web1, &adv, "failed");
    assert_eq!(runs(&web1), 0, "nothing ran");
    t.cen.wait_until(60, "40502 at CEN", || {
        tests::messages(&t.cen, 40502).iter().any(|m| {
            m["text"]
                .as_str()
                .is_some_and(|s| s.contains("fails its hash"))
        })
    });
    let cached = web1.data().join(format!("cache/{}-v1/install.sh", t.pkg));
    assert!(!cached.exists(), "nothing unverified is kept");
}
