//! `site-agent`'s commands as an operator meets them: bad input gets one line on stderr that
//! names the thing and the fix, exit code 2, and changes nothing. (Its being here also makes
//! `cargo test --workspace` build the binary the end-to-end tests run.)

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_site-agent"))
        .args(args)
        .output()
        .expect("run site-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ROOT: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

#[test]
fn init_makes_an_agent_once_and_refuses_bad_input_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a");
    let d = data.to_str().unwrap();
    let base = ["init", "--data", d, "--dp", "http://127.0.0.1:1"];
    for (extra, needle) in [
        (vec!["--root-key", "nothex"], "--root-key"),
        (vec!["--root-key", ROOT, "--tag", "novalue"], "KEY=VALUE"),
        (
            vec!["--root-key", ROOT, "--name", "bad/name"],
            "machine name",
        ),
        (vec!["--root-key", ROOT, "--poll", "soon"], "poll"),
    ] {
        let mut args = base.to_vec();
        args.extend(extra);
        let (code, _, err) = agent(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!data.join("agent.toml").exists(), "nothing made");
    }
    let mut args = base.to_vec();
    args.extend(["--root-key", ROOT, "--name", "web-1", "--tag", "role=web"]);
    let (code, out, err) = agent(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("site-server machine approve --name web-1 --pubkey "),
        "{out}"
    );
    let (code, _, err) = agent(&args);
    assert_eq!(code, 2, "a second init refuses");
    assert!(err.contains("already exists"), "{err}");
    let (code, out, _) = agent(&["status", "--data", d]);
    assert_eq!(code, 0);
    assert!(out.contains("not approved yet"), "{out}");
    // No DP answers on port 1: one line, exit 1, and the agent keeps what it had.
    let (code, _, err) = agent(&["run-once", "--data", d]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not answer"), "{err}");
}

#[test]
fn a_directory_without_an_agent_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("none");
    let (code, _, err) = agent(&["status", "--data", d.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("site-agent init"), "{err}");
}
