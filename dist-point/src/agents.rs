//! The distribution point's desk for agents: it serves the policy its site sent
//! (`GET /agent/policy`, answered 304 when the agent's copy is current), takes registrations
//! (`POST /agent/register`) and approved machines' reports (`POST /agent/reports`, answered
//! once the site has stored them). Every request is signed by the machine's key
//! ([`schema::machine::authorization`]); a request from a machine that is not approved at
//! this DP's site, signed by another key, or out of time is refused with 403 and counted,
//! and the count goes to the site once a minute as one message (40512).
//!
//! # Shared state
//!
//! One `Desk` per DP process (`Arc<Desk>`), written by the site link (the policy, the acks)
//! and read by the HTTP handlers. Each field is behind its own `std` mutex, taken alone for
//! a copy or a swap (never across an await): **lock order: none**.

use crate::node::Node;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use schema::event::{ConfigEvent, EventEnvelope, Policy};
use schema::machine::{self, RegisterRequest, Registration, ReportsStored, SignedMachineReport};
use schema::trust::PublicKey;
use schema::wire::Frame;
use schema::SiteCode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file the last policy is kept in, so the DP serves it while its site is away.
pub const POLICY_FILE: &str = "policy.bin";
/// The largest request body an agent may send (a registration or a batch of reports).
pub const MAX_BODY: usize = 1 << 20;
/// The most reports in one request.
pub const MAX_REPORTS: usize = machine::MAX_REPORTS_PER_REQUEST;
/// How long a report request waits for the site to store them.
const ACK_WAIT: Duration = Duration::from_secs(15);

/// Where the site's answer to one report request goes: the last number stored, and why
/// it stored no further.
type AckTx = tokio::sync::oneshot::Sender<(u64, Option<String>)>;

/// The policy as served: its encoded bytes, their tag, and the approved keys.
#[derive(Default)]
struct Served {
    site: Option<SiteCode>,
    /// Shared by every answer (a clone is a reference count, not a copy).
    bytes: Bytes,
    etag: String,
    approved: HashMap<String, PublicKey>,
}

/// See the module doc.
pub struct Desk {
    served: Mutex<Arc<Served>>,
    /// The site link's queue for frames to the site; `None` while the link is down.
    up: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Frame>>>,
    /// Report requests waiting for the site's ack, by request number.
    waiting: Mutex<HashMap<u64, AckTx>>,
    next_req: AtomicU64,
    /// Requests refused since the last 40512, and the last reason.
    refused: Mutex<(u64, String)>,
    /// The site, as its assignments say.
    site: Mutex<Option<SiteCode>>,
    dir: PathBuf,
}

impl Desk {
    /// The desk of the DP in `dir`, with the policy it kept (if any).
    pub fn open(dir: &Path) -> Arc<Desk> {
        let d = Desk {
            served: Mutex::new(Arc::new(Served::default())),
            up: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            refused: Mutex::new((0, String::new())),
            site: Mutex::new(None),
            dir: dir.to_path_buf(),
        };
        match std::fs::read(dir.join(POLICY_FILE)) {
            Ok(b) => match schema::encoding::decode::<Policy>(&b) {
                Ok(p) => {
                    *d.site.lock().expect("desk lock") = p.site;
                    d.install(&p)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the kept agent policy does not decode; waiting for the site's")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the kept agent policy; waiting for the site's")
            }
        }
        Arc::new(d)
    }

    /// Serves `p`: the approvals stay here, the rest (what agents act on) is served.
    fn install(&self, p: &Policy) {
        let mut approved = HashMap::new();
        for e in &p.events {
            if let ConfigEvent::MachineApproved { site, name, key } = &e.body {
                if Some(*site) == p.site {
                    approved.insert(name.to_ascii_lowercase(), *key);
                }
            }
        }
        let served = Policy {
            site: p.site,
            events: p
                .events
                .iter()
                .filter(|e| !matches!(e.body, ConfigEvent::MachineApproved { .. }))
                .cloned()
                .collect(),
        };
        let bytes = match schema::encoding::encode(&served) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the agent policy");
                return;
            }
        };
        let etag = format!("\"{}\"", &blake3::hash(&bytes).to_hex()[..32]);
        *self.served.lock().expect("desk lock") = Arc::new(Served {
            site: p.site,
            bytes: Bytes::from(bytes),
            etag,
            approved,
        });
    }

    /// The site sent a new policy: serve it and keep it (whole, approvals too).
    pub fn policy_from_site(&self, events: Vec<EventEnvelope>) {
        let site = *self.site.lock().expect("desk lock");
        let p = Policy { site, events };
        self.install(&p);
        let bytes = match schema::encoding::encode(&p) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the agent policy");
                return;
            }
        };
        let tmp = self.dir.join("policy.bin.tmp");
        let r = std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(POLICY_FILE)));
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot keep the agent policy on disk; it is served from memory");
        }
    }

    /// The site's code, as its assignments say.
    pub fn site_is(&self, site: SiteCode) {
        *self.site.lock().expect("desk lock") = Some(site);
    }

    /// The site link is up (`Some`: where frames to the site go) or down.
    pub fn link(&self, up: Option<tokio::sync::mpsc::UnboundedSender<Frame>>) {
        let down = up.is_none();
        *self.up.lock().expect("desk lock") = up;
        if down {
            // Whoever waits will not hear: tell them now.
            self.waiting.lock().expect("desk lock").clear();
        }
    }

    /// The site's answer to a report request.
    pub fn acked(&self, req: u64, upto: u64, refused: Option<String>) {
        if let Some(tx) = self.waiting.lock().expect("desk lock").remove(&req) {
            let _ = tx.send((upto, refused));
        }
    }

    fn to_site(&self, f: Frame) -> bool {
        self.up
            .lock()
            .expect("desk lock")
            .as_ref()
            .is_some_and(|tx| tx.send(f).is_ok())
    }

    fn refuse(&self, why: String) -> Response {
        tracing::info!(why = %why, "agent request refused");
        {
            let mut r = self.refused.lock().expect("desk lock");
            r.0 += 1;
            r.1 = why.clone();
        }
        (StatusCode::FORBIDDEN, why + "\n").into_response()
    }

    /// Checks a request's signature: the machine named, its time and the key it must be
    /// signed with (`key`, or the approved one).
    fn check(
        &self,
        served: &Served,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        key: Option<PublicKey>,
    ) -> Result<(String, PublicKey), String> {
        let h = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or("the request is not signed: it has no Authorization header")?;
        let (name, t, sig) = machine::parse_authorization(h)?;
        let now = chrono::Utc::now().timestamp();
        if (now - t).abs() > machine::REQUEST_SKEW_SECS {
            return Err(format!(
                "machine {name}: the request's time is {}s from this distribution point's clock (at most {}s): set the machine's clock",
                now - t,
                machine::REQUEST_SKEW_SECS
            ));
        }
        let approved = served.approved.get(&name.to_ascii_lowercase()).copied();
        let key = match (key, approved) {
            (Some(k), _) => k,
            (None, Some(k)) => k,
            (None, None) => {
                return Err(format!(
                    "machine {name} is not approved at {}: approve it there with `site-server machine approve --name {name} --pubkey KEY`",
                    site_text(served.site)
                ))
            }
        };
        let bytes = machine::request_bytes(method, path, &name, t, body);
        if !schema::trust::verifies(&key, &bytes, &sig) {
            return Err(format!(
                "machine {name}: the request's signature does not verify with {}key {}..",
                if approved == Some(key) {
                    "its approved "
                } else {
                    "the "
                },
                &key.to_string()[..16]
            ));
        }
        Ok((name, key))
    }
}

fn site_text(s: Option<SiteCode>) -> String {
    s.map(|s| s.to_string())
        .unwrap_or_else(|| "this distribution point's site".into())
}

#[derive(Clone)]
struct Ctx {
    desk: Arc<Desk>,
}

/// The agent routes.
pub fn router(desk: Arc<Desk>) -> Router {
    Router::new()
        .route("/agent/policy", get(policy))
        .route("/agent/register", post(register))
        .route("/agent/reports", post(reports))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Ctx { desk })
}

async fn policy(State(c): State<Ctx>, headers: HeaderMap) -> Response {
    let served = c.desk.served.lock().expect("desk lock").clone();
    if let Err(why) = c
        .desk
        .check(&served, "GET", "/agent/policy", &headers, b"", None)
    {
        return c.desk.refuse(why);
    }
    if served.site.is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this distribution point has no policy from its site yet: try again later\n",
        )
            .into_response();
    }
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t == served.etag);
    if current {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, served.etag.clone())],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, served.etag.clone()),
            (header::CONTENT_TYPE, "application/octet-stream".into()),
        ],
        served.bytes.clone(),
    )
        .into_response()
}

fn encoded<T: serde::Serialize>(code: StatusCode, v: &T) -> Response {
    match schema::encoding::encode(v) {
        Ok(b) => (
            code,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            b,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn register(State(c): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let req: RegisterRequest = match schema::encoding::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("registration does not decode: {e}\n"),
            )
                .into_response()
        }
    };
    let served = c.desk.served.lock().expect("desk lock").clone();
    let (name, key) = match c.desk.check(
        &served,
        "POST",
        "/agent/register",
        &headers,
        &body,
        Some(req.key),
    ) {
        Ok(x) => x,
        Err(why) => return c.desk.refuse(why),
    };
    if served.approved.get(&name.to_ascii_lowercase()) == Some(&key) {
        return encoded(
            StatusCode::OK,
            &Registration {
                approved: true,
                site: served.site,
                message: format!("machine {name} is approved at {}", site_text(served.site)),
            },
        );
    }
    let mut inventory = req.inventory;
    inventory.name = name.clone();
    if let Err(why) = inventory.check() {
        return (StatusCode::BAD_REQUEST, format!("machine {name}: {why}\n")).into_response();
    }
    let told = c.desk.to_site(Frame::DpMachineSeen {
        name: name.clone(),
        key,
        inventory,
    });
    let why = format!(
        "machine {name} is not approved at {} with key {}..: {}approve it there with `site-server machine approve --name {name} --pubkey {key}`",
        site_text(served.site),
        &key.to_string()[..16],
        if told { "" } else { "(the site is not reachable now) " }
    );
    c.desk.refuse(why.clone());
    encoded(
        StatusCode::FORBIDDEN,
        &Registration {
            approved: false,
            site: served.site,
            message: why,
        },
    )
}

async fn reports(State(c): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let served = c.desk.served.lock().expect("desk lock").clone();
    let (name, key) = match c
        .desk
        .check(&served, "POST", "/agent/reports", &headers, &body, None)
    {
        Ok(x) => x,
        Err(why) => return c.desk.refuse(why),
    };
    let reports: Vec<SignedMachineReport> = match schema::encoding::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("reports do not decode: {e}\n"),
            )
                .into_response()
        }
    };
    if reports.len() > MAX_REPORTS {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} reports in one request: send at most {MAX_REPORTS}\n",
                reports.len()
            ),
        )
            .into_response();
    }
    if let Some(bad) = reports.iter().find(|r| !r.verifies(&name, &key)) {
        return c.desk.refuse(format!(
            "machine {name}: report {} is not signed by its approved key",
            bad.report.seq
        ));
    }
    let req = c.desk.next_req.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.desk.waiting.lock().expect("desk lock").insert(req, tx);
    let sent = c.desk.to_site(Frame::DpMachineReports {
        req,
        machine: name.clone(),
        reports,
    });
    let answer = if sent {
        tokio::time::timeout(ACK_WAIT, rx)
            .await
            .ok()
            .and_then(|r| r.ok())
    } else {
        None
    };
    c.desk.waiting.lock().expect("desk lock").remove(&req);
    match answer {
        Some((0, Some(why))) if why.contains("not approved") => c.desk.refuse(why),
        Some((upto, refused)) => {
            if let Some(why) = &refused {
                tracing::info!(machine = %name, why = %why, "reports refused by the site");
            }
            encoded(StatusCode::OK, &ReportsStored { upto, refused })
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the site is not reachable now: the agent keeps its reports and sends them again\n",
        )
            .into_response(),
    }
}

/// Raises 40512 once a minute while requests are refused.
pub async fn report_refusals(desk: Arc<Desk>, node: Arc<Node>) {
    let mut t = tokio::time::interval(Duration::from_secs(60));
    t.tick().await;
    loop {
        t.tick().await;
        let (n, last) = std::mem::take(&mut *desk.refused.lock().expect("desk lock"));
        if n > 0 {
            node.raise_now(
                schema::status::AGENT_REQUESTS_REFUSED,
                vec![],
                vec![node.cfg.id.clone(), n.to_string(), last],
            );
        }
    }
}
