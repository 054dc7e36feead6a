//! The sender's async shell for one child connection: the only writer of the link, it puts
//! everything it carries (config event batches, chunk replies) through the site's sans-IO
//! [`sender::scheduler::Scheduler`] and writes exactly what it grants.
//!
//! - Config events: the next batch of the log becomes a job whose priority is the highest
//!   of its events (a package's events carry the package's priority; others are medium), so a
//!   high package's publication lifts the events before it in the same batch; a batch that
//!   carries a boost ignores the window. Batches stay in log order.
//! - Content: the child says what it still misses per package version (`Need`); that is
//!   the job (its priority, its %, 3531/3532/3533). Each chunk it asks for is a unit of that
//!   job, read from the store when asked (a chunk not here yet is fetched from this site's
//!   parent and queued the moment it is durable).
//! - Units are written in slices the rate allows; a unit, once started, is finished before
//!   another goes, so a higher priority preempts at the next chunk boundary. Quinn's send
//!   window is bounded ([`sender::tls`]) so little can sit below the scheduler.

use super::{blocking, ReplError, BATCH};
use crate::site::Wake;
use schema::status;

/// The stored bytes of events one frame carries at most (one event always goes): far below
/// the frame and decode limits even for events that compress well (catalog deltas).
const BATCH_BYTES: u64 = 8 << 20;
use crate::net::content::NotSendable;
use crate::sansio::child_asks::ChildAsks;
use crate::site::Site;
use bytes::Bytes;
use chrono::Utc;
use schema::event::{ConfigEvent, EventEnvelope, Priority};
use schema::report::Attribute;
use schema::wire::{ChunkReply, Frame, CHUNK_HEADER_LEN};
use schema::{ChunkId, PackageId, SiteCode};
use sender::link::{FrameWriter, LinkError};
use sender::scheduler::{JobId, JobKind, Notice, Poll, Unit, UnitKey};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// What the readers of a child connection hand to its sender.
pub enum Input {
    /// A frame to answer on the control stream (an acknowledgement).
    Reply(Frame),
    /// The child opened its content stream.
    ContentStream(quinn::SendStream),
    /// The child misses `ids` of `package` `version`.
    Need {
        package: PackageId,
        version: u32,
        ids: Vec<ChunkId>,
    },
    /// The child asks for these chunks.
    Request(Vec<ChunkId>),
}

/// A chunk reply ready to go: its header and the chunk file as stored.
struct Reply {
    head: [u8; CHUNK_HEADER_LEN],
    body: Bytes,
}

impl Reply {
    fn len(&self) -> u64 {
        (CHUNK_HEADER_LEN + self.body.len()) as u64
    }
}

/// Raises the status messages the scheduler has to say.
pub fn raise_notices(site: &Site) {
    loop {
        let n = site.sender(|s| s.poll_notice());
        let Some(n) = n else { return };
        let (id, dest, package, version, extra) = match n {
            Notice::Sending {
                dest,
                package,
                version,
                pct,
            } => (
                status::SENDER_PROGRESS,
                dest,
                package,
                version,
                Some(pct.to_string()),
            ),
            Notice::Error {
                dest,
                package,
                version,
                error,
                retry_in,
            } => {
                let text = match retry_in {
                    Some(d) => format!("{error}; retrying in {} s", d.as_secs()),
                    None => format!(
                        "{error}; no retry left: it goes again when the link changes state or with `site-server sender retry`"
                    ),
                };
                (status::SENDER_ERROR, dest, package, version, Some(text))
            }
            Notice::Sent {
                dest,
                package,
                version,
            } => (status::SENDER_COMPLETE, dest, package, version, None),
        };
        let mut ins = vec![package.to_string(), version.to_string(), dest.to_string()];
        ins.extend(extra);
        site.note(
            id,
            vec![
                Attribute::Package(package),
                Attribute::SourceVersion(version),
                Attribute::DestinationSite(dest),
            ],
            ins,
        );
    }
}

/// The priority a batch of events travels at, and whether it carries a boost.
fn batch_priority(site: &Site, events: &[EventEnvelope]) -> (Priority, bool) {
    let mut best = Priority::Low;
    let mut any = false;
    let mut boost = false;
    let raise = |p: Priority, best: &mut Priority| {
        if rank(p) < rank(*best) {
            *best = p;
        }
    };
    for e in events {
        any = true;
        let p = match &e.body {
            ConfigEvent::PackageVersionPublished(v) => v.priority,
            ConfigEvent::PackagePriorityChanged { priority, .. } => *priority,
            ConfigEvent::SenderBoost { .. } => {
                boost = true;
                Priority::High
            }
            ConfigEvent::PackageVersionRetired { package, .. }
            | ConfigEvent::DistributionTargetsAdded { package, .. }
            | ConfigEvent::DistributionTargetsRemoved { package, .. } => site
                .db()
                .package(package)
                .ok()
                .flatten()
                .map_or(Priority::Medium, |r| r.priority),
            _ => Priority::Medium,
        };
        raise(p, &mut best);
    }
    (if any { best } else { Priority::Medium }, boost)
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

/// Writes `len` bytes from `offset` of a unit made of `head` then `body`.
pub(crate) async fn write_slice(
    stream: &mut quinn::SendStream,
    head: &[u8],
    body: &Bytes,
    offset: u64,
    len: u64,
) -> Result<(), LinkError> {
    let (start, end) = (offset as usize, (offset + len) as usize);
    let h = head.len();
    if start < h {
        stream.write_all(&head[start..end.min(h)]).await?;
    }
    if end > h {
        stream
            .write_chunk(body.slice(start.max(h) - h..end - h))
            .await?;
    }
    Ok(())
}

/// The sender of one child connection (see the module doc). Returns when the link fails.
pub async fn run(
    site: Arc<Site>,
    child: SiteCode,
    mut control: FrameWriter,
    mut inputs: tokio::sync::mpsc::Receiver<Input>,
    mut reader: tokio::task::JoinHandle<ReplError>,
    applied: u64,
) -> Result<(), ReplError> {
    let mut link = Link {
        site: site.clone(),
        child,
        content: None,
        chunk_job: HashMap::new(),
        replies: HashMap::new(),
        asks: ChildAsks::default(),
        waiting: HashSet::new(),
        sent: HashSet::new(),
        unreadable_noted: HashSet::new(),
    };
    let mut next_event = applied + 1;
    // The policy generation last told to the child.
    let mut told: Option<u64> = None;
    // The batch being sent: its job, last position, and encoded frame.
    let mut batch: Option<(JobId, u64, Bytes)> = None;
    let mut encoded = Vec::new();
    loop {
        let log = site.woken(Wake::LogGrew);
        let grew = site.woken(Wake::ContentGrew);
        let wake = site.woken(Wake::Sender);
        tokio::pin!(log, grew, wake);
        log.as_mut().enable();
        grew.as_mut().enable();
        wake.as_mut().enable();

        while let Ok(i) = inputs.try_recv() {
            link.input(i, &mut control).await?;
        }
        tell_policy(&site, child, &mut control, &mut told).await?;
        queue_events(&site, child, &mut batch, next_event, &mut encoded).await?;
        link.check_waiting().await?;
        link.pump().await?;

        // Write what the scheduler grants until it says wait.
        let poll = site.sender(|s| s.poll(&child, Instant::now(), Utc::now()));
        let sleep = match poll {
            Poll::Send {
                key, offset, len, ..
            } => {
                let Some(done) =
                    write_granted(&mut link, &mut control, &batch, key, offset, len).await?
                else {
                    site.sender(|s| s.abandon_unit(&child));
                    continue;
                };
                site.sender(|s| s.on_written(&child, len, Instant::now(), Utc::now()));
                if done {
                    match key {
                        UnitKey::Batch(_) => {
                            next_event = batch.take().expect("a batch is queued").1 + 1;
                        }
                        UnitKey::Chunk(id) => {
                            link.replies.remove(&id);
                            link.asks.on_sent(&id);
                            if link.sent.len() > 100_000 {
                                link.sent.clear();
                            }
                            link.sent.insert(id);
                        }
                    }
                    raise_notices(&site);
                }
                continue;
            }
            Poll::Until(t) => Some(tokio::time::Instant::from_std(t)),
            Poll::Idle => None,
        };
        raise_notices(&site);
        let until =
            sleep.unwrap_or_else(|| tokio::time::Instant::now() + crate::net::content::RECHECK);
        tokio::select! {
            _ = &mut log => {}
            _ = &mut grew => {}
            _ = &mut wake => {}
            _ = tokio::time::sleep_until(until) => {}
            i = inputs.recv() => match i {
                Some(i) => link.input(i, &mut control).await?,
                None => return Ok(()),
            },
            e = &mut reader => {
                return match e {
                    Ok(ReplError::Link(LinkError::Closed)) => Ok(()),
                    Ok(e) => Err(e),
                    Err(e) => Err(e.into()),
                };
            }
        }
    }
}

/// Tells the child this link's schedule and rate when the link comes up and whenever they
/// change (a counter check per pass, not a copy).
async fn tell_policy(
    site: &Site,
    child: SiteCode,
    control: &mut FrameWriter,
    told: &mut Option<u64>,
) -> Result<(), ReplError> {
    let gen = site.sender(|s| s.policy_gen(&child));
    if *told != Some(gen) {
        let (schedule, rate) = site.sender(|s| {
            s.policy(&child)
                .map(|p| (p.schedule.text().to_string(), p.rate.text().to_string()))
                .unwrap_or_default()
        });
        control.send(&Frame::LinkPolicy { schedule, rate }).await?;
        *told = Some(gen);
    }
    Ok(())
}

/// Keeps one batch of events from `next_event` queued in the sender. A batch held back (by a
/// window) and not started is rebuilt when the log grows, so that a later high event lifts
/// the events before it instead of waiting behind them. The log is read (on a blocking
/// thread) only when it holds more than was sent: a cheap length check, not a read per
/// chunk written.
async fn queue_events(
    site: &Arc<Site>,
    child: SiteCode,
    batch: &mut Option<(JobId, u64, Bytes)>,
    next_event: u64,
    encoded: &mut Vec<u8>,
) -> Result<(), ReplError> {
    if let Some((job, last, _)) = batch {
        let (job, last) = (*job, *last);
        let grown =
            last < next_event + BATCH as u64 - 1 && site.db().counts()?.config_events > last;
        if grown && site.sender(|s| s.withdraw(job)) {
            *batch = None;
        }
    }
    let log_len = site.db().counts()?.config_events;
    if batch.is_some() || log_len < next_event {
        return Ok(());
    }
    let from = next_event;
    let events = blocking(site, move |s| s.db().log_within(from, BATCH, BATCH_BYTES)).await?;
    let Some((last, _)) = events.last() else {
        return Ok(());
    };
    let (first, last) = (events[0].0, *last);
    #[allow(unused_mut)]
    let mut events: Vec<EventEnvelope> = events.into_iter().map(|(_, e)| e).collect();
    #[cfg(feature = "forge")]
    crate::forge::withhold(&mut events);
    let (priority, boost) = batch_priority(site, &events);
    encoded.clear();
    schema::wire::encode_frame(&Frame::Events { first, events }, encoded)
        .map_err(|e| ReplError::Link(LinkError::Frame(e)))?;
    let bytes = Bytes::copy_from_slice(encoded);
    let unit = Unit {
        key: UnitKey::Batch(first),
        len: bytes.len() as u64,
    };
    let job = site.sender(|s| {
        let job = s.job(child, JobKind::Events { boost }, priority);
        s.push(job, unit, Instant::now());
        job
    });
    *batch = Some((job, last, bytes));
    Ok(())
}

/// Writes the slice of unit `key` the scheduler granted: of the events batch on the control
/// stream, or of a chunk on the content stream. Whether the unit is now complete, or `None`
/// when the unit is gone (a chunk no longer ready, no content stream): abandon it.
async fn write_granted(
    link: &mut Link,
    control: &mut FrameWriter,
    batch: &Option<(JobId, u64, Bytes)>,
    key: UnitKey,
    offset: u64,
    len: u64,
) -> Result<Option<bool>, ReplError> {
    match key {
        UnitKey::Batch(_) => {
            let (_, _, bytes) = batch.as_ref().expect("a batch is queued");
            write_slice(control.stream(), &[], bytes, offset, len).await?;
            Ok(Some(offset + len == bytes.len() as u64))
        }
        UnitKey::Chunk(id) => {
            let (Some(r), Some(stream)) = (link.replies.get(&id), link.content.as_mut()) else {
                return Ok(None);
            };
            write_slice(stream, &r.head, &r.body, offset, len).await?;
            Ok(Some(offset + len == r.len()))
        }
    }
}

/// The content side of one child connection.
struct Link {
    site: Arc<Site>,
    child: SiteCode,
    content: Option<quinn::SendStream>,
    /// Which job each chunk the child said it misses belongs to.
    chunk_job: HashMap<ChunkId, JobId>,
    /// Chunks queued in the scheduler, read and ready.
    replies: HashMap<ChunkId, Reply>,
    /// What the child asked for, bounded (only announced chunks, replies held by bytes).
    asks: ChildAsks,
    /// Chunks asked for that are not here yet (this site fetches them from its parent).
    waiting: HashSet<ChunkId>,
    /// Chunks sent on this connection: asked again means the child refused the copy, so
    /// the next one is verified here first.
    sent: HashSet<ChunkId>,
    /// Chunks found unreadable on this connection and reported (40207) once.
    unreadable_noted: HashSet<ChunkId>,
}

impl Link {
    async fn input(&mut self, i: Input, control: &mut FrameWriter) -> Result<(), ReplError> {
        match i {
            Input::Reply(f) => control.send(&f).await?,
            Input::ContentStream(s) => self.content = Some(s),
            Input::Need {
                package,
                version,
                ids,
            } => {
                let ids = self.needed(package, version, ids);
                if ids.is_empty() {
                    return Ok(());
                }
                self.asks.announce(ids.iter().copied());
                let priority = self
                    .site
                    .db()
                    .package(&package)
                    .ok()
                    .flatten()
                    .map_or(Priority::Medium, |r| r.priority);
                let job = self.site.sender(|s| {
                    s.content_job(
                        self.child,
                        package,
                        version,
                        priority,
                        ids.iter().map(|id| UnitKey::Chunk(*id)),
                    )
                });
                for id in ids {
                    self.chunk_job.insert(id, job);
                }
            }
            Input::Request(ids) => {
                let missing = self
                    .asks
                    .request(&ids)
                    .map_err(|e| ReplError::Protocol(e.to_string()))?;
                for id in missing {
                    tracing::debug!(child = %self.child, chunk = %id, "asked for a chunk it never announced; missing");
                    self.say_missing(id).await?;
                }
                self.pump().await?;
            }
        }
        Ok(())
    }

    /// The ids of `ids` that belong to `package` `version` as this site knows it: a child's
    /// need is believed only for a manifest here, and only for that manifest's chunks.
    fn needed(&self, package: PackageId, version: u32, ids: Vec<ChunkId>) -> Vec<ChunkId> {
        let manifest = self
            .site
            .db()
            .package(&package)
            .ok()
            .flatten()
            .and_then(|r| {
                r.versions
                    .iter()
                    .find(|v| v.source_version == version)
                    .map(|v| v.manifest_id)
            })
            .and_then(|m| self.site.db().manifest(&m).ok().flatten());
        let Some(m) = manifest else {
            tracing::warn!(child = %self.child, %package, version, "the child needs a package version this site does not know; ignored");
            return Vec::new();
        };
        let known: HashSet<ChunkId> = m
            .files
            .iter()
            .flat_map(|f| f.chunks().iter().map(|c| c.id))
            .collect();
        let asked = ids.len();
        let ids: Vec<ChunkId> = ids.into_iter().filter(|id| known.contains(id)).collect();
        if ids.len() < asked {
            tracing::warn!(child = %self.child, %package, version, refused = asked - ids.len(), "the child needs chunks that are not in the version's manifest; ignored");
        }
        ids
    }

    /// Reads the asks the reply budget allows now.
    async fn pump(&mut self) -> Result<(), ReplError> {
        while let Some(id) = self.asks.next_to_read() {
            self.offer(id).await?;
        }
        Ok(())
    }

    /// Tells the child `id` is missing here.
    async fn say_missing(&mut self, id: ChunkId) -> Result<(), ReplError> {
        self.asks.on_answered(&id);
        if let Some(stream) = self.content.as_mut() {
            let h = ChunkReply::Missing { id }.encode();
            stream.write_all(&h).await.map_err(LinkError::Write)?;
        }
        Ok(())
    }

    /// Queues `id` for the child if it is here; otherwise waits for it (fetching it from
    /// this site's parent) or says it is missing.
    async fn offer(&mut self, id: ChunkId) -> Result<(), ReplError> {
        if self.replies.contains_key(&id) {
            return Ok(());
        }
        let verify = self.sent.contains(&id);
        let mut buf = Vec::new();
        match crate::net::content::read_for_child(&self.site, &id, verify, &mut buf) {
            Ok(()) => {
                if crate::net::content::corrupt_this_send() {
                    let i = buf.len() / 2;
                    buf[i] ^= 0x55;
                }
                let head = ChunkReply::Chunk {
                    id,
                    len: buf.len() as u32,
                }
                .encode();
                let reply = Reply {
                    head,
                    body: Bytes::from(buf),
                };
                let unit = Unit {
                    key: UnitKey::Chunk(id),
                    len: reply.len(),
                };
                let (known, child) = (self.chunk_job.get(&id).copied(), self.child);
                self.site.sender(|s| {
                    let job =
                        known.unwrap_or_else(|| s.job(child, JobKind::Chunks, Priority::Medium));
                    s.push(job, unit, Instant::now());
                });
                self.asks.on_ready(id, reply.len());
                self.replies.insert(id, reply);
                return Ok(());
            }
            Err(NotSendable::Absent) => {}
            Err(NotSendable::Unreadable(reason)) => {
                // Kept: an I/O error says nothing about the bytes. The child hears "missing"
                // and asks again after its delay.
                tracing::error!(chunk = %id, %reason, "cannot read a chunk for a child; kept");
                if self.unreadable_noted.insert(id) {
                    self.site
                        .note(status::CHUNK_UNREADABLE, vec![], vec![id.to_hex(), reason]);
                }
                return self.say_missing(id).await;
            }
            Err(NotSendable::Damaged(reason)) => {
                tracing::error!(chunk = %id, %reason, "corrupt chunk in the content store removed");
                if let Err(e) = self.site.store().remove(&id) {
                    tracing::error!(chunk = %id, error = %e, "cannot remove a corrupt chunk");
                }
                self.site.note(
                    status::CHUNK_CORRUPT_REMOVED,
                    vec![],
                    vec![id.to_hex(), reason],
                );
            }
        }
        let no_source = self.site.cfg().parent.is_none()
            || self.site.fetch_plan(|p| p.is_missing_upstream(&id));
        if no_source {
            self.say_missing(id).await?;
        } else {
            let new = self
                .site
                .fetch_plan(|p| p.want(id, crate::sansio::fetch::UNKNOWN_SIZE));
            if new {
                tracing::debug!(child = %self.child, chunk = %id, "fetching a chunk a child asked for");
                self.site.wake(Wake::FetchPlan);
            }
            self.waiting.insert(id);
        }
        Ok(())
    }

    /// Offers again what was waiting, now that the store (or the parent's answers) changed.
    async fn check_waiting(&mut self) -> Result<(), ReplError> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let ready: Vec<ChunkId> = self.site.fetch_plan(|plan| {
            self.waiting
                .iter()
                .filter(|id| !plan.is_wanted(id) || plan.is_missing_upstream(id))
                .copied()
                .collect()
        });
        if ready.is_empty() {
            return Ok(());
        }
        self.waiting.retain(|id| !ready.contains(id));
        for id in ready {
            self.offer(id).await?;
        }
        Ok(())
    }
}
