//! `tests`: end-to-end tests that start real `site-server` processes on 127.0.0.1.
//!
//! What it is for: the helpers here (temporary sites, a daemon that is stopped on drop, CLI
//! runs with captured output, raw HTTP for the admin API) and the tests in `tests/tests/`,
//! which check the operator contract and the invariants of DESIGN §3 from the outside.
//!
//! What it is not: unit tests (those live beside the code) or benchmarks (`bench/`).
//!
//! The binaries are found next to the test executable (`target/<profile>/`). `cargo test
//! --workspace` builds them: `site-server` has integration tests of its own, which makes cargo
//! build its binary before any test runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The path of a workspace binary (`site-server`, `dist-point`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        p.display()
    );
    p
}

/// The result of one CLI run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }
    /// Asserts the exit code and that stderr is exactly one line mentioning every `needle`.
    pub fn fails(&self, code: i32, needles: &[&str]) {
        assert_eq!(
            self.code, code,
            "exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "stderr is one line: {:?}", self.stderr);
        for n in needles {
            assert!(
                lines[0].contains(n),
                "stderr {:?} does not mention {n:?}",
                lines[0]
            );
        }
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Runs `site-server ARGS`.
pub fn site_server(args: &[&str]) -> Run {
    site_server_cmd(args, |_| {})
}

/// Runs `site-server ARGS` after `tweak` adjusts the command.
pub fn site_server_cmd(args: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
    let mut c = Command::new(bin("site-server"));
    c.args(args).stdin(Stdio::null()).env("RUST_LOG", "warn");
    tweak(&mut c);
    Run::from(c.output().expect("spawn site-server"))
}

/// A site in a temporary directory, optionally with its daemon running.
pub struct TestSite {
    pub tmp: tempfile::TempDir,
    pub code: String,
    data_s: String,
    daemon: Option<Child>,
}

impl TestSite {
    /// `site-server init` in a fresh temporary directory.
    pub fn init(code: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_s = tmp.path().join("site").display().to_string();
        let s = TestSite {
            tmp,
            code: code.to_string(),
            data_s,
            daemon: None,
        };
        site_server(&[
            "init",
            "--code",
            code,
            "--data",
            s.data_str(),
            "--listen",
            "127.0.0.1:0",
        ])
        .ok();
        s
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("site")
    }
    pub fn data_str(&self) -> &str {
        &self.data_s
    }

    /// Starts `site-server run` and waits until its admin API answers.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// As [`TestSite::start`], with extra environment variables for the daemon.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "already running");
        let _ = std::fs::remove_file(self.data().join("admin.json"));
        let log = self.tmp.path().join("daemon.log");
        let mut cmd = Command::new(bin("site-server"));
        cmd.args(["run", "--data", self.data_str()])
            .envs(env.iter().copied());
        self.daemon = Some(spawn_until_ready(cmd, &log, || {
            self.data().join("admin.json").exists() && self.cli(&["identity", "--json"]).code == 0
        }));
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("daemon ignored SIGTERM");
        }
    }

    /// Kills the daemon with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a CLI command against this site: `--data` is appended.
    pub fn cli(&self, args: &[&str]) -> Run {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--data", self.data_str()]);
        site_server(&v)
    }

    /// Every file under the content store, with its size: to prove nothing changed.
    pub fn store_listing(&self) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        walk(&self.data().join("content"), &mut out);
        out.sort();
        out
    }

    /// The address the running daemon's QUIC listener is bound to.
    pub fn listen_addr(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.data().join("admin.json")).expect("admin.json"),
        )
        .expect("admin.json is JSON");
        v["listen"].as_str().expect("listen").to_string()
    }

    /// Writes the running daemon's QUIC port into `site.toml`, so that a restart listens on
    /// the same address and children (which read their parent's address at start) find it.
    pub fn pin_listen_port(&self) {
        let addr = self.listen_addr();
        let path = self.data().join("site.toml");
        let toml = std::fs::read_to_string(&path).expect("site.toml");
        let pinned = toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
        assert_ne!(toml, pinned, "site.toml listens on 127.0.0.1:0");
        std::fs::write(&path, pinned).expect("write site.toml");
    }

    /// `site-server identity --json`: (fingerprint, public key).
    pub fn keys(&self) -> (String, String) {
        let v = self.cli(&["identity", "--json"]).json();
        (
            v["fingerprint"].as_str().expect("fingerprint").to_string(),
            v["public_key"].as_str().expect("public_key").to_string(),
        )
    }

    /// Polls `f` every 50 ms until it is true or `secs` pass.
    pub fn wait_until(&self, secs: u64, what: &str, f: impl FnMut() -> bool) {
        if !poll(secs, f) {
            panic!(
                "timed out waiting for {what}\ndaemon log: {}",
                self.daemon_log()
            );
        }
    }

    /// The admin API's address and token.
    pub fn admin(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.data().join("admin.json")).expect("admin.json"),
        )
        .expect("admin.json is JSON");
        (
            v["addr"].as_str().expect("addr").to_string(),
            v["token"].as_str().expect("token").to_string(),
        )
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Spawns `cmd` with stderr to `log` and waits (30 s at most) until `ready`; panics with the
/// log if it exits or never gets ready.
fn spawn_until_ready(mut cmd: Command, log: &Path, ready: impl Fn() -> bool) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn daemon");
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return child;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{cmd:?} exited early ({st}): {}", text());
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{cmd:?} did not start: {}", text());
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push((p.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
}

/// One raw HTTP/1.1 request to 127.0.0.1; returns (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect admin API");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

pub use schema::testutil::noise;

/// `child add` at `parent` for `child`, with its real fingerprint and key.
pub fn link_child(parent: &TestSite, child: &TestSite) {
    link_child_as(parent, child, &child.code);
}

/// `child add` at `parent` of `child`'s certificate and key under the code `code`.
pub fn link_child_as(parent: &TestSite, child: &TestSite, code: &str) {
    let (fp, key) = child.keys();
    parent
        .cli(&[
            "child",
            "add",
            "--code",
            code,
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
        ])
        .ok();
}

/// Polls `f` every 50 ms until it is true (true) or `secs` pass (false).
pub fn poll(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A courier-only link `parent` -> `child` (`child add --courier`, `parent set --courier`);
/// returns the parent's public key.
pub fn link_courier(parent: &TestSite, child: &TestSite) -> String {
    let (fp, key) = child.keys();
    parent
        .cli(&[
            "child",
            "add",
            "--code",
            &child.code,
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
            "--courier",
        ])
        .ok();
    let (pfp, pkey) = parent.keys();
    child
        .cli(&[
            "parent",
            "set",
            "--code",
            &parent.code,
            "--courier",
            "--fingerprint",
            &pfp,
            "--pubkey",
            &pkey,
        ])
        .ok();
    pkey
}

/// `parent set` at `child` for the running `parent`.
pub fn link_parent(child: &TestSite, parent: &TestSite) {
    let (fp, key) = parent.keys();
    let addr = parent.listen_addr();
    child
        .cli(&[
            "parent",
            "set",
            "--code",
            &parent.code,
            "--addr",
            &addr,
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
        ])
        .ok();
}

/// CEN -> P01 -> S01, all running.
pub fn three_tiers() -> (TestSite, TestSite, TestSite) {
    three_tiers_with(|_, _, _| {})
}

/// CEN -> P01 -> S01, all running; `before` runs on the three data directories first.
pub fn three_tiers_with(
    before: impl FnOnce(&TestSite, &TestSite, &TestSite),
) -> (TestSite, TestSite, TestSite) {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    let mut s01 = TestSite::init("S01");
    before(&cen, &p01, &s01);
    link_child(&cen, &p01);
    link_child(&p01, &s01);
    cen.start();
    link_parent(&p01, &cen);
    p01.start();
    link_parent(&s01, &p01);
    s01.start();
    (cen, p01, s01)
}

/// A small source tree: text, binary, nested directories.
pub fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("docs/en")).unwrap();
    std::fs::write(root.join("bin/tool.bin"), noise(2_500_000, 11)).unwrap();
    let text: String = (0..30_000)
        .map(|i| format!("line {i} of the guide\n"))
        .collect();
    std::fs::write(root.join("docs/en/guide.txt"), text).unwrap();
    std::fs::write(root.join("README"), b"read me\n").unwrap();
}

/// `status packages --json` row of `pkg` at `site`, if any.
pub fn content_row(site: &TestSite, pkg: &str) -> Option<serde_json::Value> {
    let rows = site.cli(&["status", "packages", "--json"]);
    if rows.code != 0 {
        return None;
    }
    rows.json()
        .as_array()?
        .iter()
        .find(|r| r["package"] == pkg)
        .cloned()
}

pub fn complete(site: &TestSite, pkg: &str, version: u64) -> bool {
    content_row(site, pkg).is_some_and(|r| {
        r["source_version"] == version
            && r["chunks"].as_u64() > Some(0)
            && r["chunks_present"] == r["chunks"]
    })
}

/// Status messages with id `id` at `site` (JSON rows).
pub fn messages(site: &TestSite, id: u32) -> Vec<serde_json::Value> {
    site.cli(&["status", "messages", "--json", "--id", &id.to_string()])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

pub fn publish(site: &TestSite, src: &std::path::Path, name_or_pkg: &[&str]) -> String {
    let mut args = vec![
        "package",
        "publish",
        "--source",
        src.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(name_or_pkg);
    let out = site.cli(&args).json();
    out["package"].as_str().unwrap().to_string()
}

/// Targets `pkg` at `site_code` from `at`, once `at` knows the site (its parent's report
/// of its children may still be on the way).
pub fn distribute(at: &TestSite, pkg: &str, site_code: &str) {
    at.wait_until(20, &format!("{} to know {site_code}", at.code), || {
        at.cli(&["package", "distribute", pkg, "--site", site_code])
            .code
            == 0
    });
}

/// `mib` MiB of incompressible files under `root`, 16 MiB each, none alike (not within
/// the tree, not between two trees with different paths).
pub fn big_tree(root: &std::path::Path, mib: usize) {
    std::fs::create_dir_all(root).unwrap();
    let base = root
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
    for i in 0..mib / 16 {
        std::fs::write(
            root.join(format!("part{i:03}.bin")),
            // Even seeds apart: `noise` ORs the seed with 1, so 2i and 2i+1 would repeat.
            noise(16 << 20, base.wrapping_add(2 * i as u64)),
        )
        .unwrap();
    }
}

/// Runs `dist-point ARGS`.
pub fn dist_point(args: &[&str]) -> Run {
    let mut c = Command::new(bin("dist-point"));
    c.args(args).stdin(Stdio::null()).env("RUST_LOG", "warn");
    Run::from(c.output().expect("spawn dist-point"))
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A distribution point in a temporary directory, optionally running.
pub struct TestDp {
    pub tmp: tempfile::TempDir,
    pub id: String,
    pub fingerprint: String,
    /// Its HTTP address.
    pub addr: String,
    daemon: Option<Child>,
}

impl TestDp {
    /// `dist-point init` for a DP of the running `site` (whose QUIC port must be pinned).
    pub fn init(site: &TestSite, id: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let data = tmp.path().join("dp");
        let out = dist_point(&[
            "init",
            "--data",
            data.to_str().unwrap(),
            "--id",
            id,
            "--listen",
            &addr,
            "--site",
            &site.listen_addr(),
            "--site-fingerprint",
            &site.keys().0,
        ])
        .ok();
        let fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint: "))
            .expect("init prints the fingerprint")
            .to_string();
        TestDp {
            tmp,
            id: id.to_string(),
            fingerprint,
            addr,
            daemon: None,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("dp")
    }

    /// `dist-point ARGS --data DIR`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let d = self.data();
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--data", d.to_str().unwrap()]);
        dist_point(&v)
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts `dist-point run` and waits until its HTTP server answers.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "already running");
        let mut cmd = Command::new(bin("dist-point"));
        cmd.args(["run", "--data", self.data().to_str().unwrap()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        self.daemon = Some(spawn_until_ready(
            cmd,
            &self.tmp.path().join("dp.log"),
            || self.data().join("admin.json").exists() && TcpStream::connect(&self.addr).is_ok(),
        ));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("dp.log")).unwrap_or_default()
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `dist-point status --json`.
    pub fn status(&self) -> serde_json::Value {
        self.cli(&["status", "--json"]).json()
    }

    /// GET `path` from its HTTP server: (status, body).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        http_get(&self.addr, path, headers)
    }

    /// Chunk files in its content store.
    pub fn chunk_files(&self) -> usize {
        let mut out = Vec::new();
        walk(&self.data().join("content"), &mut out);
        out.iter()
            .filter(|(p, _)| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .count()
    }

    /// Temporary (half-written) files in its content store.
    pub fn temp_files(&self) -> usize {
        let mut out = Vec::new();
        walk(&self.data().join("content"), &mut out);
        out.iter()
            .filter(|(p, _)| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .count()
    }

    /// Polls `f` every 50 ms until it is true or `secs` pass.
    pub fn wait_until(&self, secs: u64, what: &str, f: impl FnMut() -> bool) {
        if !poll(secs, f) {
            panic!(
                "timed out waiting for {what}\ndist-point log: {}",
                self.log()
            );
        }
    }
}

impl Drop for TestDp {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Attaches `dps` to the running `site` (`dp add`, each with its sources), then restarts the
/// site on the same port so that it pins them.
pub fn attach_dps(site: &mut TestSite, dps: &[(&TestDp, &[&str])]) {
    for (dp, sources) in dps {
        let mut args = vec![
            "dp",
            "add",
            "--id",
            dp.id.as_str(),
            "--fingerprint",
            dp.fingerprint.as_str(),
            "--address",
            dp.addr.as_str(),
        ];
        for s in sources.iter() {
            args.extend(["--source", s]);
        }
        site.cli(&args).ok();
    }
    site.stop();
    site.start();
}

/// One HTTP/1.1 GET to 127.0.0.1 with extra headers; returns (status, body bytes).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&resp[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, resp[end + 4..].to_vec())
}
