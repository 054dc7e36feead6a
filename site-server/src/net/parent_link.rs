//! This site as the child of its parent: dials it, applies its log batch by batch (each batch
//! and its cursor in one transaction), sends its reports up through the sender, and fetches
//! content beside it ([`super::content`]).

use super::{blocking, ReplError, BATCH};
use crate::config::ParentLink;
use crate::db::{parent_applied, parent_reports_acked};
use crate::sansio::links::Role;
use crate::site::Site;
use crate::site::Wake;
use bytes::Bytes;
use chrono::Utc;
use schema::report::ReportEnvelope;
use schema::wire::Frame;
use schema::SiteCode;
use sender::link::{FrameReader, FrameWriter, LinkError};
use sender::scheduler::{JobId, JobKind, Poll, Unit, UnitKey};
use sender::tls::{self};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

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
    let applied = blocking(site, |s| s.db().cursor(&parent_applied())).await?;
    let acked = blocking(site, |s| s.db().cursor(&parent_reports_acked())).await?;
    w.send(&Frame::Hello {
        site: site.cfg().code,
        config_applied: applied,
        reports_acked: acked,
    })
    .await?;
    // Content goes on its own stream, beside this one; the link ends when either does.
    let fetch = crate::net::content::fetch_from_parent(site.clone(), conn.clone(), parent.code);
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
    site.sender(|s| {
        s.on_disconnect(&parent, "reconnected", Instant::now());
        s.on_connect(&parent);
    });
    loop {
        let grew = site.woken(Wake::ReportsGrew);
        let wake = site.woken(Wake::Sender);
        tokio::pin!(grew, wake);
        grew.as_mut().enable();
        wake.as_mut().enable();
        if batch.is_none() {
            batch = queue_reports(site, parent, next_report, &mut encoded).await?;
        }
        let mut sleep = None;
        if let Some((_, last, bytes)) = &batch {
            let poll = site.sender(|s| s.poll(&parent, Instant::now(), Utc::now()));
            match poll {
                Poll::Send { offset, len, .. } => {
                    crate::net::sending::write_slice(w.stream(), &[], bytes, offset, len).await?;
                    site.sender(|s| s.on_written(&parent, len, Instant::now(), Utc::now()));
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
            Err(LinkError::Closed) => return Ok(()),
            f => on_frame(site, parent, w, f?).await?,
        }
    }
}

/// The next batch of reports from `next`, encoded once and queued as a job of this site's
/// sender at the priority of its most severe report; `None` when there is none.
async fn queue_reports(
    site: &Arc<Site>,
    parent: SiteCode,
    next: u64,
    encoded: &mut Vec<u8>,
) -> Result<Option<(JobId, u64, Bytes)>, ReplError> {
    let reports = blocking(site, move |s| s.db().reports(next, BATCH, |_| true)).await?;
    let Some((last, _)) = reports.last() else {
        return Ok(None);
    };
    let (first, last) = (reports[0].0, *last);
    let reports: Vec<ReportEnvelope> = reports.into_iter().map(|(_, r)| r).collect();
    let priority = site.cfg().sender.report_priority(&reports);
    encoded.clear();
    schema::wire::encode_frame(&Frame::Reports { first, reports }, encoded)
        .map_err(|e| ReplError::Link(LinkError::Frame(e)))?;
    let bytes = Bytes::copy_from_slice(encoded);
    let len = bytes.len() as u64;
    let job = site.sender(|s| {
        let job = s.job(parent, JobKind::Reports, priority);
        let unit = Unit {
            key: UnitKey::Batch(first),
            len,
        };
        s.push(job, unit, Instant::now());
        job
    });
    Ok(Some((job, last, bytes)))
}

/// What the parent sent on the control stream: a batch of its log (applied with its cursor,
/// then acknowledged), this link's policy, an acknowledgement of reports, or a refusal.
async fn on_frame(
    site: &Arc<Site>,
    parent: SiteCode,
    w: &mut FrameWriter,
    frame: Frame,
) -> Result<(), ReplError> {
    match frame {
        Frame::Events { first, events } => {
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
            // Each origin's newest event in the batch: what the log line names (an operator, or
            // `bench tree`, reads when an event arrived where).
            let mut newest: std::collections::BTreeMap<SiteCode, u64> = Default::default();
            for e in &events {
                let n = newest.entry(e.origin).or_default();
                *n = (*n).max(e.origin_seq);
            }
            let o = blocking(site, move |s| s.apply_parent_events(first, &events)).await?;
            if o.applied > 0 {
                let newest: Vec<String> = newest.iter().map(|(o, n)| format!("{o}:{n}")).collect();
                tracing::info!(applied = o.applied, upto = o.cursor, newest = %newest.join(","), "applied the parent's events");
                site.after_parent_events(&sender_events);
                site.wake(Wake::LogGrew);
            }
            w.send(&Frame::EventsAck { upto: o.cursor }).await?;
        }
        Frame::LinkPolicy { schedule, rate } => {
            match sender::scheduler::LinkPolicy::parse(&schedule, &rate) {
                Ok(p) => {
                    tracing::info!(%schedule, %rate, "the parent set this link's schedule and rate");
                    site.sender(|s| s.set_policy(parent, p));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the parent's link policy does not parse; keeping the last one")
                }
            }
        }
        Frame::ReportsAck { upto } => {
            blocking(site, move |s| {
                let len = s.db().counts()?.reports;
                s.db().set_cursor(&parent_reports_acked(), upto.min(len))
            })
            .await?;
        }
        Frame::Refused { reason } => {
            return Err(ReplError::Protocol(format!(
                "parent refused the link: {reason}"
            )))
        }
        other => tracing::debug!(frame = ?other, "ignored"),
    }
    Ok(())
}
