//! Replication over QUIC: a site streams its config log down to its children and its report
//! log up to its parent; content travels beside them on a second stream ([`crate::content`]).
//!
//! The control stream is the first bidirectional stream of a connection. The child opens it and says `Hello` with the last
//! parent position it applied; the parent streams `Events` from the next position on, in
//! batches, and keeps streaming as its log grows; the child applies each batch and its cursor
//! in one transaction ([`Db::apply_parent_batch`](crate::db::Db::apply_parent_batch)) and
//! answers `EventsAck`. A reconnect resumes from the child's cursor; a resend is skipped; so
//! each event is applied once, in order, whatever breaks in between. Reports go the other way
//! on the same stream (`Reports` / `ReportsAck`), with the parent keeping a cursor per child.

use crate::config::ParentLink;
use crate::db::{PARENT_APPLIED, PARENT_REPORTS_ACKED};
use crate::links::Role;
use crate::sending::Input;
use crate::site::Site;
use chrono::Utc;
use schema::report::Attribute;
use schema::wire::Frame;
use sender::link::{FrameReader, FrameWriter, LinkError};
use sender::tls::{self, Pins};
use std::sync::Arc;
use std::time::Duration;

/// Events per `Events` frame.
pub(crate) const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Site(String),
}

pub(crate) async fn blocking<T: Send + 'static>(
    site: &Arc<Site>,
    f: impl FnOnce(&Site) -> Result<T, crate::db::DbError> + Send + 'static,
) -> Result<T, ReplError> {
    let site = site.clone();
    tokio::task::spawn_blocking(move || f(&site))
        .await
        .map_err(|e| ReplError::Site(e.to_string()))?
        .map_err(|e| ReplError::Site(e.to_string()))
}

/// Aborts a task when the link that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts children's connections on `endpoint` until it is closed.
pub async fn serve_children(site: Arc<Site>, endpoint: quinn::Endpoint, pins: Arc<Pins>) {
    while let Some(incoming) = endpoint.accept().await {
        let (site, pins) = (site.clone(), pins.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "connection refused");
                    let _ = site.raise(40202, vec![], vec![remote.to_string(), e.to_string()]);
                    return;
                }
            };
            let Some(child) = tls::peer_fingerprint(&conn).and_then(|fp| pins.peer(&fp)) else {
                conn.close(1u32.into(), b"unknown peer");
                return;
            };
            let span = tracing::info_span!("child link", child = %child, %remote);
            let _g = span.enter();
            let r = serve_child(&site, &conn, &child).await;
            let why = match &r {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            if let Ok(code) = schema::SiteCode::new(&child) {
                site.link_update(code, Role::Child, |l| l.on_failure(Utc::now(), why.clone()));
                site.sender.lock().expect("sender lock").on_disconnect(
                    &code,
                    &format!("link to {code} lost: {why}"),
                    std::time::Instant::now(),
                );
                crate::sending::raise_notices(&site);
            }
            tracing::info!(reason = %why, "child link down");
            let _ = site.raise(40201, vec![], vec![child.clone(), why]);
        });
    }
}

async fn serve_child(
    site: &Arc<Site>,
    conn: &quinn::Connection,
    child: &str,
) -> Result<(), ReplError> {
    let child_code =
        schema::SiteCode::new(child).map_err(|e| ReplError::Protocol(e.to_string()))?;
    let (send, recv) = conn.accept_bi().await?;
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    let applied = match r.recv().await? {
        Frame::Hello {
            site: code,
            config_applied,
            ..
        } => {
            if code.as_str() != child {
                let reason = format!(
                    "certificate pinned for {child} but the peer says it is {code}: fix the child's code or its pin"
                );
                let _ = w
                    .send(&Frame::Refused {
                        reason: reason.clone(),
                    })
                    .await;
                let _ = site.raise(
                    40202,
                    vec![Attribute::DestinationSite(code)],
                    vec![conn.remote_address().to_string(), reason.clone()],
                );
                conn.close(2u32.into(), b"wrong site code");
                return Err(ReplError::Protocol(reason));
            }
            config_applied
        }
        other => {
            return Err(ReplError::Protocol(format!(
                "expected Hello, got {other:?}"
            )))
        }
    };
    site.link_update(child_code, Role::Child, |l| l.on_connected(Utc::now()));
    site.sender
        .lock()
        .expect("sender lock")
        .on_connect(&child_code);
    let _ = site.raise(40200, vec![], vec![child.to_string(), applied.to_string()]);
    let (input_tx, inputs) = tokio::sync::mpsc::unbounded_channel::<Input>();
    // Further streams the child opens are content streams: their requests go to the sender.
    let content_conn = conn.clone();
    let content_tx = input_tx.clone();
    let content = tokio::spawn(async move {
        while let Ok((send, recv)) = content_conn.accept_bi().await {
            if content_tx.send(Input::ContentStream(send)).is_err() {
                return;
            }
            let tx = content_tx.clone();
            tokio::spawn(async move {
                let mut r = FrameReader::new(recv);
                loop {
                    let input = match r.recv().await {
                        Ok(Frame::ChunkRequest { ids }) => Input::Request(ids),
                        Ok(Frame::Need {
                            package,
                            version,
                            ids,
                        }) => Input::Need {
                            package,
                            version,
                            ids,
                        },
                        Ok(other) => {
                            tracing::debug!(frame = ?other, "ignored on the content stream");
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "content stream ended");
                            return;
                        }
                    };
                    if tx.send(input).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let _content = AbortOnDrop(content);
    let ack_key = format!("child:{child}:config_acked").into_bytes();

    // Frames from the child (acks, reports) are read on their own task; what must be
    // answered goes to the sender, the only writer.
    let reader_site = site.clone();
    let reader = tokio::spawn(async move {
        loop {
            match r.recv().await {
                Ok(Frame::EventsAck { upto }) => {
                    let key = ack_key.clone();
                    let _ = blocking(&reader_site, move |s| s.db.set_cursor(&key, upto)).await;
                }
                Ok(Frame::Reports { first, reports }) => {
                    let o = match blocking(&reader_site, move |s| {
                        s.db.apply_child_reports(child_code, first, &reports)
                    })
                    .await
                    {
                        Ok(o) => o,
                        Err(e) => return e,
                    };
                    if o.applied > 0 {
                        reader_site.reports_grew.notify_waiters();
                    }
                    if input_tx
                        .send(Input::Reply(Frame::ReportsAck { upto: o.cursor }))
                        .is_err()
                    {
                        return ReplError::Link(LinkError::Closed);
                    }
                }
                Ok(other) => tracing::debug!(frame = ?other, "ignored"),
                Err(e) => return ReplError::Link(e),
            }
        }
    });
    crate::sending::run(site.clone(), child_code, w, inputs, reader, applied).await
}

/// Follows the parent: dials it, applies its log, reconnects with capped exponential backoff.
pub async fn follow_parent(site: Arc<Site>, endpoint: quinn::Endpoint, parent: ParentLink) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        let why = match run_parent_link(&site, &endpoint, &parent).await {
            Ok(()) => "closed by the parent".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(parent = %parent.code, error = %why, "parent link down");
        site.link_update(parent.code, Role::Parent, |l| l.on_failure(Utc::now(), why));
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn run_parent_link(
    site: &Arc<Site>,
    endpoint: &quinn::Endpoint,
    parent: &ParentLink,
) -> Result<(), ReplError> {
    let addr = tokio::net::lookup_host(&parent.addr)
        .await
        .map_err(|e| ReplError::Protocol(format!("cannot resolve {}: {e}", parent.addr)))?
        .next()
        .ok_or_else(|| ReplError::Protocol(format!("{} resolves to nothing", parent.addr)))?;
    let conn = endpoint.connect(addr, tls::SERVER_NAME)?.await?;
    tracing::info!(parent = %parent.code, %addr, "parent link up");
    site.link_update(parent.code, Role::Parent, |l| l.on_connected(Utc::now()));
    let (send, recv) = conn.open_bi().await?;
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    let applied = blocking(site, |s| s.db.cursor(PARENT_APPLIED)).await?;
    let acked = blocking(site, |s| s.db.cursor(PARENT_REPORTS_ACKED)).await?;
    w.send(&Frame::Hello {
        site: site.cfg.code,
        config_applied: applied,
        reports_acked: acked,
    })
    .await?;
    // Content goes on its own stream, beside this one; the link ends when either does.
    let fetch = crate::content::fetch_from_parent(site.clone(), conn.clone(), parent.code);
    tokio::select! {
        r = control_loop(site, &mut w, &mut r, acked) => r,
        r = fetch => r,
    }
}

/// Events down, reports up, on the control stream of the link to the parent.
async fn control_loop(
    site: &Arc<Site>,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    acked: u64,
) -> Result<(), ReplError> {
    // Reports are sent from the last acknowledged position; the parent skips what it has.
    let mut next_report = acked + 1;
    loop {
        let grew = site.reports_grew.notified();
        tokio::pin!(grew);
        grew.as_mut().enable();
        let batch = blocking(site, move |s| s.db.reports(next_report, BATCH, |_| true)).await?;
        if let Some((last, _)) = batch.last() {
            let first = batch[0].0;
            let last = *last;
            let reports = batch.into_iter().map(|(_, r)| r).collect();
            w.send(&Frame::Reports { first, reports }).await?;
            next_report = last + 1;
            continue;
        }
        let frame = tokio::select! {
            _ = &mut grew => continue,
            f = r.recv() => f,
        };
        match frame {
            Ok(Frame::Events { first, events }) => {
                let sender_events: Vec<schema::event::ConfigEvent> = events
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.body,
                            schema::event::ConfigEvent::SenderBoost { .. }
                                | schema::event::ConfigEvent::PackagePriorityChanged { .. }
                        )
                    })
                    .map(|e| e.body.clone())
                    .collect();
                let o = blocking(site, move |s| s.db.apply_parent_batch(first, &events)).await?;
                if o.applied > 0 {
                    site.after_parent_events(&sender_events);
                    site.log_grew.notify_waiters();
                }
                w.send(&Frame::EventsAck { upto: o.cursor }).await?;
            }
            Ok(Frame::ReportsAck { upto }) => {
                blocking(site, move |s| s.db.set_cursor(PARENT_REPORTS_ACKED, upto)).await?;
            }
            Ok(Frame::Refused { reason }) => {
                return Err(ReplError::Protocol(format!(
                    "parent refused the link: {reason}"
                )))
            }
            Ok(other) => tracing::debug!(frame = ?other, "ignored"),
            Err(LinkError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
