//! The storing thread of a distribution point: every chunk received (from the site or a
//! source DP) is verified (BLAKE3 of its decoded bytes), written to a temporary file, and
//! made durable in batches (one `syncfs`, then renames). What happened goes back to the node
//! as [`Event`]s. A write that fails leaves nothing behind (the batch removes its temporary
//! files), and a full disk is told apart from other failures so that the pull can wait.

use crate::node::{Event, Received};
use crate::pull::{Outcome, Route};
use crate::store::{ContentStore, StoreError};
use schema::ChunkId;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// A batch is made durable when it holds this many bytes, its oldest chunk waited
/// [`COMMIT_AGE`], or nothing arrived for [`COMMIT_IDLE`].
const COMMIT_BYTES: usize = 16 << 20;
const COMMIT_AGE: Duration = Duration::from_millis(20);
const COMMIT_IDLE: Duration = Duration::from_millis(3);

/// A full disk, for the end-to-end test of a DP that runs out of space: with the
/// `fault-injection` feature, while the file named by `DP_FAULT_DISK_FULL` exists, every
/// write fails as a full disk would (ENOSPC).
#[cfg(feature = "fault-injection")]
fn injected_full() -> Option<StoreError> {
    let flag = std::env::var_os("DP_FAULT_DISK_FULL")?;
    std::path::Path::new(&flag)
        .exists()
        .then(|| StoreError::Io {
            path: flag.into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        })
}
#[cfg(not(feature = "fault-injection"))]
fn injected_full() -> Option<StoreError> {
    None
}

fn failed(e: &StoreError) -> Event {
    Event::StoreFailed {
        ids: Vec::new(),
        reason: if e.is_disk_full() {
            format!("the disk is full ({e}); free space and the pull resumes by itself")
        } else {
            e.to_string()
        },
        full: e.is_disk_full(),
    }
}

/// Makes `batch` durable and says so; on failure its temporary files go with it.
fn commit<'s>(
    store: &'s ContentStore,
    batch: &mut crate::store::Batch<'s>,
    routes: &mut HashMap<ChunkId, Route>,
    oldest: &mut Option<Instant>,
    events: &UnboundedSender<Event>,
) {
    *oldest = None;
    if batch.is_empty() {
        return;
    }
    let r = match injected_full() {
        Some(e) => Err(e),
        None => batch.commit(),
    };
    let ev = match r {
        Ok(done) => Event::Stored(
            done.iter()
                .map(|id| (*id, routes.get(id).copied().unwrap_or(Route::Site)))
                .collect(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot store received chunks");
            // Dropping the batch removes its temporary files.
            *batch = store.batch();
            let mut ev = failed(&e);
            if let Event::StoreFailed { ids, .. } = &mut ev {
                *ids = routes.keys().copied().collect();
            }
            ev
        }
    };
    routes.clear();
    let _ = events.send(ev);
}

/// Runs until `rx` is closed (the node is stopping), after committing what it holds.
pub(crate) fn run(
    store: Arc<ContentStore>,
    rx: Receiver<Received>,
    pool: Sender<Vec<u8>>,
    events: UnboundedSender<Event>,
) {
    let mut batch = store.batch();
    let mut routes: HashMap<ChunkId, Route> = HashMap::new();
    let mut oldest: Option<Instant> = None;
    loop {
        let item = if batch.is_empty() {
            rx.recv().ok()
        } else {
            match rx.recv_timeout(COMMIT_IDLE) {
                Ok(x) => Some(x),
                Err(RecvTimeoutError::Timeout) => {
                    commit(&store, &mut batch, &mut routes, &mut oldest, &events);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        let Some(Received { id, route, file }) = item else {
            commit(&store, &mut batch, &mut routes, &mut oldest, &events);
            return;
        };
        let r = match injected_full() {
            Some(e) => Err(e),
            None => batch.put_encoded(&id, &file),
        };
        match r {
            Ok(true) => {
                oldest.get_or_insert_with(Instant::now);
                routes.insert(id, route);
            }
            Ok(false) => {
                if !routes.contains_key(&id) {
                    let _ = events.send(Event::Stored(vec![(id, route)]));
                }
            }
            Err(e @ (StoreError::HashMismatch { .. } | StoreError::BadEncoding { .. })) => {
                tracing::warn!(chunk = %id, ?route, error = %e, "refused a chunk that does not verify");
                let _ = events.send(Event::Reply {
                    id,
                    route,
                    outcome: Outcome::Bad,
                });
            }
            Err(e) => {
                let mut ev = failed(&e);
                if let Event::StoreFailed { ids, .. } = &mut ev {
                    ids.push(id);
                }
                let _ = events.send(ev);
            }
        }
        let _ = pool.send(file);
        if batch.bytes() >= COMMIT_BYTES
            || batch.is_full()
            || oldest.is_some_and(|t| t.elapsed() >= COMMIT_AGE)
        {
            commit(&store, &mut batch, &mut routes, &mut oldest, &events);
        }
    }
}
