//! The service files under `contrib/systemd` start what the binaries really accept, and keep
//! their sandboxing: each `ExecStart` parses with the built binary's own command line, and
//! the servers write their data directory only.

use std::path::Path;

fn unit(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/systemd")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// Runs the unit's `ExecStart` with our binary and `--help` appended: clap checks every
/// argument before it prints the help, so a flag the binary does not know fails.
fn exec_start_parses(text: &str, binary: &str) {
    let exec = value(text, "ExecStart").expect("ExecStart");
    let mut words = exec.split_whitespace();
    let path = words.next().unwrap();
    assert!(path.ends_with(binary), "{exec}");
    let args: Vec<&str> = words.collect();
    let out = std::process::Command::new(tests::bin(binary))
        .args(&args)
        .arg("--help")
        .env_remove("SITEREP_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{exec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And a format the binaries do not have is refused, so the check above can fail.
    let out = std::process::Command::new(tests::bin(binary))
        .args(["run", "--log-format", "xml", "--help"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{binary} accepted --log-format xml"
    );
}

#[test]
fn the_server_units_start_real_commands_and_write_only_their_data_directory() {
    for (file, binary, env) in [
        ("site-server.service", "site-server", "SITEREP_DATA"),
        ("dist-point.service", "dist-point", "DP_DATA"),
    ] {
        let text = unit(file);
        exec_start_parses(&text, binary);
        assert!(value(&text, "ExecStart")
            .unwrap()
            .contains("--log-format json"));
        let data = value(&text, "Environment")
            .and_then(|e| e.strip_prefix(env)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{file}: Environment={env}=..."));
        assert_eq!(value(&text, "ReadWritePaths"), Some(data), "{file}");
        for (k, v) in [
            ("ProtectSystem", "strict"),
            ("NoNewPrivileges", "yes"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(value(&text, k), Some(v), "{file}: {k}");
        }
        assert!(value(&text, "User").is_some_and(|u| u != "root"), "{file}");
    }
}

#[test]
fn the_agent_unit_starts_a_real_command() {
    let text = unit("site-agent.service");
    exec_start_parses(&text, "site-agent");
}
