//! The operator CLI (DESIGN §5). Offline commands (`init`, `identity`, `rebuild`,
//! `store verify`) work on the data directory; the others talk to the running daemon.

use crate::client::AdminClient;
use chrono::{DateTime, NaiveDateTime, Utc};
use clap::{Args, Parser, Subcommand};
use schema::advert::{Advertisement, ExitRules, Program};
use schema::event::Priority;
use schema::manifest::EntryKind;
use schema::{encoding, PackageId, SiteCode};
use site_server::config::{DataDir, SiteConfig};
use site_server::decide::{AdvertRequest, PublishOutcome, PublishRequest, PublishTarget};
use site_server::publish::{self, PublishError};
use site_server::site::{
    IdentityView, LogEntry, MessageQuery, MessageRow, PackageDetail, PackageSummary,
};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A failed command: its exit code (DESIGN §5: 1 failed, 2 usage/config) and one line.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(m: impl Into<String>) -> Self {
        CliError {
            code: 2,
            message: m.into(),
        }
    }
    pub fn failed(m: impl Into<String>) -> Self {
        CliError {
            code: 1,
            message: m.into(),
        }
    }
    /// The message on one line, as stderr shows it.
    pub fn line(&self) -> String {
        self.message
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl From<site_server::daemon::StartError> for CliError {
    fn from(e: site_server::daemon::StartError) -> Self {
        match e {
            site_server::daemon::StartError::Config(m) => CliError::usage(m),
            site_server::daemon::StartError::Failed(m) => CliError::failed(m),
        }
    }
}

pub type Res = Result<(), CliError>;

#[derive(Parser)]
#[command(
    name = "site-server",
    version,
    about = "A site of the replication hierarchy: config log, reports, packages, admin API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct DataArg {
    /// The site's data directory.
    #[arg(long, env = "SITEREP_DATA", value_name = "DIR")]
    pub data: PathBuf,
}

impl DataArg {
    pub fn dir(&self) -> DataDir {
        DataDir::new(&self.data)
    }
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a site: keys, certificate and site.toml in a new data directory.
    Init {
        /// Site code: 3 characters, A-Z or 0-9.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        data: DataArg,
        /// QUIC address children connect to.
        #[arg(long, default_value = "127.0.0.1:4710")]
        listen: SocketAddr,
        /// Admin API address (loopback; port 0 picks a free port at each start).
        #[arg(long, default_value = "127.0.0.1:0")]
        api: SocketAddr,
    },
    /// Show the site's code, certificate fingerprint and public key.
    Identity {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Run the site daemon in the foreground.
    Run {
        #[command(flatten)]
        data: DataArg,
    },
    /// Children of this site: add, list.
    #[command(subcommand)]
    Child(ChildCmd),
    /// The parent of this site.
    #[command(subcommand)]
    Parent(ParentCmd),
    /// Packages: publish, list, show.
    #[command(subcommand)]
    Package(PackageCmd),
    /// Advertisements: create, list.
    #[command(subcommand)]
    Adv(AdvCmd),
    /// Show the config log.
    Log {
        #[command(flatten)]
        data: DataArg,
        /// First log position to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Status: messages, and the catalogue of message ids.
    #[command(subcommand)]
    Status(StatusCmd),
    /// Distribution points of this site: add, list (with the daemon: every DP in the tree).
    #[command(subcommand)]
    Dp(crate::dp_cli::DpCmd),
    /// The sender: emergency boost, retry of failed sendings.
    #[command(subcommand)]
    Sender(crate::sender_cli::SenderCmd),
    /// Replay the config log into fresh projections (daemon stopped).
    Rebuild {
        #[command(flatten)]
        data: DataArg,
    },
    /// The content store: verify every chunk.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Start a site on loopback in a temporary directory, publish a sample package, show it.
    Demo {
        /// Leave the daemon running and print how to talk to it.
        #[arg(long)]
        keep: bool,
    },
    /// Catalog sync (top site): sync now, sources and schedule, status of every site.
    #[command(subcommand)]
    Sync(crate::sync_cli::SyncCmd),
    /// The update catalog: list (filters: product, classification, --since 7d), show.
    #[command(subcommand)]
    Catalog(crate::sync_cli::CatalogCmd),
    /// Courier bundles for sites without a usable link: export, import, receipt.
    #[command(subcommand)]
    Courier(crate::courier_cli::CourierCmd),
    /// The distribution point's own commands (the same as the `dist-point` binary):
    /// `site-server dist-point init|run|status|validate ...`.
    #[command(name = "dist-point", disable_help_flag = true)]
    DistPoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum ChildCmd {
    /// Link a child site: pin its certificate and key (from its `site-server identity`).
    Add {
        #[command(flatten)]
        data: DataArg,
        /// The child's site code.
        #[arg(long)]
        code: String,
        /// The child's certificate fingerprint.
        #[arg(long)]
        fingerprint: String,
        /// The child's public key.
        #[arg(long)]
        pubkey: String,
        /// The child is reached only by courier bundles.
        #[arg(long)]
        courier: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a child link's address schedule and rate limit (live: the running daemon
    /// uses them at once).
    Set {
        #[command(flatten)]
        data: DataArg,
        /// The child's site code.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List the children of this site.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Clone, Default)]
pub struct PolicyArgs {
    /// Which priorities may go when, per hour of the week, first match wins, e.g.
    /// 'mon-fri 08-18 high; sat,sun all; * medium+' (all, medium+, high, closed; `''`: all, 24x7).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Rate limit per hour of the week, e.g. 'mon-fri 08-18 2MiB/s; * 20MiB/s' or
    /// '* pulse 64KiB 2s' (`''` or unlimited: no limit).
    #[arg(long)]
    pub rate: Option<String>,
}

#[derive(Subcommand)]
pub enum ParentCmd {
    /// Set this site's parent: where to dial it, its certificate and key.
    Set {
        #[command(flatten)]
        data: DataArg,
        /// The parent's site code.
        #[arg(long)]
        code: String,
        /// HOST:PORT of the parent's listener.
        #[arg(long, required_unless_present = "courier")]
        addr: Option<String>,
        /// The parent is reached by courier bundles only (no network link).
        #[arg(long, conflicts_with = "addr")]
        courier: bool,
        #[arg(long)]
        fingerprint: String,
        #[arg(long)]
        pubkey: String,
    },
}

#[derive(Subcommand)]
pub enum PackageCmd {
    /// Publish a new package, or a new source version of an existing one.
    Publish {
        #[command(flatten)]
        data: DataArg,
        /// Directory (or single file) to publish.
        #[arg(long)]
        source: PathBuf,
        /// Name of a new package.
        #[arg(long, conflicts_with = "package", required_unless_present = "package")]
        name: Option<String>,
        /// Existing package to publish a new source version of.
        #[arg(long)]
        package: Option<String>,
        /// high, medium or low (new packages default to medium).
        #[arg(long)]
        priority: Option<String>,
        /// Re-read every file instead of trusting the stat cache.
        #[arg(long)]
        rehash: bool,
        #[arg(long)]
        json: bool,
    },
    /// List packages.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Change a package's priority (high, medium, low): its sendings follow on every link.
    Priority {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        priority: String,
    },
    /// Target a package at sites: every site on the way fetches its content.
    Distribute {
        id: String,
        #[command(flatten)]
        data: DataArg,
        /// Site code (this site or one below it); repeat for several.
        #[arg(long = "site", required_unless_present_any = ["dps", "groups"])]
        sites: Vec<String>,
        /// A distribution point, SITE/ID (e.g. S01/DP1); repeat for several. Its site fetches
        /// the content on the way.
        #[arg(long = "dp")]
        dps: Vec<String>,
        /// A distribution point group; repeat for several.
        #[arg(long = "dp-group")]
        groups: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop targeting a package at sites, DPs or groups: DPs delete it (chunks another
    /// package or version uses stay).
    Undistribute {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long = "site", required_unless_present_any = ["dps", "groups"])]
        sites: Vec<String>,
        #[arg(long = "dp")]
        dps: Vec<String>,
        #[arg(long = "dp-group")]
        groups: Vec<String>,
    },
    /// Withdraw a source version everywhere: DPs delete it; the newest version not retired
    /// is the current one again.
    Retire {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        version: u32,
    },
    /// Show a package, its versions and its current files.
    Show {
        id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct AdvCreate {
    #[command(flatten)]
    data: DataArg,
    #[arg(long)]
    package: String,
    /// Program name.
    #[arg(long)]
    program: String,
    /// Target collection.
    #[arg(long)]
    collection: String,
    /// Command line the program runs (default: the program name).
    #[arg(long)]
    command: Option<String>,
    /// Advertisement name (default: "PACKAGE - PROGRAM").
    #[arg(long)]
    name: Option<String>,
    /// Available from (YYYY-MM-DDTHH:MM[:SS]; default now).
    #[arg(long)]
    start: Option<String>,
    /// Mandatory assignment times (repeatable).
    #[arg(long)]
    mandatory: Vec<String>,
    /// Times are UTC (default: each client's local time).
    #[arg(long)]
    utc: bool,
    /// Exit codes meaning success (comma-separated; default 0).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    success: Option<Vec<i32>>,
    /// Exit codes meaning success, reboot required (default 3010,1641).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    success_reboot: Option<Vec<i32>>,
    /// Exit codes meaning failure, reboot required (default none).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    fail_reboot: Option<Vec<i32>>,
    /// Exit codes meaning already installed (default 2359302).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    already_installed: Option<Vec<i32>>,
    /// Exit codes meaning not applicable (default -2145124329).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    not_applicable: Option<Vec<i32>>,
    /// Read every success code as success-reboot-required (CAU's alwaysReboot).
    #[arg(long)]
    always_reboot: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AdvCmd {
    /// Advertise a package's program to a collection.
    Create(Box<AdvCreate>),
    /// List advertisements.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum StatusCmd {
    /// Status messages raised at this site (and, with replication, its subtree).
    Messages {
        #[command(flatten)]
        data: DataArg,
        /// Only messages since a time (RFC 3339) or for a duration back (30m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only messages with this id.
        #[arg(long)]
        id: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Package versions this site holds or passes on: chunks and bytes present.
    Packages {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// What this site sends to each child: window and rate in force, queues per priority,
    /// the job sending now, bytes per second over the last minute.
    Senders {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Every link of this site (parent and children): state, last error, cursors, backlog.
    Sites {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Catalog sync status of this site and every site below: version, when applied,
    /// behind by, last error.
    Sync {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// The catalogue of every status-message id.
    Catalogue {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Re-hash every chunk and name every corrupt one (exit 1 if any).
    Verify {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Res {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::failed(format!("cannot format JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", table_text(headers, rows));
}

/// A table with columns as wide as their widest cell.
pub fn table_text(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
    out
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn parse_time(s: &str) -> Result<NaiveDateTime, CliError> {
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    Err(CliError::usage(format!(
        "invalid time {s:?}: use YYYY-MM-DDTHH:MM[:SS], e.g. 2026-12-01T22:00"
    )))
}

pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    match num.parse::<i64>() {
        Ok(n) if secs > 0 && n >= 0 => Ok(now - chrono::Duration::seconds(n * secs)),
        _ => Err(CliError::usage(format!(
            "invalid --since {s:?}: give an RFC 3339 time or a duration like 30m, 2h, 7d"
        ))),
    }
}

fn parse_package(s: &str) -> Result<PackageId, CliError> {
    s.parse()
        .map_err(|e: schema::IdError| CliError::usage(e.to_string()))
}

pub async fn run(cli: Cli) -> Res {
    match cli.cmd {
        Cmd::Init {
            code,
            data,
            listen,
            api,
        } => init(&code, &data.dir(), listen, api),
        Cmd::Identity { data, json } => identity(&data.dir(), json),
        Cmd::Run { data } => Ok(site_server::daemon::run(data.dir()).await?),
        Cmd::Child(ChildCmd::Add {
            data,
            code,
            fingerprint,
            pubkey,
            courier,
            policy,
        }) => child_add(&data.dir(), &code, &fingerprint, &pubkey, courier, policy),
        Cmd::Child(ChildCmd::Set { data, code, policy }) => {
            child_set(&data.dir(), &code, policy).await
        }
        Cmd::Child(ChildCmd::List { data, json }) => child_list(&data.dir(), json),
        Cmd::Parent(ParentCmd::Set {
            data,
            code,
            addr,
            courier: _,
            fingerprint,
            pubkey,
        }) => parent_set(
            &data.dir(),
            &code,
            addr.as_deref().unwrap_or(""),
            &fingerprint,
            &pubkey,
        ),
        Cmd::Package(p) => package(p).await,
        Cmd::Adv(a) => adv(a).await,
        Cmd::Log {
            data,
            from,
            limit,
            json,
        } => log(&data.dir(), from, limit, json).await,
        Cmd::Status(StatusCmd::Messages {
            data,
            since,
            id,
            json,
        }) => messages(&data.dir(), since, id, json).await,
        Cmd::Status(StatusCmd::Catalogue { json }) => catalogue(json),
        Cmd::Status(StatusCmd::Sites { data, json }) => sites(&data.dir(), json).await,
        Cmd::Status(StatusCmd::Senders { data, json }) => {
            crate::sender_cli::status(data, json).await
        }
        Cmd::Sender(cmd) => crate::sender_cli::run(cmd).await,
        Cmd::Dp(cmd) => crate::dp_cli::run(cmd).await,
        Cmd::Status(StatusCmd::Packages { data, json }) => content(&data.dir(), json).await,
        Cmd::Rebuild { data } => rebuild(&data.dir()),
        Cmd::Store(StoreCmd::Verify { data, json }) => verify(&data.dir(), json),
        Cmd::Demo { keep } => crate::demo::run(keep).await,
        Cmd::Courier(c) => crate::courier_cli::run(c).await,
        Cmd::Sync(c) => crate::sync_cli::run(c).await,
        Cmd::Catalog(c) => crate::sync_cli::catalog(c).await,
        Cmd::Status(StatusCmd::Sync { data, json }) => {
            crate::sync_cli::status(&data.dir(), json).await
        }
        Cmd::DistPoint { args } => {
            use clap::Parser;
            let cli = match dist_point::cli::Cli::try_parse_from(
                std::iter::once("dist-point".to_string()).chain(args),
            ) {
                Ok(c) => c,
                Err(e) => {
                    let _ = e.print();
                    return Err(CliError {
                        code: if e.use_stderr() { 2 } else { 0 },
                        message: String::new(),
                    });
                }
            };
            dist_point::cli::run(cli).await.map_err(|e| CliError {
                code: e.exit_code() as u8,
                message: e.to_string(),
            })
        }
    }
}

fn init(code: &str, dir: &DataDir, listen: SocketAddr, api: SocketAddr) -> Res {
    let code = SiteCode::new(code).map_err(|e| CliError::usage(e.to_string()))?;
    let cfg = SiteConfig::new(code, listen, api);
    cfg.validate().map_err(CliError::usage)?;
    if site_server::config::is_initialized(&dir.root) {
        return Err(CliError::usage(format!(
            "{} already holds a site: give a new directory to --data",
            dir.root.display()
        )));
    }
    if let Ok(mut rd) = std::fs::read_dir(&dir.root) {
        if rd.next().is_some() {
            return Err(CliError::usage(format!(
                "{} is not empty: give a new or empty directory to --data",
                dir.root.display()
            )));
        }
    }
    std::fs::create_dir_all(&dir.root)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.root.display())))?;
    let public =
        sender::identity::create(&dir.root, code).map_err(|e| CliError::failed(e.to_string()))?;
    dist_point::ContentStore::open(dir.content()).map_err(|e| CliError::failed(e.to_string()))?;
    // site.toml last: its presence is what marks the directory initialized.
    let tmp = dir.root.join("site.toml.tmp");
    std::fs::write(&tmp, cfg.to_toml())
        .and_then(|_| std::fs::rename(&tmp, dir.config()))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", dir.config().display())))?;
    println!("initialized site {code} in {}", dir.root.display());
    println!("fingerprint  {}", public.fingerprint);
    println!("public key   {}", public.public_key);
    println!("next: site-server run --data {}", dir.root.display());
    Ok(())
}

fn identity(dir: &DataDir, json: bool) -> Res {
    let cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let p =
        sender::identity::load_public(&dir.root).map_err(|e| CliError::failed(e.to_string()))?;
    if json {
        return print_json(&serde_json::json!({
            "code": cfg.code,
            "fingerprint": p.fingerprint,
            "public_key": p.public_key,
            "listen": cfg.listen.to_string(),
            "api": cfg.api.to_string(),
        }));
    }
    println!("code         {}", cfg.code);
    println!("fingerprint  {}", p.fingerprint);
    println!("public key   {}", p.public_key);
    println!("listen       {}", cfg.listen);
    Ok(())
}

/// The peer's code, fingerprint and key as the operator gave them, checked.
fn peer_keys(
    code: &str,
    fingerprint: &str,
    pubkey: &str,
) -> Result<(SiteCode, String, String), CliError> {
    Ok((
        SiteCode::new(code).map_err(|e| CliError::usage(e.to_string()))?,
        sender::identity::check_fingerprint(fingerprint).map_err(CliError::usage)?,
        sender::identity::check_public_key(pubkey).map_err(CliError::usage)?,
    ))
}

fn links_changed(dir: &DataDir) {
    if dir.admin().exists() {
        println!("the running daemon reads its links when it starts: restart it to use this one");
    }
}

fn child_add(
    dir: &DataDir,
    code: &str,
    fingerprint: &str,
    pubkey: &str,
    courier: bool,
    policy: PolicyArgs,
) -> Res {
    let mut cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let (code, fingerprint, public_key) = peer_keys(code, fingerprint, pubkey)?;
    if cfg.children.iter().any(|c| c.code == code) {
        return Err(CliError::usage(format!(
            "child {code} is already linked to {}: see `site-server child list`",
            cfg.code
        )));
    }
    let child = site_server::config::ChildLink {
        code,
        fingerprint,
        public_key,
        courier,
        schedule: policy.schedule.unwrap_or_default(),
        rate: policy.rate.unwrap_or_default(),
    };
    child.policy().map_err(CliError::usage)?;
    cfg.children.push(child);
    cfg.save(dir).map_err(CliError::usage)?;
    println!(
        "child {code} added to {} ({}); its certificate is pinned",
        cfg.code,
        if courier {
            "courier only"
        } else {
            "network link"
        }
    );
    links_changed(dir);
    Ok(())
}

async fn child_set(dir: &DataDir, code: &str, policy: PolicyArgs) -> Res {
    if policy.schedule.is_none() && policy.rate.is_none() {
        return Err(CliError::usage(
            "nothing to change: give --schedule RULES and/or --rate RULES",
        ));
    }
    let code = schema::SiteCode::new(code).map_err(|e| CliError::usage(e.to_string()))?;
    let req = site_server::site::LinkPolicyRequest {
        schedule: policy.schedule,
        rate: policy.rate,
    };
    // A running daemon changes the file and its sender together; otherwise the file alone.
    let child: site_server::config::ChildLink = if dir.admin().exists() {
        AdminClient::from_dir(dir)?
            .post_json(&format!("/v1/children/{code}"), &req)
            .await?
    } else {
        site_server::site::set_child_policy(dir, code, &req).map_err(|e| match e {
            site_server::site::OpError::Refused(r) => CliError::usage(r.to_string()),
            e => CliError::failed(e.to_string()),
        })?
    };
    println!(
        "child {code}: schedule {}; rate {}",
        if child.schedule.is_empty() {
            "all, 24x7"
        } else {
            &child.schedule
        },
        if child.rate.is_empty() {
            "unlimited"
        } else {
            &child.rate
        },
    );
    Ok(())
}

fn child_list(dir: &DataDir, json: bool) -> Res {
    let cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    if json {
        return print_json(&cfg.children);
    }
    let rows: Vec<Vec<String>> = cfg
        .children
        .iter()
        .map(|c| {
            vec![
                c.code.to_string(),
                if c.courier { "courier" } else { "network" }.into(),
                c.fingerprint[..16].to_string(),
                c.public_key[..16].to_string(),
            ]
        })
        .collect();
    print_table(&["CHILD", "LINK", "FINGERPRINT", "PUBLIC KEY"], &rows);
    Ok(())
}

fn parent_set(dir: &DataDir, code: &str, addr: &str, fingerprint: &str, pubkey: &str) -> Res {
    let mut cfg = SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let (code, fingerprint, public_key) = peer_keys(code, fingerprint, pubkey)?;
    if !addr.is_empty() {
        site_server::config::check_addr(addr).map_err(CliError::usage)?;
    }
    cfg.parent = Some(site_server::config::ParentLink {
        code,
        addr: addr.to_string(),
        fingerprint,
        public_key,
    });
    cfg.save(dir).map_err(CliError::usage)?;
    if addr.is_empty() {
        println!(
            "parent of {} set to {code}, reached by courier bundles only; its key checks them",
            cfg.code
        );
    } else {
        println!(
            "parent of {} set to {code} at {addr}; its certificate is pinned",
            cfg.code
        );
    }
    links_changed(dir);
    Ok(())
}

fn publish_error(e: PublishError) -> CliError {
    match e {
        PublishError::Unreadable { .. } | PublishError::Store(_) => CliError::failed(e.to_string()),
        _ => CliError::usage(e.to_string()),
    }
}

async fn package(cmd: PackageCmd) -> Res {
    match cmd {
        PackageCmd::Publish {
            data,
            source,
            name,
            package,
            priority,
            rehash,
            json,
        } => {
            let dir = data.dir();
            let priority = priority
                .map(|p| p.parse::<Priority>().map_err(CliError::usage))
                .transpose()?;
            let target = match (name, package) {
                (Some(name), None) => PublishTarget::New { name },
                (None, Some(p)) => PublishTarget::Existing(parse_package(&p)?),
                _ => return Err(CliError::usage("give exactly one of --name or --package")),
            };
            let client = AdminClient::from_dir(&dir)?;
            // Fail before touching the store if the daemon is down or the package unknown.
            let _: IdentityView = client.get("/v1/identity").await?;
            if let PublishTarget::Existing(id) = &target {
                let _: PackageDetail = client.get(&format!("/v1/packages/{id}")).await?;
            }
            let t_scan = std::time::Instant::now();
            let scanned = publish::scan(&source).map_err(publish_error)?;
            tracing::debug!(
                files = scanned.files(),
                bytes = scanned.bytes,
                ms = t_scan.elapsed().as_millis() as u64,
                "source scanned"
            );
            let store = dist_point::ContentStore::open(dir.content())
                .map_err(|e| CliError::failed(e.to_string()))?;
            let cache_path = publish::cache_path(&dir.publish_cache(), &scanned.root);
            let cache = (!rehash).then(|| publish::load_cache(&cache_path));
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(scanned.bytes),
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar.set_message("publishing");
            let started = std::time::Instant::now();
            let built = tokio::task::block_in_place(|| {
                publish::build(&store, &scanned, cache.as_ref(), &|n| bar.inc(n))
            })
            .map_err(publish_error)?;
            bar.finish_and_clear();
            tracing::debug!(
                new_chunks = built.new_chunks,
                files_cached = built.files_cached,
                ms = started.elapsed().as_millis() as u64,
                "content stored"
            );
            let req = PublishRequest {
                target,
                priority,
                manifest: built.manifest,
                new_chunks: built.new_chunks,
            };
            let body = encoding::encode(&req).map_err(|e| CliError::failed(e.to_string()))?;
            let t_record = std::time::Instant::now();
            let out: PublishOutcome = client.post_bytes("/v1/packages/publish", body).await?;
            tracing::debug!(
                ms = t_record.elapsed().as_millis() as u64,
                "version recorded"
            );
            if let Err(e) = publish::save_cache(&cache_path, &built.cache) {
                tracing::warn!("cannot save the publish stat cache: {e}");
            }
            if json {
                return print_json(&out);
            }
            let secs = started.elapsed().as_secs_f64();
            if out.unchanged {
                println!(
                    "package {} ({}) unchanged: source version {} already has this content (manifest {}); no new version",
                    out.package, out.name, out.source_version, out.manifest_id.short()
                );
            } else {
                println!(
                    "published {} ({}) source version {}: {} files, {}, {} chunks ({} new) in {:.1}s",
                    out.package,
                    out.name,
                    out.source_version,
                    out.files,
                    human_bytes(out.size),
                    out.chunks,
                    out.new_chunks,
                    secs
                );
            }
            Ok(())
        }
        PackageCmd::List { data, json } => {
            let client = AdminClient::from_dir(&data.dir())?;
            let list: Vec<PackageSummary> = client.get("/v1/packages").await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.name.clone(),
                        p.source_version.to_string(),
                        p.priority.to_string(),
                        p.files.to_string(),
                        human_bytes(p.size),
                        p.published
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "VERSION",
                    "PRIORITY",
                    "FILES",
                    "SIZE",
                    "PUBLISHED (UTC)",
                ],
                &rows,
            );
            Ok(())
        }
        PackageCmd::Priority { id, data, priority } => {
            crate::sender_cli::set_priority(data, &id, &priority).await
        }
        PackageCmd::Undistribute {
            id,
            data,
            sites,
            dps,
            groups,
        } => {
            let id = parse_package(&id)?;
            let targets = targets_of(&sites, &dps, groups)?;
            let out: Vec<schema::event::DistributionTarget> = AdminClient::from_dir(&data.dir())?
                .post_json(
                    &format!("/v1/packages/{id}/undistribute"),
                    &serde_json::json!({ "targets": targets }),
                )
                .await?;
            for t in &out {
                println!("{id} no longer targeted at {t}");
            }
            Ok(())
        }
        PackageCmd::Retire { id, data, version } => {
            let id = parse_package(&id)?;
            let _: serde_json::Value = AdminClient::from_dir(&data.dir())?
                .post_json(
                    &format!("/v1/packages/{id}/retire"),
                    &serde_json::json!({ "version": version }),
                )
                .await?;
            println!("{id} version {version} retired; distribution points delete it");
            Ok(())
        }
        PackageCmd::Distribute {
            id,
            data,
            sites,
            dps,
            groups,
            json,
        } => {
            let id = parse_package(&id)?;
            let targets = targets_of(&sites, &dps, groups)?;
            let client = AdminClient::from_dir(&data.dir())?;
            let out: site_server::decide::DistributeOutcome = client
                .post_json(
                    &format!("/v1/packages/{id}/distribute"),
                    &serde_json::json!({ "targets": targets }),
                )
                .await?;
            if json {
                return print_json(&out);
            }
            for t in &out.added {
                println!("{id} targeted at {t}");
            }
            for t in &out.already {
                println!("{id} was already targeted at {t} (nothing changed)");
            }
            Ok(())
        }
        PackageCmd::Show { id, data, json } => {
            let id = parse_package(&id)?;
            let client = AdminClient::from_dir(&data.dir())?;
            let d: PackageDetail = client.get(&format!("/v1/packages/{id}")).await?;
            if json {
                return print_json(&d);
            }
            let p = &d.package;
            println!("package   {} ({})", p.id, p.name);
            println!("priority  {}", p.priority);
            let t: Vec<String> = d.targets.iter().map(|t| t.to_string()).collect();
            println!(
                "targets   {}",
                if t.is_empty() {
                    "-".into()
                } else {
                    t.join(", ")
                }
            );
            println!();
            let current = p.current().map(|v| v.source_version);
            let rows: Vec<Vec<String>> = p
                .versions
                .iter()
                .map(|v| {
                    vec![
                        v.source_version.to_string(),
                        v.manifest_id.short(),
                        v.files.to_string(),
                        human_bytes(v.size),
                        v.chunks.to_string(),
                        v.published.format("%Y-%m-%d %H:%M:%S").to_string(),
                        if v.retired {
                            "retired"
                        } else if Some(v.source_version) == current {
                            "current"
                        } else {
                            "superseded"
                        }
                        .into(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "VERSION",
                    "MANIFEST",
                    "FILES",
                    "SIZE",
                    "CHUNKS",
                    "PUBLISHED (UTC)",
                    "STATE",
                ],
                &rows,
            );
            if let Some(m) = &d.manifest {
                println!();
                let rows: Vec<Vec<String>> = m
                    .files
                    .iter()
                    .map(|f| {
                        let (what, chunks) = match &f.kind {
                            EntryKind::File { chunks } => (String::new(), chunks.len().to_string()),
                            EntryKind::Symlink { target } => (format!(" -> {target}"), "-".into()),
                        };
                        vec![
                            format!("{:o}", f.mode),
                            human_bytes(f.size),
                            chunks,
                            format!("{}{what}", f.path),
                        ]
                    })
                    .collect();
                print_table(&["MODE", "SIZE", "CHUNKS", "PATH"], &rows);
            }
            Ok(())
        }
    }
}

async fn adv(cmd: AdvCmd) -> Res {
    match cmd {
        AdvCmd::Create(args) => {
            let AdvCreate {
                data,
                package,
                program,
                collection,
                command,
                name,
                start,
                mandatory,
                utc,
                success,
                success_reboot,
                fail_reboot,
                already_installed,
                not_applicable,
                always_reboot,
                json,
            } = *args;
            let d = ExitRules::default();
            let exit = ExitRules {
                success: success.unwrap_or(d.success),
                success_reboot_required: success_reboot.unwrap_or(d.success_reboot_required),
                fail_reboot_required: fail_reboot.unwrap_or(d.fail_reboot_required),
                already_installed: already_installed.unwrap_or(d.already_installed),
                not_applicable: not_applicable.unwrap_or(d.not_applicable),
                always_reboot,
            };
            let req = AdvertRequest {
                name,
                package: parse_package(&package)?,
                program: Program {
                    command_line: command.unwrap_or_else(|| program.clone()),
                    name: program,
                    exit,
                },
                collection,
                start: start.as_deref().map(parse_time).transpose()?,
                mandatory: mandatory
                    .iter()
                    .map(|m| parse_time(m))
                    .collect::<Result<_, _>>()?,
                utc,
            };
            let client = AdminClient::from_dir(&data.dir())?;
            let a: Advertisement = client.post_json("/v1/adverts", &req).await?;
            if json {
                return print_json(&a);
            }
            println!(
                "created advertisement {} ({}): package {} program {:?} to collection {:?}, start {}{}",
                a.id,
                a.name,
                a.package,
                a.program.name,
                a.collection,
                a.start.format("%Y-%m-%d %H:%M:%S"),
                if utc { " UTC" } else { " client-local" }
            );
            Ok(())
        }
        AdvCmd::List { data, json } => {
            let client = AdminClient::from_dir(&data.dir())?;
            let list: Vec<Advertisement> = client.get("/v1/adverts").await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.name.clone(),
                        a.package.to_string(),
                        a.program.name.clone(),
                        a.collection.clone(),
                        format!(
                            "{}{}",
                            a.start.format("%Y-%m-%d %H:%M"),
                            if matches!(a.time_basis, schema::advert::TimeBasis::Utc) {
                                " UTC"
                            } else {
                                ""
                            }
                        ),
                        a.mandatory.len().to_string(),
                        if a.enabled { "enabled" } else { "disabled" }.into(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "PACKAGE",
                    "PROGRAM",
                    "COLLECTION",
                    "START",
                    "MANDATORY",
                    "STATE",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

async fn log(dir: &DataDir, from: u64, limit: usize, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let entries: Vec<LogEntry> = client
        .get_query("/v1/log", &[("from", from as usize), ("limit", limit)])
        .await?;
    if json {
        return print_json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.position.to_string(),
                format!("{}:{}", e.origin, e.origin_seq),
                e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.kind.clone(),
                e.summary.clone(),
            ]
        })
        .collect();
    print_table(
        &["POS", "ORIGIN:SEQ", "TIME (UTC)", "EVENT", "SUMMARY"],
        &rows,
    );
    Ok(())
}

async fn messages(dir: &DataDir, since: Option<String>, id: Option<u32>, json: bool) -> Res {
    let q = MessageQuery {
        since: since
            .as_deref()
            .map(|s| parse_since(s, Utc::now()))
            .transpose()?,
        id,
        limit: None,
    };
    let client = AdminClient::from_dir(dir)?;
    let rows: Vec<MessageRow> = client.get_query("/v1/status/messages", &q).await?;
    if json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                m.site.to_string(),
                m.id.to_string(),
                m.severity.to_string(),
                m.component.clone(),
                m.text.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME (UTC)",
            "SITE",
            "ID",
            "SEVERITY",
            "COMPONENT",
            "MESSAGE",
        ],
        &table,
    );
    Ok(())
}

async fn content(dir: &DataDir, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let rows: Vec<site_server::site::ContentRow> = client.get("/v1/status/packages").await?;
    if json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let pct = if r.bytes == 0 {
                100.0
            } else {
                r.bytes_present as f64 * 100.0 / r.bytes as f64
            };
            let t: Vec<String> = r.targets.iter().map(|t| t.to_string()).collect();
            vec![
                r.package.to_string(),
                r.name.clone(),
                r.source_version.to_string(),
                t.join(", "),
                format!("{}/{}", r.chunks_present, r.chunks),
                format!(
                    "{} of {}",
                    human_bytes(r.bytes_present),
                    human_bytes(r.bytes)
                ),
                format!("{pct:.0}%"),
            ]
        })
        .collect();
    print_table(
        &[
            "PACKAGE",
            "NAME",
            "VERSION",
            "TARGETS",
            "CHUNKS",
            "BYTES HERE",
            "HERE",
        ],
        &table,
    );
    let sent: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.sending.iter().map(move |s| {
                vec![
                    r.package.to_string(),
                    r.source_version.to_string(),
                    s.site.to_string(),
                    s.from.to_string(),
                    format!("{}%", s.pct),
                    match &s.error {
                        Some(e) => format!("{}: {e}", s.state),
                        None => s.state.clone(),
                    },
                    s.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
        })
        .collect();
    if !sent.is_empty() {
        println!();
        print_table(
            &[
                "PACKAGE", "VERSION", "TO SITE", "SENDER", "SENT", "STATE", "AT (UTC)",
            ],
            &sent,
        );
    }
    let dps: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.dps.iter().map(move |d| {
                let states: Vec<String> = d
                    .dps
                    .iter()
                    .map(|x| format!("{} {}", x.dp, x.state))
                    .collect();
                vec![
                    r.package.to_string(),
                    r.source_version.to_string(),
                    d.site.to_string(),
                    d.targeted.to_string(),
                    d.installed.to_string(),
                    format!("{}%", d.pct_installed),
                    states.join(", "),
                ]
            })
        })
        .collect();
    if !dps.is_empty() {
        println!();
        print_table(
            &[
                "PACKAGE",
                "VERSION",
                "SITE",
                "DPS TARGETED",
                "DPS INSTALLED",
                "INSTALLED",
                "DISTRIBUTION POINTS",
            ],
            &dps,
        );
    }
    Ok(())
}

async fn sites(dir: &DataDir, json: bool) -> Res {
    let client = AdminClient::from_dir(dir)?;
    let rows: Vec<site_server::site::SiteLinkRow> = client.get("/v1/status/sites").await?;
    if json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.link.peer.to_string(),
                format!("{:?}", r.link.role).to_lowercase(),
                format!("{:?}", r.link.state).to_lowercase(),
                r.link.since.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.config_cursor.to_string(),
                r.reports_cursor.to_string(),
                format!("{} ({})", r.backlog_events, human_bytes(r.backlog_bytes)),
                r.link.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "SITE",
            "ROLE",
            "STATE",
            "SINCE (UTC)",
            "CONFIG",
            "REPORTS",
            "BACKLOG",
            "LAST ERROR",
        ],
        &table,
    );
    let courier: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let c = r.courier.as_ref()?;
            let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("never".to_string(), |t| {
                    t.format("%Y-%m-%d %H:%M:%S").to_string()
                })
            };
            Some(vec![
                r.link.peer.to_string(),
                when(c.last_export),
                when(c.last_receipt),
                c.receipt_applied.to_string(),
                format!(
                    "{} event(s), {} chunk(s) ({})",
                    c.next_events,
                    c.next_chunks,
                    human_bytes(c.next_chunk_bytes)
                ),
            ])
        })
        .collect();
    if !courier.is_empty() {
        println!();
        print_table(
            &[
                "COURIER SITE",
                "LAST EXPORT (UTC)",
                "LAST RECEIPT (UTC)",
                "APPLIED (RECEIPT)",
                "NEXT EXPORT CARRIES",
            ],
            &courier,
        );
    }
    Ok(())
}

fn catalogue(json: bool) -> Res {
    let rows: Vec<serde_json::Value> = schema::status::CATALOGUE
        .iter()
        .map(|d| {
            serde_json::json!({"id": d.id, "severity": d.severity, "component": d.component, "text": d.text})
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    let table: Vec<Vec<String>> = schema::status::CATALOGUE
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.severity.to_string(),
                d.component.to_string(),
                d.text.to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "SEVERITY", "COMPONENT", "TEXT"], &table);
    Ok(())
}

fn rebuild(dir: &DataDir) -> Res {
    let (_lock, site) = site_server::daemon::open_site(dir, true)?;
    let r = site
        .db
        .rebuild()
        .map_err(|e| CliError::failed(format!("rebuild failed: {e}")))?;
    println!(
        "rebuilt projections from {} events: digest before {}, after {}{}",
        r.events,
        &r.digest_before[..16],
        &r.digest_after[..16],
        if r.digest_before == r.digest_after {
            " (identical)"
        } else {
            " (the old projections differed from the log and were replaced)"
        }
    );
    Ok(())
}

fn verify(dir: &DataDir, json: bool) -> Res {
    SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
    let store = dist_point::ContentStore::open(dir.content())
        .map_err(|e| CliError::failed(e.to_string()))?;
    let r = store
        .verify_all()
        .map_err(|e| CliError::failed(e.to_string()))?;
    if json {
        print_json(&serde_json::json!({
            "chunks_ok": r.chunks_ok,
            "raw_bytes": r.raw_bytes,
            "problems": r.problems.iter().map(|p| serde_json::json!({
                "path": p.path, "chunk": p.id.map(|i| i.to_hex()), "reason": p.reason
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "{} chunks verified ({}), {} problems",
            r.chunks_ok,
            human_bytes(r.raw_bytes),
            r.problems.len()
        );
    }
    match r.problems.first() {
        None => Ok(()),
        Some(p) => Err(CliError::failed(format!(
            "{} corrupt chunk file(s) in the content store, first {} ({}): remove them and publish or fetch the content again",
            r.problems.len(),
            p.path.display(),
            p.reason
        ))),
    }
}

/// `--site`, `--dp` and `--dp-group` values as targets.
fn targets_of(
    sites: &[String],
    dps: &[String],
    groups: Vec<String>,
) -> Result<Vec<schema::event::DistributionTarget>, CliError> {
    let mut targets = Vec::new();
    for s in sites {
        let code = SiteCode::new(s).map_err(|e| CliError::usage(format!("--site {s:?}: {e}")))?;
        targets.push(schema::event::DistributionTarget::Site(code));
    }
    for d in dps {
        targets.push(crate::dp_cli::parse_dp_target(d)?);
    }
    for g in groups {
        targets.push(schema::event::DistributionTarget::DpGroup(g));
    }
    Ok(targets)
}
