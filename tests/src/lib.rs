//! `tests`: end-to-end tests that start real `site-server` and `dist-point` processes on
//! 127.0.0.1, and the workspace's boundary checks (`tests/boundaries.rs`).
//!
//! Entry points: [`TestSite`] and [`TestDp`] (a site or a distribution point in a temporary
//! directory, stopped on drop), [`three_tiers`], the link helpers and [`Run`] (a CLI run
//! with assertions), and [`proxy::UdpProxy`], the fault-injecting UDP proxy that stands in
//! for netem (loss, delay, jitter, reordering, partitions). They are the assertion layer over `site_server::harness`, which starts
//! the processes for the tests, the demo and the benchmarks alike: here every harness error
//! is a test failure that shows the daemon's log.
//!
//! What it is not: unit tests (those live beside the code) or benchmarks (`bench/`).
//!
//! The binaries are found next to the test executable (`target/<profile>/`). `cargo test
//! --workspace` builds them: `site-server` has integration tests of its own, which makes cargo
//! build its binary before any test runs.

pub mod proxy;

use site_server::harness::{self, Bins, LocalDp, LocalSite};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use schema::testutil::noise;

/// The directory of the workspace binaries (`target/<profile>/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary (`site-server`, `dist-point`).
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        p.display()
    );
    p
}

/// The binaries the harness runs.
pub fn bins() -> Bins {
    bin("site-server");
    bin("dist-point");
    Bins::in_dir(&bin_dir())
}

/// The result of one CLI run, with assertions.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<harness::Run> for Run {
    fn from(r: harness::Run) -> Self {
        Run {
            code: r.code,
            stdout: r.stdout,
            stderr: r.stderr,
        }
    }
}

impl Run {
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
    c.args(args);
    tweak(&mut c);
    harness::run(c).expect("run site-server").into()
}

/// Runs `dist-point ARGS`.
pub fn dist_point(args: &[&str]) -> Run {
    let mut c = Command::new(bin("dist-point"));
    c.args(args);
    harness::run(c).expect("run dist-point").into()
}

/// A site in a temporary directory, optionally with its daemon running.
pub struct TestSite {
    pub code: String,
    site: LocalSite,
    // Declared last: dropped after the site (whose daemon is killed first).
    pub tmp: tempfile::TempDir,
}

impl TestSite {
    /// `site-server init` in a fresh temporary directory.
    pub fn init(code: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let site = LocalSite::init(&bins(), tmp.path(), code, "127.0.0.1:0")
            .unwrap_or_else(|e| panic!("init {code}: {e}"));
        TestSite {
            code: code.to_string(),
            site,
            tmp,
        }
    }

    /// The harness's site (for the helpers that link sites).
    pub fn local(&self) -> &LocalSite {
        &self.site
    }

    pub fn data(&self) -> PathBuf {
        self.site.data().to_path_buf()
    }
    pub fn data_str(&self) -> &str {
        self.site.data_str()
    }

    /// Starts `site-server run` and waits until its admin API answers.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// As [`TestSite::start`], with extra environment variables for the daemon.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        if let Err(e) = self.site.start_with_env(env) {
            panic!("{e}\ndaemon log: {}", self.daemon_log());
        }
    }

    pub fn daemon_log(&self) -> String {
        self.site.daemon_log()
    }

    pub fn pid(&self) -> Option<u32> {
        self.site.pid()
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Err(e) = self.site.stop() {
            panic!("{e}\ndaemon log: {}", self.daemon_log());
        }
    }

    /// Kills the daemon with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill9(&mut self) {
        self.site.kill9();
    }

    /// Runs a CLI command against this site: `--data` is appended.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.site.cli(args).expect("run site-server").into()
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
        self.site
            .listen_addr()
            .expect("the daemon's listen address")
    }

    /// Writes the running daemon's QUIC port into `site.toml`, so that a restart listens on
    /// the same address and children (which read their parent's address at start) find it.
    pub fn pin_listen_port(&self) {
        self.site.pin_listen_port().expect("pin the listen port");
    }

    /// `site-server identity --json`: (fingerprint, public key).
    pub fn keys(&self) -> (String, String) {
        self.site.keys().expect("identity")
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
        self.site.admin().expect("admin.json")
    }
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
    harness::http(addr, method, path, token, body).expect("HTTP request to 127.0.0.1")
}

/// One HTTP/1.1 GET to 127.0.0.1 with extra headers; returns (status, body bytes).
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    harness::http_get(addr, path, headers).expect("HTTP GET to 127.0.0.1")
}

/// `child add` at `parent` for `child`, with its real fingerprint and key.
pub fn link_child(parent: &TestSite, child: &TestSite) {
    harness::link_child(&parent.site, &child.site).expect("child add");
}

/// `child add` at `parent` of `child`'s certificate and key under the code `code`.
pub fn link_child_as(parent: &TestSite, child: &TestSite, code: &str) {
    harness::link_child_as(&parent.site, &child.site, code).expect("child add");
}

/// Polls `f` every 50 ms until it is true (true) or `secs` pass (false).
pub fn poll(secs: u64, f: impl FnMut() -> bool) -> bool {
    harness::poll(Duration::from_secs(secs), f)
}

/// A courier-only link `parent` -> `child` (`child add --courier`, `parent set --courier`);
/// returns the parent's public key.
pub fn link_courier(parent: &TestSite, child: &TestSite) -> String {
    harness::link_courier(&parent.site, &child.site).expect("courier link")
}

/// `child add --courier` at `parent` for `child` (before `parent` starts).
pub fn courier_child_add(parent: &TestSite, child: &TestSite) {
    let args = harness::child_add_args(&child.site, &child.code, true).expect("identity");
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    parent.cli(&v).ok();
}

/// `parent set --courier` at `child` for `parent` (whose trust root it takes).
pub fn courier_parent_set(child: &TestSite, parent: &TestSite) {
    let args = harness::parent_set_args(&parent.site, true).expect("identity");
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    child.cli(&v).ok();
}

/// `parent set` at `child` for the running `parent`.
pub fn link_parent(child: &TestSite, parent: &TestSite) {
    harness::link_parent(&child.site, &parent.site).expect("parent set");
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

/// `(origin, origin_seq)` of every event in `site`'s config log, in log order.
pub fn log_keys(site: &TestSite) -> Vec<(String, u64)> {
    let log = site.cli(&["log", "--json"]).json();
    log.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["origin"].as_str().unwrap().to_string(),
                e["origin_seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `adv create` of `pkg`'s program `program` for collection All at `site`: one more event.
pub fn advertise(site: &TestSite, pkg: &str, program: &str) -> Run {
    site.cli(&[
        "adv",
        "create",
        "--package",
        pkg,
        "--program",
        program,
        "--collection",
        "All",
    ])
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

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    harness::free_port().expect("a free port")
}

/// A distribution point in a temporary directory, optionally running.
pub struct TestDp {
    pub id: String,
    pub fingerprint: String,
    /// Its HTTP address.
    pub addr: String,
    dp: LocalDp,
    // Declared last: dropped after the DP (whose process is killed first).
    pub tmp: tempfile::TempDir,
}

impl TestDp {
    /// `dist-point init` for a DP of the running `site` (whose QUIC port must be pinned).
    pub fn init(site: &TestSite, id: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dp = LocalDp::init(&bins(), tmp.path(), &site.site, id)
            .unwrap_or_else(|e| panic!("dist-point init {id}: {e}"));
        TestDp {
            id: dp.id.clone(),
            fingerprint: dp.fingerprint.clone(),
            addr: dp.addr.clone(),
            dp,
            tmp,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dp.data().to_path_buf()
    }

    /// `dist-point ARGS --data DIR`.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.dp.cli(args).expect("run dist-point").into()
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts `dist-point run` and waits until its HTTP server answers.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        if let Err(e) = self.dp.start_with_env(env) {
            panic!("{e}\ndist-point log: {}", self.log());
        }
    }

    pub fn log(&self) -> String {
        self.dp.log()
    }

    /// Kills it with SIGKILL.
    pub fn kill9(&mut self) {
        self.dp.kill9();
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

/// Attaches `dps` to the running `site` (`dp add`, each with its sources), then restarts the
/// site on the same port so that it pins them.
pub fn attach_dps(site: &mut TestSite, dps: &[(&TestDp, &[&str])]) {
    let dps: Vec<(&LocalDp, &[&str])> = dps.iter().map(|(d, s)| (&d.dp, *s)).collect();
    if let Err(e) = harness::attach_dps(&mut site.site, &dps) {
        panic!("attach DPs: {e}\ndaemon log: {}", site.daemon_log());
    }
}

/// A `site-agent` in a temporary directory: `init`, `run-once`, and `run` as a daemon.
pub struct TestAgent {
    pub name: String,
    pub key: String,
    daemon: Option<std::process::Child>,
    env: Vec<(String, String)>,
    // Declared last: dropped after the daemon (killed first).
    pub tmp: tempfile::TempDir,
}

impl TestAgent {
    /// `site-agent init` for machine `name` of the DP at `dp` (HOST:PORT), trusting `root`
    /// (the top's key), polling every second.
    pub fn init(name: &str, dp: &str, root: &str, tags: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("agent");
        let url = format!("http://{dp}");
        let mut args = vec![
            "init",
            "--data",
            data.to_str().unwrap(),
            "--dp",
            &url,
            "--root-key",
            root,
            "--name",
            name,
            "--poll",
            "1s",
        ];
        for t in tags {
            args.push("--tag");
            args.push(t);
        }
        let out = Self::run_bin(&args, &[]).ok();
        let key = out
            .split("--pubkey ")
            .nth(1)
            .expect("init prints the approval command")
            .trim()
            .to_string();
        TestAgent {
            name: name.into(),
            key,
            daemon: None,
            env: vec![],
            tmp,
        }
    }

    fn run_bin(args: &[&str], env: &[(String, String)]) -> Run {
        let out = Command::new(bin("site-agent"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run site-agent");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("agent")
    }

    /// An environment variable for the programs the agent runs (they inherit it).
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    /// `site-agent ARGS --data DIR`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let data = self.data();
        let mut a = args.to_vec();
        a.extend_from_slice(&["--data", data.to_str().unwrap()]);
        Self::run_bin(&a, &self.env)
    }

    /// One policy cycle.
    pub fn run_once(&self) -> Run {
        self.cli(&["run-once"])
    }

    /// `site-agent status --json`.
    pub fn status(&self) -> serde_json::Value {
        self.cli(&["status", "--json"]).json()
    }

    /// The last run's end of advertisement `adv` (`done`, `failed`, ...), if it ran.
    pub fn last_end(&self, adv: &str) -> Option<String> {
        self.status()["adverts"][adv]["last"]["end"]
            .as_str()
            .map(str::to_string)
    }

    /// Starts `site-agent run` in the background (its log in `agent.log`).
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.tmp.path().join("agent.log")).unwrap();
        let child = Command::new(bin("site-agent"))
            .args(["run", "--data", self.data().to_str().unwrap()])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start site-agent run");
        self.daemon = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("agent.log")).unwrap_or_default()
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `/metrics` body parsed by a Prometheus text-format parser (panics if it does not parse).
pub fn prometheus_text(body: &str) -> prometheus_parse::Scrape {
    // Only comment and sample lines: the chunked transfer coding's size lines, if any, go.
    let lines = body
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("siterep_") || l.starts_with("process_"))
        .map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

/// The sum of the samples of `name` whose labels include `labels` (0 when none).
pub fn prometheus_value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Every metric name (`siterep_...`, `process_...`) the files under `contrib/` (alert rules,
/// dashboards) use.
pub fn contrib_metric_names() -> std::collections::BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut out = std::collections::BTreeSet::new();
    for (f, _) in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for start in ["siterep_", "process_"] {
            for (i, _) in text.match_indices(start) {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Not a metric: the names of the job and the dashboard.
                if !name.ends_with('_') && name.chars().nth(start.len()).is_some() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// Whether a scrape shows metric `name` (a sample's name, or a family that has its HELP
/// line but no sample yet).
pub fn scrape_has(s: &prometheus_parse::Scrape, name: &str) -> bool {
    s.samples.iter().any(|x| x.metric == name)
        || s.docs.contains_key(name)
        || name
            .strip_suffix("_total")
            .is_some_and(|f| s.docs.contains_key(f))
}
