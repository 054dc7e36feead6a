//! The distribution point's link to its site server: pinned QUIC, dialled by the DP, kept up
//! with a backoff.
//!
//! Control stream (the first): the DP says `DpHello`; the site sends `DpAssign` now and on
//! every change; the DP sends its status messages as `DpReports` and the site acknowledges
//! them (`ReportsAck`), so each reaches the site's report log once. Content stream (the
//! second): `ChunkRequest` frames up, chunk replies down, as between sites; every reply goes
//! to the storing thread, which verifies it before anything is stored.

use crate::node::{Event, Node, Received};
use crate::pull::{Outcome, Route};
use schema::wire::{ChunkReply, Frame, CHUNK_HEADER_LEN};
use schema::ChunkId;
use sender::link::{FrameReader, FrameWriter, LinkError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SiteLinkError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("{0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("the site refused this distribution point: {0}")]
    Refused(String),
    #[error("{0}")]
    Protocol(String),
}

/// Keeps the link to the site up until the process ends.
pub(crate) async fn run(
    node: Arc<Node>,
    desk: Arc<crate::agents::Desk>,
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let why = match attach(&node, &desk, &endpoint, addr).await {
            Ok(()) => "closed".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(site = %addr, reason = %why, "site link down");
        desk.link(None);
        node.send(Event::SiteDown(why));
        if started.elapsed() > Duration::from_secs(30) {
            wait = Duration::from_secs(1);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

async fn attach(
    node: &Arc<Node>,
    desk: &Arc<crate::agents::Desk>,
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<(), SiteLinkError> {
    let conn = endpoint
        .connect(addr, sender::tls::SERVER_NAME)?
        .await
        .map_err(|e| match e {
            quinn::ConnectionError::TransportError(t) => SiteLinkError::Protocol(format!(
                "cannot attach to the site at {addr}: {t} (is site_fingerprint in dp.toml the site's, and is this DP added there with `site-server dp add`?)"
            )),
            e => SiteLinkError::Connection(e),
        })?;
    let (send, recv) = conn.open_bi().await?;
    let (mut w, mut r) = (FrameWriter::new(send), FrameReader::new(recv));
    w.send(&Frame::DpHello {
        dp: node.cfg.id.clone(),
    })
    .await?;
    // The first answer says whether the site accepts us.
    match r.recv().await? {
        f @ (Frame::Refused { .. } | Frame::DpAssign { .. }) => from_site(node, desk, f)?,
        other => {
            return Err(SiteLinkError::Protocol(format!(
                "expected the site's assignments, got {other:?}"
            )))
        }
    }
    tracing::info!(site = %addr, "site link up");
    let (csend, crecv) = conn.open_bi().await?;
    let (req_tx, mut req_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<ChunkId>>();
    node.send(Event::SiteUp(req_tx));

    let mut cw = FrameWriter::new(csend);
    let requests = async move {
        while let Some(ids) = req_rx.recv().await {
            cw.send(&Frame::ChunkRequest { ids }).await?;
        }
        Ok::<(), SiteLinkError>(())
    };
    let replies = read_replies(node.clone(), crecv);
    let control_in = async {
        loop {
            from_site(node, desk, r.recv().await?)?;
        }
    };
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    desk.link(Some(up_tx));
    let control_out = async {
        // Messages go once per connection; unacknowledged ones go again after a reconnect.
        let mut sent = 0u64;
        loop {
            let grew = node.outbox_grew.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            let (first, messages) = node.unsent(sent);
            if !messages.is_empty() {
                sent = first + messages.len() as u64 - 1;
                w.send(&Frame::DpReports { first, messages }).await?;
                continue;
            }
            tokio::select! {
                _ = &mut grew => {}
                f = up_rx.recv() => {
                    if let Some(f) = f {
                        w.send(&f).await?;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), SiteLinkError>(())
    };
    tokio::select! {
        r = requests => r,
        r = replies => r,
        r = control_in => r,
        r = control_out => r,
    }
}

/// A frame from the site on the control stream, handed to the node.
fn from_site(node: &Node, desk: &crate::agents::Desk, f: Frame) -> Result<(), SiteLinkError> {
    match f {
        Frame::DpPolicy { events } => desk.policy_from_site(events),
        Frame::DpMachineAck { req, upto, refused } => desk.acked(req, upto, refused),
        Frame::DpAssign {
            site,
            versions,
            sources,
        } => {
            desk.site_is(site);
            node.send(Event::Assigned {
                site,
                versions,
                sources,
            })
        }
        Frame::ReportsAck { upto } => node.send(Event::Acked(upto)),
        Frame::Refused { reason } => return Err(SiteLinkError::Refused(reason)),
        other => tracing::debug!(frame = ?other, "ignored from the site"),
    }
    Ok(())
}

/// Reads chunk replies: files to the storing thread, "missing" to the node.
async fn read_replies(node: Arc<Node>, mut recv: quinn::RecvStream) -> Result<(), SiteLinkError> {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    loop {
        match recv.read_exact(&mut h).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(LinkError::Closed.into()),
            Err(quinn::ReadExactError::ReadError(e)) => return Err(LinkError::Read(e).into()),
        }
        match ChunkReply::decode(&h).map_err(|e| SiteLinkError::Link(LinkError::Frame(e)))? {
            ChunkReply::Chunk { id, len } => {
                let mut file = node
                    .pool
                    .lock()
                    .expect("pool lock")
                    .try_recv()
                    .unwrap_or_default();
                file.resize(len as usize, 0);
                match recv.read_exact(&mut file).await {
                    Ok(()) => {}
                    Err(quinn::ReadExactError::FinishedEarly(n)) => {
                        return Err(SiteLinkError::Protocol(format!(
                            "content stream ended inside chunk {id} ({n} of {len} bytes)"
                        )))
                    }
                    Err(quinn::ReadExactError::ReadError(e)) => {
                        return Err(LinkError::Read(e).into())
                    }
                }
                let sent = node.intake.lock().expect("intake lock").send(Received {
                    id,
                    route: Route::Site,
                    file,
                });
                if sent.is_err() {
                    return Err(SiteLinkError::Protocol("the storing thread stopped".into()));
                }
            }
            ChunkReply::Missing { id } => node.send(Event::Reply {
                id,
                route: Route::Site,
                outcome: Outcome::NotThere,
            }),
        }
    }
}
