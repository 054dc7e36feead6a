//! All sled access of the site server lives in this folder (a test keeps it so). The trees
//! and every key are in [`keys`]; callers name cursors and records with its typed functions
//! ([`parent_applied`], [`child_config_acked`], [`courier_state`], ...).
//!
//! Every append writes the log entry, its dedupe key, the counters and the projection update
//! in one sled transaction, then flushes before the caller is answered.

use crate::sansio::decide::{DecideError, Decided, Refusal};
use crate::sansio::projection::{
    self, Damaged, Meta, PackageRecord, ProjError, ProjectionStore, Table,
};
use crate::sansio::scope::{self, ChildScope};
use crate::sansio::trust;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use schema::advert::Advertisement;
use schema::encoding;
use schema::event::{DistributionTarget, EventEnvelope};
use schema::manifest::Manifest;
use schema::report::{Report, ReportEnvelope, SiteData};
use schema::trust::{Delegation, KeyRing, PublicKey};
use schema::{ManifestId, PackageId, SiteCode};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{Transactional, Tree};
use std::path::Path;

pub mod agents;
pub mod keys;
pub mod status;

pub use keys::{
    catalog_last_sync, child_config_acked, child_reports_applied, content_complete, courier_state,
    dp_reports_applied, parent_applied, parent_reports_acked, view_stale, Cursor, Record,
};
use keys::{
    CONFIG_LEN, CURSORS, DEDUPE, LOG, OWN_CONFIG_SEQ, OWN_REPORT_SEQ, PROJ, REBUILDING, REPORTS,
    REPORT_LEN,
};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Damaged(#[from] Damaged),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{what} at position {position} does not decode ({source}); the log is damaged: restore the data directory from a backup")]
    Log {
        what: &'static str,
        position: u64,
        source: encoding::DecodeError,
    },
    #[error("a rebuild of the projections was interrupted: run `site-server rebuild --data DIR` before starting the daemon")]
    RebuildPending,
    #[error("parent log batch starts at position {got} but position {expected} is next: the batch is refused and the link must resend from {expected}")]
    Gap { expected: u64, got: u64 },
    #[error("this site's own {what} sequence number {seq} is already in its log: the database holds another site's data under this site's code; stop the site and restore the data directory from a backup")]
    OwnSeqTaken { what: &'static str, seq: u64 },
    #[error("refused a batch from the parent: {0}")]
    FromParent(String),
    #[error("position {position} of the config log fails its check ({why}): the log was altered; restore the data directory from a backup")]
    Untrusted { position: u64, why: String },
    /// Internal: a signature assumed good was not; the batch runs again, checked event by
    /// event. Never returned to a caller.
    #[error("a signature of the batch does not verify: checking it event by event")]
    Reverify,
    #[error("the data directory holds format {found} records and this build reads only format {}: it was written by an older site-server (before origin signatures, or before agent policy); initialize a new data directory (nothing older can be migrated)", encoding::FORMAT_VERSION)]
    OldFormat { found: u16 },
}

/// What [`Db::apply_parent_batch`] (or a batch of a child's or DP's reports) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events newly appended to this site's log.
    pub applied: u64,
    /// Events skipped: at or below the cursor (a resend), or already known by dedupe key.
    pub skipped: u64,
    /// The cursor after the batch: the last parent position applied.
    pub cursor: u64,
    /// Items refused (not stored, the cursor moves past them), with why.
    pub refused: Vec<String>,
    /// An event refused by the trust check (nothing from it on applied, the cursor stays
    /// before it): its `origin:seq` and why.
    pub stopped: Option<(String, String)>,
    /// Key rotations a direct child asked for in this batch of its reports.
    pub rotations: Vec<Delegation>,
}

/// What appending one item of a batch did.
enum Appended {
    New,
    Known,
    Refused(String),
    /// Not applied, and nothing after it: the cursor stays before it.
    Stop(String, String),
}

impl From<bool> for Appended {
    fn from(new: bool) -> Self {
        if new {
            Appended::New
        } else {
            Appended::Known
        }
    }
}

/// The site database.
pub struct Db {
    db: sled::Db,
    /// Trees in the order of the index constants above, projections last (in `Table::ALL` order).
    trees: Vec<Tree>,
    own: SiteCode,
    /// This site's current origin key: signs its events and reports. Written by
    /// [`Db::set_signer`] (a rotation taking over); read at every own append.
    signer: std::sync::RwLock<SigningKey>,
    /// The trust root (the top's first key); `None` until configured: then nothing from a
    /// parent verifies.
    root_key: Option<PublicKey>,
    /// A rotation's new key and its first number, waiting for the parent's delegation; while
    /// set, this site originates no events. Written by [`Db::set_pending_rotation`].
    pending: std::sync::Mutex<Option<(SigningKey, u64)>>,
}

/// What is known of a batch's signatures while its transaction runs.
enum Verified<'a> {
    /// Being verified beside the transaction: the keys expected, and the answer (waited for
    /// before the commit).
    Assumed(
        &'a [Option<PublicKey>],
        &'a dyn Fn() -> &'a Vec<Option<PublicKey>>,
    ),
    /// Verified: the key each verified under, if it did.
    Known(&'a [Option<PublicKey>]),
}

/// How the database uses memory and the disk (`[storage]` of `site.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// How often sled flushes what no append flushed.
    pub flush_every_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            cache_bytes: 16 << 20,
            flush_every_ms: 1000,
        }
    }
}

/// What a site signs with and trusts: its current origin key and the trust root.
pub struct Trust {
    pub signer: SigningKey,
    pub root_key: Option<PublicKey>,
}

/// A non-transactional read view of the projections.
struct ReadView<'a>(&'a [Tree]);

impl ProjectionStore for ReadView<'_> {
    type Error = sled::Error;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        Ok(self.0[PROJ + t as usize].get(key)?.map(|v| v.to_vec()))
    }
    fn put(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), sled::Error> {
        self.0[PROJ + t as usize].insert(key, value)?;
        Ok(())
    }
}

/// The projections seen through a running transaction.
struct TxView<'a>(&'a [TransactionalTree]);

impl ProjectionStore for TxView<'_> {
    type Error = UnabortableTransactionError;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.0[PROJ + t as usize].get(key)?.map(|v| v.to_vec()))
    }
    fn put(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), Self::Error> {
        self.0[PROJ + t as usize].insert(key, value)?;
        Ok(())
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<DbError>>;

fn lift(e: ProjError<UnabortableTransactionError>) -> ConflictableTransactionError<DbError> {
    match e {
        ProjError::Store(s) => s.into(),
        ProjError::Damaged(d) => ConflictableTransactionError::Abort(DbError::Damaged(d)),
    }
}

fn lift_decide(
    e: DecideError<UnabortableTransactionError>,
) -> ConflictableTransactionError<DbError> {
    match e {
        DecideError::Refused(r) => ConflictableTransactionError::Abort(DbError::Refused(r)),
        DecideError::Proj(p) => lift(p),
    }
}

fn unwrap_tx<T>(r: Result<T, TransactionError<DbError>>) -> Result<T, DbError> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => DbError::Sled(e),
    })
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn tx_counter(t: &TransactionalTree, key: &[u8]) -> Result<u64, UnabortableTransactionError> {
    Ok(u64_of(t.get(key)?))
}

/// Sizes of the two logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogCounts {
    pub config_events: u64,
    pub reports: u64,
}

/// One projection entry: table name, key, value.
pub type DumpRow = (&'static str, Vec<u8>, Vec<u8>);

/// What `rebuild` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildReport {
    pub events: u64,
    pub digest_before: String,
    pub digest_after: String,
    /// Reports in the log, re-indexed.
    pub reports: u64,
    /// Whether the report roll-ups were recomputed too (not when retention has removed
    /// reports: they keep what the removed ones said).
    pub report_rollups: bool,
    /// BLAKE3 over the report roll-ups and indexes, before and after.
    pub report_digest_before: String,
    pub report_digest_after: String,
}

impl Db {
    /// Opens the database of site `own` at `path`. Refuses to open one whose projection
    /// rebuild was interrupted, unless `allow_rebuild_pending` (for `rebuild` itself).
    pub fn open(
        path: &Path,
        own: SiteCode,
        allow_rebuild_pending: bool,
        trust: Trust,
    ) -> Result<Self, DbError> {
        Self::open_tuned(path, own, allow_rebuild_pending, trust, Tuning::default())
    }

    /// As [`Db::open`], with the cache and flush interval of `tuning`.
    pub fn open_tuned(
        path: &Path,
        own: SiteCode,
        allow_rebuild_pending: bool,
        trust: Trust,
        tuning: Tuning,
    ) -> Result<Self, DbError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(tuning.cache_bytes)
            .flush_every_ms(Some(tuning.flush_every_ms))
            .open()?;
        let mut trees = Vec::new();
        for name in keys::TREES {
            trees.push(db.open_tree(name)?);
        }
        for t in Table::ALL {
            trees.push(db.open_tree(t.name())?);
        }
        let d = Db {
            db,
            trees,
            own,
            signer: std::sync::RwLock::new(trust.signer),
            root_key: trust.root_key,
            pending: std::sync::Mutex::new(None),
        };
        // A log of another format is refused as a whole, before anything reads it.
        if let Some(first) = d.trees[LOG].first()?.or(d.trees[REPORTS].first()?) {
            if let Some(found) = encoding::version_of(&first.1) {
                if found != encoding::FORMAT_VERSION {
                    return Err(DbError::OldFormat { found });
                }
            }
        }
        if !allow_rebuild_pending && d.trees[CURSORS].get(REBUILDING)?.is_some() {
            return Err(DbError::RebuildPending);
        }
        d.index_config_origins()?;
        if allow_rebuild_pending || d.trees[CURSORS].get(REBUILDING)?.is_none() {
            d.index_reports_once()?;
        }
        Ok(d)
    }

    /// Gives every origin of the config log its key, once (see [`keys::config_origin`]).
    fn index_config_origins(&self) -> Result<(), DbError> {
        if self.trees[CURSORS]
            .get(keys::CONFIG_ORIGINS_INDEXED)?
            .is_some()
        {
            return Ok(());
        }
        for item in self.trees[LOG].iter() {
            let (k, v) = item?;
            let env: EventEnvelope = encoding::decode(&v).map_err(|source| DbError::Log {
                what: "config event",
                position: u64_of(Some(k)),
                source,
            })?;
            if env.origin != self.own {
                self.trees[CURSORS].insert(keys::config_origin(env.origin), &[])?;
            }
        }
        self.trees[CURSORS].insert(keys::CONFIG_ORIGINS_INDEXED, &[])?;
        self.db.flush()?;
        Ok(())
    }

    /// Every site other than this one that originated an event in this site's config log:
    /// this site's ancestors (events only flow down).
    pub fn config_origins(&self) -> Result<std::collections::BTreeSet<SiteCode>, DbError> {
        let mut out = std::collections::BTreeSet::new();
        for item in self.trees[CURSORS].scan_prefix(keys::CONFIG_ORIGIN_PREFIX) {
            let (k, _) = item?;
            let code = std::str::from_utf8(&k[keys::CONFIG_ORIGIN_PREFIX.len()..])
                .ok()
                .and_then(|c| SiteCode::new(c).ok());
            if let Some(c) = code {
                out.insert(c);
            }
        }
        Ok(out)
    }

    pub fn own(&self) -> SiteCode {
        self.own
    }

    /// Runs `decide` against the current projections inside one transaction and appends what
    /// it decided: the config event (with this site as origin and its next sequence number),
    /// its projection update and its reports, all or nothing. Flushed before returning.
    pub fn append_own<T>(
        &self,
        now: DateTime<Utc>,
        decide: impl Fn(
            &TxProjections<'_>,
        ) -> Result<Decided<T>, DecideError<UnabortableTransactionError>>,
    ) -> Result<T, DbError> {
        self.append_own_at(now, decide).map(|(out, _)| out)
    }

    /// As [`Db::append_own`], also giving the log position and stored size of the event
    /// appended (if one was).
    pub fn append_own_at<T>(
        &self,
        now: DateTime<Utc>,
        decide: impl Fn(
            &TxProjections<'_>,
        ) -> Result<Decided<T>, DecideError<UnabortableTransactionError>>,
    ) -> Result<(T, Option<(u64, u64)>), DbError> {
        let own = self.own;
        let signer = self.signer();
        let out = unwrap_tx(self.trees[..].transaction(|tx| -> TxResult<_> {
            let view = TxProjections(TxView(tx));
            let d = decide(&view).map_err(lift_decide)?;
            let mut at = None;
            if let Some(body) = d.event {
                let seq = tx_counter(&tx[CURSORS], OWN_CONFIG_SEQ)? + 1;
                tx[CURSORS].insert(OWN_CONFIG_SEQ, &seq.to_be_bytes())?;
                let env = self.sign_own(tx, &signer, seq, now, body)?;
                if !append_config_tx(tx, own, &env)? {
                    return Err(ConflictableTransactionError::Abort(DbError::OwnSeqTaken {
                        what: "event",
                        seq,
                    }));
                }
                let pos = tx_counter(&tx[CURSORS], CONFIG_LEN)?;
                let len = tx[LOG]
                    .get(pos.to_be_bytes())?
                    .map_or(0, |v| v.len() as u64);
                at = Some((pos, len));
                if let Some(r) = key_report(&env) {
                    append_own_report_tx(tx, own, &signer, now, r)?;
                }
            }
            for r in d.reports {
                append_own_report_tx(tx, own, &signer, now, r)?;
            }
            Ok((d.out, at))
        }))?;
        self.db.flush()?;
        Ok(out)
    }

    /// Signs this site's event number `seq` and runs the trust check on it: refused unless
    /// this site's key is the one delegated to it for `seq` and the event is within its
    /// authority. Keeps the key rings in step with a delegation or revocation.
    fn sign_own(
        &self,
        tx: &[TransactionalTree],
        signer: &SigningKey,
        seq: u64,
        now: DateTime<Utc>,
        body: schema::event::ConfigEvent,
    ) -> TxResult<EventEnvelope> {
        let own = self.own;
        let refuse =
            |why: String| ConflictableTransactionError::Abort(Refusal::Invalid(why).into());
        if let Some((_, from)) = self.pending_rotation() {
            return Err(refuse(format!(
                "a key rotation of {own} waits for its parent's delegation of the new key (from its number {from}): this site originates no events until it arrives (`site-server identity` shows it)"
            )));
        }
        let mut ring = tx_ring(tx, self.root_key)?.ok_or_else(|| refuse(NO_ROOT.into()))?;
        let key = PublicKey::of(signer);
        if ring.key_for(own, seq).ok() != Some(key) {
            return Err(refuse(format!(
                "this site's key ({}) is not delegated to {own} for its event number {seq} yet: its parent delegates it once their link is up or a bundle from it is imported (`site-server identity` shows the keys this site holds)",
                &key.to_string()[..16]
            )));
        }
        let env = EventEnvelope::signed(own, seq, now, body, signer)
            .map_err(|e| refuse(e.to_string()))?;
        trust::apply_authorized(&mut ring, &env).map_err(refuse)?;
        if is_key_event(&env) {
            projection::set_keyring(&TxView(tx), &ring).map_err(lift)?;
            let mut below = tx_report_ring(tx, own, key)?;
            // The report ring follows what this site itself delegates or revokes.
            let _ = match &env.body {
                schema::event::ConfigEvent::SiteKeyDelegated(d) if d.site != own => {
                    below.delegate(own, d)
                }
                schema::event::ConfigEvent::SiteKeyRevoked { site } => below.revoke(own, *site),
                _ => Ok(()),
            };
            set_tx_record(tx, &keys::report_ring(), &below)?;
        }
        Ok(env)
    }

    /// A rotation's key waiting for the parent's delegation (and its first number).
    pub fn pending_rotation(&self) -> Option<(SigningKey, u64)> {
        self.pending.lock().expect("pending lock").clone()
    }

    /// Sets or clears the pending rotation.
    pub fn set_pending_rotation(&self, p: Option<(SigningKey, u64)>) {
        *self.pending.lock().expect("pending lock") = p;
    }

    /// This site's current origin key.
    pub fn signer(&self) -> SigningKey {
        self.signer.read().expect("signer lock").clone()
    }

    /// A rotation takes over: this site signs with `key` from now on.
    pub fn set_signer(&self, key: SigningKey) {
        *self.signer.write().expect("signer lock") = key;
    }

    /// The key ring of this site's log (the trust root alone before any event).
    pub fn keyring(&self) -> Result<Option<KeyRing>, DbError> {
        Ok(projection::keyring(&self.view())
            .map_err(Self::read_err)?
            .or(self.root_key.map(KeyRing::new)))
    }

    /// The keys this site verifies its children's reports with.
    pub fn report_ring(&self) -> Result<Option<KeyRing>, DbError> {
        self.record(&keys::report_ring())
    }

    /// Makes sure the report ring trusts each configured child's pinned key (the anchors of
    /// this site's subtree), with this site as its root. Durable on return.
    pub fn seed_report_ring(&self, children: &[(SiteCode, PublicKey)]) -> Result<(), DbError> {
        let own_key = PublicKey::of(&self.signer());
        let mut ring: KeyRing = self
            .report_ring()?
            .unwrap_or_else(|| KeyRing::with_root(self.own, own_key));
        for (code, key) in children {
            if !ring.knows(*code) {
                let _ = ring.delegate(
                    self.own,
                    &Delegation {
                        site: *code,
                        key: *key,
                        valid_from: 1,
                    },
                );
            }
        }
        self.set_record(&keys::report_ring(), &ring)
    }

    /// The newest checkpoint of the top this site holds.
    pub fn checkpoint(&self) -> Result<Option<projection::CheckpointRecord>, DbError> {
        projection::checkpoint(&self.view()).map_err(Self::read_err)
    }

    /// The newest number of `origin`'s events applied here (0: none).
    pub fn last_applied_of(&self, origin: SiteCode) -> Result<u64, DbError> {
        let from = keys::dedupe(b'c', origin, 0);
        let to = keys::dedupe(b'c', origin, u64::MAX);
        Ok(match self.trees[DEDUPE].range(from..=to).next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes"))
            }
            None => 0,
        })
    }

    /// Appends reports raised by this site (not tied to a config event).
    pub fn append_own_reports(
        &self,
        now: DateTime<Utc>,
        reports: Vec<Report>,
    ) -> Result<(), DbError> {
        let signer = self.signer();
        unwrap_tx(self.trees[..].transaction(|tx| -> TxResult<()> {
            for r in &reports {
                append_own_report_tx(tx, self.own, &signer, now, r.clone())?;
            }
            Ok(())
        }))?;
        self.db.flush()?;
        Ok(())
    }

    /// Appends an event as it is, unless its `(origin, seq)` was applied before, with no
    /// trust check at all: for tests, and for the test-only hook that plays a compromised
    /// site. Returns whether it was new.
    #[cfg(any(test, feature = "forge"))]
    pub fn append_received(&self, env: &EventEnvelope) -> Result<bool, DbError> {
        let new = unwrap_tx(
            self.trees[..]
                .transaction(|tx| -> TxResult<bool> { append_config_tx(tx, self.own, env) }),
        )?;
        self.db.flush()?;
        Ok(new)
    }

    /// Appends a report as it is to this site's report log (test-only: a forged report).
    #[cfg(feature = "forge")]
    pub fn append_report_raw(&self, env: &ReportEnvelope) -> Result<bool, DbError> {
        let new = unwrap_tx(
            self.trees[..].transaction(|tx| -> TxResult<bool> { append_report_tx(tx, env) }),
        )?;
        self.db.flush()?;
        Ok(new)
    }

    /// This site's next own event and report numbers (for the forging hook).
    #[cfg(feature = "forge")]
    pub fn next_own_seqs(&self) -> Result<(u64, u64), DbError> {
        let get = |k: &[u8]| -> Result<u64, DbError> { Ok(u64_of(self.trees[CURSORS].get(k)?)) };
        Ok((get(OWN_CONFIG_SEQ)? + 1, get(OWN_REPORT_SEQ)? + 1))
    }

    /// Applies a batch of the parent's config log, at parent positions `first`, `first + 1`,
    /// ..., and advances the [`PARENT_APPLIED`] cursor to the last, in one transaction: after
    /// a crash either the whole batch and its cursor are there, or none of it.
    ///
    /// Positions at or below the cursor are skipped (a resend after a reconnect); a batch that
    /// starts after the cursor + 1 is a gap and is refused, changing nothing.
    ///
    /// `raise` may give a report of this site for an event newly applied (stamped `now`); it
    /// is appended in the same transaction, so it exists exactly when the event does.
    ///
    /// An event whose origin is this site or a site in `below` cannot have come from above:
    /// the whole batch is refused ([`DbError::FromParent`]), changing nothing.
    pub fn apply_parent_batch(
        &self,
        first: u64,
        events: &[EventEnvelope],
        below: &std::collections::BTreeSet<SiteCode>,
        now: DateTime<Utc>,
        raise: impl Fn(&EventEnvelope) -> Option<Report>,
    ) -> Result<BatchOutcome, DbError> {
        self.apply_parent_batch_checked(first, events, below, now, raise, true)
    }

    /// [`Db::apply_parent_batch`] without the trust check (signatures, authority, order of
    /// each origin's numbers): only for `bench trust`, which compares the two in one build.
    /// Nothing else calls it, and no build for operators has it.
    #[cfg(feature = "bench-unchecked")]
    pub fn apply_parent_batch_unchecked(
        &self,
        first: u64,
        events: &[EventEnvelope],
        below: &std::collections::BTreeSet<SiteCode>,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, DbError> {
        self.apply_parent_batch_checked(first, events, below, now, |_| None, false)
    }

    fn apply_parent_batch_checked(
        &self,
        first: u64,
        events: &[EventEnvelope],
        below: &std::collections::BTreeSet<SiteCode>,
        now: DateTime<Utc>,
        raise: impl Fn(&EventEnvelope) -> Option<Report>,
        check: bool,
    ) -> Result<BatchOutcome, DbError> {
        for env in events {
            scope::admit_from_parent(self.own, below, env.origin).map_err(DbError::FromParent)?;
        }
        // The signatures are checked in one batch on a thread beside the transaction, under
        // the keys the ring will hold for them (`expected_keys`); the transaction assumes
        // they verify and, before it commits, waits for the answer. If one does not, it
        // aborts and runs again with the answer known, stopping at that event.
        let ring = if check { self.keyring()? } else { None };
        let expected = match ring {
            Some(ring) => trust::expected_keys(&ring, events),
            None => vec![None; events.len()],
        };
        let indexed: Vec<(usize, &EventEnvelope)> = events.iter().enumerate().collect();
        std::thread::scope(|sc| {
            let worker = (check && events.len() > 1)
                .then(|| sc.spawn(|| trust::verify_expected(events, &expected)));
            let worker = std::cell::RefCell::new(worker);
            let answer: std::cell::OnceCell<Vec<Option<PublicKey>>> = Default::default();
            let verified = || {
                answer.get_or_init(|| match worker.borrow_mut().take() {
                    Some(h) => h.join().unwrap_or_else(|_| vec![None; events.len()]),
                    None => trust::verify_expected(events, &expected),
                })
            };
            let first_try = self.apply_parent_tx(
                first,
                &indexed,
                now,
                &raise,
                check.then_some(Verified::Assumed(&expected, &verified)),
            );
            match first_try {
                Err(DbError::Reverify) => self.apply_parent_tx(
                    first,
                    &indexed,
                    now,
                    &raise,
                    check.then_some(Verified::Known(verified())),
                ),
                other => other,
            }
        })
    }

    /// One transaction of [`Db::apply_parent_batch`]: `verified` says what is known of the
    /// signatures (`None`: no trust check at all, for the benchmark).
    fn apply_parent_tx(
        &self,
        first: u64,
        events: &[(usize, &EventEnvelope)],
        now: DateTime<Utc>,
        raise: &impl Fn(&EventEnvelope) -> Option<Report>,
        verified: Option<Verified<'_>>,
    ) -> Result<BatchOutcome, DbError> {
        let signer = self.signer();
        // The ring as this attempt of the transaction has it (sled may run it again), and
        // the events it applied assuming their signatures verify.
        let ring: std::cell::RefCell<Option<KeyRing>> = std::cell::RefCell::new(None);
        let assumed: std::cell::RefCell<Vec<(usize, PublicKey)>> = Default::default();
        self.apply_batch_with(
            &parent_applied(),
            first,
            events,
            || {
                *ring.borrow_mut() = None;
                assumed.borrow_mut().clear();
            },
            |tx, &(i, env)| {
                let id = format!("{}:{}", env.origin, env.origin_seq);
                if tx[DEDUPE]
                    .get(keys::dedupe(b'c', env.origin, env.origin_seq))?
                    .is_some()
                {
                    return Ok(Appended::Known);
                }
                let mut slot = ring.borrow_mut();
                if slot.is_none() {
                    *slot = tx_ring(tx, self.root_key)?;
                }
                let Some(r) = slot.as_mut() else {
                    return Ok(Appended::Stop(id, NO_ROOT.into()));
                };
                if let Some(v) = &verified {
                    let prev = env.origin_seq <= 1
                        || tx[DEDUPE]
                            .get(keys::dedupe(b'c', env.origin, env.origin_seq - 1))?
                            .is_some();
                    let admitted = match v {
                        Verified::Assumed(expected, _) => {
                            let now_key = r.key_for(env.origin, env.origin_seq).ok();
                            match now_key.filter(|k| Some(*k) == expected[i]) {
                                Some(k) => {
                                    assumed.borrow_mut().push((i, k));
                                    trust::check_order(env, prev)
                                        .and_then(|_| trust::apply_authorized(r, env))
                                }
                                None => trust::admit_event(r, env, prev),
                            }
                        }
                        Verified::Known(known) => {
                            trust::admit_event_verified(r, env, prev, known[i])
                        }
                    };
                    if let Err(why) = admitted {
                        return Ok(Appended::Stop(id, why));
                    }
                    if is_key_event(env) {
                        projection::set_keyring(&TxView(tx), r).map_err(lift)?;
                    }
                }
                let new = append_config_tx(tx, self.own, env)?;
                if let Some(rep) = raise(env).filter(|_| new) {
                    append_own_report_tx(tx, self.own, &signer, now, rep)?;
                }
                Ok(new.into())
            },
            |_| {
                // Before the commit: every signature assumed good must be.
                if let Some(Verified::Assumed(_, answer)) = &verified {
                    let known = answer();
                    if assumed.borrow().iter().any(|(i, k)| known[*i] != Some(*k)) {
                        return Err(ConflictableTransactionError::Abort(DbError::Reverify));
                    }
                }
                Ok(())
            },
        )
    }

    /// Applies a batch of a child's report log, at the child's positions `first`, `first + 1`,
    /// ..., and advances that child's cursor, by the same rules as
    /// [`Db::apply_parent_batch`]; a report already known by (origin, origin_seq) is skipped.
    ///
    /// Each report must pass `scope` ([`ChildScope::admit`]); one that does not is refused
    /// (not stored, named in [`BatchOutcome::refused`]) and the cursor moves past it.
    pub fn apply_child_reports(
        &self,
        child: SiteCode,
        first: u64,
        reports: &[ReportEnvelope],
        scope: &ChildScope,
    ) -> Result<BatchOutcome, DbError> {
        // The scope and the ring learn from the batch itself; each attempt of the transaction
        // starts over.
        let attempt = std::cell::RefCell::new(scope.clone());
        let ring: std::cell::RefCell<Option<KeyRing>> = std::cell::RefCell::new(None);
        let rotations = std::cell::RefCell::new(Vec::new());
        let own_key = PublicKey::of(&self.signer());
        let mut o = self.apply_batch_with(
            &child_reports_applied(child),
            first,
            reports,
            || {
                *attempt.borrow_mut() = scope.clone();
                *ring.borrow_mut() = None;
                rotations.borrow_mut().clear();
            },
            |tx, env| {
                let mut sc = attempt.borrow_mut();
                if let Err(why) = sc.admit(env) {
                    return Ok(Appended::Refused(why));
                }
                let mut slot = ring.borrow_mut();
                if slot.is_none() {
                    *slot = Some(tx_report_ring(tx, self.own, own_key)?);
                }
                let r = slot.as_mut().expect("set above");
                if let Err(why) = trust::admit_report(r, env) {
                    return Ok(Appended::Refused(why));
                }
                if let Report::Key(k) = &env.body {
                    if let schema::report::KeyReport::RotationRequested { key, valid_from } = k {
                        if env.origin == child {
                            let d = Delegation {
                                site: child,
                                key: *key,
                                valid_from: *valid_from,
                            };
                            // Its next reports are signed with the new key.
                            let _ = r.delegate(self.own, &d);
                            rotations.borrow_mut().push(d);
                        }
                    }
                    set_tx_record(tx, &keys::report_ring(), &*r)?;
                }
                let new = append_report_tx(tx, env)?;
                sc.learn(env);
                Ok(new.into())
            },
            |_| Ok(()),
        )?;
        o.rotations = rotations.into_inner();
        Ok(o)
    }

    /// A small record kept beside the cursors (courier state per child, ...), if set.
    pub fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: &Record,
    ) -> Result<Option<T>, DbError> {
        match self.trees[CURSORS].get(key.bytes())? {
            None => Ok(None),
            Some(v) => Ok(Some(encoding::decode(&v).map_err(|source| {
                DbError::Log {
                    what: "record",
                    position: 0,
                    source,
                }
            })?)),
        }
    }

    /// Sets a record (durable on return).
    pub fn set_record<T: serde::Serialize>(&self, key: &Record, v: &T) -> Result<(), DbError> {
        let bytes = encoding::encode(v)
            .map_err(|e| DbError::Sled(sled::Error::Unsupported(e.to_string())))?;
        self.trees[CURSORS].insert(key.bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// Stores the status messages a distribution point of this site sent, at its outbox
    /// positions `first`.., as this site's own reports, and advances that DP's cursor, in one
    /// transaction (so a resend after a reconnect is skipped, and a gap refused).
    pub fn apply_dp_reports(
        &self,
        dp: &str,
        first: u64,
        reports: &[Option<Report>],
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, DbError> {
        let own = self.own;
        let signer = self.signer();
        self.apply_batch(&dp_reports_applied(dp), first, reports, |tx, r| match r {
            Some(r) => {
                append_own_report_tx(tx, own, &signer, now, r.clone())?;
                Ok(Appended::New)
            }
            None => Ok(Appended::Known),
        })
    }

    /// One batch received on a link: items at the peer's positions `first`.., each appended
    /// with `append` (which says whether it was new), and the cursor `key`, in one transaction.
    fn apply_batch<T>(
        &self,
        key: &Cursor,
        first: u64,
        items: &[T],
        append: impl Fn(&[TransactionalTree], &T) -> TxResult<Appended>,
    ) -> Result<BatchOutcome, DbError> {
        self.apply_batch_with(key, first, items, || {}, append, |_| Ok(()))
    }

    /// As [`Db::apply_batch`], calling `begin` at the start of every attempt of the
    /// transaction (sled may run it more than once) and `finish` before it commits (an error
    /// aborts it).
    fn apply_batch_with<T>(
        &self,
        key: &Cursor,
        first: u64,
        items: &[T],
        begin: impl Fn(),
        append: impl Fn(&[TransactionalTree], &T) -> TxResult<Appended>,
        finish: impl Fn(&BatchOutcome) -> TxResult<()>,
    ) -> Result<BatchOutcome, DbError> {
        let out = unwrap_tx(self.trees[..].transaction(|tx| -> TxResult<BatchOutcome> {
            begin();
            let cursor = tx_counter(&tx[CURSORS], key.bytes())?;
            if first > cursor + 1 {
                return Err(ConflictableTransactionError::Abort(DbError::Gap {
                    expected: cursor + 1,
                    got: first,
                }));
            }
            let mut o = BatchOutcome {
                applied: 0,
                skipped: 0,
                cursor,
                refused: Vec::new(),
                stopped: None,
                rotations: Vec::new(),
            };
            for (i, item) in items.iter().enumerate() {
                let pos = first + i as u64;
                if pos <= cursor {
                    o.skipped += 1;
                    continue;
                }
                match append(tx, item)? {
                    Appended::New => o.applied += 1,
                    Appended::Known => o.skipped += 1,
                    Appended::Refused(why) => o.refused.push(why),
                    Appended::Stop(id, why) => {
                        o.stopped = Some((id, why));
                        break;
                    }
                }
                o.cursor = pos;
            }
            finish(&o)?;
            tx[CURSORS].insert(key.bytes(), &o.cursor.to_be_bytes())?;
            Ok(o)
        }))?;
        self.db.flush()?;
        Ok(out)
    }

    /// The children `site` last reported (None if it never did).
    pub fn reported_children(&self, site: SiteCode) -> Result<Option<Vec<SiteCode>>, DbError> {
        match self.trees[CURSORS].get(keys::reported_children(site))? {
            None => Ok(None),
            Some(v) => Ok(Some(encoding::decode(&v).map_err(|source| {
                DbError::Log {
                    what: "children record",
                    position: 0,
                    source,
                }
            })?)),
        }
    }

    /// Every distribution point group and its members.
    pub fn dp_groups(&self) -> Result<crate::sansio::projection::DpGroups, DbError> {
        crate::sansio::projection::dp_groups(&self.view()).map_err(Self::read_err)
    }

    /// The distribution points `site` last reported (none reported: `None`).
    pub fn reported_dps(
        &self,
        site: SiteCode,
    ) -> Result<Option<Vec<schema::report::DistributionPointInfo>>, DbError> {
        match self.trees[CURSORS].get(keys::reported_dps(site))? {
            None => Ok(None),
            Some(v) => Ok(Some(encoding::decode(&v).map_err(|source| {
                DbError::Log {
                    what: "distribution points record",
                    position: 0,
                    source,
                }
            })?)),
        }
    }

    /// Every site below this one, as far as reports tell: the configured children `direct`,
    /// their reported children, and so on down.
    pub fn subtree(
        &self,
        direct: &[SiteCode],
    ) -> Result<std::collections::BTreeSet<SiteCode>, DbError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo: Vec<SiteCode> = direct.to_vec();
        while let Some(s) = todo.pop() {
            if s == self.own || !seen.insert(s) {
                continue;
            }
            todo.extend(self.reported_children(s)?.unwrap_or_default());
        }
        Ok(seen)
    }

    /// Sets a named cursor (link bookkeeping: what a child acknowledged, ...).
    pub fn set_cursor(&self, name: &Cursor, value: u64) -> Result<(), DbError> {
        self.trees[CURSORS].insert(name.bytes(), &value.to_be_bytes())?;
        Ok(())
    }

    /// Entries of the config log from position `from` on, and their encoded bytes: what a
    /// child that acknowledged `from - 1` still has to receive.
    pub fn log_bytes(&self, from: u64) -> Result<(u64, u64), DbError> {
        let (mut n, mut bytes) = (0, 0);
        for kv in self.trees[LOG].range(from.max(1).to_be_bytes()..) {
            let (_, v) = kv?;
            n += 1;
            bytes += v.len() as u64;
        }
        Ok((n, bytes))
    }

    /// A named cursor (0 when never set).
    pub fn cursor(&self, name: &Cursor) -> Result<u64, DbError> {
        Ok(u64_of(self.trees[CURSORS].get(name.bytes())?))
    }

    pub fn counts(&self) -> Result<LogCounts, DbError> {
        Ok(LogCounts {
            config_events: u64_of(self.trees[CURSORS].get(CONFIG_LEN)?),
            reports: u64_of(self.trees[CURSORS].get(REPORT_LEN)?),
        })
    }

    /// Config log entries from local position `from` (1-based), at most `limit`.
    pub fn log(&self, from: u64, limit: usize) -> Result<Vec<(u64, EventEnvelope)>, DbError> {
        self.log_within(from, limit, u64::MAX)
    }

    /// As [`Db::log`], stopping before the stored bytes would pass `max_bytes` (one entry at
    /// least): what one replication frame carries, so that big events (a catalog delta) never
    /// add up past the frame limit.
    pub fn log_within(
        &self,
        from: u64,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<(u64, EventEnvelope)>, DbError> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for kv in self.trees[LOG]
            .range(from.max(1).to_be_bytes()..)
            .take(limit)
        {
            let (k, v) = kv?;
            bytes += v.len() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            let pos = u64_of(Some(k));
            let env = encoding::decode(&v).map_err(|source| DbError::Log {
                what: "config event",
                position: pos,
                source,
            })?;
            out.push((pos, env));
        }
        Ok(out)
    }

    /// Report log entries from local position `from` (1-based), at most `limit`, that pass
    /// `keep`.
    pub fn reports(
        &self,
        from: u64,
        limit: usize,
        keep: impl Fn(&ReportEnvelope) -> bool,
    ) -> Result<Vec<(u64, ReportEnvelope)>, DbError> {
        let mut out = Vec::new();
        for kv in self.trees[REPORTS].range(from.max(1).to_be_bytes()..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let pos = u64_of(Some(k));
            let env: ReportEnvelope = encoding::decode(&v).map_err(|source| DbError::Log {
                what: "report",
                position: pos,
                source,
            })?;
            if keep(&env) {
                out.push((pos, env));
            }
        }
        Ok(out)
    }

    fn view(&self) -> ReadView<'_> {
        ReadView(&self.trees)
    }

    fn read_err(e: ProjError<sled::Error>) -> DbError {
        match e {
            ProjError::Store(s) => DbError::Sled(s),
            ProjError::Damaged(d) => DbError::Damaged(d),
        }
    }

    pub fn meta(&self) -> Result<Meta, DbError> {
        projection::meta(&self.view()).map_err(Self::read_err)
    }

    pub fn package(&self, id: &PackageId) -> Result<Option<PackageRecord>, DbError> {
        projection::package(&self.view(), id).map_err(Self::read_err)
    }

    pub fn packages(&self) -> Result<Vec<PackageRecord>, DbError> {
        self.all(Table::Packages)
    }

    pub fn manifest(&self, id: &ManifestId) -> Result<Option<Manifest>, DbError> {
        projection::manifest(&self.view(), id).map_err(Self::read_err)
    }

    pub fn adverts(&self) -> Result<Vec<Advertisement>, DbError> {
        self.all(Table::Adverts)
    }

    pub fn targets(&self, id: &PackageId) -> Result<Vec<DistributionTarget>, DbError> {
        projection::targets(&self.view(), id).map_err(Self::read_err)
    }

    /// How many updates the catalog projection holds.
    pub fn catalog_len(&self) -> Result<u64, DbError> {
        Ok(self.trees[PROJ + Table::Catalog as usize].len() as u64)
    }

    /// Every update of the catalog projection, by id.
    pub fn catalog(&self) -> Result<Vec<schema::catalog::Update>, DbError> {
        self.all(Table::Catalog)
    }

    fn all<T: serde::de::DeserializeOwned>(&self, t: Table) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        for kv in self.trees[PROJ + t as usize].iter() {
            let (k, v) = kv?;
            out.push(encoding::decode(&v).map_err(|source| Damaged {
                table: t,
                key: String::from_utf8_lossy(&k).into_owned(),
                source,
            })?);
        }
        Ok(out)
    }

    /// Every projection entry, table by table, in key order: what "byte-identical" compares.
    pub fn projection_dump(&self) -> Result<Vec<DumpRow>, DbError> {
        let mut out = Vec::new();
        for t in Table::ALL {
            for kv in self.trees[PROJ + t as usize].iter() {
                let (k, v) = kv?;
                out.push((t.name(), k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// BLAKE3 over [`Db::projection_dump`], hex.
    pub fn projection_digest(&self) -> Result<String, DbError> {
        let mut h = blake3::Hasher::new();
        for (t, k, v) in self.projection_dump()? {
            for part in [t.as_bytes(), &k, &v] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        Ok(h.finalize().to_hex().to_string())
    }

    /// Throws the projections away and replays the whole config log into fresh ones.
    ///
    /// A marker makes an interrupted rebuild visible: the daemon refuses to start until a
    /// rebuild has completed.
    pub fn rebuild(&self) -> Result<RebuildReport, DbError> {
        let digest_before = self.projection_digest()?;
        let report_digest_before = self.report_digest()?;
        self.trees[CURSORS].insert(REBUILDING, &1u64.to_be_bytes())?;
        self.db.flush()?;
        for t in Table::ALL {
            self.trees[PROJ + t as usize].clear()?;
        }
        let proj = &self.trees[PROJ..];
        let mut from = 1u64;
        let mut events = 0u64;
        // Every event is checked again, as when it was applied: signature, authority, order.
        let mut ring = self.root_key.map(KeyRing::new);
        let mut last_of: std::collections::BTreeMap<SiteCode, u64> = Default::default();
        loop {
            let batch = self.log(from, 512)?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            from = last + 1;
            events += batch.len() as u64;
            let mut keys_changed = false;
            for (pos, env) in &batch {
                let untrusted = |why: String| DbError::Untrusted {
                    position: *pos,
                    why,
                };
                let r = ring.as_mut().ok_or_else(|| untrusted(NO_ROOT.into()))?;
                let last = last_of.entry(env.origin).or_default();
                let prev = env.origin_seq <= 1 || *last + 1 == env.origin_seq;
                trust::admit_event(r, env, prev).map_err(untrusted)?;
                *last = env.origin_seq;
                keys_changed |= is_key_event(env);
            }
            unwrap_tx(proj.transaction(|tx| -> TxResult<()> {
                // TxView indexes from PROJ; give it a slice that starts PROJ entries earlier.
                let view = ProjOnly(tx);
                for (_, env) in &batch {
                    projection::apply(&view, self.own, env).map_err(lift)?;
                }
                if let (true, Some(r)) = (keys_changed, &ring) {
                    projection::set_keyring(&view, r).map_err(lift)?;
                }
                Ok(())
            }))?;
        }
        let report_rollups = self.reindex_reports()?;
        self.trees[CURSORS].remove(REBUILDING)?;
        self.db.flush()?;
        Ok(RebuildReport {
            events,
            digest_before,
            digest_after: self.projection_digest()?,
            reports: self.trees[REPORTS].len() as u64,
            report_rollups,
            report_digest_before,
            report_digest_after: self.report_digest()?,
        })
    }

    /// BLAKE3 over the report roll-ups and indexes (the `status` tree, the machine records
    /// and advertisement states), hex.
    pub fn report_digest(&self) -> Result<String, DbError> {
        let mut h = blake3::Hasher::new();
        let agents = [
            keys::agent_machines(None),
            keys::agent_adverts(None),
            keys::AGENT_INVENTORY_PREFIX.to_vec(),
        ];
        let parts = self.trees[keys::STATUS].iter().chain(
            agents
                .iter()
                .flat_map(|p| self.trees[keys::AGENTS].scan_prefix(p)),
        );
        for kv in parts {
            let (k, v) = kv?;
            for part in [&k[..], &v[..]] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        Ok(h.finalize().to_hex().to_string())
    }
}

/// A transaction over the projection trees only (indices from 0).
struct ProjOnly<'a>(&'a [TransactionalTree]);

impl ProjectionStore for ProjOnly<'_> {
    type Error = UnabortableTransactionError;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.0[t as usize].get(key)?.map(|v| v.to_vec()))
    }
    fn put(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), Self::Error> {
        self.0[t as usize].insert(key, value)?;
        Ok(())
    }
}

/// The projections as a decision sees them inside [`Db::append_own`].
pub struct TxProjections<'a>(TxView<'a>);

impl ProjectionStore for TxProjections<'_> {
    type Error = UnabortableTransactionError;
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        self.0.get(t, key)
    }
    fn put(&self, t: Table, key: &[u8], value: Vec<u8>) -> Result<(), Self::Error> {
        self.0.put(t, key, value)
    }
}

/// The largest event this site may originate: one that fits, with room to spare, in a frame
/// (and so in a batch to a child). A bigger one could never be sent and would stop the link.
pub const MAX_EVENT_BYTES: usize = schema::wire::MAX_FRAME - (64 << 10);

const NO_ROOT: &str = "this site has no trust root, so nothing from above verifies: set the top's key with `site-server parent set ... --root-key KEY` (the top's `site-server identity` prints it) and restart";

/// The config log's key ring inside a transaction: as stored, or a new one from the trust
/// root; `None` without a trust root.
fn tx_ring(tx: &[TransactionalTree], root_key: Option<PublicKey>) -> TxResult<Option<KeyRing>> {
    Ok(projection::keyring(&TxView(tx))
        .map_err(lift)?
        .or(root_key.map(KeyRing::new)))
}

/// The report ring inside a transaction: as stored, or one rooted at this site.
fn tx_report_ring(
    tx: &[TransactionalTree],
    own: SiteCode,
    own_key: PublicKey,
) -> TxResult<KeyRing> {
    match tx[CURSORS].get(keys::report_ring().bytes())? {
        Some(v) => encoding::decode(&v).map_err(|source| {
            ConflictableTransactionError::Abort(DbError::Log {
                what: "report key ring",
                position: 0,
                source,
            })
        }),
        None => Ok(KeyRing::with_root(own, own_key)),
    }
}

fn set_tx_record<T: serde::Serialize>(
    tx: &[TransactionalTree],
    key: &Record,
    v: &T,
) -> TxResult<()> {
    let bytes = encoding::encode(v).map_err(|e| {
        ConflictableTransactionError::Abort(DbError::Refused(Refusal::Invalid(e.to_string())))
    })?;
    tx[CURSORS].insert(key.bytes(), bytes)?;
    Ok(())
}

fn is_key_event(env: &EventEnvelope) -> bool {
    matches!(
        env.body,
        schema::event::ConfigEvent::SiteKeyDelegated(_)
            | schema::event::ConfigEvent::SiteKeyRevoked { .. }
    )
}

/// The report that carries an own key event up, so that the sites above can verify the
/// reports of the sites below this one.
fn key_report(env: &EventEnvelope) -> Option<Report> {
    use schema::report::KeyReport;
    match &env.body {
        schema::event::ConfigEvent::SiteKeyDelegated(d) if d.site != env.origin => {
            Some(Report::Key(KeyReport::Delegated(d.clone())))
        }
        schema::event::ConfigEvent::SiteKeyRevoked { site } => {
            Some(Report::Key(KeyReport::Revoked { site: *site }))
        }
        _ => None,
    }
}

/// Appends `env` to the config log and applies it, unless its dedupe key is known.
fn append_config_tx(
    tx: &[TransactionalTree],
    own: SiteCode,
    env: &EventEnvelope,
) -> TxResult<bool> {
    let dk = keys::dedupe(b'c', env.origin, env.origin_seq);
    if tx[DEDUPE].get(dk)?.is_some() {
        return Ok(false);
    }
    let pos = tx_counter(&tx[CURSORS], CONFIG_LEN)? + 1;
    let bytes = encoding::encode(env).map_err(|e| {
        ConflictableTransactionError::Abort(DbError::Refused(Refusal::Invalid(e.to_string())))
    })?;
    if env.origin == own && bytes.len() > MAX_EVENT_BYTES {
        return Err(ConflictableTransactionError::Abort(DbError::Refused(
            Refusal::Invalid(format!(
                "the event would be {} bytes, more than the {MAX_EVENT_BYTES} a link can carry in one frame: make it smaller (fewer files in one package, fewer catalog changes in one sync)",
                bytes.len()
            )),
        )));
    }
    tx[LOG].insert(&pos.to_be_bytes(), bytes)?;
    tx[DEDUPE].insert(&dk, &pos.to_be_bytes())?;
    tx[CURSORS].insert(CONFIG_LEN, &pos.to_be_bytes())?;
    if env.origin != own {
        tx[CURSORS].insert(keys::config_origin(env.origin), &[])?;
    }
    projection::apply(&TxView(tx), own, env).map_err(lift)?;
    Ok(true)
}

/// Appends a report another site raised, unless its (origin, seq) is known.
fn append_report_tx(tx: &[TransactionalTree], env: &ReportEnvelope) -> TxResult<bool> {
    let dk = keys::dedupe(b'r', env.origin, env.origin_seq);
    if tx[DEDUPE].get(dk)?.is_some() {
        return Ok(false);
    }
    let pos = tx_counter(&tx[CURSORS], REPORT_LEN)? + 1;
    let bytes = encoding::encode(env).map_err(|e| {
        ConflictableTransactionError::Abort(DbError::Refused(Refusal::Invalid(e.to_string())))
    })?;
    tx[REPORTS].insert(&pos.to_be_bytes(), bytes)?;
    tx[DEDUPE].insert(&dk, &pos.to_be_bytes())?;
    tx[CURSORS].insert(REPORT_LEN, &pos.to_be_bytes())?;
    if let Report::SiteData(SiteData::Children(children)) = &env.body {
        let v = encoding::encode(children).map_err(|e| {
            ConflictableTransactionError::Abort(DbError::Refused(Refusal::Invalid(e.to_string())))
        })?;
        tx[CURSORS].insert(keys::reported_children(env.origin), v)?;
    }
    agents::project_report(tx, env)?;
    status::project_report(tx, pos, env, true)?;
    if let Report::SiteData(SiteData::DistributionPoints(dps)) = &env.body {
        let v = encoding::encode(dps).map_err(|e| {
            ConflictableTransactionError::Abort(DbError::Refused(Refusal::Invalid(e.to_string())))
        })?;
        tx[CURSORS].insert(keys::reported_dps(env.origin), v)?;
    }
    Ok(true)
}

fn append_own_report_tx(
    tx: &[TransactionalTree],
    own: SiteCode,
    signer: &SigningKey,
    now: DateTime<Utc>,
    body: Report,
) -> TxResult<()> {
    let seq = tx_counter(&tx[CURSORS], OWN_REPORT_SEQ)? + 1;
    tx[CURSORS].insert(OWN_REPORT_SEQ, &seq.to_be_bytes())?;
    let env = ReportEnvelope::signed(own, seq, now, body, signer).map_err(|e| {
        ConflictableTransactionError::Abort(DbError::Refused(Refusal::Invalid(e.to_string())))
    })?;
    if !append_report_tx(tx, &env)? {
        return Err(ConflictableTransactionError::Abort(DbError::OwnSeqTaken {
            what: "report",
            seq,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sansio::decide::{self, AdvertRequest, Ctx, PublishRequest, PublishTarget};
    use crate::sansio::projection::MemStore;
    use schema::advert::{ExitRules, Program};
    use schema::catalog::{CatalogChange, CatalogDelta, Classification, Update};
    use schema::event::{ConfigEvent, DistributionTarget};
    use schema::manifest::{ChunkRef, EntryKind, FileEntry};
    use schema::status;
    use schema::ChunkId;

    fn code(s: &str) -> SiteCode {
        SiteCode::new(s).unwrap()
    }

    fn manifest(tag: &[u8]) -> Manifest {
        Manifest {
            files: vec![FileEntry {
                path: "a.bin".into(),
                mode: 0o644,
                size: tag.len() as u64,
                kind: EntryKind::File {
                    chunks: vec![ChunkRef {
                        id: ChunkId::of(tag),
                        len: tag.len() as u32,
                    }],
                },
            }],
        }
    }

    /// Each test site's key, from its code.
    fn key_of(site: &str) -> SigningKey {
        SigningKey::from_bytes(blake3::hash(site.as_bytes()).as_bytes())
    }

    /// A site's database in a tree whose top is CEN; CEN's log starts with its genesis, and
    /// the report ring knows CEN -> P01 -> S01 -> T01 and CEN -> P02.
    fn open_test(path: &Path, site: &str, allow_rebuild_pending: bool) -> Result<Db, DbError> {
        open_as(path, site, "CEN", allow_rebuild_pending)
    }

    /// As [`open_test`], in a tree whose top is `root`.
    fn open_as(
        path: &Path,
        site: &str,
        root: &str,
        allow_rebuild_pending: bool,
    ) -> Result<Db, DbError> {
        // sled lets go of its file lock from its flusher thread, a moment after the last
        // handle is dropped: a reopen right after a drop waits for it (never a lock held by
        // another live handle, which no test here makes).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            let r = Db::open(
                path,
                code(site),
                allow_rebuild_pending,
                Trust {
                    signer: key_of(site),
                    root_key: Some(PublicKey::of(&key_of(root))),
                },
            );
            match r {
                Err(DbError::Sled(sled::Error::Io(e)))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r?,
            }
        };
        if site == root && db.counts()?.config_events == 0 {
            db.append_own(Utc::now(), |_| {
                Ok(Decided {
                    event: Some(genesis_of(root)),
                    reports: vec![],
                    out: (),
                })
            })?;
        }
        let mut ring = KeyRing::with_root(code("CEN"), PublicKey::of(&key_of("CEN")));
        for (by, s) in [
            ("CEN", "P01"),
            ("CEN", "P02"),
            ("P01", "S01"),
            ("S01", "T01"),
        ] {
            ring.delegate(
                code(by),
                &Delegation {
                    site: code(s),
                    key: PublicKey::of(&key_of(s)),
                    valid_from: 1,
                },
            )
            .unwrap();
        }
        db.set_record(&keys::report_ring(), &ring)?;
        Ok(db)
    }

    fn genesis() -> ConfigEvent {
        genesis_of("CEN")
    }

    fn genesis_of(root: &str) -> ConfigEvent {
        delegation(root, 1)
    }

    fn delegation(site: &str, valid_from: u64) -> ConfigEvent {
        ConfigEvent::SiteKeyDelegated(Delegation {
            site: code(site),
            key: PublicKey::of(&key_of(site)),
            valid_from,
        })
    }

    /// `origin`'s event, signed with its key.
    fn signed_event(
        origin: &str,
        seq: u64,
        time: DateTime<Utc>,
        body: ConfigEvent,
    ) -> EventEnvelope {
        EventEnvelope::signed(code(origin), seq, time, body, &key_of(origin)).unwrap()
    }

    /// `origin`'s report, signed with its key.
    fn signed_report(origin: &str, seq: u64, time: DateTime<Utc>, body: Report) -> ReportEnvelope {
        ReportEnvelope::signed(code(origin), seq, time, body, &key_of(origin)).unwrap()
    }

    fn ctx(now: DateTime<Utc>) -> Ctx {
        Ctx {
            site: code("CEN"),
            machine: "test".into(),
            now,
        }
    }

    /// CEN's database below the top TOP, which delegated CEN's key (TOP:1, TOP:2).
    fn open_below_top(path: &Path, allow_rebuild_pending: bool) -> Db {
        let db = open_as(path, "CEN", "TOP", allow_rebuild_pending).unwrap();
        if db.counts().unwrap().config_events == 0 {
            let t = Utc::now();
            let first = [
                signed_event("TOP", 1, t, genesis_of("TOP")),
                signed_event("TOP", 2, t, delegation("CEN", 1)),
            ];
            let o = db
                .apply_parent_batch(1, &first, &Default::default(), t, |_| None)
                .unwrap();
            assert_eq!(o.applied, 2);
        }
        db
    }

    /// A database with a bit of everything in its log: CEN's own events between TOP's.
    fn populated() -> (tempfile::TempDir, Db) {
        let d = tempfile::tempdir().unwrap();
        let db = open_below_top(&d.path().join("db"), false);
        let t0 = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = ctx(t0);
        let publish = |target, tag: &[u8]| PublishRequest {
            target,
            priority: None,
            manifest: manifest(tag),
            new_chunks: 1,
        };
        let p1 = db
            .append_own(t0, |v| {
                decide::publish(
                    v,
                    &c,
                    &publish(PublishTarget::New { name: "one".into() }, b"x"),
                )
            })
            .unwrap();
        assert_eq!(p1.package.to_string(), "CEN00001");
        let p2 = db
            .append_own(t0, |v| {
                decide::publish(
                    v,
                    &c,
                    &publish(PublishTarget::New { name: "two".into() }, b"y"),
                )
            })
            .unwrap();
        assert_eq!(p2.package.to_string(), "CEN00002");
        let same = db
            .append_own(t0, |v| {
                decide::publish(v, &c, &publish(PublishTarget::Existing(p1.package), b"x"))
            })
            .unwrap();
        assert!(same.unchanged);
        let v2 = db
            .append_own(t0, |v| {
                decide::publish(v, &c, &publish(PublishTarget::Existing(p1.package), b"z"))
            })
            .unwrap();
        assert_eq!(v2.source_version, 2);
        let adv = db
            .append_own(t0, |v| {
                decide::create_advert(
                    v,
                    &c,
                    &AdvertRequest {
                        name: None,
                        package: p1.package,
                        program: Program {
                            name: "Install".into(),
                            command_line: "install.sh".into(),
                            exit: ExitRules::default(),
                        },
                        collection: "All".into(),
                        start: None,
                        mandatory: vec![],
                        utc: true,
                        run: Default::default(),
                    },
                )
            })
            .unwrap();
        assert_eq!(adv.id.to_string(), "CEN20001");
        // Events another site originated (as a parent's log would bring them).
        let parent = |seq: u64, body| signed_event("TOP", seq + 2, t0, body);
        let update = Update {
            id: "KB1".into(),
            title: "fix".into(),
            product: "os".into(),
            classification: Classification::Security,
            severity: Some("critical".into()),
            bulletin: None,
            kb: Some("1".into()),
            posted: t0,
            revised: t0,
            superseded_by: None,
            expired: false,
            size: 10,
            files: vec![],
            source: "vendor".into(),
        };
        for (seq, body) in [
            (
                1,
                ConfigEvent::CatalogDelta(CatalogDelta {
                    catalog_version: 1,
                    source: "json".into(),
                    changes: vec![CatalogChange::Added(update)],
                }),
            ),
            (
                2,
                ConfigEvent::DistributionTargetsAdded {
                    package: p1.package,
                    targets: vec![DistributionTarget::Site(code("S01"))],
                },
            ),
            (
                3,
                ConfigEvent::PackageVersionRetired {
                    package: p1.package,
                    source_version: 1,
                },
            ),
        ] {
            assert!(db.append_received(&parent(seq, body.clone())).unwrap());
            assert!(!db.append_received(&parent(seq, body)).unwrap(), "dedupe");
        }
        (d, db)
    }

    #[test]
    fn an_own_event_too_big_for_a_frame_is_refused_and_appends_nothing() {
        let (_d, db) = populated();
        let before = (db.counts().unwrap(), db.projection_digest().unwrap());
        let t0 = Utc::now();
        // Random hex does not compress below half its size: 150 MB of it is too big.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut hex = || {
            (0..32)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{:08x}", x as u32)
                })
                .collect::<String>()
        };
        let huge = ConfigEvent::DpGroupCreated {
            group: (0..600_000).map(|_| hex()).collect(),
        };
        let err = db
            .append_own(t0, |_| {
                Ok(Decided {
                    event: Some(huge.clone()),
                    reports: vec![],
                    out: (),
                })
            })
            .unwrap_err();
        assert!(err.to_string().contains("more than the"), "{err}");
        assert_eq!(
            before,
            (db.counts().unwrap(), db.projection_digest().unwrap())
        );
    }

    #[test]
    fn appends_are_counted_deduped_and_projected() {
        let (_d, db) = populated();
        let counts = db.counts().unwrap();
        assert_eq!(counts.config_events, 9, "unchanged publish appends nothing");
        assert_eq!(counts.reports, 4);
        let log = db.log(1, 100).unwrap();
        let positions: Vec<u64> = log.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, (1..=9).collect::<Vec<_>>());
        let own: Vec<u64> = log
            .iter()
            .filter(|(_, e)| e.origin == code("CEN"))
            .map(|(_, e)| e.origin_seq)
            .collect();
        assert_eq!(own, [1, 2, 3, 4]);
        let p = db.package(&"CEN00001".parse().unwrap()).unwrap().unwrap();
        assert_eq!(p.versions.len(), 2);
        assert!(p.versions[0].retired);
        assert_eq!(p.current().unwrap().source_version, 2);
        assert_eq!(db.meta().unwrap().catalog_version, 1);
        assert_eq!(db.meta().unwrap().next_package, 3);
    }

    #[test]
    fn parent_batches_apply_once_in_order_with_their_cursor() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db");
        let db = open_test(&path, "S01", false).unwrap();
        let t0 = Utc::now();
        let ev = |seq: u64| {
            let body = if seq == 1 {
                genesis()
            } else {
                ConfigEvent::SyncRequest {
                    catalog_version: seq,
                }
            };
            signed_event("CEN", seq, t0, body)
        };
        let batch = |from: u64, to: u64| (from..=to).map(ev).collect::<Vec<_>>();
        let below: std::collections::BTreeSet<SiteCode> = [code("T01")].into();
        let o = db
            .apply_parent_batch(1, &batch(1, 3), &below, t0, |_| None)
            .unwrap();
        assert_eq!((o.applied, o.skipped, o.cursor), (3, 0, 3));
        // A resend overlapping what was applied: only the new tail is applied.
        let o = db
            .apply_parent_batch(2, &batch(2, 5), &below, t0, |_| None)
            .unwrap();
        assert_eq!((o.applied, o.skipped, o.cursor), (2, 2, 5));
        // A frame's worth: events up to a byte budget, one at least.
        // (Position 1 is the top's genesis; 2..=5 are alike.)
        let one = db.log_bytes(2).unwrap().1 / 4;
        assert_eq!(db.log_within(2, 100, 0).unwrap().len(), 1);
        assert_eq!(db.log_within(2, 100, one * 2).unwrap().len(), 2);
        assert_eq!(db.log_within(2, 100, u64::MAX).unwrap().len(), 4);
        // A gap changes nothing.
        let before = (db.counts().unwrap(), db.projection_digest().unwrap());
        let err = db
            .apply_parent_batch(8, &batch(8, 9), &below, t0, |_| None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DbError::Gap {
                    expected: 6,
                    got: 8
                }
            ),
            "{err}"
        );
        assert_eq!(
            before,
            (db.counts().unwrap(), db.projection_digest().unwrap())
        );
        assert_eq!(db.cursor(&parent_applied()).unwrap(), 5);
        // An event that claims to come from this site, or from below it, is refused whole.
        for origin in ["S01", "T01"] {
            let forged = EventEnvelope {
                origin: code(origin),
                ..ev(1)
            };
            let err = db
                .apply_parent_batch(6, &[ev(6), forged], &below, t0, |_| None)
                .unwrap_err();
            assert!(
                matches!(&err, DbError::FromParent(m) if m.contains(origin)),
                "{err}"
            );
        }
        assert_eq!(
            before,
            (db.counts().unwrap(), db.projection_digest().unwrap())
        );
        assert_eq!(db.config_origins().unwrap(), [code("CEN")].into());
        // The cursor and the events survive a reopen, in the parent's order, each once.
        drop(db);
        let db = open_test(&path, "S01", false).unwrap();
        assert_eq!(db.cursor(&parent_applied()).unwrap(), 5);
        let seqs: Vec<u64> = db
            .log(1, 100)
            .unwrap()
            .iter()
            .map(|(_, e)| e.origin_seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(db.meta().unwrap().sync_requested, 5);
        assert_eq!(db.meta().unwrap().events_applied, 5);
    }

    #[test]
    fn child_reports_apply_once_with_a_cursor_per_child() {
        let d = tempfile::tempdir().unwrap();
        let db = open_test(&d.path().join("db"), "CEN", false).unwrap();
        let t0 = Utc::now();
        let rep = |origin: &str, seq: u64| {
            signed_report(
                origin,
                seq,
                t0,
                Report::Status(schema::report::StatusMessage::new(
                    status::SITE_SERVER_STARTED,
                    code(origin),
                    "m",
                    t0,
                    vec![],
                    vec![],
                )),
            )
        };
        let scope = |child: &str, below: &[&str], elsewhere: &[&str]| {
            ChildScope::new(
                code("CEN"),
                Default::default(),
                code(child),
                below.iter().map(|c| code(c)).collect(),
                elsewhere.iter().map(|c| code(c)).collect(),
            )
        };
        let p01 = scope("P01", &["S01"], &["P02"]);
        let p02 = scope("P02", &[], &["P01", "S01"]);
        let o = db
            .apply_child_reports(code("P01"), 1, &[rep("P01", 1), rep("S01", 1)], &p01)
            .unwrap();
        assert_eq!((o.applied, o.cursor), (2, 2));
        // Resend with one new report; another child's positions are its own.
        let o = db
            .apply_child_reports(code("P01"), 2, &[rep("S01", 1), rep("P01", 2)], &p01)
            .unwrap();
        assert_eq!((o.applied, o.skipped, o.cursor), (1, 1, 3));
        let o = db
            .apply_child_reports(code("P02"), 1, &[rep("P02", 1)], &p02)
            .unwrap();
        assert_eq!((o.applied, o.cursor), (1, 1));
        assert!(matches!(
            db.apply_child_reports(code("P01"), 5, &[rep("P01", 4)], &p01),
            Err(DbError::Gap {
                expected: 4,
                got: 5
            })
        ));
        let origins: Vec<(String, u64)> = db
            .reports(1, 100, |_| true)
            .unwrap()
            .into_iter()
            .map(|(_, r)| (r.origin.to_string(), r.origin_seq))
            .collect();
        assert_eq!(
            origins,
            [
                ("P01".into(), 1),
                ("S01".into(), 1),
                ("P01".into(), 2),
                ("P02".into(), 1)
            ]
        );
        // P01 speaks for CEN, for itself as CEN's sibling P02, and names CEN as a child:
        // each refused, none stored, the cursor moves past them.
        let forged_children = signed_report(
            "S01",
            2,
            t0,
            Report::SiteData(SiteData::Children(vec![code("CEN")])),
        );
        let o = db
            .apply_child_reports(
                code("P01"),
                4,
                &[rep("CEN", 1), rep("P02", 2), forged_children, rep("S01", 3)],
                &p01,
            )
            .unwrap();
        assert_eq!((o.applied, o.refused.len(), o.cursor), (1, 3, 7), "{o:?}");
        assert!(o.refused[0].contains("origin CEN is this site"), "{o:?}");
        assert!(o.refused[1].contains("not P01 or a site below it"), "{o:?}");
        assert!(o.refused[2].contains("names CEN"), "{o:?}");
        assert_eq!(db.reported_children(code("S01")).unwrap(), None);
        // CEN's own report 1 was not reserved by the forgery: its own reports go on.
        db.append_own_reports(t0, vec![rep("CEN", 1).body]).unwrap();
        assert!(db
            .reports(1, 100, |r| r.origin == code("CEN"))
            .unwrap()
            .iter()
            .any(|(_, r)| r.origin_seq == 1));
    }

    #[test]
    fn an_own_report_whose_key_is_taken_aborts_loudly() {
        let d = tempfile::tempdir().unwrap();
        let db = open_test(&d.path().join("db"), "CEN", false).unwrap();
        let t0 = Utc::now();
        // What an unscoped store of a child's report once allowed: CEN's key 1 taken.
        let forged = signed_report("CEN", 1, t0, Report::SiteData(SiteData::Children(vec![])));
        unwrap_tx(
            db.trees[..].transaction(|tx| -> TxResult<bool> { append_report_tx(tx, &forged) }),
        )
        .unwrap();
        let err = db
            .append_own_reports(t0, vec![forged.body.clone()])
            .unwrap_err();
        assert!(
            matches!(
                err,
                DbError::OwnSeqTaken {
                    what: "report",
                    seq: 1
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn refusals_append_nothing() {
        let (_d, db) = populated();
        let before = (db.counts().unwrap(), db.projection_digest().unwrap());
        let c = ctx(Utc::now());
        let err = db
            .append_own(c.now, |v| {
                decide::publish(
                    v,
                    &c,
                    &PublishRequest {
                        target: PublishTarget::Existing("CEN00042".parse().unwrap()),
                        priority: None,
                        manifest: manifest(b"q"),
                        new_chunks: 0,
                    },
                )
            })
            .err()
            .unwrap();
        assert!(err.to_string().contains("CEN00042"), "{err}");
        assert_eq!(
            before,
            (db.counts().unwrap(), db.projection_digest().unwrap())
        );
    }

    #[test]
    fn subtree_comes_from_reported_children_and_bounds_distribute() {
        let (_d, db) = populated();
        let child = |origin: &str, seq, kids: &[&str]| {
            signed_report(
                origin,
                seq,
                Utc::now(),
                Report::SiteData(SiteData::Children(kids.iter().map(|k| code(k)).collect())),
            )
        };
        // P01 reports S01 below it, then S01 (learned in the same batch) reports T01; P02
        // never reported anything.
        let scope = ChildScope::new(
            code("CEN"),
            Default::default(),
            code("P01"),
            Default::default(),
            [code("P02")].into(),
        );
        let o = db
            .apply_child_reports(
                code("P01"),
                1,
                &[child("P01", 1, &["S01"]), child("S01", 1, &["T01"])],
                &scope,
            )
            .unwrap();
        assert_eq!(o.applied, 2, "{o:?}");
        assert_eq!(
            db.reported_children(code("S01")).unwrap(),
            Some(vec![code("T01")])
        );
        let sub = db.subtree(&[code("P01"), code("P02")]).unwrap();
        let want: std::collections::BTreeSet<_> = ["P01", "P02", "S01", "T01"]
            .iter()
            .map(|c| code(c))
            .collect();
        assert_eq!(sub, want);
        // A later report replaces the earlier one.
        let scope = ChildScope::new(
            code("CEN"),
            Default::default(),
            code("P01"),
            db.subtree(&[code("P01")]).unwrap(),
            [code("P02")].into(),
        );
        db.apply_child_reports(code("P01"), 3, &[child("S01", 2, &[])], &scope)
            .unwrap();
        assert!(!db.subtree(&[code("P01")]).unwrap().contains(&code("T01")));

        let mut known = db.subtree(&[code("P01")]).unwrap();
        known.insert(code("CEN"));
        let pkg: PackageId = "CEN00001".parse().unwrap();
        let c = ctx(Utc::now());
        let go = |targets: Vec<DistributionTarget>| {
            db.append_own(c.now, |v| {
                decide::distribute(
                    v,
                    &c,
                    &decide::DistributeRequest {
                        package: pkg,
                        targets: targets.clone(),
                    },
                    &known,
                    &Default::default(),
                )
            })
        };
        let before = db.counts().unwrap();
        let err = go(vec![DistributionTarget::Site(code("S02"))]).unwrap_err();
        assert!(
            err.to_string().contains("site S02 is not CEN or below it"),
            "{err}"
        );
        assert!(go(vec![]).is_err());
        assert_eq!(db.counts().unwrap(), before, "refusals append nothing");
        let out = go(vec![DistributionTarget::Site(code("P01"))]).unwrap();
        assert_eq!(out.added, vec![DistributionTarget::Site(code("P01"))]);
        let n = db.counts().unwrap().config_events;
        assert_eq!(n, before.config_events + 1);
        let again = go(vec![
            DistributionTarget::Site(code("S01")),
            DistributionTarget::Site(code("P01")),
        ])
        .unwrap();
        assert!(again.added.is_empty());
        assert_eq!(
            again.already.len(),
            2,
            "S01 was targeted by a received event"
        );
        assert_eq!(
            db.targets(&pkg).unwrap(),
            vec![
                DistributionTarget::Site(code("P01")),
                DistributionTarget::Site(code("S01"))
            ]
        );
        assert_eq!(
            db.counts().unwrap().config_events,
            n,
            "nothing new, no event"
        );
    }

    #[test]
    fn rebuild_yields_byte_identical_projections() {
        let (_d, db) = populated();
        let before = db.projection_dump().unwrap();
        assert!(before.len() > 5);
        let r = db.rebuild().unwrap();
        assert_eq!(r.events, 9);
        assert_eq!(r.digest_before, r.digest_after);
        assert_eq!(db.projection_dump().unwrap(), before);

        // The pure projection over memory gives the same bytes as the one over sled.
        let mem = MemStore::default();
        for (_, e) in db.log(1, 100).unwrap() {
            projection::apply(&mem, code("CEN"), &e).unwrap();
        }
        let mem_rows: Vec<DumpRow> = mem
            .tables
            .borrow()
            .iter()
            .map(|((t, k), v)| (t.name(), k.clone(), v.clone()))
            .collect();
        // The key ring is the trust check's (compared by the rebuild above), not the
        // projection's.
        let without_ring: Vec<_> = before
            .into_iter()
            .filter(|(t, _, _)| *t != Table::Keys.name())
            .collect();
        assert_eq!(mem_rows, without_ring);
    }

    #[test]
    fn rebuild_covers_every_kind_of_catalog_change() {
        let (_d, db) = populated();
        let kb1 = db.catalog().unwrap().remove(0);
        let kb2 = Update {
            id: "KB2".into(),
            ..kb1.clone()
        };
        let env = |seq, version, changes| {
            signed_event(
                "TOP",
                seq,
                kb1.posted,
                ConfigEvent::CatalogDelta(CatalogDelta {
                    catalog_version: version,
                    source: "vendor".into(),
                    changes,
                }),
            )
        };
        for e in [
            env(
                6,
                2,
                vec![
                    CatalogChange::Added(kb2.clone()),
                    CatalogChange::Superseded {
                        id: "KB1".into(),
                        by: "KB2".into(),
                    },
                ],
            ),
            env(
                7,
                3,
                vec![
                    CatalogChange::Revised(Update {
                        title: "fix, revised".into(),
                        ..kb2.clone()
                    }),
                    CatalogChange::Expired { id: "KB1".into() },
                    // An unknown id changes nothing (projections are total).
                    CatalogChange::Expired { id: "KB9".into() },
                ],
            ),
        ] {
            assert!(db.append_received(&e).unwrap());
        }
        let cat = db.catalog().unwrap();
        assert_eq!(cat.len(), 2);
        assert_eq!(
            (cat[0].superseded_by.as_deref(), cat[0].expired),
            (Some("KB2"), true)
        );
        assert_eq!(cat[1].title, "fix, revised");
        assert_eq!(db.meta().unwrap().catalog_version, 3);
        let before = db.projection_dump().unwrap();
        let r = db.rebuild().unwrap();
        assert_eq!(r.digest_before, r.digest_after);
        assert_eq!(db.projection_dump().unwrap(), before);
    }

    #[test]
    fn rebuild_covers_groups_priorities_and_boosts() {
        let (_d, db) = populated();
        let c = ctx(Utc::now());
        let pkg: PackageId = "CEN00001".parse().unwrap();
        let dp = schema::event::DpRef {
            site: code("CEN"),
            dp: "DP1".into(),
        };
        let known: std::collections::BTreeSet<(SiteCode, String)> =
            [(code("CEN"), "DP1".to_string())].into();
        db.append_own(c.now, |v| decide::dp_group_create(v, &c, "Branches"))
            .unwrap();
        db.append_own(c.now, |v| {
            decide::dp_group_change(v, &c, "Branches", std::slice::from_ref(&dp), &[], &known, 0)
        })
        .unwrap();
        db.append_own(c.now, |v| {
            decide::set_priority(v, &c, pkg, schema::event::Priority::High)
        })
        .unwrap();
        db.append_own(c.now, |v| decide::boost(v, &c, pkg, None))
            .unwrap();
        let groups = db.dp_groups().unwrap();
        assert_eq!(groups["Branches"], vec![dp]);
        assert_eq!(
            db.package(&pkg).unwrap().unwrap().priority,
            schema::event::Priority::High
        );
        let before = db.projection_dump().unwrap();
        let r = db.rebuild().unwrap();
        assert_eq!(r.digest_before, r.digest_after);
        assert_eq!(db.projection_dump().unwrap(), before);
        assert_eq!(db.dp_groups().unwrap(), groups);
    }

    #[test]
    fn a_data_directory_of_the_previous_format_is_refused_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db");
        let db = open_test(&path, "CEN", false).unwrap();
        // A record as format 1 wrote it: the same header with version 1.
        let mut old = encoding::encode(&db.log(1, 1).unwrap()[0].1).unwrap();
        old[2..4].copy_from_slice(&1u16.to_le_bytes());
        db.trees[LOG].insert(1u64.to_be_bytes(), old).unwrap();
        db.db.flush().unwrap();
        drop(db);
        let err = open_test(&path, "CEN", false).err().expect("refused");
        assert!(matches!(err, DbError::OldFormat { found: 1 }), "{err}");
        assert!(
            err.to_string().contains("initialize a new data directory"),
            "{err}"
        );
    }

    #[test]
    fn a_log_altered_on_disk_fails_the_rebuild() {
        let (_d, db) = populated();
        // CEN's own event at position 3, re-signed by another key, written under the log.
        let (pos, mut env) = db.log(3, 1).unwrap().remove(0);
        assert_eq!(env.origin, code("CEN"));
        env = signed_event("P02", env.origin_seq, env.time, env.body.clone());
        env.origin = code("CEN");
        db.trees[LOG]
            .insert(pos.to_be_bytes(), encoding::encode(&env).unwrap())
            .unwrap();
        let err = db.rebuild().unwrap_err();
        assert!(
            matches!(&err, DbError::Untrusted { position: 3, why } if why.contains("does not verify")),
            "{err}"
        );
    }

    #[test]
    fn rebuild_repairs_damaged_projections_and_guards_interruptions() {
        let (d, db) = populated();
        let good = db.projection_dump().unwrap();
        db.trees[PROJ + Table::Packages as usize]
            .insert(b"CEN00001", &b"garbage"[..])
            .unwrap();
        assert!(matches!(db.packages(), Err(DbError::Damaged(_))));
        let r = db.rebuild().unwrap();
        assert_ne!(r.digest_before, r.digest_after);
        assert_eq!(db.projection_dump().unwrap(), good);

        // An interrupted rebuild leaves a marker that stops the daemon from opening.
        db.trees[CURSORS]
            .insert(REBUILDING, &1u64.to_be_bytes())
            .unwrap();
        db.db.flush().unwrap();
        drop(db);
        assert!(matches!(
            open_as(&d.path().join("db"), "CEN", "TOP", false),
            Err(DbError::RebuildPending)
        ));
        let db = open_below_top(&d.path().join("db"), true);
        db.rebuild().unwrap();
        drop(db);
        assert!(open_as(&d.path().join("db"), "CEN", "TOP", false).is_ok());
    }
}
