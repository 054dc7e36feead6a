//! A local hierarchy of real processes on 127.0.0.1: sites (`site-server run`), distribution
//! points (`dist-point run`), pinned network links and courier links between them. The demo
//! (`site-server demo`), the end-to-end tests (the `tests` crate) and the benchmarks all start
//! their hierarchies with this one harness.
//!
//! Everything here is blocking (`std::process`, `std::net`) and returns errors instead of
//! panicking or printing: the demo reports them to the operator, the tests turn them into
//! assertions. Each process writes its log beside its data directory (`DIR.log`).
//!
//! - [`Bins`]: where the binaries are.
//! - [`LocalSite`]: one site's data directory and, once started, its daemon.
//! - [`LocalDp`]: one distribution point of a site.
//! - [`link_child`], [`link_parent`], [`link_courier`], [`three_tiers`]: the links.
//! - [`SiteTree`]: a whole tree of any shape, built and started on a few threads.
//! - [`http_get`], [`http`], [`free_port`], [`poll`]: the small tools the rest needs.

mod dp;
mod http;
mod tree;

pub use dp::{attach_dps, LocalDp};
pub use http::{free_port, http, http_get, poll};
pub use tree::{code_at, parse_shape, size_of, SiteTree};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a step of the harness failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A process could not be started.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A command exited with an error.
    #[error("`{cmd}` failed ({code}): {stderr}")]
    Failed {
        cmd: String,
        code: i32,
        stderr: String,
    },
    /// A daemon exited while starting, or never answered.
    #[error("{what} did not start ({why}): see {log}")]
    NotStarted {
        what: String,
        why: String,
        log: String,
    },
    /// A daemon ignored SIGTERM and was killed.
    #[error("{0} ignored SIGTERM for 15 s and was killed")]
    IgnoredStop(String),
    /// Something did not happen in time.
    #[error("{what} did not happen within {secs} s")]
    Timeout { what: String, secs: u64 },
    /// A file of the hierarchy could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Output that should be JSON (or hold a field) did not.
    #[error("{what}: {why}")]
    Unexpected { what: String, why: String },
}

/// A result of the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where the binaries are, and how to run a distribution point.
#[derive(Clone, Debug)]
pub struct Bins {
    /// The `site-server` binary.
    pub site_server: PathBuf,
    /// The program and leading arguments that run `dist-point`: the `dist-point` binary, or
    /// `site-server dist-point` (the demo has only its own binary).
    pub dist_point: (PathBuf, Vec<String>),
}

impl Bins {
    /// `site-server` and `dist-point` side by side in `dir` (as cargo builds them).
    pub fn in_dir(dir: &Path) -> Self {
        Bins {
            site_server: dir.join("site-server"),
            dist_point: (dir.join("dist-point"), Vec::new()),
        }
    }

    /// This `site-server` binary for both (`site-server dist-point ...` for a DP).
    pub fn this_site_server(exe: PathBuf) -> Self {
        Bins {
            site_server: exe.clone(),
            dist_point: (exe, vec!["dist-point".into()]),
        }
    }

    fn dp_command(&self) -> Command {
        let mut c = Command::new(&self.dist_point.0);
        c.args(&self.dist_point.1);
        c
    }
}

/// The result of one command.
#[derive(Clone, Debug)]
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn of(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Its stdout if it exited 0; otherwise the error naming `cmd`.
    pub fn success(self, cmd: &str) -> Result<String> {
        if self.code == 0 {
            Ok(self.stdout)
        } else {
            Err(HarnessError::Failed {
                cmd: cmd.to_string(),
                code: self.code,
                stderr: self.stderr.trim().to_string(),
            })
        }
    }
}

/// Runs `cmd` to completion with no stdin and `RUST_LOG=warn`.
pub fn run(mut cmd: Command) -> Result<Run> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).env("RUST_LOG", "warn");
    cmd.output()
        .map(Run::of)
        .map_err(|source| HarnessError::Spawn { cmd: shown, source })
}

/// Parses `text` as JSON, naming `what` if it is not.
pub fn parse_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| HarnessError::Unexpected {
        what: what.to_string(),
        why: format!("not JSON ({e}): {}", text.trim()),
    })
}

/// The process of a daemon of the hierarchy, while it runs. Dropping it kills the process.
#[derive(Debug, Default)]
struct Process(Option<Child>);

impl Process {
    /// Spawns `cmd` with stderr to `log` and waits until `ready` (30 s at most).
    fn start(
        &mut self,
        mut cmd: Command,
        what: &str,
        log: &Path,
        ready: impl Fn() -> bool,
    ) -> Result<()> {
        if self.0.is_some() {
            return Err(HarnessError::Unexpected {
                what: what.to_string(),
                why: "already running".into(),
            });
        }
        let f = std::fs::File::create(log).map_err(io_err(log))?;
        let shown = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|source| HarnessError::Spawn { cmd: shown, source })?;
        let child = self.0.insert(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let why = loop {
            if ready() {
                return Ok(());
            }
            if let Ok(Some(st)) = child.try_wait() {
                break format!("exited: {st}");
            }
            if Instant::now() > deadline {
                break format!("no answer within {} s", START_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.kill();
        Err(HarnessError::NotStarted {
            what: what.to_string(),
            why,
            log: log.display().to_string(),
        })
    }

    fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits (15 s at most) for a clean exit; kills it if it does not stop.
    fn stop(&mut self, what: &str) -> Result<()> {
        let Some(child) = self.0.as_mut() else {
            return Ok(());
        };
        // SAFETY: kill only sends a signal to our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.0 = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(HarnessError::IgnoredStop(what.to_string()))
    }

    /// SIGKILL (no clean shutdown), and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            // An error here means it has exited already; either way it is reaped.
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Lets the process run on after this value is gone; its pid.
    fn detach(&mut self) -> Option<u32> {
        let child = self.0.take()?;
        let pid = child.id();
        std::mem::forget(child);
        Some(pid)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One site: its data directory (`ROOT/CODE`), its log (`ROOT/CODE.log`) and, once
/// started, its daemon. Dropping it kills the daemon (use [`LocalSite::stop`] for a clean
/// shutdown, [`LocalSite::detach`] to leave it running).
#[derive(Debug)]
pub struct LocalSite {
    /// The site code.
    pub code: String,
    bins: Bins,
    data: PathBuf,
    data_s: String,
    log: PathBuf,
    daemon: Process,
}

impl LocalSite {
    /// `site-server init --code CODE --data ROOT/CODE --listen LISTEN` (`127.0.0.1:0` for
    /// a port of the system's choosing, read back from the running daemon).
    pub fn init(bins: &Bins, root: &Path, code: &str, listen: &str) -> Result<Self> {
        let data = root.join(code);
        let s = LocalSite {
            code: code.to_string(),
            bins: bins.clone(),
            data_s: data.display().to_string(),
            log: root.join(format!("{code}.log")),
            data,
            daemon: Process::default(),
        };
        let args = [
            "init", "--code", code, "--data", &s.data_s, "--listen", listen,
        ];
        s.site_server(&args)?
            .success(&format!("site-server {}", args.join(" ")))?;
        Ok(s)
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The data directory as a string, for command lines.
    pub fn data_str(&self) -> &str {
        &self.data_s
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the daemon has logged so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Runs `site-server ARGS` (nothing appended).
    pub fn site_server(&self, args: &[&str]) -> Result<Run> {
        let mut c = Command::new(&self.bins.site_server);
        c.args(args);
        run(c)
    }

    /// Runs `site-server ARGS --data DIR` against this site.
    pub fn cli(&self, args: &[&str]) -> Result<Run> {
        let mut v = args.to_vec();
        v.extend(["--data", self.data_str()]);
        self.site_server(&v)
    }

    /// As [`LocalSite::cli`]; its stdout, or the error if it did not exit 0.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let cmd = format!("site-server {} --data {}", args.join(" "), self.data_s);
        self.cli(args)?.success(&cmd)
    }

    /// As [`LocalSite::cli_ok`], parsed as JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        parse_json(
            &format!("site-server {}", args.join(" ")),
            &self.cli_ok(args)?,
        )
    }

    /// `site-server run`, then waits until its admin API answers.
    pub fn start(&mut self) -> Result<()> {
        self.start_with_env(&[])
    }

    /// As [`LocalSite::start`], with extra environment variables for the daemon.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        // A stale admin file of a killed daemon must not count as an answer.
        let admin = self.data.join(crate::config::ADMIN_FILE);
        if let Err(e) = std::fs::remove_file(&admin) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(io_err(&admin)(e));
            }
        }
        let mut cmd = Command::new(&self.bins.site_server);
        cmd.args(["run", "--data", &self.data_s])
            .envs(env.iter().copied());
        let what = format!("site {}", self.code);
        let mut daemon = std::mem::take(&mut self.daemon);
        let ready = || self.api_get("/v1/identity").is_ok_and(|(st, _)| st == 200);
        let r = daemon.start(cmd, &what, &self.log, ready);
        self.daemon = daemon;
        r
    }

    /// SIGTERM (a clean shutdown) and waits for the daemon to exit.
    pub fn stop(&mut self) -> Result<()> {
        self.daemon.stop(&format!("site {}", self.code))
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill9(&mut self) {
        self.daemon.kill();
    }

    /// Leaves the daemon running after this value is gone; returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        self.daemon.detach()
    }

    fn admin_file(&self) -> Result<serde_json::Value> {
        let path = self.data.join(crate::config::ADMIN_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        parse_json(&path.display().to_string(), &text)
    }

    fn admin_field(&self, field: &str) -> Result<String> {
        self.admin_file()?[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Unexpected {
                what: format!("{}'s admin file", self.code),
                why: format!("no {field}"),
            })
    }

    /// The running daemon's admin API address and token.
    pub fn admin(&self) -> Result<(String, String)> {
        Ok((self.admin_field("addr")?, self.admin_field("token")?))
    }

    /// The running daemon's console URL (`http://127.0.0.1:PORT`).
    pub fn ui_url(&self) -> Result<String> {
        self.admin_field("ui")
    }

    /// The console's viewer token (made if the site has none yet).
    pub fn ui_token(&self) -> Result<String> {
        crate::ui::viewer_token(&crate::config::DataDir::new(self.data()), false).map_err(
            |source| HarnessError::Io {
                path: format!("{}/ui-token", self.data_str()),
                source,
            },
        )
    }

    /// The address the running daemon's QUIC listener is bound to.
    pub fn listen_addr(&self) -> Result<String> {
        self.admin_field("listen")
    }

    /// The QUIC address in `site.toml` (known before the daemon runs).
    pub fn listen_configured(&self) -> Result<String> {
        self.identity_field("listen")
    }

    /// A GET on the running daemon's admin API, with its token: (status, body).
    pub fn api_get(&self, path: &str) -> Result<(u16, String)> {
        let (addr, token) = self.admin()?;
        http(&addr, "GET", path, Some(&token), "").map_err(|source| HarnessError::Io {
            path: format!("GET http://{addr}{path}"),
            source,
        })
    }

    /// As [`LocalSite::api_get`], requiring 200 and parsing the JSON body.
    pub fn api_json(&self, path: &str) -> Result<serde_json::Value> {
        let (st, body) = self.api_get(path)?;
        if st != 200 {
            return Err(HarnessError::Unexpected {
                what: format!("{} GET {path}", self.code),
                why: format!("{st}: {body}"),
            });
        }
        parse_json(&format!("{} GET {path}", self.code), &body)
    }

    fn identity_field(&self, field: &str) -> Result<String> {
        self.cli_json(&["identity", "--json"])?[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| HarnessError::Unexpected {
                what: format!("{}'s identity", self.code),
                why: format!("no {field}"),
            })
    }

    /// `identity`: (certificate fingerprint, public key).
    pub fn keys(&self) -> Result<(String, String)> {
        let v = self.cli_json(&["identity", "--json"])?;
        let get = |k: &str| v[k].as_str().map(str::to_string);
        match (get("fingerprint"), get("public_key")) {
            (Some(fp), Some(key)) => Ok((fp, key)),
            _ => Err(HarnessError::Unexpected {
                what: format!("{}'s identity", self.code),
                why: "no fingerprint or public_key".into(),
            }),
        }
    }

    /// Writes the running daemon's QUIC port into `site.toml`, so that a restart listens on
    /// the same address and children (which read their parent's address at start) find it.
    pub fn pin_listen_port(&self) -> Result<()> {
        let addr = self.listen_addr()?;
        let path = self.data.join(crate::config::CONFIG_FILE);
        let toml = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let pinned = toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
        if pinned == toml {
            return Err(HarnessError::Unexpected {
                what: path.display().to_string(),
                why: "does not listen on 127.0.0.1:0".into(),
            });
        }
        std::fs::write(&path, pinned).map_err(io_err(&path))
    }
}

/// The arguments of `child add` at `parent` for `child` under `code`, with its real
/// certificate fingerprint and key (`--courier` for a child reached by bundles only).
pub fn child_add_args(child: &LocalSite, code: &str, courier: bool) -> Result<Vec<String>> {
    let (fp, key) = child.keys()?;
    let mut v: Vec<String> = [
        "child",
        "add",
        "--code",
        code,
        "--fingerprint",
        &fp,
        "--pubkey",
        &key,
    ]
    .map(String::from)
    .into();
    if courier {
        v.push("--courier".into());
    }
    Ok(v)
}

/// The arguments of `parent set` at a child for `parent`: by network at the running
/// parent's address, or `--courier`.
pub fn parent_set_args(parent: &LocalSite, courier: bool) -> Result<Vec<String>> {
    let (fp, key) = parent.keys()?;
    let mut v: Vec<String> = ["parent", "set", "--code", &parent.code]
        .map(String::from)
        .into();
    if courier {
        v.push("--courier".into());
    } else {
        v.extend(["--addr".to_string(), parent.listen_addr()?]);
    }
    v.extend(["--fingerprint".to_string(), fp, "--pubkey".into(), key]);
    // The trust root: the parent's (its own key at the top).
    v.extend(["--root-key".to_string(), parent.identity_field("root_key")?]);
    Ok(v)
}

fn cli_owned(site: &LocalSite, args: &[String]) -> Result<String> {
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    site.cli_ok(&v)
}

/// `child add` at `parent` for `child` (before `parent` starts: links are read at start).
pub fn link_child(parent: &LocalSite, child: &LocalSite) -> Result<()> {
    link_child_as(parent, child, &child.code)
}

/// `child add` at `parent` of `child`'s certificate and key under the code `code`.
pub fn link_child_as(parent: &LocalSite, child: &LocalSite, code: &str) -> Result<()> {
    cli_owned(parent, &child_add_args(child, code, false)?).map(drop)
}

/// `parent set` at `child` for the running `parent`.
pub fn link_parent(child: &LocalSite, parent: &LocalSite) -> Result<()> {
    cli_owned(child, &parent_set_args(parent, false)?).map(drop)
}

/// A courier-only link `parent` -> `child` (`child add --courier`, `parent set --courier`);
/// returns the parent's public key.
pub fn link_courier(parent: &LocalSite, child: &LocalSite) -> Result<String> {
    cli_owned(parent, &child_add_args(child, &child.code, true)?)?;
    cli_owned(child, &parent_set_args(parent, true)?)?;
    Ok(parent.keys()?.1)
}

/// CEN -> P01 -> S01 in `root`, all three running and linked. `before` runs on the three
/// data directories after `init` and before anything starts.
pub fn three_tiers(
    bins: &Bins,
    root: &Path,
    before: impl FnOnce(&LocalSite, &LocalSite, &LocalSite) -> Result<()>,
) -> Result<(LocalSite, LocalSite, LocalSite)> {
    let mut cen = LocalSite::init(bins, root, "CEN", "127.0.0.1:0")?;
    let mut p01 = LocalSite::init(bins, root, "P01", "127.0.0.1:0")?;
    let mut s01 = LocalSite::init(bins, root, "S01", "127.0.0.1:0")?;
    before(&cen, &p01, &s01)?;
    link_child(&cen, &p01)?;
    link_child(&p01, &s01)?;
    cen.start()?;
    link_parent(&p01, &cen)?;
    p01.start()?;
    link_parent(&s01, &p01)?;
    s01.start()?;
    Ok((cen, p01, s01))
}

/// Retries `site-server ARGS` at `site` until it exits 0 (for up to `secs`): the top site
/// knows a site or a DP only once the report naming it has come up the tree.
pub fn cli_when_known(site: &LocalSite, args: &[&str], secs: u64) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match site.cli_ok(args) {
            Ok(out) => return Ok(out),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
