//! The running site: its configuration, database and content store, the state its tasks
//! share, and the operations the admin API exposes. Handlers stay thin; what a request does
//! is here, grouped by concern: [`ops`] (decisions and what the sender must know), [`views`]
//! (what operators look at), [`dps`] (distribution points and what this site reports up),
//! [`machines`] (collections, machine approvals, the advertisement lifecycle, agents' reports),
//! [`courier`] (bundles and receipts) and [`catalog`] (catalog views and sync rows).
//!
//! # Shared state
//!
//! One `Site` is shared by every task of the daemon (`Arc<Site>`); its fields are private.
//!
//! - The database and the content store synchronise themselves; they are written by the
//!   operations here, by `net` (parent batches, child reports, received chunks), by the
//!   catalog sync and by courier imports.
//! - Three in-memory states each sit behind a `std` mutex, reached only through a closure
//!   ([`Site::sender`], [`Site::fetch_plan`], [`Site::link_update`]): the sender's scheduler
//!   (written by the child links, the parent link and the operations that change a policy,
//!   a boost or a priority), the fetch plan (written by `net::content` and the child links'
//!   requests) and the link states (written by `net` as links go up and down, read by
//!   `status sites`). **Lock order: none.** Each is taken alone, for a closure that neither
//!   awaits nor takes another of them nor writes the database; debug builds assert it.
//! - The last refusal of an event from above (`last_refusal`, a `std` mutex taken alone for
//!   a compare and a swap): written by the batch appliers, so that a parent that resends a
//!   refused event raises one 40220, not one per attempt.
//! - The policy cache (`policy`, a `std` mutex reached through [`locked`]): the config
//!   log's events that agents act on, extended from the log by [`Site::dp_policy`] (the DP
//!   links' tasks) and read by it; the log is read before the lock is taken.
//! - The catalog sync's turn ([`Site::sync_turn`], a tokio mutex) is held across a whole
//!   sync, which takes the locks above only in the way just said.
//! - The link counters ([`Site::counters`], `counters.rs`): relaxed atomics written by the
//!   link tasks, read by `/metrics` and the console; their map's lock is taken alone.
//! - Wake-ups are [`Wake`] signals: each says who sends it and who waits on it.

mod catalog;
mod counters;
mod courier;
mod dps;
mod hierarchy;
mod keys;
mod machines;
mod ops;
mod views;

pub use catalog::{CatalogEntry, CatalogQuery, CatalogState, SyncRow};
pub use counters::{Counters, PeerCount};
pub(crate) use courier::new_id;
pub use courier::{
    BundleEvents, CourierState, ExportOutcome, ExportPlan, ImportOutcome, ReadReceipt, ReceiptState,
};
pub use dps::{DpGroupChange, DpInstall, DpRow, SiteDps};
pub use hierarchy::{HierarchyView, Known, SiteRow};
pub use keys::{load_origin_keys, KeysView, ViewFromTop};
pub use machines::{AdvertsView, ApproveRequest, LifecycleRequest, MachinesView};
pub use ops::{set_child_policy, BoostView, LinkPolicyRequest, RetryRequest, SendersView};
pub use views::{
    dir_bytes, ContentRow, CourierLinkView, IdentityView, LogEntry, MessageQuery, MessageRow,
    PackageDetail, PackageSummary, ProcessView, SiteLinkRow, SiteSending, SitesView,
};

use crate::config::{DataDir, SiteConfig};
use crate::db::{Db, DbError};
use crate::sansio::decide::{Ctx, Refusal};
use crate::sansio::fetch::FetchPlan;
use crate::sansio::links::{LinkStatus, Role};
use chrono::Utc;
use dist_point::ContentStore;
use schema::report::Attribute;
use schema::SiteCode;
use sender::scheduler::Scheduler;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// One running site. See the module doc for who writes what and the lock order.
pub struct Site {
    cfg: SiteConfig,
    dir: DataDir,
    db: Db,
    store: ContentStore,
    machine: String,
    log_grew: Notify,
    reports_grew: Notify,
    fetch_wake: Notify,
    content_grew: Notify,
    sender_wake: Notify,
    links: Mutex<BTreeMap<SiteCode, LinkStatus>>,
    fetch: Mutex<FetchPlan>,
    sender: Mutex<Scheduler>,
    sync_turn: tokio::sync::Mutex<()>,
    last_refusal: Mutex<Option<String>>,
    policy: Mutex<machines::PolicyCache>,
    counters: Counters,
}

/// A wake-up signal between the tasks of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The config log grew. Sent after every append to it (operations, a parent batch, a
    /// courier import, a catalog sync); waited on by each child link's sender (to send the
    /// new events), the wants tracker (`net::content::track_wants`) and the DP links.
    LogGrew,
    /// The report log grew. Sent after every report append (own reports, a child's, a DP's,
    /// a receipt's); waited on by the link to the parent (to send them up).
    ReportsGrew,
    /// The fetch plan has new wants or answers to wait for. Sent by `net::content` and by a
    /// child link that asked for a chunk this site lacks; waited on by the fetcher (one
    /// task: a permit is kept if it is busy).
    FetchPlan,
    /// Chunks became durable in the content store (or the parent said it lacks one). Sent
    /// by `net::content`, a courier import and a DP link; waited on by the child links'
    /// senders, the DP links and the wants tracker, to look again at what they wait for.
    ContentGrew,
    /// The sender's configuration changed (a schedule, a rate, a boost, a priority, a
    /// retry). Sent by the operations that change them; waited on by every link's sender.
    Sender,
}

thread_local! {
    /// The site lock this thread holds, if any (debug builds check that none is nested).
    static HELD: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` under `m`, alone: taking a second site lock inside `f` is a bug.
fn locked<T, R>(m: &Mutex<T>, name: &'static str, f: impl FnOnce(&mut T) -> R) -> R {
    let before = HELD.with(|h| h.replace(Some(name)));
    debug_assert!(
        before.is_none(),
        "{name} lock taken while holding the {} lock",
        before.unwrap_or_default()
    );
    let r = f(&mut m.lock().unwrap_or_else(|_| panic!("{name} lock poisoned")));
    HELD.with(|h| h.set(before));
    r
}

impl Site {
    /// A site from its opened parts (see `daemon::open_site`).
    pub fn new(
        cfg: SiteConfig,
        dir: DataDir,
        db: Db,
        store: ContentStore,
        sender: Scheduler,
    ) -> Self {
        Site {
            cfg,
            dir,
            db,
            store,
            machine: machine_name(),
            log_grew: Notify::new(),
            reports_grew: Notify::new(),
            fetch_wake: Notify::new(),
            content_grew: Notify::new(),
            sender_wake: Notify::new(),
            links: Default::default(),
            fetch: Default::default(),
            sender: Mutex::new(sender),
            sync_turn: tokio::sync::Mutex::new(()),
            last_refusal: Mutex::new(None),
            policy: Mutex::new(Default::default()),
            counters: Counters::default(),
        }
    }

    /// What crossed this site's links since start (for `/metrics`).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The configuration the site started with (`site.toml`).
    pub fn cfg(&self) -> &SiteConfig {
        &self.cfg
    }

    /// This site's code.
    pub fn code(&self) -> SiteCode {
        self.cfg.code
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// The config and report logs and the projections.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The content store.
    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// Sends `w` (see [`Wake`] for who waits on each).
    pub fn wake(&self, w: Wake) {
        match w {
            Wake::LogGrew => self.log_grew.notify_waiters(),
            Wake::ReportsGrew => self.reports_grew.notify_waiters(),
            Wake::FetchPlan => self.fetch_wake.notify_one(),
            Wake::ContentGrew => self.content_grew.notify_waiters(),
            Wake::Sender => self.sender_wake.notify_waiters(),
        }
    }

    /// A future that completes at the next `w` (enable it before looking at the state it
    /// guards, so that no wake-up is missed in between).
    pub fn woken(&self, w: Wake) -> tokio::sync::futures::Notified<'_> {
        match w {
            Wake::LogGrew => self.log_grew.notified(),
            Wake::ReportsGrew => self.reports_grew.notified(),
            Wake::FetchPlan => self.fetch_wake.notified(),
            Wake::ContentGrew => self.content_grew.notified(),
            Wake::Sender => self.sender_wake.notified(),
        }
    }

    /// Runs `f` on the sender's scheduler, under its lock (taken alone; see the module doc).
    pub fn sender<R>(&self, f: impl FnOnce(&mut Scheduler) -> R) -> R {
        locked(&self.sender, "sender", f)
    }

    /// Runs `f` on the fetch plan, under its lock (taken alone; see the module doc).
    pub fn fetch_plan<R>(&self, f: impl FnOnce(&mut FetchPlan) -> R) -> R {
        locked(&self.fetch, "fetch plan", f)
    }

    /// The catalog sync's turn: one sync at a time, by hand or on schedule.
    pub async fn sync_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sync_turn.lock().await
    }

    pub(crate) fn ctx(&self) -> Ctx {
        Ctx {
            site: self.cfg.code,
            machine: self.machine.clone(),
            now: Utc::now(),
        }
    }

    /// Raises a status message of this site (not tied to a config event).
    pub fn raise(
        &self,
        id: u32,
        attributes: Vec<Attribute>,
        insertion: Vec<String>,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let r = ctx.status(id, attributes, insertion);
        self.db.append_own_reports(ctx.now, vec![r])?;
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// Raises a status message where nothing waits for the outcome (a link went down, a
    /// chunk was damaged): a failure to store it is logged, never dropped silently.
    pub fn note(&self, id: u32, attributes: Vec<Attribute>, insertion: Vec<String>) {
        if let Err(e) = self.raise(id, attributes, insertion) {
            tracing::error!(id, error = %e, "cannot store a status message");
        }
    }

    /// Records a link event (sans-IO state machine in `links`).
    pub fn link_update(&self, peer: SiteCode, role: Role, f: impl FnOnce(&mut LinkStatus)) {
        locked(&self.links, "links", |links| {
            f(links
                .entry(peer)
                .or_insert_with(|| LinkStatus::new(peer, role, Utc::now())))
        })
    }

    /// A copy of every link's state (taken under the links lock, alone).
    pub fn link_states(&self) -> BTreeMap<SiteCode, LinkStatus> {
        locked(&self.links, "links", |links| links.clone())
    }

    /// This site and every site below it that it knows of.
    pub fn known_sites(&self) -> Result<std::collections::BTreeSet<SiteCode>, OpError> {
        let mut known = self.db.subtree(&self.child_codes())?;
        known.insert(self.cfg.code);
        Ok(known)
    }

    fn child_codes(&self) -> Vec<SiteCode> {
        let mut c: Vec<SiteCode> = self.cfg.children.iter().map(|c| c.code).collect();
        c.sort();
        c
    }
}

/// The host name, for the "machine" of status messages.
pub fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Why an operation did not happen. [`OpError::Refused`] is the caller's to fix (HTTP 4xx,
/// CLI exit 2); every other variant failed on the site (HTTP 500, CLI exit 1) and keeps its
/// cause as its source.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request is wrong (unknown id, invalid value).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed.
    #[error(transparent)]
    Db(DbError),
    /// `site.toml` could not be read or written.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] dist_point::StoreError),
    /// The site's key or certificate could not be read.
    #[error(transparent)]
    Identity(#[from] sender::identity::IdentityError),
    /// A worker thread panicked or was cancelled.
    #[error("a worker thread failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A view could not be put into its format (the metrics' text).
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for OpError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Refused(r) => OpError::Refused(r),
            other => OpError::Db(other),
        }
    }
}
