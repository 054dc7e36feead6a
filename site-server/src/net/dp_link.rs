//! A site's side of the link to each of its distribution points.
//!
//! A DP dials the site's QUIC endpoint with the certificate pinned by `dp add`. On the
//! control stream it says `DpHello`; the site answers with the DP's assignments
//! ([`Site::dp_assignments`]: the current version of every package targeted at the DP,
//! directly or through a group, once the version is complete in this site's store) and
//! sends them again whenever they change. The DP's status messages come back as `DpReports`
//! and are stored once each as this site's reports, with the DP as the machine. On the
//! content stream the site answers chunk requests from its store; a chunk asked for twice on
//! one connection is verified before it goes again (the DP refused the first copy).

use super::{blocking, ReplError};
use crate::site::Wake;
use schema::status;

use crate::site::Site;
use chrono::Utc;
use schema::report::{Report, StatusMessage};
use schema::wire::{ChunkReply, Frame};
use sender::link::{FrameReader, FrameWriter};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// How often assignments are recomputed even if nothing said the log or the store changed.
const RECHECK: Duration = Duration::from_secs(30);
/// Assignments are recomputed at most this often while content keeps arriving.
const SETTLE: Duration = Duration::from_millis(200);

/// Serves DP `dp` on `conn` until the connection ends.
pub async fn serve_dp(
    site: &Arc<Site>,
    conn: &quinn::Connection,
    dp: &str,
) -> Result<(), ReplError> {
    let (send, recv) = conn.accept_bi().await?;
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    match r.recv().await? {
        Frame::DpHello { dp: said } if said == dp => {}
        Frame::DpHello { dp: said } => {
            let reason = format!(
                "certificate pinned for distribution point {dp} but the peer says it is {said}: fix its id in dp.toml or the pin at the site"
            );
            let _ = w
                .send(&Frame::Refused {
                    reason: reason.clone(),
                })
                .await;
            // Let the DP read why before the connection goes (it hangs up when it has).
            let _ = w.stream().finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(2u32.into(), b"wrong DP id");
            return Err(ReplError::Protocol(reason));
        }
        other => {
            return Err(ReplError::Protocol(format!(
                "expected DpHello, got {other:?}"
            )))
        }
    }
    let first = assignments(site, dp).await?;
    let (versions, sources) = first.clone();
    let held = versions.len();
    w.send(&Frame::DpAssign {
        site: site.cfg().code,
        versions,
        sources,
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

    // Content: every further stream the DP opens carries its chunk requests.
    let content_conn = conn.clone();
    let content_site = site.clone();
    let content = async move {
        while let Ok((send, recv)) = content_conn.accept_bi().await {
            let s = content_site.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_chunks(s, send, recv).await {
                    tracing::debug!(error = %e, "DP content stream ended");
                }
            });
        }
        Ok::<(), ReplError>(())
    };

    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    let writer = async move {
        while let Some(f) = out_rx.recv().await {
            w.send(&f).await?;
        }
        Ok::<(), ReplError>(())
    };
    let reader_site = site.clone();
    let reader_tx = out_tx.clone();
    let dp_name = dp.to_string();
    let reader = async move {
        loop {
            match r.recv().await? {
                Frame::DpReports { first, messages } => {
                    let upto = store_reports(&reader_site, &dp_name, first, messages).await?;
                    let _ = reader_tx.send(Frame::ReportsAck { upto });
                }
                other => tracing::debug!(frame = ?other, "ignored from a DP"),
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), ReplError>(())
    };
    let assign_site = site.clone();
    let dp_id = dp.to_string();
    let assigner = async move {
        let mut last = first;
        let mut log = Box::pin(assign_site.woken(Wake::LogGrew));
        log.as_mut().enable();
        loop {
            let content = assign_site.woken(Wake::ContentGrew);
            tokio::pin!(content);
            content.as_mut().enable();
            tokio::select! {
                _ = &mut log => {
                    log = Box::pin(assign_site.woken(Wake::LogGrew));
                    log.as_mut().enable();
                }
                _ = &mut content => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
            tokio::time::sleep(SETTLE).await;
            let now = assignments(&assign_site, &dp_id).await?;
            if now != last {
                let (versions, sources) = now.clone();
                if out_tx
                    .send(Frame::DpAssign {
                        site: assign_site.cfg().code,
                        versions,
                        sources,
                    })
                    .is_err()
                {
                    return Ok::<(), ReplError>(());
                }
                last = now;
            }
        }
    };
    tokio::select! {
        r = content => r,
        r = writer => r,
        r = reader => r,
        r = assigner => r,
    }
}

type Assignments = (Vec<schema::wire::DpAssignment>, Vec<schema::wire::DpSource>);

async fn assignments(site: &Arc<Site>, dp: &str) -> Result<Assignments, ReplError> {
    let (s, dp) = (site.clone(), dp.to_string());
    Ok(tokio::task::spawn_blocking(move || s.dp_assignments(&dp)).await??)
}

/// Stores a DP's messages as this site's reports; returns the position acknowledged.
async fn store_reports(
    site: &Arc<Site>,
    dp: &str,
    first: u64,
    messages: Vec<schema::wire::DpMessage>,
) -> Result<u64, ReplError> {
    let code = site.cfg().code;
    // One entry per position, so the cursor stays right; an id a DP may not raise is dropped.
    let reports: Vec<Option<Report>> = messages
        .into_iter()
        .map(|m| {
            if !schema::wire::dp_may_raise(m.id) {
                tracing::warn!(
                    dp,
                    id = m.id,
                    "a distribution point sent a message id it may not raise; dropped"
                );
                return None;
            }
            let def = schema::status::lookup(m.id)?;
            Some(Report::Status(StatusMessage {
                id: m.id,
                severity: def.severity,
                component: def.component.to_string(),
                site: code,
                machine: dp.to_string(),
                time: m.time,
                attributes: m.attributes,
                insertion: m.insertion,
            }))
        })
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
                Err(why) => {
                    if let Some(why) = why {
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
                    }
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
