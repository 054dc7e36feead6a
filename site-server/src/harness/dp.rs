//! A distribution point of the local hierarchy.

use super::{
    http_get, io_err, parse_json, run, Bins, HarnessError, LocalSite, Process, Result, Run,
};
use std::path::{Path, PathBuf};

/// One distribution point: its data directory (`ROOT/SITE-ID`), its log (`ROOT/SITE-ID.log`)
/// and, once started, its process. Dropping it kills the process.
#[derive(Debug)]
pub struct LocalDp {
    /// Its id at its site.
    pub id: String,
    /// Its site's code.
    pub site: String,
    /// Its certificate fingerprint (what the site pins).
    pub fingerprint: String,
    /// Its HTTP address.
    pub addr: String,
    bins: Bins,
    data: PathBuf,
    log: PathBuf,
    daemon: Process,
}

impl LocalDp {
    /// `dist-point init` for DP `id` of `site`, serving HTTP on a free port, dialling the
    /// site's QUIC address (for a running site whose port the system chose, pin it with
    /// [`LocalSite::pin_listen_port`] so that a restart keeps it).
    pub fn init(bins: &Bins, root: &Path, site: &LocalSite, id: &str) -> Result<Self> {
        let data = root.join(format!("{}-{id}", site.code));
        let port = super::free_port().map_err(io_err(Path::new("127.0.0.1:0")))?;
        let addr = format!("127.0.0.1:{port}");
        // The running daemon's address (its port may be the system's choice), else the one
        // in its site.toml.
        let site_addr = match site.pid() {
            Some(_) => site.listen_addr()?,
            None => site.listen_configured()?,
        };
        let (site_fp, _) = site.keys()?;
        let mut dp = LocalDp {
            id: id.to_string(),
            site: site.code.clone(),
            fingerprint: String::new(),
            addr,
            bins: bins.clone(),
            log: root.join(format!("{}-{id}.log", site.code)),
            data,
            daemon: Process::default(),
        };
        let data_s = dp.data.display().to_string();
        let args = [
            "init",
            "--data",
            data_s.as_str(),
            "--id",
            id,
            "--listen",
            dp.addr.as_str(),
            "--site",
            site_addr.as_str(),
            "--site-fingerprint",
            site_fp.as_str(),
        ];
        let out = dp
            .dist_point(&args)?
            .success(&format!("dist-point {}", args.join(" ")))?;
        dp.fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint: "))
            .ok_or_else(|| HarnessError::Unexpected {
                what: "dist-point init".into(),
                why: format!("no fingerprint line in {out:?}"),
            })?
            .to_string();
        Ok(dp)
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Runs `dist-point ARGS` (nothing appended).
    pub fn dist_point(&self, args: &[&str]) -> Result<Run> {
        let mut c = self.bins.dp_command();
        c.args(args);
        run(c)
    }

    /// Runs `dist-point ARGS --data DIR`.
    pub fn cli(&self, args: &[&str]) -> Result<Run> {
        let d = self.data.display().to_string();
        let mut v = args.to_vec();
        v.extend(["--data", &d]);
        self.dist_point(&v)
    }

    /// `dist-point status --json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self
            .cli(&["status", "--json"])?
            .success("dist-point status")?;
        parse_json("dist-point status", &out)
    }

    /// The arguments of `dp add` at its site, with `sources` (pull DPs) if any.
    pub fn dp_add_args(&self, sources: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "dp",
            "add",
            "--id",
            &self.id,
            "--fingerprint",
            &self.fingerprint,
            "--address",
            &self.addr,
        ]
        .map(String::from)
        .into();
        for s in sources {
            v.extend(["--source".to_string(), s.to_string()]);
        }
        v
    }

    /// `dist-point run`, then waits until its HTTP server answers.
    pub fn start(&mut self) -> Result<()> {
        self.start_with_env(&[])
    }

    /// As [`LocalDp::start`], with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) -> Result<()> {
        let mut cmd = self.bins.dp_command();
        cmd.arg("run")
            .arg("--data")
            .arg(&self.data)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let admin = self.data.join("admin.json");
        let what = format!("DP {}/{}", self.site, self.id);
        let addr = self.addr.clone();
        let ready = || admin.exists() && std::net::TcpStream::connect(&addr).is_ok();
        self.daemon.start(cmd, &what, &self.log, ready)
    }

    /// SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        self.daemon.stop(&format!("DP {}/{}", self.site, self.id))
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.daemon.kill();
    }

    /// Leaves the process running after this value is gone; returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        self.daemon.detach()
    }

    /// GET `path` from its HTTP server: (status, body).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<(u16, Vec<u8>)> {
        http_get(&self.addr, path, headers).map_err(|source| HarnessError::Io {
            path: format!("GET http://{}{path}", self.addr),
            source,
        })
    }
}

/// Attaches `dps` to the running `site` (`dp add`, each with its sources), then restarts the
/// site so that it pins them (its QUIC port must be pinned, so that the DPs find it again).
pub fn attach_dps(site: &mut LocalSite, dps: &[(&LocalDp, &[&str])]) -> Result<()> {
    for (dp, sources) in dps {
        let args = dp.dp_add_args(sources);
        let v: Vec<&str> = args.iter().map(String::as_str).collect();
        site.cli_ok(&v)?;
    }
    site.stop()?;
    site.start()
}
