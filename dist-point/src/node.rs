//! The running distribution point: one task owns the state ([`Holdings`], [`Puller`], the
//! outbox) and reacts to [`Event`]s from the site link, the source fetchers, the storing
//! thread, validation and the HTTP server. It asks for chunks, raises status messages,
//! deletes what nothing needs, and saves its state when it changes.

use crate::config::DpConfig;
use crate::plan::{Effect, Holdings, Phase};
use crate::pull::{Outcome, Puller, Route};
use crate::serve::Catalog;
use crate::store::ContentStore;
use chrono::Utc;
use schema::manifest::Manifest;
use schema::status;
use schema::wire::{DpAssignment, DpMessage, DpSource};
use schema::{ChunkId, PackageId, SiteCode};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};

pub const STATE_FILE: &str = "state.bin";

/// What the node remembers across restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub site: Option<SiteCode>,
    pub holdings: Holdings,
    pub sources: Vec<DpSource>,
    /// Status messages not yet acknowledged by the site, by position.
    pub outbox: Vec<(u64, DpMessage)>,
    pub next_seq: u64,
}

impl State {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(b) => schema::encoding::decode(&b).map_err(|e| {
                format!(
                    "{} does not decode ({e}): move it away and restart; the site sends the assignments again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                next_seq: 1,
                ..State::default()
            }),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        use std::io::Write;
        let path = dir.join(STATE_FILE);
        let tmp = dir.join("state.bin.tmp");
        let bytes = schema::encoding::encode(self).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Queues a status message for the site.
    pub fn raise(
        &mut self,
        id: u32,
        attributes: Vec<schema::report::Attribute>,
        insertion: Vec<String>,
    ) {
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        self.outbox.push((
            seq,
            DpMessage {
                id,
                time: Utc::now(),
                attributes,
                insertion,
            },
        ));
    }

    /// Queues 40151: `package` `version` on DP `dp` lost `corrupt` and `missing` chunks.
    pub fn raise_damaged(
        &mut self,
        package: PackageId,
        version: u32,
        dp: &str,
        corrupt: usize,
        missing: usize,
    ) {
        self.raise(
            status::DP_PACKAGE_DAMAGED,
            Effect::attributes(package, version, dp),
            vec![
                package.to_string(),
                version.to_string(),
                dp.to_string(),
                corrupt.to_string(),
                missing.to_string(),
            ],
        );
    }

    /// Queues the messages of `effects`; returns the manifests of the versions dropped.
    pub fn apply(
        &mut self,
        effects: Vec<Effect>,
        dp: &str,
    ) -> Vec<(PackageId, u32, Arc<Manifest>)> {
        let mut dropped = Vec::new();
        for e in effects {
            match e {
                Effect::Message {
                    id,
                    package,
                    version,
                    insertion,
                } => self.raise(id, Effect::attributes(package, version, dp), insertion),
                Effect::Dropped {
                    package,
                    version,
                    manifest,
                } => dropped.push((package, version, manifest)),
            }
        }
        dropped
    }
}

/// One received chunk file, on its way to the intake thread that verifies and stores it.
pub(crate) struct Received {
    pub id: ChunkId,
    pub route: Route,
    pub file: Vec<u8>,
}

/// What the node task reacts to.
pub(crate) enum Event {
    Assigned {
        site: SiteCode,
        versions: Vec<DpAssignment>,
        sources: Vec<DpSource>,
    },
    SiteUp(mpsc::UnboundedSender<Vec<ChunkId>>),
    SiteDown(String),
    /// A request ended without a chunk to store.
    Reply {
        id: ChunkId,
        route: Route,
        outcome: Outcome,
    },
    /// Chunks verified and durable.
    Stored(Vec<(ChunkId, Route)>),
    StoreFailed {
        ids: Vec<ChunkId>,
        reason: String,
        full: bool,
    },
    /// A chunk failed verification while served.
    Corrupt(ChunkId, String),
    /// A validation pass re-hashed `checked` chunks and removed `corrupt`.
    Validated {
        checked: u64,
        corrupt: HashSet<ChunkId>,
        done: Option<oneshot::Sender<ValidationReport>>,
    },
    Acked(u64),
}

/// What `dist-point validate` prints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ValidationReport {
    pub checked: u64,
    pub corrupt: usize,
    pub missing: usize,
    /// Per damaged version: package, version, corrupt, missing.
    pub versions: Vec<(String, u32, usize, usize)>,
}

/// The node's view for `dist-point status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    pub id: String,
    pub site: Option<String>,
    pub site_link: String,
    pub listen: String,
    pub versions: Vec<VersionView>,
    pub sources: Vec<DpSource>,
    pub in_flight: usize,
    pub queued: usize,
    pub unsent_messages: usize,
    /// Chunks stored since start, per source (a DP id, or `site`).
    pub pulled: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionView {
    pub package: String,
    pub name: String,
    pub version: u32,
    pub state: String,
    pub chunks: usize,
    pub missing: usize,
    pub bytes: u64,
    pub assigned: bool,
}

impl StatusView {
    pub fn of(
        cfg: &DpConfig,
        st: &State,
        link: &str,
        puller: Option<&Puller>,
        pulled: std::collections::BTreeMap<String, u64>,
    ) -> Self {
        StatusView {
            id: cfg.id.clone(),
            site: st.site.map(|s| s.to_string()),
            site_link: link.to_string(),
            listen: cfg.listen.to_string(),
            versions: st
                .holdings
                .versions()
                .map(|h| VersionView {
                    package: h.package.to_string(),
                    name: h.name.clone(),
                    version: h.version,
                    state: match &h.phase {
                        Phase::Pulling => "pulling".into(),
                        Phase::Installed => "installed".into(),
                        Phase::Failed(r) => format!("failed: {r}"),
                    },
                    chunks: h.manifest.unique_chunks().len(),
                    missing: h.missing.len(),
                    bytes: h.total_bytes(),
                    assigned: h.assigned,
                })
                .collect(),
            sources: st.sources.clone(),
            in_flight: puller.map_or(0, |p| p.in_flight()),
            queued: puller.map_or(0, |p| p.queued()),
            unsent_messages: st.outbox.len(),
            pulled,
        }
    }
}

/// Shared between the node task, the links and the HTTP server.
pub struct Node {
    pub cfg: DpConfig,
    pub dir: PathBuf,
    pub store: Arc<ContentStore>,
    pub(crate) core: Mutex<Core>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
    pub(crate) intake: Mutex<std::sync::mpsc::Sender<Received>>,
    pub(crate) pool: Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
    pub(crate) outbox_grew: Notify,
    pub(crate) http: reqwest::Client,
}

pub(crate) struct Core {
    pub state: State,
    pub puller: Puller,
    pub site_tx: Option<mpsc::UnboundedSender<Vec<ChunkId>>>,
    pub link: String,
    pub pulled: std::collections::BTreeMap<String, u64>,
    pub validations: ValidationCounts,
    dirty: bool,
}

/// What the validations since start found (for `/metrics`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ValidationCounts {
    /// Runs that found nothing damaged or missing, and runs that did.
    pub clean: u64,
    pub damaged: u64,
    pub checked: u64,
    pub corrupt: u64,
    pub missing: u64,
}

impl Node {
    pub(crate) fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// This DP's name in messages: `S01/DP1` once its site is known.
    fn name(&self, st: &State) -> String {
        match st.site {
            Some(s) => format!("{s}/{}", self.cfg.id),
            None => self.cfg.id.clone(),
        }
    }

    pub fn status(&self) -> StatusView {
        let c = self.core.lock().expect("core lock");
        StatusView::of(
            &self.cfg,
            &c.state,
            &c.link,
            Some(&c.puller),
            c.pulled.clone(),
        )
    }

    /// What the validations since start found.
    pub fn validations(&self) -> ValidationCounts {
        self.core.lock().expect("core lock").validations
    }

    /// Messages from position `after` on, to send to the site.
    pub(crate) fn unsent(&self, after: u64) -> (u64, Vec<DpMessage>) {
        let c = self.core.lock().expect("core lock");
        let v: Vec<_> = c.state.outbox.iter().filter(|(s, _)| *s > after).collect();
        (
            v.first().map_or(0, |(s, _)| *s),
            v.into_iter().map(|(_, m)| m.clone()).collect(),
        )
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// Queues a status message for the site now (from outside the node's loop).
    pub(crate) fn raise_now(
        &self,
        id: u32,
        attributes: Vec<schema::report::Attribute>,
        insertion: Vec<String>,
    ) {
        {
            let mut c = self.core.lock().expect("core lock");
            c.state.raise(id, attributes, insertion);
            c.dirty = true;
        }
        self.outbox_grew.notify_waiters();
    }

    /// Whether `id` belongs to a version installed here (see [`crate::plan::Holdings::serves_chunk`]).
    pub(crate) fn serves_chunk(&self, id: &ChunkId) -> bool {
        self.core
            .lock()
            .expect("core lock")
            .state
            .holdings
            .serves_chunk(id)
    }
}

impl Catalog for Node {
    fn present(&self, package: &PackageId) -> Vec<(u32, Arc<Manifest>)> {
        self.core
            .lock()
            .expect("core lock")
            .state
            .holdings
            .installed(package)
    }
    fn corrupt(&self, _package: &PackageId, _version: u32, chunk: &ChunkId, reason: &str) {
        self.send(Event::Corrupt(*chunk, reason.to_string()));
    }
}

/// Builds the node around a loaded state; returns it with its event receiver.
pub(crate) fn new_node(
    cfg: DpConfig,
    dir: PathBuf,
    store: Arc<ContentStore>,
    mut state: State,
) -> (
    Arc<Node>,
    mpsc::UnboundedReceiver<Event>,
    std::sync::mpsc::Receiver<Received>,
    std::sync::mpsc::Sender<Vec<u8>>,
) {
    let (events, rx) = mpsc::unbounded_channel();
    let (intake_tx, intake_rx) = std::sync::mpsc::channel();
    let (pool_tx, pool_rx) = std::sync::mpsc::channel();
    let mut puller = Puller::new(cfg.window);
    puller.set_sources(state.sources.len());
    // After a restart: what each held version still misses, from the store itself.
    let effects = state.holdings.reload(&|id| store.has(id));
    let name = match state.site {
        Some(s) => format!("{s}/{}", cfg.id),
        None => cfg.id.clone(),
    };
    state.holdings.name = name.clone();
    let dropped = state.apply(effects, &name);
    puller.set_wanted(state.holdings.wanted());
    let node = Arc::new(Node {
        cfg,
        dir,
        store,
        core: Mutex::new(Core {
            state,
            puller,
            site_tx: None,
            link: "connecting".into(),
            pulled: Default::default(),
            validations: Default::default(),
            dirty: true,
        }),
        events,
        intake: Mutex::new(intake_tx),
        pool: Mutex::new(pool_rx),
        outbox_grew: Notify::new(),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client"),
    });
    for (p, v, m) in dropped {
        node.collect_garbage(p, v, &m);
    }
    (node, rx, intake_rx, pool_tx)
}

impl Node {
    /// Deletes the chunks of a dropped version that no held version uses; raises 40152.
    fn collect_garbage(&self, package: PackageId, version: u32, m: &Manifest) {
        let mut c = self.core.lock().expect("core lock");
        let keep = c.state.holdings.referenced();
        let mut freed = 0;
        for r in m.unique_chunks() {
            if !keep.contains(&r.id) && self.store.has(&r.id) {
                match self.store.remove(&r.id) {
                    Ok(()) => freed += 1,
                    Err(e) => tracing::warn!(chunk = %r.id, error = %e, "cannot delete a chunk"),
                }
            }
        }
        let name = self.name(&c.state);
        c.state.raise(
            status::DP_PACKAGE_REMOVED,
            Effect::attributes(package, version, &name),
            vec![
                package.to_string(),
                version.to_string(),
                name.clone(),
                freed.to_string(),
            ],
        );
        c.dirty = true;
        tracing::info!(%package, version, freed, "version removed");
    }

    /// Deletes every stored chunk no held version uses (leftovers of a crash).
    pub(crate) fn sweep(&self) -> usize {
        let keep = self
            .core
            .lock()
            .expect("core lock")
            .state
            .holdings
            .referenced();
        let mut n = 0;
        if let Ok(ids) = self.store.ids() {
            for id in ids.into_iter().filter(|id| !keep.contains(id)) {
                if self.store.remove(&id).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    pub(crate) fn handle(self: &Arc<Self>, e: Event, now: Instant) {
        let mut dropped = Vec::new();
        let mut guard = self.core.lock().expect("core lock");
        let c = &mut *guard;
        let name = self.name(&c.state);
        match e {
            Event::Assigned {
                site,
                versions,
                sources,
            } => {
                if c.state.site != Some(site) {
                    c.state.site = Some(site);
                }
                let name = format!("{site}/{}", self.cfg.id);
                c.state.holdings.name = name.clone();
                if c.state.sources != sources {
                    c.puller.set_sources(sources.len());
                    c.state.sources = sources;
                }
                let store = self.store.clone();
                let effects = c.state.holdings.assign(&versions, &|id| store.has(id));
                dropped = c.state.apply(effects, &name);
                c.puller.set_wanted(c.state.holdings.wanted());
                c.dirty = true;
            }
            Event::SiteUp(tx) => {
                c.site_tx = Some(tx);
                c.link = "up".into();
                c.puller.site_up(true);
            }
            Event::SiteDown(why) => {
                c.site_tx = None;
                c.link = format!("down: {why}");
                c.puller.site_up(false);
            }
            Event::Reply { id, route, outcome } => {
                c.puller.on_result(&id, route, outcome, now);
            }
            Event::Stored(ids) => {
                let mut effects = Vec::new();
                for (id, route) in ids {
                    let from = match route {
                        Route::Site => "site".to_string(),
                        Route::Source(i) => c
                            .state
                            .sources
                            .get(i)
                            .map_or_else(|| format!("source {i}"), |s| s.dp.clone()),
                    };
                    *c.pulled.entry(from).or_default() += 1;
                    c.puller.on_result(&id, route, Outcome::Stored, now);
                    effects.extend(c.state.holdings.on_stored(&id));
                }
                if !effects.is_empty() {
                    dropped = c.state.apply(effects, &name);
                    c.dirty = true;
                }
            }
            Event::StoreFailed { ids, reason, full } => {
                for id in &ids {
                    c.puller.on_store_failed(id);
                }
                if full {
                    c.puller.pause(now + self.cfg.retry_after());
                }
                let effects = c.state.holdings.on_failure(&reason);
                if !effects.is_empty() {
                    c.state.apply(effects, &name);
                    c.dirty = true;
                }
            }
            Event::Corrupt(id, reason) => {
                tracing::warn!(chunk = %id, %reason, "a chunk failed verification while served; removing it");
                if let Err(e) = self.store.remove(&id) {
                    tracing::error!(chunk = %id, error = %e, "cannot remove a corrupt chunk");
                }
                let hit = c.state.holdings.on_damaged(&[id].into(), &HashSet::new());
                for (p, v, corrupt, missing) in hit {
                    c.state.raise_damaged(p, v, &name, corrupt, missing);
                }
                c.puller.set_wanted(c.state.holdings.wanted());
                c.dirty = true;
            }
            Event::Validated {
                checked,
                corrupt,
                done,
            } => {
                // Missing: chunks of an installed version that are not in the store.
                let mut missing = HashSet::new();
                for h in c.state.holdings.versions() {
                    if h.phase == Phase::Installed {
                        for r in h.manifest.unique_chunks() {
                            if !corrupt.contains(&r.id) && !self.store.has(&r.id) {
                                missing.insert(r.id);
                            }
                        }
                    }
                }
                let hit = c.state.holdings.on_damaged(&corrupt, &missing);
                let mut report = ValidationReport {
                    checked,
                    corrupt: corrupt.len(),
                    missing: missing.len(),
                    versions: Vec::new(),
                };
                for (p, v, nc, nm) in hit {
                    c.state.raise_damaged(p, v, &name, nc, nm);
                    report.versions.push((p.to_string(), v, nc, nm));
                }
                c.state.raise(
                    status::DP_VALIDATION_SUMMARY,
                    vec![schema::report::Attribute::DistributionPoint(name.clone())],
                    vec![
                        name.clone(),
                        checked.to_string(),
                        corrupt.len().to_string(),
                        missing.len().to_string(),
                    ],
                );
                c.puller.set_wanted(c.state.holdings.wanted());
                c.dirty = true;
                let v = &mut c.validations;
                if report.corrupt + report.missing == 0 {
                    v.clean += 1;
                } else {
                    v.damaged += 1;
                }
                v.checked += report.checked;
                v.corrupt += report.corrupt as u64;
                v.missing += report.missing as u64;
                if let Some(d) = done {
                    let _ = d.send(report);
                }
            }
            Event::Acked(upto) => {
                let before = c.state.outbox.len();
                c.state.outbox.retain(|(s, _)| *s > upto);
                c.dirty |= before != c.state.outbox.len();
            }
        }
        drop(guard);
        // After the lock is released: garbage collection takes it again.
        for (p, v, m) in dropped {
            self.collect_garbage(p, v, &m);
        }
    }
}

/// The node task: reacts to events, asks for chunks, saves the state.
pub(crate) async fn run(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<Event>) {
    loop {
        let wake = {
            let c = node.core.lock().expect("core lock");
            c.puller.next_wakeup()
        };
        let sleep = wake
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(30));
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { return };
                node.handle(e, Instant::now());
                while let Ok(e) = rx.try_recv() {
                    node.handle(e, Instant::now());
                }
            }
            _ = tokio::time::sleep(sleep) => {}
        }
        dispatch(&node);
    }
}

/// Sends the requests the puller allows now, saves the state if it changed.
fn dispatch(node: &Arc<Node>) {
    let (site_ids, source_reqs, save, grew) = {
        let mut c = node.core.lock().expect("core lock");
        let reqs = c.puller.next(Instant::now());
        let mut site_ids = Vec::new();
        let mut source_reqs = Vec::new();
        for (id, route) in reqs {
            match route {
                Route::Site => site_ids.push(id),
                Route::Source(i) => source_reqs.push((id, i, c.state.sources[i].address.clone())),
            }
        }
        if !site_ids.is_empty() {
            let sent = c
                .site_tx
                .as_ref()
                .is_some_and(|tx| tx.send(site_ids.clone()).is_ok());
            if !sent {
                c.puller.site_up(false);
            }
        }
        let save = if c.dirty {
            c.dirty = false;
            Some(c.state.clone())
        } else {
            None
        };
        let grew = !c.state.outbox.is_empty();
        (site_ids, source_reqs, save, grew)
    };
    let _ = site_ids;
    for (id, rank, addr) in source_reqs {
        tokio::spawn(fetch_from_source(node.clone(), id, rank, addr));
    }
    if let Some(st) = save {
        if let Err(e) = st.save(&node.dir) {
            tracing::error!(error = %e, "cannot save the distribution point's state");
        }
    }
    if grew {
        node.outbox_grew.notify_waiters();
    }
}

/// Asks source DP `rank` (at `addr`) for one chunk over HTTP.
async fn fetch_from_source(node: Arc<Node>, id: ChunkId, rank: usize, addr: String) {
    let route = Route::Source(rank);
    let url = format!("http://{addr}/chunks/{}", id.to_hex());
    let outcome = match node.http.get(&url).send().await {
        Err(e) => {
            tracing::info!(source = %addr, error = %e, "source distribution point does not answer");
            Outcome::Down
        }
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Outcome::NotThere,
        Ok(r) if !r.status().is_success() => Outcome::NotThere,
        Ok(r) => match read_capped(r, crate::store::MAX_CHUNK_FILE).await {
            Ok(file) => {
                let sent =
                    node.intake
                        .lock()
                        .expect("intake lock")
                        .send(Received { id, route, file });
                if sent.is_ok() {
                    return;
                }
                Outcome::Down
            }
            Err(Capped::TooLong(n)) => {
                tracing::warn!(source = %addr, chunk = %id, bytes = n, "source distribution point sent more than a chunk file can hold; refused");
                Outcome::Bad
            }
            Err(Capped::Failed) => Outcome::Down,
        },
    };
    node.send(Event::Reply { id, route, outcome });
}

/// Why an answer was not read.
enum Capped {
    /// Longer than allowed (announced or sent): at least this many bytes.
    TooLong(u64),
    /// The connection failed mid-way.
    Failed,
}

/// Reads an answer's body, refusing one whose `Content-Length` or actual length passes
/// `cap` before buffering more than `cap` bytes.
async fn read_capped(mut r: reqwest::Response, cap: usize) -> Result<Vec<u8>, Capped> {
    if let Some(n) = r.content_length() {
        if n > cap as u64 {
            return Err(Capped::TooLong(n));
        }
    }
    let mut out = Vec::with_capacity(r.content_length().unwrap_or(0) as usize);
    while let Some(piece) = r.chunk().await.map_err(|_| Capped::Failed)? {
        if out.len() + piece.len() > cap {
            return Err(Capped::TooLong((out.len() + piece.len()) as u64));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// Re-hashes every stored chunk, removes the damaged ones, and tells the node.
pub(crate) async fn validate(node: Arc<Node>, done: Option<oneshot::Sender<ValidationReport>>) {
    let store = node.store.clone();
    let r = tokio::task::spawn_blocking(move || scrub(&store)).await;
    match r {
        Ok(Ok((checked, corrupt))) => node.send(Event::Validated {
            checked,
            corrupt,
            done,
        }),
        Ok(Err(e)) => tracing::error!(error = %e, "validation failed"),
        Err(e) => tracing::error!(error = %e, "validation panicked"),
    }
}

/// Re-hashes every chunk; removes and returns the damaged ones. A chunk that cannot be read
/// (an I/O error) is kept and logged: it is not damage, and it may be the only copy.
pub fn scrub(store: &ContentStore) -> Result<(u64, HashSet<ChunkId>), String> {
    let report = store.verify_all().map_err(|e| e.to_string())?;
    for p in &report.unreadable {
        tracing::error!(path = %p.path.display(), reason = %p.reason, "cannot read a chunk file; kept (an I/O error is not damage)");
    }
    let mut corrupt = HashSet::new();
    for p in report.problems {
        tracing::warn!(path = %p.path.display(), reason = %p.reason, "damaged chunk file");
        match p.id {
            Some(id) => {
                if let Err(e) = store.remove(&id) {
                    tracing::error!(chunk = %id, error = %e, "cannot remove a corrupt chunk");
                }
                corrupt.insert(id);
            }
            None => {
                let _ = std::fs::remove_file(&p.path);
            }
        }
    }
    Ok((report.chunks_ok + corrupt.len() as u64, corrupt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A source on 127.0.0.1 that answers one request with `head` and then `body_len` bytes
    /// (or until the reader goes away); returns its address and how much it managed to send.
    async fn hostile_source(head: String, body_len: u64) -> (String, tokio::task::JoinHandle<u64>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            s.write_all(head.as_bytes()).await.unwrap();
            let piece = vec![0u8; 64 << 10];
            let mut sent = 0u64;
            while sent < body_len {
                if s.write_all(&piece).await.is_err() {
                    break;
                }
                sent += piece.len() as u64;
            }
            sent
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_answer_longer_than_a_chunk_file_is_refused_before_it_is_buffered() {
        let cap = crate::store::MAX_CHUNK_FILE;
        let http = reqwest::Client::new();
        // Announced too long: refused on the header, nothing read.
        let (addr, _src) = hostile_source(
            "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n".into(),
            1 << 20,
        )
        .await;
        let r = http
            .get(format!("http://{addr}/chunks/x"))
            .send()
            .await
            .unwrap();
        assert!(matches!(
            read_capped(r, cap).await,
            Err(Capped::TooLong(1073741824))
        ));
        // Not announced, and far too long: refused once it passes the cap.
        let (addr, _src) = hostile_source(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(),
            256 << 20,
        )
        .await;
        let r = http
            .get(format!("http://{addr}/chunks/x"))
            .send()
            .await
            .unwrap();
        match read_capped(r, cap).await {
            Err(Capped::TooLong(n)) => assert!(n > cap as u64 && n <= (cap + (1 << 20)) as u64),
            Ok(b) => panic!("read {} bytes", b.len()),
            Err(Capped::Failed) => panic!("failed instead of refused"),
        }
    }
}
