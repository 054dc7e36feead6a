//! The demo's last mile: two agents at S01 and one at P01 in a collection by rule; an
//! install script that writes a marker file succeeds on two machines and fails on one;
//! CEN's `status adverts` shows it, with the failed machine's exit code and output; after the
//! fix, a re-run of the failed turns it green.

use super::{step, Demo};
use crate::cli::common::CliError;
use site_server::harness::{self, LocalSite};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The install script: writes a line to `marker` beside the agent's data; fails (exit 3,
/// "fatal error during installation") while a file `broken` is there.
const INSTALL: &str = r#"#!/bin/sh
here="${SITEREP_DEMO_DIR:?}"
echo "installing Tool on $(basename "$here")"
if [ -e "$here/broken" ]; then
  echo "fatal error during installation: the disk is read-only" >&2
  exit 3
fi
date >> "$here/marker"
exit 0
"#;

struct DemoAgent {
    name: &'static str,
    dir: PathBuf,
}

impl DemoAgent {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// `site-server agent ARGS`, printed as the operator would type it, with its output.
fn agent_cmd(exe: &Path, a: &DemoAgent, args: &[&str], show: bool) -> Result<String, CliError> {
    let mut full: Vec<String> = vec!["agent".into()];
    full.extend(args.iter().map(|s| s.to_string()));
    let out = std::process::Command::new(exe)
        .args(&full)
        .env("SITEREP_DEMO_DIR", &a.dir)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| CliError::failed(format!("cannot run {}: {e}", exe.display())))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if show {
        println!("$ site-server {}\n{}", full.join(" "), text.trim_end());
    }
    if !out.status.success() {
        return Err(CliError::failed(format!(
            "site-server agent {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(text)
}

/// The public key `init` printed.
fn key_of(init_out: &str) -> Result<String, CliError> {
    init_out
        .split("--pubkey ")
        .nth(1)
        .map(|k| k.trim().to_string())
        .ok_or_else(|| CliError::failed("site-agent init printed no key"))
}

/// One cycle at a time until the agent's last run of `adv` is `end`.
fn until_ran(exe: &Path, a: &DemoAgent, adv: &str, end: &str) -> Result<(), CliError> {
    let data = a.data().display().to_string();
    let done = harness::poll(Duration::from_secs(60), || {
        let _ = agent_cmd(exe, a, &["run-once", "--data", &data], false);
        agent_cmd(exe, a, &["status", "--json", "--data", &data], false)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v["adverts"][adv]["last"]["end"] == end)
    });
    if !done {
        return Err(CliError::failed(format!(
            "agent {} did not finish {adv} as {end} within 60 s",
            a.name
        )));
    }
    println!("   {}: {adv} ran, {end}", a.name);
    Ok(())
}

/// CEN's `status adverts --json` row of `adv` at `site`.
fn row(cen: &LocalSite, adv: &str, site: &str) -> serde_json::Value {
    cen.cli_ok(&["status", "adverts", "--id", adv, "--json"])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| {
            v["rows"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["site"] == site).cloned())
        })
        .unwrap_or(serde_json::Value::Null)
}

fn wait_rows(
    cen: &LocalSite,
    adv: &str,
    what: &str,
    f: impl Fn(&serde_json::Value, &serde_json::Value) -> bool,
) -> Result<(), CliError> {
    let ok = harness::poll(Duration::from_secs(60), || {
        f(&row(cen, adv, "S01"), &row(cen, adv, "P01"))
    });
    if !ok {
        return Err(CliError::failed(format!(
            "CEN did not see {what} within 60 s"
        )));
    }
    Ok(())
}

pub(super) fn story(exe: &Path, root: &Path, demo: &Demo) -> Result<(), CliError> {
    let (cen, p01, s01) = (demo.site("CEN"), demo.site("P01"), demo.site("S01"));
    let src = root.join("tool");
    std::fs::create_dir_all(&src)
        .and_then(|()| std::fs::write(src.join("install.sh"), INSTALL))
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                src.join("install.sh"),
                std::fs::Permissions::from_mode(0o755),
            )
        })
        .map_err(|e| CliError::failed(format!("cannot write the Tool package: {e}")))?;
    let src_s = src.display().to_string();
    step(
        cen,
        "CEN: publish Tool, a package with an install script",
        &["package", "publish", "--source", &src_s, "--name", "Tool"],
    )?;
    step(
        cen,
        "CEN: target it at every DP",
        &[
            "package",
            "distribute",
            "CEN00002",
            "--dp-group",
            "Everywhere",
        ],
    )?;
    for d in &demo.dps {
        let serves = harness::poll(Duration::from_secs(60), || {
            d.get("/packages/CEN00002/1/manifest", &[])
                .is_ok_and(|(code, _)| code == 200)
        });
        if !serves {
            return Err(CliError::failed(format!(
                "{}/{} did not install Tool within 60 s",
                d.site, d.id
            )));
        }
    }
    let root_key = cen
        .cli_ok(&["identity", "--json"])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["public_key"].as_str().map(str::to_string))
        .ok_or_else(|| CliError::failed("CEN's identity has no public key"))?;
    let dp_of = |site: &str| {
        demo.dps
            .iter()
            .find(|d| d.site == site)
            .map(|d| format!("http://{}", d.addr))
            .expect("a DP per site")
    };
    let agents = [
        (
            DemoAgent {
                name: "web-1",
                dir: root.join("agent-web-1"),
            },
            "S01",
        ),
        (
            DemoAgent {
                name: "web-2",
                dir: root.join("agent-web-2"),
            },
            "S01",
        ),
        (
            DemoAgent {
                name: "web-3",
                dir: root.join("agent-web-3"),
            },
            "P01",
        ),
    ];
    step(
        s01,
        "S01: approve every new machine automatically (ConfigMgr's automatic approval)",
        &["machine", "approve", "--auto"],
    )?;
    println!("\n== three machines get an agent: web-1 and web-2 at S01's DP, web-3 at P01's");
    let mut keys = Vec::new();
    for (a, site) in &agents {
        let data = a.data().display().to_string();
        let out = agent_cmd(
            exe,
            a,
            &[
                "init",
                "--data",
                &data,
                "--dp",
                &dp_of(site),
                "--root-key",
                &root_key,
                "--name",
                a.name,
                "--tag",
                "role=web",
                "--poll",
                "1s",
            ],
            true,
        )?;
        keys.push(key_of(&out)?);
    }
    std::fs::write(agents[2].0.dir.join("broken"), "")
        .map_err(|e| CliError::failed(format!("cannot break web-3: {e}")))?;
    step(
        p01,
        "P01: approve web-3 by hand",
        &[
            "machine", "approve", "--name", "web-3", "--pubkey", &keys[2],
        ],
    )?;
    step(
        cen,
        "CEN: a collection by rule: every machine tagged role=web",
        &["collection", "create", "Web", "--rule", "tag:role=web"],
    )?;
    let out = cen
        .cli_ok(&[
            "adv",
            "create",
            "--package",
            "CEN00002",
            "--program",
            "Install",
            "--command",
            "install.sh",
            "--collection",
            "Web",
            "--utc",
            "--json",
        ])
        .map_err(|e| CliError::failed(format!("adv create: {e}")))?;
    let adv = serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .ok_or_else(|| CliError::failed("adv create printed no id"))?;
    println!("\n== CEN: advertise Tool's install script to Web\n$ site-server adv create --package CEN00002 --program Install --command install.sh --collection Web --utc --data {}\ncreated advertisement {adv}", cen.data_str());
    println!("\n== each agent polls its DP, verifies the advertisement up to CEN's key, downloads, runs, reports");
    until_ran(exe, &agents[0].0, &adv, "done")?;
    until_ran(exe, &agents[1].0, &adv, "done")?;
    until_ran(exe, &agents[2].0, &adv, "failed")?;
    wait_rows(cen, &adv, "2 succeeded and 1 failed", |s, p| {
        s["succeeded"] == 2 && p["failed"] == 1
    })?;
    step(
        cen,
        "CEN: how far the advertisement has got, per site",
        &["status", "adverts", "--id", &adv],
    )?;
    step(
        cen,
        "CEN: the computers that returned errors for it",
        &["status", "adverts", "--id", &adv, "--failed"],
    )?;
    println!("\n== web-3 is fixed (its disk is writable again)");
    let _ = std::fs::remove_file(agents[2].0.dir.join("broken"));
    step(
        cen,
        "CEN: run it again on the machines that failed",
        &["adv", "rerun", &adv, "--failed-only"],
    )?;
    until_ran(exe, &agents[2].0, &adv, "done")?;
    wait_rows(cen, &adv, "3 succeeded", |s, p| {
        s["succeeded"] == 2 && p["succeeded"] == 1
    })?;
    step(
        cen,
        "CEN: every machine green",
        &["status", "adverts", "--id", &adv],
    )?;
    step(cen, "CEN: web-3's history", &["status", "machine", "web-3"])?;
    Ok(())
}
