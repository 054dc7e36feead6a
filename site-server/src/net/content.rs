//! Content store-and-forward: the async shells around [`crate::sansio::fetch`].
//!
//! - [`track_wants`] (at every site with a parent) works out which chunks this site must
//!   hold: those of the current version of every package targeted at it or below it that are
//!   not in its store. It feeds them to the fetch plan, says so with 40211, and raises 40210
//!   when a version is complete here.
//! - [`fetch_from_parent`] runs on each connection to the parent: it opens the content
//!   stream, asks for what the plan says, and hands each reply to a storing thread that
//!   verifies it (BLAKE3 of the decoded bytes), writes it to a temporary file, and makes a
//!   batch of them durable with one sync before renaming them into place. A reply that fails
//!   verification is dropped, reported (40203) and asked for again; the link stays up.
//! - [`serve_content`] answers a child's requests on its content stream: a chunk in the store
//!   goes at once (as stored, the child verifies it); a chunk this site does not have yet is
//!   added to its own fetch plan and sent the moment it is durable here. So a middle site
//!   passes each chunk on as soon as it has it (cut-through), not after the whole package.

use super::ReplError;
use crate::site::Wake;
use schema::status;

use crate::site::Site;
use schema::report::Attribute;
use schema::wire::{ChunkReply, Frame, CHUNK_HEADER_LEN};
use schema::{ChunkId, PackageId, SiteCode};
use sender::link::{FrameWriter, LinkError};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch of received chunks is made durable when it holds this many bytes...
const COMMIT_BYTES: usize = 16 << 20;
/// ... or its oldest chunk has waited this long ...
const COMMIT_AGE: Duration = Duration::from_millis(20);
/// ... or nothing more arrived for this long.
const COMMIT_IDLE: Duration = Duration::from_millis(3);
/// How often wants are recomputed even if nothing said the log changed.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

fn now() -> Instant {
    Instant::now()
}

/// Deliberate corruption of outgoing chunks, for the end-to-end test of a peer that sends bad
/// bytes: `SITEREP_FAULT_CORRUPT_SENDS=N` flips a byte in the first N chunks this process
/// sends. Compiled in only with the `fault-injection` feature (the workspace's tests).
#[cfg(feature = "fault-injection")]
pub(crate) fn corrupt_this_send() -> bool {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LEFT: std::sync::OnceLock<AtomicI64> = std::sync::OnceLock::new();
    let left = LEFT.get_or_init(|| {
        AtomicI64::new(
            std::env::var("SITEREP_FAULT_CORRUPT_SENDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    });
    left.fetch_sub(1, Ordering::Relaxed) > 0
}
#[cfg(not(feature = "fault-injection"))]
pub(crate) fn corrupt_this_send() -> bool {
    false
}

/// A full disk, for the end-to-end test of a site that runs out of space: with the
/// `fault-injection` feature, while the file named by `SITEREP_FAULT_DISK_FULL` exists,
/// every chunk this site receives fails to store as on a full disk (ENOSPC).
#[cfg(feature = "fault-injection")]
fn injected_full() -> Option<dist_point::StoreError> {
    let flag = std::env::var_os("SITEREP_FAULT_DISK_FULL")?;
    std::path::Path::new(&flag)
        .exists()
        .then(|| dist_point::StoreError::Io {
            path: flag.into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        })
}
#[cfg(not(feature = "fault-injection"))]
fn injected_full() -> Option<dist_point::StoreError> {
    None
}

/// How long fetching pauses when the disk is full, before it tries again.
pub(crate) const DISK_FULL_RETRY: Duration = Duration::from_secs(10);

/// Whether this process has said its disk is full (40212) and not yet that space is back
/// (40213): written by the storing threads of the parent link, one episode, one message.
static DISK_FULL_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// After a failure to store `ids`: a full disk pauses fetching for [`DISK_FULL_RETRY`] and
/// says so once; either way the ids go back in line.
fn store_failed(site: &Site, parent: SiteCode, ids: &[ChunkId], e: &dist_point::StoreError) {
    let full = e.is_disk_full();
    site.fetch_plan(|p| {
        for id in ids.iter().filter(|id| !site.store().has(id)) {
            p.on_store_failed(id);
        }
        if full {
            p.pause(now() + DISK_FULL_RETRY);
        }
    });
    if full && !DISK_FULL_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(error = %e, "the content store is full; fetching paused");
        site.note(
            status::SITE_DISK_FULL,
            vec![Attribute::DestinationSite(parent)],
            vec![
                e.to_string(),
                parent.to_string(),
                DISK_FULL_RETRY.as_secs().to_string(),
            ],
        );
    } else if !full {
        tracing::error!(error = %e, "cannot store received chunks; asking for them again");
    }
    site.wake(Wake::FetchPlan);
}

/// A batch was stored: if the disk had been full, say that space is back.
fn stored_again(site: &Site, parent: SiteCode) {
    if DISK_FULL_SAID.swap(false, std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("space is back in the content store; fetching resumed");
        site.note(
            status::SITE_DISK_SPACE_BACK,
            vec![Attribute::DestinationSite(parent)],
            vec![parent.to_string()],
        );
    }
}

// ---------------------------------------------------------------------------------------
// What this site wants

struct Tracked {
    package: PackageId,
    version: u32,
    priority: schema::event::Priority,
    remaining: HashSet<ChunkId>,
    chunks: u64,
    bytes: u64,
}

/// Keeps the fetch plan fed with what this site must hold; raises 40211 and 40210.
pub async fn track_wants(site: Arc<Site>, parent: SiteCode) {
    let mut tracked: BTreeMap<(PackageId, u32), Tracked> = BTreeMap::new();
    let mut recompute = true;
    // The log's notification stays registered until it fires: while chunks keep arriving
    // (content wakes this loop many times a second), a change to the log is never missed.
    let mut log = Box::pin(site.woken(Wake::LogGrew));
    log.as_mut().enable();
    loop {
        let content = site.woken(Wake::ContentGrew);
        tokio::pin!(content);
        content.as_mut().enable();
        let s = site.clone();
        let t = std::mem::take(&mut tracked);
        let r = tokio::task::spawn_blocking(move || {
            let mut t = t;
            let r = update_wants(&s, parent, &mut t, recompute);
            (t, r)
        })
        .await;
        match r {
            Ok((t, Ok(()))) => tracked = t,
            Ok((t, Err(e))) => {
                tracked = t;
                tracing::warn!(error = %e, "cannot work out the content this site needs");
            }
            Err(e) => tracing::error!(error = %e, "content tracker panicked"),
        }
        recompute = false;
        tokio::select! {
            biased;
            _ = &mut log => {
                recompute = true;
                log = Box::pin(site.woken(Wake::LogGrew));
                log.as_mut().enable();
            }
            _ = &mut content => {}
            _ = tokio::time::sleep(RECHECK) => recompute = true,
        }
    }
}

fn update_wants(
    site: &Site,
    parent: SiteCode,
    tracked: &mut BTreeMap<(PackageId, u32), Tracked>,
    recompute: bool,
) -> Result<(), crate::site::OpError> {
    if recompute {
        let mut fresh = BTreeMap::new();
        for (p, m, _targets) in site.needed_versions()? {
            let Some(v) = p.current() else { continue };
            let key = (p.id, v.source_version);
            if let Some(mut t) = tracked.remove(&key) {
                if t.priority != p.priority {
                    // The package's priority changed: what is still asked for follows it.
                    t.priority = p.priority;
                    site.fetch_plan(|plan| {
                        for c in m.unique_chunks() {
                            if t.remaining.contains(&c.id) {
                                plan.want_at(c.id, c.len, p.priority);
                            }
                        }
                    });
                }
                fresh.insert(key, t);
                continue;
            }
            let chunks = m.unique_chunks();
            let mut t = Tracked {
                package: p.id,
                version: v.source_version,
                priority: p.priority,
                remaining: HashSet::new(),
                chunks: chunks.len() as u64,
                bytes: chunks.iter().map(|c| c.len as u64).sum(),
            };
            let mut missing_bytes = 0u64;
            site.fetch_plan(|plan| {
                let mut missing = Vec::new();
                for c in &chunks {
                    if !site.store().has(&c.id) {
                        plan.want_at(c.id, c.len, p.priority);
                        t.remaining.insert(c.id);
                        missing.push(c.id);
                        missing_bytes += c.len as u64;
                    }
                }
                if !missing.is_empty() {
                    plan.need(p.id, v.source_version, missing);
                }
            });
            let done_before = site
                .db()
                .cursor(&crate::db::content_complete(&p.id, v.source_version))?
                > 0;
            if !t.remaining.is_empty() {
                site.raise(
                    status::PACKAGE_CONTENT_FETCHING,
                    vec![
                        Attribute::Package(p.id),
                        Attribute::SourceVersion(v.source_version),
                    ],
                    vec![
                        p.id.to_string(),
                        v.source_version.to_string(),
                        parent.to_string(),
                        t.remaining.len().to_string(),
                        t.chunks.to_string(),
                        missing_bytes.to_string(),
                    ],
                )?;
                site.wake(Wake::FetchPlan);
            } else if done_before {
                continue;
            }
            fresh.insert(key, t);
        }
        *tracked = fresh;
    }
    // This runs after every batch stored: ask the plan (a hash lookup) which chunks are
    // still wanted, and the store (a stat each) only once the plan says none is.
    let mut done = Vec::new();
    site.fetch_plan(|plan| {
        for (key, t) in tracked.iter_mut() {
            if t.remaining.iter().all(|id| !plan.is_wanted(id)) {
                t.remaining.retain(|id| !site.store().has(id));
                if t.remaining.is_empty() {
                    done.push(*key);
                }
            }
        }
    });
    for key in done {
        let t = tracked.remove(&key).expect("listed");
        site.fetch_plan(|p| p.forget_need(t.package, t.version));
        let k = crate::db::content_complete(&t.package, t.version);
        if site.db().cursor(&k)? == 0 {
            site.store().sync()?;
            site.db().set_cursor(&k, 1)?;
            site.raise(
                status::PACKAGE_CONTENT_COMPLETE,
                vec![
                    Attribute::Package(t.package),
                    Attribute::SourceVersion(t.version),
                ],
                vec![
                    t.package.to_string(),
                    t.version.to_string(),
                    t.chunks.to_string(),
                    t.bytes.to_string(),
                ],
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fetching from the parent

/// Puts what was in flight back in line when the connection ends, however it ends.
struct DisconnectGuard(Arc<Site>);
impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        self.0.fetch_plan(|p| p.on_disconnect());
    }
}

/// Fetches wanted chunks over `conn` until it fails.
pub async fn fetch_from_parent(
    site: Arc<Site>,
    conn: quinn::Connection,
    parent: SiteCode,
) -> Result<(), ReplError> {
    let (send, recv) = conn.open_bi().await?;
    let _guard = DisconnectGuard(site.clone());
    let mut w = FrameWriter::new(send);
    let (store_tx, store_rx) = std::sync::mpsc::channel::<(ChunkId, Vec<u8>)>();
    let (pool_tx, pool_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let storer_site = site.clone();
    std::thread::Builder::new()
        .name(format!("store-from-{parent}"))
        .spawn(move || store_received(storer_site, parent, store_rx, pool_tx))
        .map_err(|source| ReplError::Thread {
            what: "the storing thread",
            source,
        })?;
    let mut reader = tokio::spawn(read_replies(site.clone(), recv, store_tx, pool_rx));
    loop {
        let wake = site.woken(Wake::FetchPlan);
        tokio::pin!(wake);
        wake.as_mut().enable();
        let (needs, ids, next) = site.fetch_plan(|p| {
            (
                p.take_announcements(),
                p.next_request(now()),
                p.next_wakeup(),
            )
        });
        // The parent's sender hears what each job is before the requests that belong to it.
        for (package, version, ids) in needs {
            w.send(&Frame::Need {
                package,
                version,
                ids,
            })
            .await?;
        }
        if !ids.is_empty() {
            w.send(&Frame::ChunkRequest { ids }).await?;
            continue;
        }
        let sleep = next
            .map(|t| t.saturating_duration_since(now()))
            .unwrap_or(RECHECK);
        tokio::select! {
            _ = &mut wake => {}
            _ = tokio::time::sleep(sleep) => {}
            r = &mut reader => {
                return match r {
                    Ok(r) => r,
                    Err(e) => Err(e.into()),
                };
            }
        }
    }
}

/// Reads chunk replies: bodies go to the storing thread, "missing" to the plan.
async fn read_replies(
    site: Arc<Site>,
    mut recv: quinn::RecvStream,
    store_tx: std::sync::mpsc::Sender<(ChunkId, Vec<u8>)>,
    pool: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), ReplError> {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    loop {
        match recv.read_exact(&mut h).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Err(LinkError::Closed.into()),
            Err(quinn::ReadExactError::FinishedEarly(n)) => {
                return Err(ReplError::Protocol(format!(
                    "content stream ended inside a reply header ({n} bytes)"
                )))
            }
            Err(quinn::ReadExactError::ReadError(e)) => return Err(LinkError::Read(e).into()),
        }
        match ChunkReply::decode(&h).map_err(|e| ReplError::Link(LinkError::Frame(e)))? {
            ChunkReply::Chunk { id, len } => {
                let mut buf = pool.try_recv().unwrap_or_default();
                buf.resize(len as usize, 0);
                match recv.read_exact(&mut buf).await {
                    Ok(()) => {}
                    Err(quinn::ReadExactError::FinishedEarly(n)) => {
                        return Err(ReplError::Protocol(format!(
                            "content stream ended inside chunk {id} ({n} of {len} bytes)"
                        )))
                    }
                    Err(quinn::ReadExactError::ReadError(e)) => {
                        return Err(LinkError::Read(e).into())
                    }
                }
                if store_tx.send((id, buf)).is_err() {
                    return Err(ReplError::Stopped("the storing thread"));
                }
            }
            ChunkReply::Missing { id } => {
                tracing::debug!(chunk = %id, "parent does not have the chunk yet");
                site.fetch_plan(|p| p.on_missing(&id, now()));
                site.wake(Wake::ContentGrew);
                site.wake(Wake::FetchPlan);
            }
        }
    }
}

/// The storing thread: verify, write, commit in batches, tell the plan. Ends when the
/// reader is gone, after committing what it has.
fn store_received(
    site: Arc<Site>,
    parent: SiteCode,
    rx: std::sync::mpsc::Receiver<(ChunkId, Vec<u8>)>,
    pool: std::sync::mpsc::Sender<Vec<u8>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::mpsc::RecvTimeoutError;
    let site = &*site;
    let counters = site.counters().peer(parent.as_str());
    // Making a batch durable (one syncfs) waits for the disk: a committing thread does it,
    // so that this one goes on verifying and writing what keeps arriving.
    std::thread::scope(|scope| {
        let (commit_tx, commit_rx) = std::sync::mpsc::sync_channel::<dist_point::Batch<'_>>(2);
        scope.spawn(move || {
            for mut batch in commit_rx {
                let ids = batch.pending_ids();
                match batch.commit() {
                    Ok(done) => {
                        site.fetch_plan(|p| {
                            for id in &done {
                                p.on_stored(id);
                            }
                        });
                        if !done.is_empty() {
                            stored_again(site, parent);
                        }
                    }
                    Err(e) => store_failed(site, parent, &ids, &e),
                }
                site.wake(Wake::ContentGrew);
                site.wake(Wake::FetchPlan);
            }
        });
        let mut batch = site.store().batch();
        let mut oldest: Option<Instant> = None;
        fn hand_off<'s>(
            batch: &mut dist_point::Batch<'s>,
            store: &'s dist_point::ContentStore,
            oldest: &mut Option<Instant>,
            tx: &std::sync::mpsc::SyncSender<dist_point::Batch<'s>>,
        ) {
            *oldest = None;
            let full = std::mem::replace(batch, store.batch());
            if tx.send(full).is_err() {
                tracing::error!("the committing thread stopped");
            }
        }
        loop {
            let item = if batch.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(COMMIT_IDLE) {
                    Ok(x) => Some(x),
                    Err(RecvTimeoutError::Timeout) => {
                        hand_off(&mut batch, site.store(), &mut oldest, &commit_tx);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            };
            let Some((id, buf)) = item else {
                hand_off(&mut batch, site.store(), &mut oldest, &commit_tx);
                return;
            };
            let put = match injected_full() {
                Some(e) => Err(e),
                None => batch.put_encoded(&id, &buf),
            };
            counters.received_bytes.fetch_add(buf.len() as u64, Relaxed);
            counters.chunks_fetched.fetch_add(1, Relaxed);
            if matches!(put, Ok(true)) {
                counters.chunks_verified.fetch_add(1, Relaxed);
            }
            match put {
                Ok(true) => {
                    oldest.get_or_insert_with(now);
                    site.fetch_plan(|p| p.on_verified(&id));
                    // Its room in the window is free: the next request may go now.
                    site.wake(Wake::FetchPlan);
                }
                Ok(false) => {
                    // Already here (or in this batch): nothing to wait for.
                    site.fetch_plan(|p| p.on_stored(&id));
                }
                Err(
                    e @ (dist_point::StoreError::HashMismatch { .. }
                    | dist_point::StoreError::BadEncoding { .. }),
                ) => {
                    counters.chunks_refused.fetch_add(1, Relaxed);
                    let n = site.fetch_plan(|p| p.on_bad(&id, now()));
                    tracing::warn!(chunk = %id, from = %parent, error = %e, times = n, "refused a corrupt chunk");
                    site.note(
                        status::CHUNK_VERIFICATION_FAILED,
                        vec![Attribute::DestinationSite(parent)],
                        vec![id.to_hex(), parent.to_string(), e.to_string()],
                    );
                    site.wake(Wake::FetchPlan);
                }
                Err(e) => store_failed(site, parent, &[id], &e),
            }
            let _ = pool.send(buf);
            if batch.bytes() >= COMMIT_BYTES
                || batch.is_full()
                || oldest.is_some_and(|t| t.elapsed() >= COMMIT_AGE)
            {
                hand_off(&mut batch, site.store(), &mut oldest, &commit_tx);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Serving a child

/// Why a chunk cannot be sent to a child or a DP.
pub(crate) enum NotSendable {
    /// Not in the store.
    Absent,
    /// The stored bytes are damaged (they do not decode or hash to their name): remove it.
    Damaged(String),
    /// It could not be read (an I/O error, no file descriptor left): keep it, say it is
    /// missing for now (the peer asks again later), never take it for damage.
    Unreadable(String),
}

/// Reads the chunk file to send; when `verify`, checks it first (a child refused the last
/// copy).
pub(crate) fn read_for_child(
    site: &Site,
    id: &ChunkId,
    verify: bool,
    buf: &mut Vec<u8>,
) -> Result<(), NotSendable> {
    match site.store().read_encoded(id, buf) {
        Ok(()) => {}
        Err(dist_point::StoreError::Missing(_)) => return Err(NotSendable::Absent),
        Err(e) if e.is_damage() => return Err(NotSendable::Damaged(e.to_string())),
        Err(e) => return Err(NotSendable::Unreadable(e.to_string())),
    }
    if verify {
        dist_point::verify_encoded(id, buf).map_err(|e| {
            if e.is_damage() {
                NotSendable::Damaged(e.to_string())
            } else {
                NotSendable::Unreadable(e.to_string())
            }
        })?;
    }
    Ok(())
}
