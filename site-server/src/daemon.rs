//! `site-server run`: the daemon's lifecycle. Takes the data directory's lock, opens the
//! database and content store, serves the admin API, and shuts down cleanly on SIGINT/SIGTERM.

use crate::api::{self, AdminInfo};
use crate::config::{DataDir, SiteConfig};
use crate::db::Db;
use crate::site::Site;
use anyhow::Context;
use ring::rand::SecureRandom;
use schema::status;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::sync::Arc;

/// The daemon could not start; `usage` errors are the operator's to fix (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Failed(String),
}

/// Holds the data directory's lock while alive.
pub struct DirLock {
    _file: File,
}

/// Takes the exclusive lock of a data directory, or says who holds it.
pub fn lock_data_dir(dir: &DataDir) -> Result<DirLock, StartError> {
    let path = dir.lock();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StartError::Failed(format!("cannot open {}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StartError::Failed(format!(
                "data directory {} is in use by another site-server{}: stop it first, or use another --data",
                dir.root.display(),
                if pid.is_empty() { String::new() } else { format!(" (pid {pid})") }
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(StartError::Failed(format!(
                "cannot lock {}: {e}",
                path.display()
            )))
        }
    }
    // The pid is a courtesy for the message above; the lock itself is what protects.
    if let Err(e) = f
        .set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| writeln!(f, "{}", std::process::id()))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the pid into the lock file");
    }
    Ok(DirLock { _file: f })
}

/// Opens everything `run` (and offline commands) need, under the lock.
pub fn open_site(
    dir: &DataDir,
    allow_rebuild_pending: bool,
) -> Result<(DirLock, Site), StartError> {
    let cfg = SiteConfig::load(dir).map_err(|e| StartError::Config(e.to_string()))?;
    let lock = lock_data_dir(dir)?;
    let (signer, pending) =
        crate::site::load_origin_keys(dir).map_err(|e| StartError::Failed(e.to_string()))?;
    let first_key = sender::identity::load_public(&dir.root)
        .map_err(|e| StartError::Failed(e.to_string()))?
        .public_key;
    let root_key = match cfg.trust_root(&first_key) {
        Some(k) => Some(k.parse().map_err(|e| {
            StartError::Config(format!("root_key in {}: {e}", dir.config().display()))
        })?),
        None => None,
    };
    let tuning = cfg.storage.storage().map_err(StartError::Config)?;
    let db = Db::open_tuned(
        &dir.db(),
        cfg.code,
        allow_rebuild_pending,
        crate::db::Trust { signer, root_key },
        tuning,
    )
    .map_err(|e| match e {
        e @ crate::db::DbError::OldFormat { .. } => StartError::Config(e.to_string()),
        e => StartError::Failed(format!("cannot open the database: {e}")),
    })?;
    db.set_pending_rotation(pending);
    let store = dist_point::ContentStore::open(dir.content())
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let tz = cfg.tz().map_err(StartError::Config)?;
    let limits = cfg.sender.limits().map_err(StartError::Config)?;
    let mut sched = sender::scheduler::Scheduler::new(tz, limits, std::time::Instant::now());
    for c in &cfg.children {
        sched.set_policy(c.code, c.policy().map_err(StartError::Config)?);
    }
    Ok((lock, Site::new(cfg, dir.clone(), db, store, sched)))
}

fn random_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(hex::encode(b))
}

/// Writes `admin.json` atomically with mode 0600.
fn write_admin_file(dir: &DataDir, info: &AdminInfo) -> anyhow::Result<()> {
    crate::config::write_private(&dir.admin(), serde_json::to_string_pretty(info)?.as_bytes())
        .with_context(|| format!("cannot write {}", dir.admin().display()))
}

/// The trust clock: at the top, a signed checkpoint every `[trust] checkpoint_every`; at
/// every site, the freeze alarm looked at when the newest checkpoint expires (and at least
/// every minute).
async fn trust_clock(site: Arc<Site>) {
    loop {
        let s = site.clone();
        let next = tokio::task::spawn_blocking(
            move || -> Result<std::time::Duration, crate::site::OpError> {
                let now = chrono::Utc::now();
                let mut wait = chrono::Duration::seconds(60);
                if let Some(due) = s.checkpoint_if_due(now)? {
                    wait = wait.min(due - now);
                }
                if let Some(v) = s.check_view(now)? {
                    if !v.stale {
                        wait = wait.min(v.expires - now);
                    }
                }
                Ok(wait
                    .to_std()
                    .unwrap_or_default()
                    .max(std::time::Duration::from_millis(200)))
            },
        )
        .await;
        let wait = match next {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "trust clock: will try again in a minute");
                std::time::Duration::from_secs(60)
            }
            Err(_) => return,
        };
        // A checkpoint may arrive with the log: look again then.
        let grew = site.woken(crate::site::Wake::LogGrew);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = grew => {}
        }
    }
}

/// Retention of the report log, every `[reports] every` (first a minute after start).
async fn retention(site: Arc<Site>) {
    let every = site
        .cfg()
        .reports
        .retention()
        .map(|r| r.every)
        .unwrap_or(std::time::Duration::from_secs(600));
    let mut wait = every.min(std::time::Duration::from_secs(60));
    loop {
        tokio::time::sleep(wait).await;
        wait = every;
        let s = site.clone();
        match tokio::task::spawn_blocking(move || s.prune_reports(chrono::Utc::now())).await {
            Ok(Ok(p)) if p.removed > 0 => {
                tracing::info!(
                    removed = p.removed,
                    first_kept = p.first_kept,
                    "report retention"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "report retention failed; trying again later"),
            Err(_) => return,
        }
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(dir: DataDir) -> Result<(), StartError> {
    let (lock, site) = open_site(&dir, false)?;
    let nofile = sender::socket::raise_open_file_limit();
    tracing::debug!(nofile, "open-file limit");
    let listener = tokio::net::TcpListener::bind(site.cfg().api)
        .await
        .map_err(|e| {
            StartError::Config(format!(
                "cannot listen on api = \"{}\" from {}: {e}; pick a free loopback address",
                site.cfg().api,
                dir.config().display()
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    // The QUIC endpoint: children dial it; it also dials the parent.
    let me =
        sender::tls::TlsIdentity::load(&dir.root).map_err(|e| StartError::Failed(e.to_string()))?;
    let child_pins = sender::tls::Pins::new();
    for c in &site.cfg().children {
        child_pins.insert(&c.fingerprint, c.code.as_str());
    }
    // Distribution points dial the same endpoint; their pins name them `dp:ID`.
    for d in &site.cfg().dps {
        child_pins.insert(&d.fingerprint, &format!("dp:{}", d.id));
    }
    let server_cfg = sender::tls::server_config(&me, child_pins.clone())
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let mut endpoint =
        sender::socket::endpoint(site.cfg().listen, Some(server_cfg)).map_err(|e| {
            StartError::Config(format!(
                "cannot listen on listen = \"{}\" from {}: {e}; pick a free address",
                site.cfg().listen,
                dir.config().display()
            ))
        })?;
    let quic_addr = endpoint
        .local_addr()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    if let Some(p) = &site.cfg().parent {
        let pins = sender::tls::Pins::new();
        pins.insert(&p.fingerprint, p.code.as_str());
        endpoint.set_default_client_config(
            sender::tls::client_config(&me, pins).map_err(|e| StartError::Failed(e.to_string()))?,
        );
    }
    let token = random_token().map_err(|e| StartError::Failed(e.to_string()))?;
    // One stop for the admin API and the console: SIGINT or SIGTERM.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let site = Arc::new(site);
    let console = crate::ui::bind(
        site.clone(),
        dir.clone(),
        token.clone(),
        stopped(stop_rx.clone()),
    )
    .await
    .map_err(StartError::Config)?;
    write_admin_file(
        &dir,
        &AdminInfo {
            addr: addr.to_string(),
            token: token.clone(),
            pid: std::process::id(),
            listen: quic_addr.to_string(),
            ui: console.url.clone(),
        },
    )
    .map_err(|e| StartError::Failed(format!("{e:#}")))?;

    let counts = site
        .db()
        .counts()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let code = site.cfg().code;
    site.raise(
        status::SITE_SERVER_STARTED,
        vec![],
        vec![
            code.to_string(),
            counts.config_events.to_string(),
            counts.reports.to_string(),
        ],
    )
    .map_err(|e| StartError::Failed(e.to_string()))?;
    site.report_children()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    site.report_dps()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    site.load_boosts()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    site.start_trust()
        .map_err(|e| StartError::Failed(e.to_string()))?;
    tokio::spawn(trust_clock(site.clone()));
    tokio::spawn(retention(site.clone()));
    let ui_url = console.url.clone();
    let console = tokio::spawn(console.run());
    tracing::info!(site = %code, api = %addr, listen = %quic_addr, ui = %ui_url, data = %dir.root.display(), "site server started");
    tokio::spawn(crate::net::serve_children(
        site.clone(),
        endpoint.clone(),
        child_pins,
    ));
    if let Some(p) = site.cfg().parent.clone() {
        tokio::spawn(crate::net::content::track_wants(site.clone(), p.code));
        if !p.addr.is_empty() {
            tokio::spawn(crate::net::follow_parent(site.clone(), endpoint.clone(), p));
        }
    }

    if site.cfg().parent.is_none() {
        tokio::spawn(crate::catalog::sync::run_schedule(site.clone()));
    }

    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let app = api::router(site.clone(), token);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stopped(stop_rx))
        .await;
    match console.await {
        Ok(Err(e)) => tracing::error!(error = %e, "the console failed"),
        Err(e) => tracing::error!(error = %e, "the console's task failed"),
        Ok(Ok(())) => {}
    }
    endpoint.close(0u32.into(), b"site server stopping");
    site.note(status::SITE_SERVER_STOPPING, vec![], vec![code.to_string()]);
    let _ = std::fs::remove_file(dir.admin());
    tracing::info!(site = %code, "site server stopped");
    drop(lock);
    served.map_err(|e| StartError::Failed(format!("admin API failed: {e}")))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
