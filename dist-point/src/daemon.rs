//! `dist-point init` and `dist-point run`: the data directory, the lock, the HTTP server
//! (files for clients, chunks for pull DPs, a token-guarded admin API for the CLI), the link
//! to the site, and validation on its schedule.

use crate::config::DpConfig;
use crate::node::{self, Node, State, StatusView, ValidationReport};
use crate::store::ContentStore;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use schema::ChunkId;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

/// Why a command failed: `Usage` is the operator's to fix (exit 2), `Failed` is not (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl DpError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DpError::Usage(_) => 2,
            DpError::Failed(_) => 1,
        }
    }
}

/// `DIR/admin.json` while the DP runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminInfo {
    pub addr: String,
    pub token: String,
    pub pid: u32,
}

pub const ADMIN_FILE: &str = "admin.json";

/// What `dist-point init` was given.
pub struct InitArgs {
    pub dir: PathBuf,
    pub id: String,
    pub listen: std::net::SocketAddr,
    pub site: String,
    pub site_fingerprint: String,
}

/// Makes a new DP data directory: identity, `dp.toml`, content store. Returns the
/// certificate fingerprint (what the site pins).
pub fn init(a: &InitArgs) -> Result<String, DpError> {
    let cfg = DpConfig {
        id: a.id.clone(),
        listen: a.listen,
        site: a.site.clone(),
        site_fingerprint: a.site_fingerprint.trim().to_ascii_lowercase(),
        window: 64,
        validate_every: "7d".into(),
        retry: "10s".into(),
        max_connections: None,
        max_downloads: crate::serve::MAX_DOWNLOADS,
    };
    cfg.check().map_err(DpError::Usage)?;
    if DpConfig::path(&a.dir).exists() {
        return Err(DpError::Usage(format!(
            "{} already exists: this directory holds a distribution point; use another --data",
            DpConfig::path(&a.dir).display()
        )));
    }
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| DpError::Failed(format!("cannot create {}: {e}", a.dir.display())))?;
    let id = sender::identity::create_named(&a.dir, &a.id, "dp")
        .map_err(|e| DpError::Failed(e.to_string()))?;
    ContentStore::open(a.dir.join("content")).map_err(|e| DpError::Failed(e.to_string()))?;
    cfg.save(&a.dir).map_err(DpError::Failed)?;
    Ok(id.fingerprint)
}

/// Holds the data directory's lock while alive.
pub struct DirLock(#[allow(dead_code)] File);

pub fn lock(dir: &FsPath) -> Result<DirLock, DpError> {
    let path = dir.join("lock");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| DpError::Failed(format!("cannot open {}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(DirLock(f)),
        Err(TryLockError::WouldBlock) => Err(DpError::Failed(format!(
            "{} is in use by a running dist-point: stop it first, or use another --data",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(DpError::Failed(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

fn random_token() -> Result<String, DpError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| DpError::Failed("no system randomness".into()))?;
    Ok(hex::encode(b))
}

fn write_admin(dir: &FsPath, info: &AdminInfo) -> Result<(), DpError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join("admin.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(info)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(ADMIN_FILE))
    };
    write().map_err(|e| {
        DpError::Failed(format!(
            "cannot write {}: {e}",
            dir.join(ADMIN_FILE).display()
        ))
    })
}

#[derive(Clone)]
struct Http {
    node: Arc<Node>,
    token: Arc<String>,
}

/// A chunk file as stored, for a pull DP (which verifies it).
async fn chunk(AxState(h): AxState<Http>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<ChunkId>() else {
        return (StatusCode::BAD_REQUEST, "not a chunk id (64 hex digits)\n").into_response();
    };
    if !h.node.serves_chunk(&id) {
        return (
            StatusCode::NOT_FOUND,
            "chunk not part of a version installed here\n",
        )
            .into_response();
    }
    let node = h.node.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        node.store().read_encoded(&id, &mut buf).map(|()| buf)
    })
    .await;
    match r {
        Ok(Ok(buf)) => ([(header::CONTENT_TYPE, "application/octet-stream")], buf).into_response(),
        Ok(Err(crate::store::StoreError::Missing(_))) => {
            (StatusCode::NOT_FOUND, "chunk not here\n").into_response()
        }
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{e}; retry later\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn authorized(h: &Http, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| blake3::hash(t.as_bytes()) == blake3::hash(h.token.as_bytes()))
    // constant-time comparison
}

async fn admin_status(AxState(h): AxState<Http>, headers: HeaderMap) -> Response {
    if !authorized(&h, &headers) {
        return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
    }
    axum::Json(h.node.status()).into_response()
}

async fn admin_validate(AxState(h): AxState<Http>, headers: HeaderMap) -> Response {
    if !authorized(&h, &headers) {
        return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    node::validate(h.node.clone(), Some(tx)).await;
    match rx.await {
        Ok(r) => axum::Json(r).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "validation did not finish; see the log\n",
        )
            .into_response(),
    }
}

async fn metrics(node: Arc<Node>, served: Arc<crate::metrics::HttpCounters>) -> Response {
    match tokio::task::spawn_blocking(move || crate::metrics::render(&node, &served)).await {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot render the metrics\n",
        )
            .into_response(),
    }
}

/// Runs the DP until SIGINT or SIGTERM.
pub async fn run(dir: PathBuf) -> Result<(), DpError> {
    let cfg = DpConfig::load(&dir).map_err(|e| DpError::Usage(e.to_string()))?;
    let _lock = lock(&dir)?;
    let nofile = sender::socket::raise_open_file_limit();
    let store = Arc::new(
        ContentStore::open(dir.join("content")).map_err(|e| DpError::Failed(e.to_string()))?,
    );
    let leftovers = store.remove_temporaries();
    if leftovers > 0 {
        tracing::info!(
            leftovers,
            "removed half-written chunk files of an earlier run"
        );
    }
    let state = State::load(&dir).map_err(DpError::Failed)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| {
            DpError::Usage(format!(
                "cannot listen on listen = \"{}\" from {}: {e}; pick a free address",
                cfg.listen,
                DpConfig::path(&dir).display()
            ))
        })?;
    let me = sender::tls::TlsIdentity::load(&dir).map_err(|e| DpError::Failed(e.to_string()))?;
    let pins = sender::tls::Pins::new();
    pins.insert(&cfg.site_fingerprint, "site");
    let bind: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let site_addr: std::net::SocketAddr = cfg
        .site
        .parse()
        .map_err(|_| DpError::Usage(format!("site = {:?} is not HOST:PORT", cfg.site)))?;
    let bind = if site_addr.is_ipv6() {
        "[::1]:0".parse().expect("address")
    } else if site_addr.ip().is_loopback() {
        bind
    } else {
        "0.0.0.0:0".parse().expect("address")
    };
    let mut endpoint = sender::socket::endpoint(bind, None)
        .map_err(|e| DpError::Failed(format!("cannot open a QUIC socket: {e}")))?;
    endpoint.set_default_client_config(
        sender::tls::client_config(&me, pins).map_err(|e| DpError::Failed(e.to_string()))?,
    );

    let (node, events, intake_rx, pool_tx) =
        node::new_node(cfg.clone(), dir.clone(), store.clone(), state);
    let swept = node.sweep();
    if swept > 0 {
        tracing::info!(swept, "deleted chunks no held version uses");
    }
    let intake_store = store.clone();
    let intake_events = node.events.clone();
    std::thread::Builder::new()
        .name("dp-intake".into())
        .spawn(move || crate::intake::run(intake_store, intake_rx, pool_tx, intake_events))
        .map_err(|e| DpError::Failed(format!("cannot start the storing thread: {e}")))?;
    tokio::spawn(node::run(node.clone(), events));
    let desk = crate::agents::Desk::open(&dir);
    tokio::spawn(crate::agents::report_refusals(desk.clone(), node.clone()));
    tokio::spawn(crate::site_link::run(
        node.clone(),
        desk.clone(),
        endpoint.clone(),
        site_addr,
    ));
    if let Some(every) = cfg.validate_interval() {
        let n = node.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                t.tick().await;
                tracing::info!("scheduled validation");
                node::validate(n.clone(), None).await;
            }
        });
    }

    let token = random_token()?;
    let addr = listener
        .local_addr()
        .map_err(|e| DpError::Failed(e.to_string()))?;
    // The admin API has a listener of its own, on loopback: the client-facing one is public.
    let admin_bind: std::net::SocketAddr = if addr.is_ipv6() {
        "[::1]:0".parse().expect("address")
    } else {
        "127.0.0.1:0".parse().expect("address")
    };
    let admin_listener = tokio::net::TcpListener::bind(admin_bind)
        .await
        .map_err(|e| DpError::Failed(format!("cannot open the admin listener on loopback: {e}")))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| DpError::Failed(e.to_string()))?;
    write_admin(
        &dir,
        &AdminInfo {
            addr: admin_addr.to_string(),
            token: token.clone(),
            pid: std::process::id(),
        },
    )?;
    let http = Http {
        node: node.clone(),
        token: Arc::new(token),
    };
    let served = Arc::new(crate::metrics::HttpCounters::default());
    let metrics_node = node.clone();
    let metrics_served = served.clone();
    let app = crate::serve::router(store.clone(), node.clone(), cfg.max_downloads)
        .merge(
            Router::new()
                .route("/chunks/{id}", get(chunk))
                .with_state(http.clone()),
        )
        .merge(crate::agents::router(desk))
        .layer(axum::middleware::from_fn_with_state(
            served,
            crate::metrics::count,
        ))
        // Not counted itself; open like the files (it names no secret).
        .route(
            "/metrics",
            get(move || metrics(metrics_node.clone(), metrics_served.clone())),
        );
    let admin_app = Router::new()
        .route("/admin/status", get(admin_status))
        .route("/admin/validate", post(admin_validate))
        .with_state(http);
    let max_connections = cfg
        .max_connections
        .unwrap_or_else(|| crate::listener::max_connections(nofile));
    tracing::info!(dp = %cfg.id, listen = %addr, admin = %admin_addr, site = %site_addr, nofile, max_connections, "distribution point started");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin_task = tokio::spawn(crate::listener::serve(
        admin_listener,
        admin_app,
        64,
        stopped(stop_rx.clone()),
    ));
    tokio::select! {
        _ = crate::listener::serve(listener, app, max_connections, stopped(stop_rx)) => {}
        _ = shutdown_signal() => {}
    }
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    endpoint.close(0u32.into(), b"distribution point stopping");
    let st = node.core.lock().expect("core lock").state.clone();
    if let Err(e) = st.save(&dir) {
        tracing::error!(error = %e, "cannot save the DP's state at shutdown; it is rebuilt from the store at the next start");
    }
    let _ = std::fs::remove_file(dir.join(ADMIN_FILE));
    tracing::info!(dp = %cfg.id, "distribution point stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The running DP's admin file, if it runs.
pub fn admin(dir: &FsPath) -> Option<AdminInfo> {
    let text = std::fs::read_to_string(dir.join(ADMIN_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

async fn admin_call<T: serde::de::DeserializeOwned>(
    a: &AdminInfo,
    post: bool,
    path: &str,
) -> Result<T, DpError> {
    let url = format!("http://{}{path}", a.addr);
    let c = reqwest::Client::new();
    let req = if post { c.post(&url) } else { c.get(&url) };
    let r = req
        .bearer_auth(&a.token)
        .timeout(std::time::Duration::from_secs(3600))
        .send()
        .await
        .map_err(|e| {
            DpError::Failed(format!(
                "cannot reach the running dist-point at {}: {e}",
                a.addr
            ))
        })?;
    if !r.status().is_success() {
        let s = r.status();
        let body = r.text().await.unwrap_or_default();
        return Err(DpError::Failed(format!(
            "the dist-point answered {s}: {}",
            body.trim()
        )));
    }
    r.json()
        .await
        .map_err(|e| DpError::Failed(format!("unexpected answer: {e}")))
}

/// `dist-point status`: from the running DP, else from its state on disk.
pub async fn status(dir: &FsPath) -> Result<StatusView, DpError> {
    let cfg = DpConfig::load(dir).map_err(|e| DpError::Usage(e.to_string()))?;
    if let Some(a) = admin(dir) {
        if let Ok(v) = admin_call::<StatusView>(&a, false, "/admin/status").await {
            return Ok(v);
        }
    }
    let mut st = State::load(dir).map_err(DpError::Failed)?;
    let store =
        ContentStore::open(dir.join("content")).map_err(|e| DpError::Failed(e.to_string()))?;
    st.holdings.reload(&|id| store.has(id));
    Ok(StatusView::of(
        &cfg,
        &st,
        "not running",
        None,
        Default::default(),
    ))
}

/// `dist-point validate`: by the running DP (which re-fetches at once), else offline (the
/// damaged chunks are removed and the messages queued; `run` fetches them again).
pub async fn validate(dir: &FsPath) -> Result<ValidationReport, DpError> {
    let cfg = DpConfig::load(dir).map_err(|e| DpError::Usage(e.to_string()))?;
    if let Some(a) = admin(dir) {
        if lock(dir).is_err() {
            return admin_call(&a, true, "/admin/validate").await;
        }
    }
    let _lock = lock(dir)?;
    let store = Arc::new(
        ContentStore::open(dir.join("content")).map_err(|e| DpError::Failed(e.to_string()))?,
    );
    let (checked, corrupt) = node::scrub(&store).map_err(DpError::Failed)?;
    let state = State::load(dir).map_err(DpError::Failed)?;
    let (n, mut events, _intake, _pool) = node::new_node(cfg, dir.to_path_buf(), store, state);
    let (tx, rx) = tokio::sync::oneshot::channel();
    n.send(node::Event::Validated {
        checked,
        corrupt,
        done: Some(tx),
    });
    let e = events.recv().await.expect("own event");
    n.handle(e, std::time::Instant::now());
    let st = n.core.lock().expect("core lock").state.clone();
    st.save(dir).map_err(DpError::Failed)?;
    rx.await
        .map_err(|_| DpError::Failed("validation did not finish".into()))
}
