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
use bytes::Bytes;
use chrono::Utc;
use schema::report::Attribute;
use schema::report::ReportEnvelope;
use schema::wire::Frame;
use schema::SiteCode;
use sender::link::{FrameReader, FrameWriter, LinkError};
use sender::scheduler::{JobId, JobKind, Poll, Unit, UnitKey};
use sender::tls::{self, Pins};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

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
            if let Some(dp) = child.strip_prefix("dp:") {
                let span = tracing::info_span!("dp link", dp = %dp, %remote);
                let _g = span.enter();
                let r = crate::dp_link::serve_dp(&site, &conn, dp).await;
                let why = match &r {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::info!(reason = %why, "distribution point link down");
                let _ = site.raise(
                    40206,
                    vec![Attribute::DistributionPoint(dp.to_string())],
                    vec![format!("{}/{dp}", site.cfg.code), why],
                );
                return;
            }
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
        r = control_loop(site, parent.code, &mut w, &mut r, acked) => r,
        r = fetch => r,
    }
}

/// Events down, reports up, on the control stream of the link to the parent.
async fn control_loop(
    site: &Arc<Site>,
    parent: SiteCode,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    acked: u64,
) -> Result<(), ReplError> {
    // Reports are sent from the last acknowledged position; the parent skips what it has.
    // They go through this site's sender like anything else on a link: a batch is a job at
    // the priority of its most severe report, under the schedule and rate the parent set.
    let mut next_report = acked + 1;
    let mut batch: Option<(JobId, u64, Bytes)> = None;
    let mut encoded = Vec::new();
    {
        let mut s = site.sender.lock().expect("sender lock");
        s.on_disconnect(&parent, "reconnected", Instant::now());
        s.on_connect(&parent);
    }
    loop {
        let grew = site.reports_grew.notified();
        let wake = site.sender_wake.notified();
        tokio::pin!(grew, wake);
        grew.as_mut().enable();
        wake.as_mut().enable();
        if batch.is_none() {
            let reports =
                blocking(site, move |s| s.db.reports(next_report, BATCH, |_| true)).await?;
            if let Some((last, _)) = reports.last() {
                let (first, last) = (reports[0].0, *last);
                let reports: Vec<ReportEnvelope> = reports.into_iter().map(|(_, r)| r).collect();
                let priority = site.cfg.sender.report_priority(&reports);
                encoded.clear();
                schema::wire::encode_frame(&Frame::Reports { first, reports }, &mut encoded)
                    .map_err(|e| ReplError::Link(LinkError::Frame(e)))?;
                let bytes = Bytes::copy_from_slice(&encoded);
                let mut s = site.sender.lock().expect("sender lock");
                let job = s.job(parent, JobKind::Reports, priority);
                let len = bytes.len() as u64;
                s.push(
                    job,
                    Unit {
                        key: UnitKey::Batch(first),
                        len,
                    },
                    Instant::now(),
                );
                batch = Some((job, last, bytes));
            }
        }
        let mut sleep = None;
        if let Some((_, last, bytes)) = &batch {
            let poll =
                site.sender
                    .lock()
                    .expect("sender lock")
                    .poll(&parent, Instant::now(), Utc::now());
            match poll {
                Poll::Send { offset, len, .. } => {
                    crate::sending::write_slice(w.stream(), &[], bytes, offset, len).await?;
                    site.sender.lock().expect("sender lock").on_written(
                        &parent,
                        len,
                        Instant::now(),
                        Utc::now(),
                    );
                    if offset + len == bytes.len() as u64 {
                        next_report = last + 1;
                        batch = None;
                    }
                    continue;
                }
                Poll::Until(t) => sleep = Some(tokio::time::Instant::from_std(t)),
                Poll::Idle => {}
            }
        }
        let until = sleep.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(30));
        let frame = tokio::select! {
            _ = &mut grew => continue,
            _ = &mut wake => continue,
            _ = tokio::time::sleep_until(until) => continue,
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
                let o = blocking(site, move |s| s.apply_parent_events(first, &events)).await?;
                if o.applied > 0 {
                    site.after_parent_events(&sender_events);
                    site.log_grew.notify_waiters();
                }
                w.send(&Frame::EventsAck { upto: o.cursor }).await?;
            }
            Ok(Frame::LinkPolicy { schedule, rate }) => {
                match sender::scheduler::LinkPolicy::parse(&schedule, &rate) {
                    Ok(p) => {
                        tracing::info!(%schedule, %rate, "the parent set this link's schedule and rate");
                        site.sender
                            .lock()
                            .expect("sender lock")
                            .set_policy(parent, p);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the parent's link policy does not parse; keeping the last one")
                    }
                }
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
