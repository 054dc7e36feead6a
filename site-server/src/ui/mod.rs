//! The operator's console: a read-only web view of this site and its subtree (hierarchy,
//! content, senders, advertisements, messages), live through server-sent events, and
//! `/metrics` for Prometheus. Served on `[ui] listen` (loopback unless the operator says
//! otherwise, and then over TLS only).
//!
//! Entry points: [`serve`] (the daemon starts it), [`viewer_token`] (`site-server ui token`).
//!
//! Who may look: every request first passes the Host and Origin checks ([`guard`]); then a
//! page needs the session cookie that `/login` sets for the viewer token or the admin token,
//! and `/metrics` that cookie or the token as a bearer. Nothing here writes to the site:
//! there is no form but the sign-in.

mod guard;
mod metrics;
mod pages;
mod sampler;
mod tls;

use crate::config::DataDir;
use crate::sansio::rollups::MessageQuery;
use crate::site::{OpError, Site};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
pub(crate) use guard::constant_time_eq;
use guard::Tokens;
use maud::Markup;
use pages::Page;
use std::sync::Arc;

/// How often a live page is looked at again (it is pushed only when it changed).
const LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Live pages open at once; more are refused (503) until one closes.
const LIVE_STREAMS: usize = 64;
/// Connections a plain-HTTP console serves at once (more get a 503).
const CONNECTIONS: usize = 256;
/// Messages a console page shows unless asked otherwise.
const CONSOLE_PAGE: usize = 200;

/// Reads the viewer token (empty if there is none yet or it cannot be read: viewers cannot
/// sign in then, the admin token still works).
fn read_viewer_token(dir: &DataDir) -> String {
    std::fs::read_to_string(dir.ui_token())
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// The viewer token: the one in the data directory, or a new one written there (mode 0600)
/// when there is none or `new` asks for another (which ends every viewer session).
pub fn viewer_token(dir: &DataDir, new: bool) -> std::io::Result<String> {
    let now = read_viewer_token(dir);
    if !new && now.len() == 64 {
        return Ok(now);
    }
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let token = hex::encode(b);
    crate::config::write_private(&dir.ui_token(), format!("{token}\n").as_bytes())?;
    Ok(token)
}

struct Console {
    site: Arc<Site>,
    dir: DataDir,
    admin_token: String,
    names: Vec<String>,
    secure: bool,
    samples: sampler::Shared,
    streams: Arc<tokio::sync::Semaphore>,
}

impl Console {
    fn tokens(&self) -> Tokens {
        Tokens {
            viewer: read_viewer_token(&self.dir),
            admin: self.admin_token.clone(),
        }
    }

    fn code(&self) -> String {
        self.site.code().to_string()
    }
}

type Shared = Arc<Console>;

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn refused(status: StatusCode, why: &str) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// Host and Origin first, for every request; then the session (or, for `/metrics`, a
/// bearer token).
async fn guard(State(c): State<Shared>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let text = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok());
    if let Err(e) = guard::check_request(text(header::HOST), text(header::ORIGIN), &c.names) {
        tracing::warn!(error = %e, "console request refused");
        return refused(StatusCode::FORBIDDEN, &e.to_string());
    }
    let path = req.uri().path();
    if path == "/login" || path == "/logout" || path.starts_with("/static/") {
        return next.run(req).await;
    }
    let tokens = c.tokens();
    let by_cookie = text(header::COOKIE)
        .and_then(|v| guard::cookie(v, guard::COOKIE))
        .and_then(|v| tokens.check_session(v, now_secs()));
    let by_bearer = (path == "/metrics")
        .then(|| text(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")))
        .flatten()
        .and_then(|t| tokens.role_of(t));
    if by_cookie.or(by_bearer).is_some() {
        return next.run(req).await;
    }
    if path == "/metrics" || path.starts_with("/live/") {
        return refused(
            StatusCode::UNAUTHORIZED,
            "sign in first: the viewer token (site-server ui token) as a bearer token or through /login",
        );
    }
    Redirect::to("/login").into_response()
}

/// Runs a view on a blocking thread.
async fn blocking<T: Send + 'static>(
    c: &Shared,
    f: impl FnOnce(&Console) -> Result<T, OpError> + Send + 'static,
) -> Result<T, Response> {
    let c = c.clone();
    match tokio::task::spawn_blocking(move || f(&c)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "console view failed");
            Err(refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
        }
        Err(e) => Err(refused(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

/// The console's message filters as the form sends them (empty fields included).
#[derive(Debug, Default, serde::Deserialize)]
struct Filters {
    #[serde(default)]
    id: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    component: String,
    #[serde(default)]
    limit: String,
}

impl Filters {
    fn parse(raw: Option<&str>) -> Filters {
        raw.and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default()
    }

    /// The query, or what is wrong with a field.
    fn query(&self) -> Result<MessageQuery, String> {
        let t = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_string);
        let mut q = MessageQuery {
            limit: Some(CONSOLE_PAGE),
            ..Default::default()
        };
        if let Some(id) = t(&self.id) {
            q.id = Some(
                id.parse()
                    .map_err(|_| format!("id {id:?} is not a message id (a number)"))?,
            );
        }
        if let Some(s) = t(&self.site) {
            q.site = Some(
                schema::SiteCode::new(&s.to_ascii_uppercase())
                    .map_err(|e| format!("site {s:?}: {e}"))?,
            );
        }
        if let Some(s) = t(&self.severity) {
            q.severity = Some(match s.as_str() {
                "info" => schema::status::Severity::Info,
                "warning" => schema::status::Severity::Warning,
                "error" => schema::status::Severity::Error,
                _ => return Err(format!("severity {s:?}: use info, warning or error")),
            });
        }
        q.component = t(&self.component);
        if let Some(l) = t(&self.limit) {
            let n: usize = l
                .parse()
                .map_err(|_| format!("rows {l:?} is not a number"))?;
            q.limit = Some(n.clamp(1, 5000));
        }
        Ok(q)
    }
}

/// A page's live part, for `path` (`/hierarchy`, `/site/P01`, ...) and its query.
fn live_part(c: &Console, path: &str, raw: Option<&str>) -> Result<Markup, OpError> {
    let site = &c.site;
    Ok(match Page::from_path(path) {
        Some(Page::Hierarchy) | None => pages::hierarchy(&site.hierarchy()?),
        Some(Page::Content) => pages::content(&site.content()?),
        Some(Page::Senders) => {
            let v = site.senders();
            let rates = c
                .samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rates
                .clone();
            pages::senders(&v, &rates)
        }
        Some(Page::Adverts) => pages::adverts(&site.adverts_view(None, true)?),
        Some(Page::Messages) => match Filters::parse(raw).query() {
            Ok(q) => pages::messages(&site.messages(&q)?),
            Err(e) => maud::html! { p.err #error { (e) } },
        },
        Some(Page::Site) => {
            let code = path.trim_start_matches("/site/").to_ascii_uppercase();
            let h = site.hierarchy()?;
            let row = h.rows.iter().find(|r| r.code.as_str() == code);
            let recent = match schema::SiteCode::new(&code) {
                Ok(s) if row.is_some() => site.messages(&MessageQuery {
                    site: Some(s),
                    limit: Some(50),
                    ..Default::default()
                })?,
                _ => vec![],
            };
            pages::site(row, &code, &recent)
        }
    })
}

async fn page(State(c): State<Shared>, uri: axum::http::Uri, RawQuery(raw): RawQuery) -> Response {
    let path = uri.path().to_string();
    let Some(p) = Page::from_path(&path) else {
        return refused(StatusCode::NOT_FOUND, "no such page");
    };
    let r = blocking(&c, move |c| {
        let live = live_part(c, &path, raw.as_deref())?;
        let (heading, top) = match p {
            Page::Messages => (
                "Messages".to_string(),
                pages::message_filters(&Filters::parse(raw.as_deref()).query().unwrap_or_default()),
            ),
            Page::Site => (
                format!(
                    "Site {}",
                    path.trim_start_matches("/site/").to_ascii_uppercase()
                ),
                maud::html! {},
            ),
            _ => (p.title().to_string(), maud::html! {}),
        };
        Ok(pages::layout(&c.code(), p, &heading, top, live))
    })
    .await;
    match r {
        Ok(m) => Html(m.into_string()).into_response(),
        Err(e) => e,
    }
}

/// `/live/PAGE?QUERY`: the page's live part, pushed whenever it changes.
async fn live(
    State(c): State<Shared>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let Ok(permit) = c.streams.clone().try_acquire_owned() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages open: close some, or reload later",
        );
    };
    let path = format!("/{rest}");
    let state = (c, path, raw, None::<blake3::Hash>, permit, true);
    let stream =
        futures_util::stream::unfold(state, |(c, path, raw, last, permit, first)| async move {
            if !first {
                tokio::time::sleep(LIVE_EVERY).await;
            }
            let mut last = last;
            loop {
                let (p, r) = (path.clone(), raw.clone());
                let html = match blocking(&c, move |c| live_part(c, &p, r.as_deref())).await {
                    Ok(m) => m.into_string(),
                    // The view failed (logged): try again at the next turn.
                    Err(_) => String::new(),
                };
                let h = blake3::hash(html.as_bytes());
                if !html.is_empty() && last != Some(h) {
                    last = Some(h);
                    let ev: Result<Event, std::convert::Infallible> =
                        Ok(Event::default().data(html));
                    return Some((ev, (c, path, raw, last, permit, false)));
                }
                tokio::time::sleep(LIVE_EVERY).await;
            }
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn metrics(State(c): State<Shared>) -> Response {
    match blocking(&c, |c| metrics::render(&c.site, &c.samples)).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, dist_point::metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => e,
    }
}

async fn login_page(State(c): State<Shared>) -> Response {
    Html(pages::login(&c.code(), None).into_string()).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(c): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    let tokens = c.tokens();
    let Some(role) = tokens.role_of(&f.token) else {
        tracing::warn!("console sign-in refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(
                pages::login(
                    &c.code(),
                    Some("Wrong token: use the one `site-server ui token` prints."),
                )
                .into_string(),
            ),
        )
            .into_response();
    };
    tracing::info!(role = ?role, "console sign-in");
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        guard::COOKIE,
        tokens.session(role, now_secs()),
        guard::SESSION_SECS,
        if c.secure { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/hierarchy")).into_response()
}

async fn logout() -> Response {
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        guard::COOKIE
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    let (ty, body) = match name.as_str() {
        "console.css" => ("text/css; charset=utf-8", include_str!("console.css")),
        "console.js" => ("text/javascript; charset=utf-8", include_str!("console.js")),
        _ => return refused(StatusCode::NOT_FOUND, "no such file"),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h: &mut HeaderMap = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it a browser posts the sign-in form with `Origin: null`.
        header::HeaderValue::from_static("same-origin"),
    );
    r
}

fn router(c: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/hierarchy") }))
        .route("/hierarchy", get(page))
        .route("/content", get(page))
        .route("/senders", get(page))
        .route("/adverts", get(page))
        .route("/messages", get(page))
        .route("/site/{code}", get(page))
        .route("/live/{*rest}", get(live))
        .route("/metrics", get(metrics))
        .route("/login", get(login_page).post(login))
        .route("/logout", get(logout))
        .route("/static/{name}", get(asset))
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .layer(middleware::from_fn_with_state(c.clone(), guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(c)
}

/// The bound console, before it serves.
pub struct Bound {
    /// Its URL (`http://127.0.0.1:PORT` or `https://...`).
    pub url: String,
    serve: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

impl Bound {
    /// Serves until `stop` resolves.
    pub async fn run(self) -> std::io::Result<()> {
        self.serve.await
    }
}

/// Binds the console on `[ui] listen` (TLS where the config says so) and starts its
/// sampler. Errors are the operator's to fix (a taken port, a bad certificate).
pub async fn bind(
    site: Arc<Site>,
    dir: DataDir,
    admin_token: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Bound, String> {
    let ui = site.cfg().ui.clone();
    viewer_token(&dir, false).map_err(|e| {
        format!(
            "cannot write the viewer token {}: {e}",
            dir.ui_token().display()
        )
    })?;
    let tcp = tokio::net::TcpListener::bind(ui.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on [ui] listen = \"{}\" from {}: {e}; pick a free address",
                ui.listen,
                dir.config().display()
            )
        })?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    let samples = sampler::Shared::default();
    tokio::spawn(sampler::run(site.clone(), samples.clone()));
    let secure = ui.tls();
    let c = Arc::new(Console {
        site,
        dir: dir.clone(),
        admin_token,
        names: ui.hosts.clone(),
        secure,
        samples,
        streams: Arc::new(tokio::sync::Semaphore::new(LIVE_STREAMS)),
    });
    let app = router(c);
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!(
        "{}://{host}:{}",
        if secure { "https" } else { "http" },
        addr.port()
    );
    let serve: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>> =
        if secure {
            let cfg = tls::server_config(ui.cert.as_deref().zip(ui.key.as_deref()), &dir.root)?;
            let l = tls::TlsListener::new(tcp, cfg).map_err(|e| e.to_string())?;
            Box::pin(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
        } else {
            // The DP's accept loop: a cap on connections, a deadline for headers and for a
            // client that stops reading.
            Box::pin(async move {
                dist_point::listener::serve(tcp, app, CONNECTIONS, stop).await;
                Ok(())
            })
        };
    Ok(Bound { url, serve })
}
