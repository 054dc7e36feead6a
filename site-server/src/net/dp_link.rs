//! A site's side of the link to each of its distribution points.
//!
//! A DP dials the site's QUIC endpoint with the certificate pinned by `dp add`. On the
//! control stream it says `DpHello`; the site answers with the DP's assignments
//! ([`Site::dp_assignments`]: the current version of every package targeted at the DP,
//! directly or through a group, once the version is complete in this site's store) and
//! sends them again whenever they change. The DP's status messages come back as `DpReports`
//! and are stored once each as this site's reports, with the DP as the machine. The site
//! also sends the DP what it serves its agents (`DpPolicy`, [`Site::dp_policy`]) now and on
//! every change; the DP passes on registrations of machines that are not approved
//! (`DpMachineSeen`) and approved machines' signed reports (`DpMachineReports`, answered by
//! `DpMachineAck` once stored). On the
//! content stream the site answers chunk requests from its store; a chunk asked for twice on
//! one connection is verified before it goes again (the DP refused the first copy).

use super::{blocking, ReplError};
use crate::net::content::NotSendable;
use crate::site::Wake;
use schema::status;

use crate::site::Site;
use chrono::Utc;
use schema::event::EventEnvelope;
use schema::report::{Attribute, Report, StatusMessage};
use schema::wire::{ChunkReply, Frame};
use schema::SiteCode;
use sender::link::{FrameReader, FrameWriter};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often assignments are recomputed even if nothing said the log or the store changed.
const RECHECK: Duration = Duration::from_secs(30);
/// Assignments are recomputed at most this often while content keeps arriving.
const SETTLE: Duration = Duration::from_millis(200);

/// Serves DP `dp` on `conn` until the connection ends: the hello, the first assignment,
/// then four tasks until one ends: content streams, the frame writer, the DP's reports, and
/// new assignments as the log or the store changes.
pub async fn serve_dp(
    site: &Arc<Site>,
    conn: &quinn::Connection,
    dp: &str,
) -> Result<(), ReplError> {
    let (send, recv) = conn.accept_bi().await?;
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    hello(conn, &mut w, &mut r, dp).await?;
    let first = assignments(site, dp).await?;
    let (versions, sources) = first.clone();
    let held = versions.len();
    w.send(&Frame::DpAssign {
        site: site.cfg().code,
        versions,
        sources,
    })
    .await?;
    let first_policy = policy(site).await?;
    w.send(&Frame::DpPolicy {
        events: first_policy.clone(),
    })
    .await?;
    site.note(
        status::DP_ATTACHED,
        vec![schema::report::Attribute::DistributionPoint(dp.to_string())],
        vec![
            format!("{}/{dp}", site.cfg().code),
            conn.remote_address().to_string(),
            held.to_string(),
        ],
    );
    // The writer is the only one that sends on the control stream; the others queue frames.
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    tokio::select! {
        r = serve_content_streams(site.clone(), conn.clone()) => r,
        r = write_frames(w, out_rx) => r,
        r = read_reports(site.clone(), r, dp.to_string(), out_tx.clone()) => r,
        r = push_assignments(site.clone(), dp.to_string(), (first, first_policy), out_tx) => r,
    }
}

/// Checks the DP's `DpHello` against the id its certificate is pinned for; a wrong id is
/// told why, given a moment to read it, and refused.
async fn hello(
    conn: &quinn::Connection,
    w: &mut FrameWriter,
    r: &mut FrameReader,
    dp: &str,
) -> Result<(), ReplError> {
    match r.recv().await? {
        Frame::DpHello { dp: said } if said == dp => Ok(()),
        Frame::DpHello { dp: said } => {
            let reason = format!(
                "certificate pinned for distribution point {dp} but the peer says it is {said}: fix its id in dp.toml or the pin at the site"
            );
            // Best effort: the DP is refused whether or not it hears why.
            let _ = w
                .send(&Frame::Refused {
                    reason: reason.clone(),
                })
                .await;
            // Let the DP read why before the connection goes (it hangs up when it has).
            let _ = w.stream().finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(2u32.into(), b"wrong DP id");
            Err(ReplError::Protocol(reason))
        }
        other => Err(ReplError::Protocol(format!(
            "expected DpHello, got {other:?}"
        ))),
    }
}

/// Every further stream the DP opens carries its chunk requests.
async fn serve_content_streams(site: Arc<Site>, conn: quinn::Connection) -> Result<(), ReplError> {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let s = site.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_chunks(s, send, recv).await {
                tracing::debug!(error = %e, "DP content stream ended");
            }
        });
    }
    Ok(())
}

/// Sends what the other tasks queue, in order.
async fn write_frames(
    mut w: FrameWriter,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Frame>,
) -> Result<(), ReplError> {
    while let Some(f) = rx.recv().await {
        w.send(&f).await?;
    }
    Ok(())
}

/// Stores the DP's status messages (once each) and acknowledges them.
async fn read_reports(
    site: Arc<Site>,
    mut r: FrameReader,
    dp: String,
    tx: tokio::sync::mpsc::UnboundedSender<Frame>,
) -> Result<(), ReplError> {
    loop {
        match r.recv().await? {
            Frame::DpReports { first, messages } => {
                let upto = store_reports(&site, &dp, first, messages).await?;
                if tx.send(Frame::ReportsAck { upto }).is_err() {
                    return Ok(());
                }
            }
            Frame::DpMachineSeen {
                name,
                key,
                inventory,
            } => {
                let r = blocking(&site, move |s| s.machine_seen(&name, key, &inventory)).await;
                if let Err(e) = r {
                    tracing::warn!(dp, error = %e, "a machine's registration was not recorded");
                }
            }
            Frame::DpMachineReports {
                req,
                machine,
                reports,
            } => {
                let r = blocking(&site, move |s| s.machine_reports(&machine, &reports)).await;
                let ack = match r {
                    Ok(o) => Frame::DpMachineAck {
                        req,
                        upto: o.upto,
                        refused: o.refused,
                    },
                    Err(e) => Frame::DpMachineAck {
                        req,
                        upto: 0,
                        refused: Some(format!("the site could not store the reports: {e}")),
                    },
                };
                if tx.send(ack).is_err() {
                    return Ok(());
                }
            }
            other => tracing::debug!(frame = ?other, "ignored from a DP"),
        }
    }
}

/// Sends the DP's assignments again whenever they change: looked at when the log grows,
/// when content arrives (at most every `SETTLE`), and every `RECHECK`.
async fn push_assignments(
    site: Arc<Site>,
    dp: String,
    last: (Assignments, Vec<EventEnvelope>),
    tx: tokio::sync::mpsc::UnboundedSender<Frame>,
) -> Result<(), ReplError> {
    let (mut last, mut last_policy) = last;
    let mut log = Box::pin(site.woken(Wake::LogGrew));
    log.as_mut().enable();
    loop {
        let content = site.woken(Wake::ContentGrew);
        tokio::pin!(content);
        content.as_mut().enable();
        tokio::select! {
            _ = &mut log => {
                log = Box::pin(site.woken(Wake::LogGrew));
                log.as_mut().enable();
            }
            _ = &mut content => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
        tokio::time::sleep(SETTLE).await;
        let p = policy(&site).await?;
        if p != last_policy {
            if tx.send(Frame::DpPolicy { events: p.clone() }).is_err() {
                return Ok(());
            }
            last_policy = p;
        }
        let now = assignments(&site, &dp).await?;
        if now != last {
            let (versions, sources) = now.clone();
            let frame = Frame::DpAssign {
                site: site.cfg().code,
                versions,
                sources,
            };
            if tx.send(frame).is_err() {
                return Ok(());
            }
            last = now;
        }
    }
}

/// What the DP serves its agents ([`Site::dp_policy`]).
async fn policy(site: &Arc<Site>) -> Result<Vec<EventEnvelope>, ReplError> {
    let s = site.clone();
    Ok(tokio::task::spawn_blocking(move || s.dp_policy()).await??)
}

type Assignments = (Vec<schema::wire::DpAssignment>, Vec<schema::wire::DpSource>);

async fn assignments(site: &Arc<Site>, dp: &str) -> Result<Assignments, ReplError> {
    let (s, dp) = (site.clone(), dp.to_string());
    Ok(tokio::task::spawn_blocking(move || s.dp_assignments(&dp)).await??)
}

/// A DP's message as this site's report: the site is this one, the machine and the DP it is
/// about are the DP pinned on this link, whatever the message says. An id a DP may not raise
/// is dropped (`None`).
fn dp_report(code: SiteCode, dp: &str, m: schema::wire::DpMessage) -> Option<Report> {
    if !schema::wire::dp_may_raise(m.id) {
        tracing::warn!(
            dp,
            id = m.id,
            "a distribution point sent a message id it may not raise; dropped"
        );
        return None;
    }
    let def = schema::status::lookup(m.id)?;
    let attributes = m
        .attributes
        .into_iter()
        .map(|a| match a {
            Attribute::DistributionPoint(_) => Attribute::DistributionPoint(format!("{code}/{dp}")),
            other => other,
        })
        .collect();
    Some(Report::Status(StatusMessage {
        id: m.id,
        severity: def.severity,
        component: def.component.to_string(),
        site: code,
        machine: dp.to_string(),
        time: m.time,
        attributes,
        insertion: m.insertion,
    }))
}

/// Stores a DP's messages as this site's reports; returns the position acknowledged.
async fn store_reports(
    site: &Arc<Site>,
    dp: &str,
    first: u64,
    messages: Vec<schema::wire::DpMessage>,
) -> Result<u64, ReplError> {
    let code = site.cfg().code;
    // One entry per position, so the cursor stays right.
    let reports: Vec<Option<Report>> = messages
        .into_iter()
        .map(|m| dp_report(code, dp, m))
        .collect();
    let dp = dp.to_string();
    let o = blocking(site, move |s| {
        s.db().apply_dp_reports(&dp, first, &reports, Utc::now())
    })
    .await?;
    if o.applied > 0 {
        site.wake(Wake::ReportsGrew);
    }
    Ok(o.cursor)
}

/// Answers chunk requests on one content stream.
async fn serve_chunks(
    site: Arc<Site>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<(), ReplError> {
    let mut r = FrameReader::new(recv);
    let mut asked: HashSet<schema::ChunkId> = HashSet::new();
    let mut unreadable_noted: HashSet<schema::ChunkId> = HashSet::new();
    let mut buf = Vec::new();
    loop {
        let ids = match r.recv().await? {
            Frame::ChunkRequest { ids } => ids,
            other => {
                tracing::debug!(frame = ?other, "ignored on a DP content stream");
                continue;
            }
        };
        for id in ids {
            let again = !asked.insert(id);
            let s = site.clone();
            let mut b = std::mem::take(&mut buf);
            let (res, b) = tokio::task::spawn_blocking(move || {
                let r = crate::net::content::read_for_child(&s, &id, again, &mut b);
                (r, b)
            })
            .await?;
            buf = b;
            let reply = match res {
                Ok(()) => ChunkReply::Chunk {
                    id,
                    len: buf.len() as u32,
                },
                Err(NotSendable::Absent) => ChunkReply::Missing { id },
                Err(NotSendable::Unreadable(why)) => {
                    // Kept: the DP hears "missing" and asks again after its delay.
                    tracing::error!(chunk = %id, reason = %why, "cannot read a chunk for a DP; kept");
                    if unreadable_noted.insert(id) {
                        site.note(status::CHUNK_UNREADABLE, vec![], vec![id.to_hex(), why]);
                    }
                    ChunkReply::Missing { id }
                }
                Err(NotSendable::Damaged(why)) => {
                    tracing::warn!(chunk = %id, reason = %why, "a chunk asked for by a DP is damaged here");
                    if let Err(e) = site.store().remove(&id) {
                        tracing::error!(chunk = %id, error = %e, "cannot remove a corrupt chunk");
                    }
                    site.note(
                        status::CHUNK_CORRUPT_REMOVED,
                        vec![],
                        vec![id.to_hex(), why],
                    );
                    site.wake(Wake::ContentGrew);
                    ChunkReply::Missing { id }
                }
            };
            send.write_all(&reply.encode())
                .await
                .map_err(|e| ReplError::Protocol(e.to_string()))?;
            if let ChunkReply::Chunk { .. } = reply {
                send.write_all(&buf)
                    .await
                    .map_err(|e| ReplError::Protocol(e.to_string()))?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dp_speaks_only_for_itself() {
        let s01 = SiteCode::new("S01").unwrap();
        let msg = |id: u32, dp: &str| schema::wire::DpMessage {
            id,
            time: Utc::now(),
            attributes: vec![
                Attribute::SourceVersion(1),
                Attribute::DistributionPoint(dp.into()),
            ],
            insertion: vec![],
        };
        // DP1 claims DP2 (and a DP of another site) installed something: it is DP1's word.
        for claimed in ["S01/DP2", "CEN/DP9"] {
            let Some(Report::Status(m)) = dp_report(s01, "DP1", msg(2330, claimed)) else {
                panic!("2330 is a DP's to raise");
            };
            assert_eq!((m.site, m.machine.as_str()), (s01, "DP1"));
            assert_eq!(
                m.attributes,
                [
                    Attribute::SourceVersion(1),
                    Attribute::DistributionPoint("S01/DP1".into())
                ]
            );
        }
        // An id a DP may not raise (a site's link message) is dropped.
        assert!(dp_report(s01, "DP1", msg(40202, "S01/DP1")).is_none());
    }
}
