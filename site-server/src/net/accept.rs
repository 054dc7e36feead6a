//! The listener: accepts every connection on the site's QUIC endpoint and dispatches it by
//! the certificate it pinned: a child site goes to [`super::child_link`], a distribution
//! point to [`super::dp_link`]; anything else is closed.
//!
//! What it owns:
//! - the refusal counts ([`Refusals`], behind a std mutex that nothing else locks): a failed
//!   handshake is counted per peer address and reported (40202) at most once per address
//!   per interval, with the count, from a blocking thread, never from the runtime;
//! - address validation: while handshakes pile up or refusals are being counted, a peer
//!   whose address is not validated yet is sent a QUIC retry first, so a spoofed source
//!   costs nothing but a packet;
//! - one live connection per peer ([`Sessions`]): a newer connection from the same child or
//!   DP closes the older one and waits until its task has finished (and cleaned up its
//!   sender state) before it is served.

use crate::sansio::links::Role;
use crate::sansio::refusals::{self, Refusals};
use crate::site::Site;
use chrono::Utc;
use schema::report::Attribute;
use schema::status;
use sender::tls::{self, Pins};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Summary = refusals::Summary<std::net::IpAddr>;

/// Handshakes in progress beyond which unvalidated peers get a QUIC retry first.
const HANDSHAKES_BEFORE_RETRY: usize = 32;

/// Held by the task serving a peer for as long as it runs.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// The task serving each peer (by its pin name), and its connection.
#[derive(Default)]
struct Sessions {
    /// Written when a peer's connection is accepted; the gate is held by the task serving
    /// that peer for as long as it runs. Lock order: this mutex alone, never across `.await`.
    by_peer: Mutex<HashMap<String, (Gate, quinn::Connection)>>,
}

impl Sessions {
    /// Makes `conn` the peer's connection; returns the gate to hold while serving it and the
    /// connection it replaces.
    fn enter(&self, peer: &str, conn: &quinn::Connection) -> (Gate, Option<quinn::Connection>) {
        let mut m = self.by_peer.lock().expect("sessions lock");
        let gate = m.get(peer).map(|(g, _)| g.clone()).unwrap_or_default();
        let old = m.insert(peer.to_string(), (gate.clone(), conn.clone()));
        (gate, old.map(|(_, c)| c))
    }

    /// Whether `conn` is still the peer's connection (a newer one did not replace it).
    fn is_current(&self, peer: &str, conn: &quinn::Connection) -> bool {
        self.by_peer
            .lock()
            .expect("sessions lock")
            .get(peer)
            .is_some_and(|(_, c)| c.stable_id() == conn.stable_id())
    }
}

/// Raises a status message from a blocking thread (a report append syncs to disk).
fn note_off_runtime(site: &Arc<Site>, id: u32, attributes: Vec<Attribute>, insertion: Vec<String>) {
    let site = site.clone();
    tokio::task::spawn_blocking(move || site.note(id, attributes, insertion));
}

/// Raises 40202 for a summary of refusals.
fn say_refused(site: &Arc<Site>, s: Summary) {
    let who = s
        .peer
        .map_or("other addresses".to_string(), |p| p.to_string());
    let what = if s.count == 1 {
        s.reason
    } else {
        format!(
            "{} connections refused in the last {} s, the last: {}",
            s.count,
            refusals::INTERVAL.as_secs(),
            s.reason
        )
    };
    note_off_runtime(site, status::CONNECTION_REFUSED, vec![], vec![who, what]);
}

/// Accepts children's connections on `endpoint` until it is closed.
pub async fn serve_children(site: Arc<Site>, endpoint: quinn::Endpoint, pins: Arc<Pins>) {
    let refusals = Arc::new(Mutex::new(Refusals::<std::net::IpAddr>::default()));
    let sessions = Arc::new(Sessions::default());
    let handshakes = Arc::new(AtomicUsize::new(0));
    // Reports the counts of intervals that are over.
    let flusher = {
        let (site, refusals) = (site.clone(), refusals.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(refusals::INTERVAL / 4);
            loop {
                tick.tick().await;
                let due = refusals
                    .lock()
                    .expect("refusals lock")
                    .flush(Instant::now());
                for s in due {
                    say_refused(&site, s);
                }
            }
        })
    };
    while let Some(incoming) = endpoint.accept().await {
        let busy = handshakes.load(Ordering::Relaxed) >= HANDSHAKES_BEFORE_RETRY
            || refusals.lock().expect("refusals lock").pending() > 0;
        if busy && !incoming.remote_address_validated() && incoming.may_retry() {
            if let Err(e) = incoming.retry() {
                tracing::debug!(error = %e, "cannot send a QUIC retry");
            }
            continue;
        }
        let (site, pins) = (site.clone(), pins.clone());
        let (refusals, sessions, handshakes) =
            (refusals.clone(), sessions.clone(), handshakes.clone());
        handshakes.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let shaken = incoming.await;
            handshakes.fetch_sub(1, Ordering::Relaxed);
            let conn = match shaken {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "connection refused");
                    let now = Instant::now();
                    let say = refusals.lock().expect("refusals lock").on_refusal(
                        remote.ip(),
                        &e.to_string(),
                        now,
                    );
                    if let Some(s) = say {
                        tracing::warn!(%remote, error = %e, "connection refused");
                        say_refused(&site, s);
                    }
                    return;
                }
            };
            let Some(child) = tls::peer_fingerprint(&conn).and_then(|fp| pins.peer(&fp)) else {
                conn.close(1u32.into(), b"unknown peer");
                return;
            };
            // One live connection per peer: the newer replaces the older, which finishes
            // (and cleans up) before this one starts.
            let (gate, older) = sessions.enter(&child, &conn);
            if let Some(older) = older {
                tracing::info!(peer = %child, %remote, "a newer connection from the same peer replaces the older one");
                older.close(
                    3u32.into(),
                    b"replaced by a newer connection from the same peer",
                );
            }
            let _turn = gate.lock().await;
            if !sessions.is_current(&child, &conn) {
                return; // replaced again while it waited
            }
            if let Some(dp) = child.strip_prefix("dp:") {
                let span = tracing::info_span!("dp link", dp = %dp, %remote);
                let _g = span.enter();
                let r = crate::net::dp_link::serve_dp(&site, &conn, dp).await;
                let why = match &r {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::info!(reason = %why, "distribution point link down");
                site.note(
                    status::DP_DETACHED,
                    vec![Attribute::DistributionPoint(dp.to_string())],
                    vec![format!("{}/{dp}", site.cfg().code), why],
                );
                return;
            }
            let span = tracing::info_span!("child link", child = %child, %remote);
            let _g = span.enter();
            let r = super::child_link::serve_child(&site, &conn, &child).await;
            let why = match &r {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            if let Ok(code) = schema::SiteCode::new(&child) {
                site.link_update(code, Role::Child, |l| l.on_failure(Utc::now(), why.clone()));
                site.sender(|s| {
                    s.on_disconnect(
                        &code,
                        &format!("link to {code} lost: {why}"),
                        std::time::Instant::now(),
                    )
                });
                crate::net::sending::raise_notices(&site);
            }
            tracing::info!(reason = %why, "child link down");
            site.note(status::CHILD_LINK_DOWN, vec![], vec![child.clone(), why]);
        });
    }
    flusher.abort();
}
