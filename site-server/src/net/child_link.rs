//! This site as the parent of one child: the control stream (the config log down in
//! batches, acknowledgements and the child's reports up), and the content streams the child
//! opens, whose requests go to [`super::sending`].

use super::{blocking, ReplError};
use crate::net::sending::Input;
use crate::sansio::links::Role;
use crate::site::Site;
use chrono::Utc;
use schema::report::Attribute;
use schema::status;
use schema::wire::Frame;
use sender::link::{FrameReader, FrameWriter, LinkError};
use std::sync::Arc;

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
    site.link_update(child_code, Role::Child, |l| l.on_connected(Utc::now()));
    site.sender(|s| s.on_connect(&child_code));
    site.note(
        status::CHILD_LINK_UP,
        vec![],
        vec![child.to_string(), applied.to_string()],
    );
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
    let ack_key = crate::db::child_config_acked(child_code);

    // Frames from the child (acks, reports) are read on their own task; what must be
    // answered goes to the sender, the only writer.
    let reader_site = site.clone();
    let reader = tokio::spawn(async move {
        loop {
            match r.recv().await {
                Ok(Frame::EventsAck { upto }) => {
                    // A cursor that cannot be stored ends the link: the child says where it
                    // is when it reconnects, and nothing is lost or applied twice.
                    let key = ack_key.clone();
                    if let Err(e) =
                        blocking(&reader_site, move |s| s.db().set_cursor(&key, upto)).await
                    {
                        return e;
                    }
                }
                Ok(Frame::Reports { first, reports }) => {
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
