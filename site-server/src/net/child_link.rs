//! This site as the parent of one child: the control stream (the config log down in
//! batches, acknowledgements and the child's reports up), and the content streams the child
//! opens, whose requests go to [`super::sending`].

use super::{blocking, ReplError};
use crate::net::sending::Input;
use crate::sansio::links::Role;
use crate::site::{Site, Wake};
use chrono::Utc;
use schema::report::Attribute;
use schema::status;
use schema::wire::Frame;
use schema::SiteCode;
use sender::link::{FrameReader, FrameWriter, LinkError};
use std::sync::Arc;
use std::time::Duration;

/// Inputs from a child's readers waiting for its sender, at most.
const INPUTS: usize = 64;

/// Aborts a task when the link that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn serve_child(
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
                site.note(
                    status::CONNECTION_REFUSED,
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
    // A child cannot have applied more than this site's log holds.
    let applied = applied.min(blocking(site, |s| s.db().counts()).await?.config_events);
    site.link_update(child_code, Role::Child, |l| l.on_connected(Utc::now()));
    site.sender(|s| s.on_connect(&child_code));
    site.note(
        status::CHILD_LINK_UP,
        vec![],
        vec![child.to_string(), applied.to_string()],
    );
    // Bounded: a child that sends faster than the sender answers waits (QUIC flow control
    // holds its frames), it does not grow this site's memory.
    let (input_tx, inputs) = tokio::sync::mpsc::channel::<Input>(INPUTS);
    // The next stream the child opens is its content stream: its requests go to the sender.
    // One per connection: a further one is stopped at once.
    let content_conn = conn.clone();
    let content_tx = input_tx.clone();
    let content = tokio::spawn(async move {
        let mut opened = false;
        while let Ok((mut send, mut recv)) = content_conn.accept_bi().await {
            if opened {
                tracing::warn!("the child opened a second content stream; stopped");
                let _ = recv.stop(1u32.into());
                let _ = send.reset(1u32.into());
                continue;
            }
            opened = true;
            if content_tx.send(Input::ContentStream(send)).await.is_err() {
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
                    if tx.send(input).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let _content = AbortOnDrop(content);
    let ack_key = crate::db::child_config_acked(child_code);

    // Frames from the child (acks, reports) are read on their own task; what must be
    // answered goes to the sender, the only writer.
    let reader_site = site.clone();
    let reader = tokio::spawn(async move {
        let mut key_known = false;
        loop {
            match r.recv().await {
                Ok(Frame::EventsAck { upto }) => {
                    // A cursor that cannot be stored ends the link: the child says where it
                    // is when it reconnects, and nothing is lost or applied twice.
                    // Never past what this site's log holds (what could have been sent).
                    let key = ack_key.clone();
                    if let Err(e) = blocking(&reader_site, move |s| {
                        let len = s.db().counts()?.config_events;
                        s.db().set_cursor(&key, upto.min(len))
                    })
                    .await
                    {
                        return e;
                    }
                }
                Ok(Frame::Reports { first, reports }) => {
                    if !key_known {
                        if let Err(e) = child_key_delegated(&reader_site, child_code).await {
                            return e;
                        }
                        key_known = true;
                    }
                    let o = match blocking(&reader_site, move |s| {
                        s.apply_child_reports(child_code, first, &reports)
                    })
                    .await
                    {
                        Ok(o) => o,
                        Err(e) => return e,
                    };
                    if input_tx
                        .send(Input::Reply(Frame::ReportsAck { upto: o.cursor }))
                        .await
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
    crate::net::sending::run(site.clone(), child_code, w, inputs, reader, applied).await
}

/// Waits until this site's log delegates `child`'s key. Until then the sites above could not
/// verify the child's reports (they learn its key from this site's report of that
/// delegation, which must come first in this site's report log), so none is accepted: they
/// wait at the child, nothing is refused or lost. A whole tree starting at once meets this.
async fn child_key_delegated(site: &Arc<Site>, child: SiteCode) -> Result<(), ReplError> {
    let t = std::time::Instant::now();
    let mut warned = false;
    loop {
        let grew = site.woken(Wake::LogGrew);
        if blocking(site, move |s| s.knows_child_key(child)).await? {
            return Ok(());
        }
        if !warned && t.elapsed() > Duration::from_secs(30) {
            tracing::warn!(%child, "the child's reports wait until this site delegates its key (this site's own delegation from its parent has not arrived)");
            warned = true;
        }
        tokio::select! {
            _ = grew => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
