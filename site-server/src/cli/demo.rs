//! `site-server demo`: the main job in one command. Starts a real three-tier hierarchy
//! (CEN -> P01 -> S01: three daemons of this same binary, separate processes) on loopback
//! ports in a temporary directory, links them with pinned certificates, publishes a sample
//! package at CEN, targets S01, waits until S01 holds every chunk, publishes a changed
//! version (only the changed chunks travel), has a distribution point of each site serve it,
//! syncs an update catalog at CEN from an apt index (its delta reaches every site, S02 by the
//! bundle), carries the package to a courier-only site S02 by bundle (and a receipt back), and
//! prints what an operator would look at.

use crate::cli::CliError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    data: PathBuf,
}

impl Daemon {
    fn stop(&mut self) {
        // SIGTERM: the daemon shuts down cleanly and removes admin.json.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exe() -> Result<PathBuf, CliError> {
    std::env::current_exe().map_err(|e| CliError::failed(format!("cannot find my own binary: {e}")))
}

/// Runs `site-server ARGS` quietly and returns its stdout (for values the demo needs).
fn capture(args: &[&str]) -> Result<String, CliError> {
    let out = Command::new(exe()?)
        .args(args)
        .output()
        .map_err(|e| CliError::failed(format!("cannot run site-server {}: {e}", args[0])))?;
    if !out.status.success() {
        return Err(CliError::failed(format!(
            "demo step `site-server {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(args: &[&str]) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(&capture(args)?)
        .map_err(|e| CliError::failed(format!("site-server {} gave bad JSON: {e}", args[0])))
}

fn step(title: &str, args: &[&str]) -> Result<(), CliError> {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect();
    println!("\n== {title}\n$ site-server {}", shown.join(" "));
    let status = Command::new(exe()?)
        .args(args)
        .status()
        .map_err(|e| CliError::failed(format!("cannot run site-server {}: {e}", args[0])))?;
    if !status.success() {
        return Err(CliError::failed(format!(
            "demo step `site-server {}` failed ({status})",
            args.join(" ")
        )));
    }
    Ok(())
}

fn start_daemon(data: &Path) -> Result<Daemon, CliError> {
    start_process(&["run"], data)
}

/// Starts `site-server ARGS --data DATA` in the background and waits for its admin file.
fn start_process(args: &[&str], data: &Path) -> Result<Daemon, CliError> {
    let log = std::fs::File::create(data.with_extension("log"))
        .map_err(|e| CliError::failed(format!("cannot create the daemon log: {e}")))?;
    let child = Command::new(exe()?)
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the daemon: {e}")))?;
    let mut d = Daemon {
        child,
        data: data.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if d.data.join(site_server::config::ADMIN_FILE).exists() {
            return Ok(d);
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            return Err(CliError::failed(format!(
                "the daemon exited ({status}): see {}",
                data.with_extension("log").display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    Err(CliError::failed("the daemon did not start within 20 s"))
}

/// A small package: some text, some binary, a nested directory.
fn write_sample(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(
        root.join("README.txt"),
        "Sample package published by `site-server demo`.\n".repeat(200),
    )?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bin: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("bin/tool.bin"), bin)?;
    let guide: String = (0..20_000)
        .map(|i| format!("step {i}: apply the update, check the exit code, report status\n"))
        .collect();
    std::fs::write(root.join("docs/guide.txt"), guide)
}

pub async fn run(keep: bool) -> Result<(), CliError> {
    tokio::task::block_in_place(|| run_blocking(keep))
}

/// One site of the demo hierarchy.
struct DemoSite {
    code: &'static str,
    data: String,
    daemon: Option<Daemon>,
}

impl DemoSite {
    fn init(root: &Path, code: &'static str) -> Result<Self, CliError> {
        let data = root.join(code).display().to_string();
        // A fixed port, so that its distribution point knows where to dial before it runs.
        let listen = format!("127.0.0.1:{}", free_port()?);
        capture(&["init", "--code", code, "--data", &data, "--listen", &listen])?;
        println!("created site {code} in {data}");
        Ok(DemoSite {
            code,
            data,
            daemon: None,
        })
    }

    /// (fingerprint, public key)
    fn keys(&self) -> Result<(String, String), CliError> {
        let v = json(&["identity", "--data", &self.data, "--json"])?;
        let get = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok((get("fingerprint"), get("public_key")))
    }

    fn start(&mut self) -> Result<(), CliError> {
        let d = start_daemon(Path::new(&self.data))?;
        println!("site {} running (pid {})", self.code, d.child.id());
        self.daemon = Some(d);
        Ok(())
    }

    /// The QUIC address in its `site.toml`.
    fn listen_configured(&self) -> Result<String, CliError> {
        let v = json(&["identity", "--data", &self.data, "--json"])?;
        Ok(v["listen"].as_str().unwrap_or_default().to_string())
    }

    /// The QUIC address the running daemon listens on.
    fn listen(&self) -> Result<String, CliError> {
        let admin = Path::new(&self.data).join(site_server::config::ADMIN_FILE);
        let v: serde_json::Value = std::fs::read_to_string(&admin)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .ok_or_else(|| CliError::failed(format!("cannot read {}", admin.display())))?;
        Ok(v["listen"].as_str().unwrap_or_default().to_string())
    }

    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }
}

/// Runs `site-server ARGS` until it succeeds (for up to 30 s): the top site knows a site or a
/// DP only once the report naming it has come up the tree.
fn capture_when_known(args: &[&str]) -> Result<String, CliError> {
    let t0 = Instant::now();
    loop {
        match capture(args) {
            Ok(out) => return Ok(out),
            Err(e) if t0.elapsed() > Duration::from_secs(30) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A free TCP port on 127.0.0.1 (QUIC uses UDP, but a port free for one is almost always
/// free for the other on loopback; bound, then released).
fn free_port() -> Result<u16, CliError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::failed(format!("no free port on 127.0.0.1: {e}")))
}

/// One distribution point of the demo, attached to a site.
struct DemoDp {
    site: &'static str,
    data: PathBuf,
    addr: String,
    daemon: Option<Daemon>,
}

impl DemoDp {
    /// `dist-point init` for DP1 of `site`, then `dp add` at the site (before it starts).
    fn init(root: &Path, site: &DemoSite) -> Result<Self, CliError> {
        let data = root.join(format!("{}-DP1", site.code));
        let addr = format!("127.0.0.1:{}", free_port()?);
        let (fp, _) = site.keys()?;
        let out = capture(&[
            "dist-point",
            "init",
            "--data",
            &data.display().to_string(),
            "--id",
            "DP1",
            "--listen",
            &addr,
            "--site",
            &site.listen_configured()?,
            "--site-fingerprint",
            &fp,
        ])?;
        let dp_fp = out
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint: "))
            .unwrap_or_default()
            .to_string();
        step(
            &format!(
                "{}: attach distribution point DP1 (HTTP on {addr}), pinned by its certificate",
                site.code
            ),
            &[
                "dp",
                "add",
                "--data",
                &site.data,
                "--id",
                "DP1",
                "--fingerprint",
                &dp_fp,
                "--address",
                &addr,
            ],
        )?;
        Ok(DemoDp {
            site: site.code,
            data,
            addr,
            daemon: None,
        })
    }

    fn start(&mut self) -> Result<(), CliError> {
        let d = start_process(&["dist-point", "run"], &self.data)?;
        println!(
            "distribution point {}/DP1 running (pid {}), serving http://{}/",
            self.site,
            d.child.id(),
            self.addr
        );
        self.daemon = Some(d);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }
}

/// One HTTP/1.1 GET on 127.0.0.1: (status, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let status = String::from_utf8_lossy(&resp[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, resp[(end + 4).min(resp.len())..].to_vec()))
}

/// `child add` at `parent` for `child` (before `parent` starts: links are read at start).
fn accept_child(parent: &DemoSite, child: &DemoSite) -> Result<(), CliError> {
    let (fp, key) = child.keys()?;
    step(
        &format!(
            "{}: accept {} as a child, pinned by its certificate",
            parent.code, child.code
        ),
        &[
            "child",
            "add",
            "--data",
            &parent.data,
            "--code",
            child.code,
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
        ],
    )
}

/// A courier-only link: `child add --courier` at `parent`, `parent set --courier` at `child`.
fn courier_link(parent: &DemoSite, child: &DemoSite) -> Result<(), CliError> {
    let (fp, key) = child.keys()?;
    step(
        &format!(
            "{}: accept {} as a child reached by courier bundles only (no network link)",
            parent.code, child.code
        ),
        &[
            "child",
            "add",
            "--data",
            &parent.data,
            "--code",
            child.code,
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
            "--courier",
        ],
    )?;
    let (fp, key) = parent.keys()?;
    step(
        &format!(
            "{}: its parent is {}, by courier: bundles must be signed with this key",
            child.code, parent.code
        ),
        &[
            "parent",
            "set",
            "--data",
            &child.data,
            "--code",
            parent.code,
            "--courier",
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
        ],
    )
}

/// The package reaches the courier-only site S02 by bundle, and a receipt goes back.
fn by_courier(
    root: &Path,
    cen: &DemoSite,
    p01: &DemoSite,
    s02: &mut DemoSite,
) -> Result<(), CliError> {
    s02.start()?;
    let args = [
        "package",
        "distribute",
        "CEN00001",
        "--data",
        &cen.data,
        "--site",
        "S02",
    ];
    let out = capture_when_known(&args)?;
    println!(
        "\n== CEN: target S02, which has no network link\n$ site-server {}\n{}",
        args.join(" "),
        out.trim_end()
    );
    let usb = root.join("usb");
    std::fs::create_dir_all(&usb)
        .map_err(|e| CliError::failed(format!("cannot make {}: {e}", usb.display())))?;
    let bundle = usb.join("to-S02.bundle").display().to_string();
    let receipt = usb.join("from-S02.receipt").display().to_string();
    // The target has to reach P01 before P01 exports it.
    let t0 = Instant::now();
    while !capture(&["log", "--data", &p01.data, "--json"])?.contains("S02") {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(CliError::failed("the target did not reach P01 within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    step(
        "P01: export a signed bundle for S02 onto the removable medium",
        &[
            "courier", "export", "--data", &p01.data, "--to", "S02", "--out", &bundle,
        ],
    )?;
    step(
        "S02: import it (verified: signature, every section, every chunk; then applied at once)",
        &["courier", "import", "--data", &s02.data, &bundle],
    )?;
    step(
        "S02: importing the same bundle again changes nothing",
        &["courier", "import", "--data", &s02.data, &bundle],
    )?;
    step(
        "S02: content here",
        &["status", "packages", "--data", &s02.data],
    )?;
    step(
        "S02: write a signed receipt (its reports, how far it has applied, what it holds)",
        &["courier", "receipt", "--data", &s02.data, "--out", &receipt],
    )?;
    step(
        "P01: import the receipt: S02's status messages join the tree's",
        &["courier", "import", "--data", &p01.data, &receipt],
    )?;
    step(
        "P01: links, and for S02 its last export and receipt and what the next export carries",
        &["status", "sites", "--data", &p01.data],
    )
}

/// `parent set` at `child` for the running `parent`.
fn set_parent(child: &DemoSite, parent: &DemoSite) -> Result<(), CliError> {
    let (fp, key) = parent.keys()?;
    let addr = parent.listen()?;
    step(
        &format!(
            "{}: dial {} at {addr}, pinned by its certificate",
            child.code, parent.code
        ),
        &[
            "parent",
            "set",
            "--data",
            &child.data,
            "--code",
            parent.code,
            "--addr",
            &addr,
            "--fingerprint",
            &fp,
            "--pubkey",
            &key,
        ],
    )
}

/// Waits until `site` holds every chunk of `version` of `pkg`, printing progress.
fn wait_complete(site: &DemoSite, pkg: &str, version: u64) -> Result<Duration, CliError> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(120) {
        let rows = json(&["status", "packages", "--data", &site.data, "--json"])?;
        let row = rows.as_array().and_then(|a| {
            a.iter()
                .find(|r| r["package"] == pkg && r["source_version"] == version)
        });
        if let Some(r) = row {
            let (have, all) = (
                r["chunks_present"].as_u64().unwrap_or(0),
                r["chunks"].as_u64().unwrap_or(0),
            );
            let line = format!(
                "{}: {have}/{all} chunks of {pkg} version {version}",
                site.code
            );
            if line != last {
                println!("   {line} ({:.2} s)", t0.elapsed().as_secs_f64());
                last = line;
            }
            if all > 0 && have == all {
                return Ok(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::failed(format!(
        "{} did not get {pkg} version {version} within 120 s",
        site.code
    )))
}

fn run_blocking(keep: bool) -> Result<(), CliError> {
    let tmp = tempfile::Builder::new()
        .prefix("siterep-demo-")
        .tempdir()
        .map_err(|e| CliError::failed(format!("cannot make a temporary directory: {e}")))?;
    let root = tmp.path().to_path_buf();
    println!("demo directory: {}", root.display());
    println!("\n== a three-tier hierarchy: CEN -> P01 -> S01, each its own process on 127.0.0.1");
    let mut sites = vec![
        DemoSite::init(&root, "CEN")?,
        DemoSite::init(&root, "P01")?,
        DemoSite::init(&root, "S01")?,
        DemoSite::init(&root, "S02")?,
    ];
    let mut dps = Vec::new();
    let result = scenario(&root, &mut sites, &mut dps);
    if let Err(e) = result {
        for d in dps.iter_mut() {
            d.stop();
        }
        for s in sites.iter_mut().rev() {
            s.stop();
        }
        let _ = tmp.keep();
        return Err(CliError::failed(format!(
            "{} (demo left in {} for a look: the daemons' logs are DIR.log)",
            e.message,
            root.display()
        )));
    }
    if keep {
        let _ = tmp.keep();
        println!("\n== the hierarchy keeps running. Talk to each site:");
        for s in &sites {
            let pid = s.daemon.as_ref().map(|d| d.child.id()).unwrap_or(0);
            println!(
                "{}: export SITEREP_DATA={}   (pid {pid}, log {}.log)",
                s.code, s.data, s.data
            );
        }
        println!(
            "then: site-server status sites | status packages | status messages | package list"
        );
        for d in &dps {
            println!(
                "{}/DP1: site-server dist-point status --data {}   (http://{}/, log {}.log)",
                d.site,
                d.data.display(),
                d.addr,
                d.data.display()
            );
        }
        let pids: Vec<String> = sites
            .iter()
            .filter_map(|s| s.daemon.as_ref().map(|d| d.child.id().to_string()))
            .chain(
                dps.iter()
                    .filter_map(|d| d.daemon.as_ref().map(|d| d.child.id().to_string())),
            )
            .collect();
        println!("stop them with: kill {}", pids.join(" "));
        for s in sites {
            std::mem::forget(s);
        }
        for d in dps {
            std::mem::forget(d);
        }
        return Ok(());
    }
    for d in dps.iter_mut() {
        d.stop();
    }
    for s in sites.iter_mut().rev() {
        s.stop();
    }
    println!(
        "\n== demo complete: sites stopped, {} removed",
        root.display()
    );
    Ok(())
}

fn scenario(root: &Path, sites: &mut [DemoSite], dps: &mut Vec<DemoDp>) -> Result<(), CliError> {
    let (cen, rest) = sites.split_first_mut().expect("three sites");
    let (p01, rest) = rest.split_first_mut().expect("three sites");
    let (s01, rest) = rest.split_first_mut().expect("four sites");
    let s02 = &mut rest[0];
    accept_child(cen, p01)?;
    accept_child(p01, s01)?;
    courier_link(p01, s02)?;
    for site in [&*cen, &*p01, &*s01] {
        dps.push(DemoDp::init(root, site)?);
    }
    step(
        "P01: a schedule and a rate limit on the link to S01 (business hours: medium and high only, 50 MiB/s)",
        &[
            "child",
            "set",
            "--data",
            &p01.data,
            "--code",
            "S01",
            "--schedule",
            "mon-fri 08-18 medium+; * all",
            "--rate",
            "mon-fri 08-18 50MiB/s; * unlimited",
        ],
    )?;
    cen.start()?;
    set_parent(p01, cen)?;
    p01.start()?;
    set_parent(s01, p01)?;
    s01.start()?;
    for d in dps.iter_mut() {
        d.start()?;
    }

    let sample = root.join("sample");
    write_sample(&sample)
        .map_err(|e| CliError::failed(format!("cannot write the sample package: {e}")))?;
    let sample_s = sample.display().to_string();
    step(
        "CEN: publish a sample package",
        &[
            "package",
            "publish",
            "--data",
            &cen.data,
            "--source",
            &sample_s,
            "--name",
            "Sample package",
        ],
    )?;
    // CEN learns that S01 is below P01 from P01's report: until that arrives, CEN refuses
    // the target as unknown. Retry quietly, then show the command and its answer.
    let args = [
        "package",
        "distribute",
        "CEN00001",
        "--data",
        &cen.data,
        "--site",
        "S01",
    ];
    let out = capture_when_known(&args)?;
    println!(
        "\n== CEN: target S01 (every site on the way fetches the chunks it misses, by hash)\n$ site-server {}\n{}",
        args.join(" "),
        out.trim_end()
    );
    println!();
    let took = wait_complete(s01, "CEN00001", 1)?;
    println!(
        "   S01 holds every chunk, verified, {:.2} s after the target",
        took.as_secs_f64()
    );

    std::fs::write(
        sample.join("docs/guide.txt"),
        std::fs::read_to_string(sample.join("docs/guide.txt"))
            .unwrap_or_default()
            .replace("step 10000:", "step 10000 (revised):"),
    )
    .map_err(|e| CliError::failed(format!("cannot edit the sample: {e}")))?;
    step(
        "CEN: edit one file and publish version 2 (only the changed chunk is new)",
        &[
            "package",
            "publish",
            "--data",
            &cen.data,
            "--source",
            &sample_s,
            "--package",
            "CEN00001",
        ],
    )?;
    println!();
    let took = wait_complete(s01, "CEN00001", 2)?;
    println!(
        "   version 2 complete at S01 {:.2} s after publish: only the changed chunk travelled",
        took.as_secs_f64()
    );
    distribute_to_dps(cen, dps, &sample)?;
    catalog_sync(root, cen)?;
    by_courier(root, cen, p01, s02)?;
    wait_catalog(cen, &["CEN", "P01", "S01", "S02"])?;
    step(
        "CEN: catalog sync status of every site (S02's came back in its receipt)",
        &["status", "sync", "--data", &cen.data],
    )?;
    step(
        "CEN: advertise it",
        &[
            "adv",
            "create",
            "--data",
            &cen.data,
            "--package",
            "CEN00001",
            "--program",
            "Install",
            "--command",
            "install.sh --quiet",
            "--collection",
            "All Servers",
        ],
    )?;
    step(
        "CEN: links (state, cursors, backlog)",
        &["status", "sites", "--data", &cen.data],
    )?;
    step("P01: links", &["status", "sites", "--data", &p01.data])?;
    step("S01: links", &["status", "sites", "--data", &s01.data])?;
    step(
        "CEN: senders (window and rate in force, queues per priority, last minute)",
        &["status", "senders", "--data", &cen.data],
    )?;
    step("P01: senders", &["status", "senders", "--data", &p01.data])?;
    step(
        "CEN: packages, and how far each site has been sent them (3531/3533 from the tree)",
        &["status", "packages", "--data", &cen.data],
    )?;
    step(
        "S01's distribution point: what it holds, where it pulled from",
        &[
            "dist-point",
            "status",
            "--data",
            &dps[2].data.display().to_string(),
        ],
    )?;
    step(
        "S01: content here",
        &["status", "packages", "--data", &s01.data],
    )?;
    step(
        "S01: config log (CEN's events, applied once, in order)",
        &["log", "--data", &s01.data],
    )?;
    step(
        "CEN: status messages from the whole tree",
        &["status", "messages", "--data", &cen.data],
    )?;
    Ok(())
}

/// A small apt index, as apt keeps them (gzip).
const DEMO_INDEX: &str = "\
Package: curl
Version: 7.88.1-10+deb12u8
Architecture: amd64
Priority: optional
Size: 315000
Filename: pool/main/c/curl/curl_7.88.1-10+deb12u8_amd64.deb
Description: command line tool for transferring data with URL syntax

Package: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64
Priority: optional
Size: 1420000
Filename: pool/main/o/openssl/openssl_3.0.15-1~deb12u1_amd64.deb
Description: Secure Sockets Layer toolkit - cryptographic utility

Package: openssl
Version: 3.0.13-1~deb12u1
Architecture: amd64
Priority: optional
Size: 1419000
Filename: pool/main/o/openssl/openssl_3.0.13-1~deb12u1_amd64.deb
Description: Secure Sockets Layer toolkit - cryptographic utility
";

/// CEN syncs an update catalog from an apt index; the delta goes down like any event.
fn catalog_sync(root: &Path, cen: &DemoSite) -> Result<(), CliError> {
    use std::io::Write;
    let index = root.join("Packages.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(DEMO_INDEX.as_bytes())
        .and_then(|_| gz.finish())
        .and_then(|b| std::fs::write(&index, b))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", index.display())))?;
    step(
        "CEN: a catalog source (an apt Packages index, gzip as apt keeps it)",
        &[
            "sync",
            "source",
            "add",
            "--data",
            &cen.data,
            "--name",
            "debian-security",
            "--plugin",
            "apt",
            "--args",
            &format!(
                "Path={};Classification=Security;Product=\"Debian 12\"",
                index.display()
            ),
        ],
    )?;
    step(
        "CEN: sync the catalog now (only the top site syncs; one delta event goes down the tree)",
        &["sync", "now", "--data", &cen.data],
    )?;
    step(
        "CEN: the new updates of the last 7 days",
        &["catalog", "list", "--since", "7d", "--data", &cen.data],
    )?;
    step(
        "CEN: the older openssl, superseded by the newer one in the same index",
        &[
            "catalog",
            "show",
            "openssl_3.0.13-1~deb12u1_amd64",
            "--data",
            &cen.data,
        ],
    )
}

/// Waits until `sites` all show catalog version 1 in `cen`'s `status sync`.
fn wait_catalog(cen: &DemoSite, sites: &[&str]) -> Result<(), CliError> {
    let t0 = Instant::now();
    loop {
        let rows = json(&["status", "sync", "--json", "--data", &cen.data])?;
        let at = |code: &str| {
            rows.as_array()
                .into_iter()
                .flatten()
                .any(|r| r["site"] == code && r["catalog_version"].as_u64().unwrap_or(0) >= 1)
        };
        if sites.iter().all(|s| at(s)) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(CliError::failed(
                "the catalog did not reach every site within 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Puts one DP of every site in a group, targets the package at the group, waits until every
/// DP serves version 2, downloads a file from S01's DP and checks it against the source.
fn distribute_to_dps(cen: &DemoSite, dps: &[DemoDp], sample: &Path) -> Result<(), CliError> {
    step(
        "CEN: a distribution point group",
        &["dp", "group", "create", "Everywhere", "--data", &cen.data],
    )?;
    // CEN knows a DP once its site has reported it up: retry quietly until it has.
    let args = [
        "dp",
        "group",
        "add",
        "Everywhere",
        "--data",
        &cen.data,
        "--dp",
        "CEN/DP1",
        "--dp",
        "P01/DP1",
        "--dp",
        "S01/DP1",
    ];
    let out = capture_when_known(&args)?;
    println!(
        "\n== CEN: one DP of every site joins it\n$ site-server {}\n{}",
        args.join(" "),
        out.trim_end()
    );
    step(
        "CEN: target the package at the group (each DP pulls the chunks it misses from its site, by hash)",
        &[
            "package",
            "distribute",
            "CEN00001",
            "--data",
            &cen.data,
            "--dp-group",
            "Everywhere",
        ],
    )?;
    println!();
    let t0 = Instant::now();
    for d in dps {
        loop {
            let (code, _) =
                http_get(&d.addr, "/packages/CEN00001/2/manifest").unwrap_or((0, vec![]));
            if code == 200 {
                println!(
                    "   {}/DP1 serves CEN00001 version 2 ({:.2} s after the target)",
                    d.site,
                    t0.elapsed().as_secs_f64()
                );
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(CliError::failed(format!(
                    "{}/DP1 did not install the package within 60 s: see {}.log",
                    d.site,
                    d.data.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let s01_dp = &dps[2];
    let path = "/packages/CEN00001/latest/files/bin/tool.bin";
    let (code, body) = http_get(&s01_dp.addr, path)
        .map_err(|e| CliError::failed(format!("cannot download from S01/DP1: {e}")))?;
    let want = std::fs::read(sample.join("bin/tool.bin"))
        .map_err(|e| CliError::failed(format!("cannot read the sample: {e}")))?;
    if code != 200 || blake3::hash(&body) != blake3::hash(&want) {
        return Err(CliError::failed(format!(
            "S01/DP1 answered {code} with {} bytes that do not match the source",
            body.len()
        )));
    }
    println!(
        "\n== a client downloads a file from S01's distribution point ({} bytes, BLAKE3 matches the source):\n$ curl -O http://{}{path}",
        body.len(),
        s01_dp.addr
    );
    Ok(())
}
