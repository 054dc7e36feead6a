//! Replication over QUIC: a site streams its config log down to its children and its report
//! log up to its parent; content travels beside them on a second stream ([`crate::net::content`]).
//!
//! The control stream is the first bidirectional stream of a connection. The child opens it and says `Hello` with the last
//! parent position it applied; the parent streams `Events` from the next position on, in
//! batches, and keeps streaming as its log grows; the child applies each batch and its cursor
//! in one transaction ([`Db::apply_parent_batch`](crate::db::Db::apply_parent_batch)) and
//! answers `EventsAck`. A reconnect resumes from the child's cursor; a resend is skipped; so
//! each event is applied once, in order, whatever breaks in between. Reports go the other way
//! on the same stream (`Reports` / `ReportsAck`), with the parent keeping a cursor per child.
//!
//! The files, one role each: [`accept`] (the listener, dispatch by pin), [`child_link`] (this
//! site as a parent), [`parent_link`] (this site as a child), [`sending`] (what goes down each
//! child link, under the sender's schedule), [`content`] (fetching from the parent, storing,
//! reading for children) and [`dp_link`] (the link to an attached distribution point).
//! Imports flow one way: the files here use this `mod.rs` and [`crate::site`], never the
//! other way round.

mod accept;
mod child_link;
pub mod content;
mod dp_link;
mod parent_link;
mod sending;

pub use accept::serve_children;
pub use content::track_wants;
pub use parent_link::follow_parent;

use crate::site::Site;
use sender::link::LinkError;
use std::sync::Arc;

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
    /// The peer broke the protocol (or named itself wrongly): what it did.
    #[error("{0}")]
    Protocol(String),
    /// The site's database failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// An operation of the site failed.
    #[error(transparent)]
    Op(#[from] crate::site::OpError),
    /// A blocking task panicked or was cancelled.
    #[error("a worker thread failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A thread of the link could not be started.
    #[error("cannot start {what}: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
    /// A thread of the link stopped before the link did.
    #[error("{0} stopped")]
    Stopped(&'static str),
}

pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    site: &Arc<Site>,
    f: impl FnOnce(&Site) -> Result<T, E> + Send + 'static,
) -> Result<T, ReplError>
where
    ReplError: From<E>,
{
    let site = site.clone();
    Ok(tokio::task::spawn_blocking(move || f(&site)).await??)
}
