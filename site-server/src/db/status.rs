//! The report log's roll-ups and indexes (the `status` tree), updated in the transaction that
//! appends each report, and the report log's retention.
//!
//! - Roll-ups: each sender's and each DP's last word per package version, each site's
//!   catalog word ([`crate::sansio::rollups`] folds them). `status packages` and `status sync`
//!   read these, never the log.
//! - Indexes: each status message under its id, site, severity, component, package and
//!   advertisement, by position; and the watermark, the first position whose newest message
//!   time reached each minute, which bounds `--since` from below. `status messages` walks one
//!   index from there and reads only the positions it lists.
//! - Retention ([`Db::prune_reports`]): reports the parent has are removed once older than the
//!   site's window or beyond its count; their index entries and dedupe keys go with them, the
//!   roll-ups stay.

use super::keys::{self, DEDUPE, REPORTS, STATUS};
use super::{u64_of, Db, DbError, TxResult};
use crate::sansio::rollups::{self, CatalogWord, DpWord, MessageQuery, SiteSending, SiteWord};
use chrono::{DateTime, Utc};
use schema::encoding;
use schema::report::{Report, ReportEnvelope};
use schema::{PackageId, SiteCode};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::{BTreeMap, HashMap};

fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<DbError> {
    ConflictableTransactionError::Abort(DbError::Sled(sled::Error::Unsupported(e.to_string())))
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, v: &[u8]) -> Result<T, DbError> {
    encoding::decode(v).map_err(|source| DbError::Log {
        what,
        position: 0,
        source,
    })
}

fn tx_get<T: serde::de::DeserializeOwned>(
    t: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match t.get(key)? {
        None => Ok(None),
        Some(v) => decode("status roll-up", &v)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
    }
}

fn tx_put<T: serde::Serialize>(t: &TransactionalTree, key: &[u8], v: &T) -> TxResult<()> {
    t.insert(key, encoding::encode(v).map_err(abort)?)?;
    Ok(())
}

/// Indexes report `env` at `pos` and folds it into the roll-ups (`rollups`: false while a
/// rebuild keeps roll-ups older than the retained log).
pub(super) fn project_report(
    tx: &[TransactionalTree],
    pos: u64,
    env: &ReportEnvelope,
    rollups: bool,
) -> TxResult<()> {
    let Report::Status(m) = &env.body else {
        return Ok(());
    };
    let t = &tx[STATUS];
    for (index, term) in rollups::index_terms(m) {
        let prefix = keys::status_index(index as u8, &term);
        t.insert(&keys::status_index_entry(&prefix, pos)[..], &[])?;
    }
    let minute = rollups::watermark_minute(m.time);
    t.insert(&keys::status_time(minute, pos)[..], &[])?;
    let last = t.get(keys::STATUS_WATERMARK_LAST)?;
    if last.is_none() || minute > u64_of(last) {
        t.insert(&keys::status_watermark(minute)[..], &pos.to_be_bytes())?;
        t.insert(keys::STATUS_WATERMARK_LAST, &minute.to_be_bytes())?;
    }
    if !rollups {
        return Ok(());
    }
    if let Some((p, v, dest)) = rollups::sending_key(m) {
        let key = keys::status_sending(&p, v, dest);
        let prev: Option<SiteSending> = tx_get(t, &key)?;
        if let Some(next) = rollups::fold_sending(prev.as_ref(), m) {
            tx_put(t, &key, &next)?;
        }
    }
    if let Some((p, v, site, dp)) = rollups::dp_key(m) {
        let key = keys::status_dp(&p, v, site, &dp);
        let prev: Option<DpWord> = tx_get(t, &key)?;
        if let Some(next) = rollups::fold_dp(prev.as_ref(), m) {
            tx_put(t, &key, &next)?;
        }
    }
    let counted = keys::status_count(&m.severity.to_string());
    let n = u64_of(t.get(&counted)?) + 1;
    t.insert(counted, &n.to_be_bytes())?;
    if let Some(site) = rollups::site_word_key(m) {
        let key = keys::status_site(site);
        let prev: SiteWord = tx_get(t, &key)?.unwrap_or_default();
        if let Some(next) = rollups::fold_site(&prev, m) {
            tx_put(t, &key, &next)?;
        }
    }
    if rollups::is_catalog(m) {
        let key = keys::status_catalog(m.site);
        let prev: CatalogWord = tx_get(t, &key)?.unwrap_or_default();
        if let Some(next) = rollups::fold_catalog(&prev, m) {
            tx_put(t, &key, &next)?;
        }
    }
    Ok(())
}

/// What [`Db::prune_reports`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pruned {
    /// Reports removed.
    pub removed: u64,
    /// The first position still in the log (0: the log is empty).
    pub first_kept: u64,
}

/// The most messages a time window may hold for `status messages` to read them all through
/// the time index (more: it walks an attribute index instead). Small under test, so that
/// the tests take both ways.
#[cfg(not(test))]
const TIME_WALK: usize = 50_000;
#[cfg(test)]
const TIME_WALK: usize = 60;

/// Keys removed per sled batch while a rebuild clears the indexes.
const CLEAR_STEP: usize = 20_000;

/// Reports removed per sled batch while pruning (bounds the memory of one step).
const PRUNE_STEP: usize = 4096;

impl Db {
    /// The last word of each sender about version `version` of `package`, per destination.
    pub fn sendings(&self, package: &PackageId, version: u32) -> Result<Vec<SiteSending>, DbError> {
        let mut out = Vec::new();
        for kv in self.trees[STATUS].scan_prefix(keys::status_sendings(Some((package, version)))) {
            out.push(decode("sender roll-up", &kv?.1)?);
        }
        Ok(out)
    }

    /// The last word of each DP about version `version` of `package`, by (site, DP id).
    pub fn dp_words(
        &self,
        package: &PackageId,
        version: u32,
    ) -> Result<HashMap<(SiteCode, String), DpWord>, DbError> {
        let prefix = keys::status_dps(Some((package, version)));
        let mut out = HashMap::new();
        for kv in self.trees[STATUS].scan_prefix(&prefix) {
            let (k, v) = kv?;
            let rest = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let Some((site, dp)) = rest.split_once(':') else {
                continue;
            };
            let Ok(site) = SiteCode::new(site) else {
                continue;
            };
            out.insert((site, dp.to_string()), decode("DP roll-up", &v)?);
        }
        Ok(out)
    }

    /// Status messages stored here, ever, by severity (`info`, `warning`, `error`).
    pub fn message_counts(&self) -> Result<BTreeMap<String, u64>, DbError> {
        let mut out = BTreeMap::new();
        for kv in self.trees[STATUS].scan_prefix(keys::STATUS_COUNT_PREFIX) {
            let (k, v) = kv?;
            let sev = String::from_utf8_lossy(&k[keys::STATUS_COUNT_PREFIX.len()..]).into_owned();
            out.insert(sev, u64_of(Some(v)));
        }
        Ok(out)
    }

    /// Each site's word, as the messages about it told.
    pub fn site_words(&self) -> Result<BTreeMap<SiteCode, SiteWord>, DbError> {
        self.per_site(keys::STATUS_SITE_PREFIX, "site roll-up")
    }

    /// Each site's catalog word, as its messages told.
    pub fn catalog_words(&self) -> Result<BTreeMap<SiteCode, CatalogWord>, DbError> {
        self.per_site(keys::STATUS_CATALOG_PREFIX, "catalog roll-up")
    }

    /// The roll-ups kept per site under `prefix` (`PREFIX` + site code).
    fn per_site<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<BTreeMap<SiteCode, T>, DbError> {
        let mut out = BTreeMap::new();
        for kv in self.trees[STATUS].scan_prefix(prefix) {
            let (k, v) = kv?;
            let site = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(|s| SiteCode::new(s).ok());
            if let Some(site) = site {
                out.insert(site, decode(what, &v)?);
            }
        }
        Ok(out)
    }

    /// The first position whose watermark reached the minute of `since`: no message at or
    /// after `since` lies before it.
    fn watermark_position(&self, since: DateTime<Utc>) -> Result<u64, DbError> {
        let from = keys::status_watermark(rollups::watermark_minute(since));
        let to = keys::status_watermark(u64::MAX);
        for kv in self.trees[STATUS].range(from..=to) {
            let (k, v) = kv?;
            if k.len() == from.len() {
                return Ok(u64_of(Some(v)));
            }
        }
        // No message is that new: nothing to show, start past the end.
        Ok(self.counts()?.reports + 1)
    }

    /// `status messages`: one page of the messages that pass `q`, in log order, walking the
    /// narrowest index that applies (or the log) from the watermark of `q.since` on.
    pub fn messages(&self, q: &MessageQuery) -> Result<Vec<(u64, ReportEnvelope)>, DbError> {
        if q.since.is_some() || q.until.is_some() {
            if let Some(out) = self.messages_by_time(q)? {
                return Ok(out);
            }
        }
        let mut lo = q.from.unwrap_or(1).max(1);
        if let Some(s) = q.since {
            lo = lo.max(self.watermark_position(s)?);
        }
        let hi = q.before.unwrap_or(u64::MAX);
        if lo >= hi {
            return Ok(Vec::new());
        }
        let page = q.page();
        if q.from.is_some() {
            let mut out = Vec::new();
            self.walk(q, lo, hi, |pos, env| {
                out.push((pos, env));
                out.len() < page
            })?;
            return Ok(out);
        }
        // The newest page: windows walked forward from the end, each four times the last,
        // until the page is full or `lo` is reached (sled walks forward far faster than back).
        let mut end = hi.min(self.counts()?.reports.saturating_add(1));
        let mut width = (page as u64).max(256);
        let mut out: Vec<(u64, ReportEnvelope)> = Vec::new();
        while end > lo && out.len() < page {
            let start = end.saturating_sub(width).max(lo);
            // Only the newest of the window that the page still needs are kept: a wide
            // window over a dense stretch holds no more than a page.
            let need = page - out.len();
            let mut window = std::collections::VecDeque::with_capacity(need.min(4096));
            self.walk(q, start, end, |pos, env| {
                if window.len() == need {
                    window.pop_front();
                }
                window.push_back((pos, env));
                true
            })?;
            let mut window: Vec<_> = window.into();
            window.append(&mut out);
            out = window;
            end = start;
            width = width.saturating_mul(4);
        }
        let extra = out.len().saturating_sub(page);
        out.drain(..extra);
        Ok(out)
    }

    /// `status messages` with a time window holding at most [`TIME_WALK`] messages: every
    /// message of the window read through the time index, filtered, one page of them in log
    /// order. `None` when the window holds more (the attribute indexes do better then).
    fn messages_by_time(
        &self,
        q: &MessageQuery,
    ) -> Result<Option<Vec<(u64, ReportEnvelope)>>, DbError> {
        let from = keys::status_time(q.since.map_or(0, rollups::watermark_minute), 0);
        let to = keys::status_time(
            q.until
                .map_or(u64::MAX, |u| rollups::watermark_minute(u).saturating_add(1)),
            0,
        );
        let (lo, hi) = (q.from.unwrap_or(1), q.before.unwrap_or(u64::MAX));
        let mut positions = Vec::new();
        for (seen, kv) in self.trees[STATUS].range(from..to).enumerate() {
            let (k, _) = kv?;
            if seen >= TIME_WALK {
                return Ok(None);
            }
            let pos = u64_of(Some(k.subslice(9, 8)));
            if pos >= lo && pos < hi {
                positions.push(pos);
            }
        }
        positions.sort_unstable();
        let page = q.page();
        let mut out = Vec::new();
        // The page's length after position `pos` is looked at.
        let mut take = |pos: u64| -> Result<usize, DbError> {
            if let Some(v) = self.trees[REPORTS].get(pos.to_be_bytes())? {
                let env: ReportEnvelope = encoding::decode(&v).map_err(|source| DbError::Log {
                    what: "report",
                    position: pos,
                    source,
                })?;
                if q.matches(&env) {
                    out.push((pos, env));
                }
            }
            Ok(out.len())
        };
        let newest_first = q.from.is_none();
        if newest_first {
            positions.reverse();
        }
        for pos in positions {
            if take(pos)? >= page {
                break;
            }
        }
        if newest_first {
            out.reverse();
        }
        Ok(Some(out))
    }

    /// Walks the messages that pass `q` at positions `lo..hi`, in log order, through the
    /// narrowest index that applies (or the log), while `f` says go on.
    fn walk(
        &self,
        q: &MessageQuery,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, ReportEnvelope) -> bool,
    ) -> Result<(), DbError> {
        let mut take = |pos: u64, bytes: Option<sled::IVec>| -> Result<bool, DbError> {
            // An index entry whose report retention has just removed: skipped.
            let Some(v) = bytes else { return Ok(true) };
            let env: ReportEnvelope = encoding::decode(&v).map_err(|source| DbError::Log {
                what: "report",
                position: pos,
                source,
            })?;
            Ok(!q.matches(&env) || f(pos, env))
        };
        match q.index() {
            Some((index, term)) => {
                let prefix = keys::status_index(index as u8, &term);
                let range = self.trees[STATUS].range(
                    keys::status_index_entry(&prefix, lo)..keys::status_index_entry(&prefix, hi),
                );
                for kv in range {
                    let (k, _) = kv?;
                    let pos = u64_of(Some(k.subslice(10, 8)));
                    if !take(pos, self.trees[REPORTS].get(pos.to_be_bytes())?)? {
                        break;
                    }
                }
            }
            None => {
                for kv in self.trees[REPORTS].range(lo.to_be_bytes()..hi.to_be_bytes()) {
                    let (k, v) = kv?;
                    if !take(u64_of(Some(k)), Some(v))? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the reports that retention lets go: positions up to `acked` (what the parent
    /// has acknowledged; the whole log at the top) older than `cutoff` or beyond the newest
    /// `max`. From the head of the log while it goes; then, through the time index, every
    /// older message behind a younger one (a backlog that arrived late). Roll-ups stay;
    /// index entries and dedupe keys go.
    pub fn prune_reports(
        &self,
        acked: u64,
        cutoff: Option<DateTime<Utc>>,
        max: Option<u64>,
    ) -> Result<Pruned, DbError> {
        let len = self.counts()?.reports;
        let mut removed = 0u64;
        // The head, in steps.
        loop {
            let mut doomed = Vec::new();
            for kv in self.trees[REPORTS].iter() {
                let (k, v) = kv?;
                let pos = u64_of(Some(k));
                let env = Self::decode_report(pos, &v)?;
                if !rollups::retention_drops(pos, env.time, acked, len, cutoff, max) {
                    break;
                }
                doomed.push((pos, env));
                if doomed.len() >= PRUNE_STEP {
                    break;
                }
            }
            if doomed.is_empty() {
                break;
            }
            removed += self.remove_reports(&doomed)?;
        }
        // Older messages behind younger ones: through the time index, minutes wholly before
        // the cutoff.
        if let Some(c) = cutoff {
            let to = keys::status_time(rollups::watermark_minute(c), 0);
            loop {
                let mut doomed = Vec::new();
                for kv in self.trees[STATUS].range(keys::status_time(0, 0)..to) {
                    let (k, _) = kv?;
                    let pos = u64_of(Some(k.subslice(9, 8)));
                    if pos > acked {
                        continue;
                    }
                    match self.trees[REPORTS].get(pos.to_be_bytes())? {
                        Some(v) => doomed.push((pos, Self::decode_report(pos, &v)?)),
                        // A time entry left by a crash between the two steps below.
                        None => {
                            self.trees[STATUS].remove(k)?;
                        }
                    }
                    if doomed.len() >= PRUNE_STEP {
                        break;
                    }
                }
                if doomed.is_empty() {
                    break;
                }
                removed += self.remove_reports(&doomed)?;
            }
        }
        let first_kept = match self.trees[REPORTS].first()? {
            Some((k, _)) => u64_of(Some(k)),
            None => 0,
        };
        Ok(Pruned {
            removed,
            first_kept,
        })
    }

    fn decode_report(pos: u64, v: &[u8]) -> Result<ReportEnvelope, DbError> {
        encoding::decode(v).map_err(|source| DbError::Log {
            what: "report",
            position: pos,
            source,
        })
    }

    /// Removes `reports` (position, report) with their index entries and dedupe keys; index
    /// entries first: a crash between the steps leaves reports without entries (found by a
    /// walk of the log), never entries that matter without reports.
    fn remove_reports(&self, reports: &[(u64, ReportEnvelope)]) -> Result<u64, DbError> {
        let mut log = sled::Batch::default();
        let mut index = sled::Batch::default();
        let mut dedupe = sled::Batch::default();
        for (pos, env) in reports {
            if let Report::Status(m) = &env.body {
                let minute = rollups::watermark_minute(m.time);
                index.remove(&keys::status_time(minute, *pos)[..]);
                for (ix, term) in rollups::index_terms(m) {
                    let prefix = keys::status_index(ix as u8, &term);
                    index.remove(&keys::status_index_entry(&prefix, *pos)[..]);
                }
            }
            dedupe.remove(&keys::dedupe(b'r', env.origin, env.origin_seq)[..]);
            log.remove(&pos.to_be_bytes()[..]);
        }
        self.trees[STATUS].apply_batch(index)?;
        self.trees[DEDUPE].apply_batch(dedupe)?;
        self.trees[REPORTS].apply_batch(log)?;
        self.db.flush()?;
        Ok(reports.len() as u64)
    }

    /// Whether reports were ever removed from the head of the log (so roll-ups older than
    /// the log cannot be recomputed from it).
    pub fn reports_pruned(&self) -> Result<bool, DbError> {
        Ok(match self.trees[REPORTS].first()? {
            Some((k, _)) => u64_of(Some(k)) > 1,
            None => self.counts()?.reports > 0,
        })
    }

    /// Recomputes the `status` tree (and the machine roll-ups) from the report log: the
    /// indexes always, the roll-ups only when the log is whole (retention removed nothing),
    /// since a pruned log no longer holds the words they keep. Returns whether the roll-ups
    /// were recomputed.
    pub(super) fn reindex_reports(&self) -> Result<bool, DbError> {
        use sled::Transactional;
        let rollups = !self.reports_pruned()?;
        // Removed in steps: one batch of millions of keys would hold them all in memory.
        let mut clear = sled::Batch::default();
        let mut n = 0usize;
        for kv in self.trees[STATUS].iter() {
            let (k, _) = kv?;
            let is_rollup = k.starts_with(b"snd:")
                || k.starts_with(b"dpw:")
                || k.starts_with(b"cat:")
                || k.starts_with(b"ste:")
                || k.starts_with(keys::STATUS_COUNT_PREFIX);
            if rollups || !is_rollup {
                clear.remove(k);
                n += 1;
            }
            if n >= CLEAR_STEP {
                self.trees[STATUS].apply_batch(std::mem::take(&mut clear))?;
                n = 0;
            }
        }
        self.trees[STATUS].apply_batch(clear)?;
        if rollups {
            self.clear_machine_rollups()?;
        }
        let mut from = 1u64;
        loop {
            let batch = self.reports(from, 2048, |_| true)?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            from = last + 1;
            super::unwrap_tx(self.trees[..].transaction(|tx| -> TxResult<()> {
                for (pos, env) in &batch {
                    project_report(tx, *pos, env, rollups)?;
                    if rollups {
                        super::agents::project_report(tx, env)?;
                    }
                }
                Ok(())
            }))?;
        }
        self.trees[super::keys::CURSORS].insert(keys::STATUS_INDEXED, &[])?;
        self.db.flush()?;
        Ok(rollups)
    }

    /// Indexes the report log once, for a database written before the indexes existed.
    pub(super) fn index_reports_once(&self) -> Result<(), DbError> {
        if self.trees[super::keys::CURSORS]
            .get(keys::STATUS_INDEXED)?
            .is_some()
        {
            return Ok(());
        }
        self.reindex_reports().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Trust;
    use crate::sansio::rollups::MessageQuery;
    use ed25519_dalek::SigningKey;
    use schema::report::{Attribute, StatusMessage};
    use schema::status::{self, Severity};
    use schema::trust::PublicKey;

    fn code(s: &str) -> SiteCode {
        SiteCode::new(s).unwrap()
    }

    fn open(path: &std::path::Path) -> Db {
        let key = SigningKey::from_bytes(&[7; 32]);
        Db::open(
            path,
            code("CEN"),
            false,
            Trust {
                root_key: Some(PublicKey::of(&key)),
                signer: key,
            },
        )
        .unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn pkg(n: u32) -> PackageId {
        format!("CEN{n:05}").parse().unwrap()
    }

    /// Message `i` of a varied stream: ids, sites, packages and times that repeat with
    /// different periods; every 7th is an hour late (a site back from a partition).
    fn message(i: u32) -> StatusMessage {
        let ids = [
            status::SENDER_PROGRESS,
            status::SENDER_ERROR,
            status::SENDER_COMPLETE,
            status::DP_DISTRIBUTION_COMPLETE,
            status::CATALOG_VERSION_APPLIED,
        ];
        let id = ids[i as usize % ids.len()];
        let site = code(&format!("S{:02}", i % 11));
        let t = if i.is_multiple_of(7) {
            at(i as i64 * 10 - 3600)
        } else {
            at(i as i64 * 10)
        };
        let attrs = vec![
            Attribute::Package(pkg(1 + i % 3)),
            Attribute::SourceVersion(1),
            Attribute::DestinationSite(code("T01")),
            Attribute::DistributionPoint(format!("{site}/DP{}", i % 2)),
            Attribute::CatalogVersion(u64::from(i)),
        ];
        let mut m = StatusMessage::new(
            id,
            site,
            "host",
            t,
            attrs,
            vec!["a".into(), "b".into(), "c".into(), format!("{}", i % 100)],
        );
        m.time = t;
        m
    }

    fn fill(db: &Db, n: u32) {
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            let reports = chunk.iter().map(|i| Report::Status(message(*i))).collect();
            db.append_own_reports(at(0), reports).unwrap();
        }
    }

    /// What a query must answer, by brute force over the whole log.
    fn walk(db: &Db, q: &MessageQuery) -> Vec<u64> {
        let all = db.reports(1, usize::MAX, |e| q.matches(e)).unwrap();
        let all: Vec<u64> = all
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| q.from.is_none_or(|f| *p >= f) && q.before.is_none_or(|b| *p < b))
            .collect();
        if q.from.is_some() {
            all.into_iter().take(q.page()).collect()
        } else {
            let skip = all.len().saturating_sub(q.page());
            all.into_iter().skip(skip).collect()
        }
    }

    #[test]
    fn messages_through_the_indexes_are_what_a_walk_of_the_log_finds() {
        let d = tempfile::tempdir().unwrap();
        let db = open(&d.path().join("db"));
        fill(&db, 700);
        let queries = vec![
            MessageQuery::default(),
            MessageQuery {
                id: Some(status::SENDER_ERROR),
                since: Some(at(3000)),
                ..Default::default()
            },
            MessageQuery {
                site: Some(code("S03")),
                limit: Some(7),
                ..Default::default()
            },
            MessageQuery {
                severity: Some(Severity::Error),
                from: Some(100),
                limit: Some(20),
                ..Default::default()
            },
            MessageQuery {
                component: Some("sender".into()),
                before: Some(500),
                limit: Some(30),
                ..Default::default()
            },
            MessageQuery {
                package: Some(pkg(2)),
                site: Some(code("S05")),
                until: Some(at(5000)),
                ..Default::default()
            },
            MessageQuery {
                since: Some(at(6000)),
                ..Default::default()
            },
            MessageQuery {
                since: Some(at(999_999)),
                ..Default::default()
            },
            // Narrow windows: read through the time index.
            MessageQuery {
                since: Some(at(6800)),
                ..Default::default()
            },
            MessageQuery {
                since: Some(at(6500)),
                until: Some(at(6800)),
                id: Some(status::SENDER_PROGRESS),
                ..Default::default()
            },
            MessageQuery {
                since: Some(at(6000)),
                until: Some(at(6300)),
                from: Some(610),
                limit: Some(5),
                ..Default::default()
            },
        ];
        for q in &queries {
            let got: Vec<u64> = db
                .messages(q)
                .unwrap()
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            assert_eq!(got, walk(&db, q), "{q:?}");
            assert!(
                q.since.is_some() || q.before.is_some() || q.until.is_some() || !got.is_empty(),
                "{q:?}"
            );
        }
        // The late messages (an hour old on arrival) are found by --since too.
        let q = MessageQuery {
            since: Some(at(6990 - 3600)),
            ..Default::default()
        };
        let got = db.messages(&q).unwrap();
        assert!(
            got.iter().any(|(p, _)| *p == 700),
            "message 699 is late and in range"
        );
    }

    #[test]
    fn retention_removes_only_what_the_parent_has_and_the_rollups_stay() {
        let d = tempfile::tempdir().unwrap();
        let db = open(&d.path().join("db"));
        fill(&db, 300);
        let sending = db.sendings(&pkg(1), 1).unwrap();
        let dps = db.dp_words(&pkg(2), 1).unwrap();
        let words = db.catalog_words().unwrap();
        assert!(!sending.is_empty() && !dps.is_empty() && !words.is_empty());
        // Everything is old, but the parent has only the first 100.
        let p = db.prune_reports(100, Some(at(999_999)), None).unwrap();
        assert_eq!(
            p,
            Pruned {
                removed: 100,
                first_kept: 101
            }
        );
        assert_eq!(db.sendings(&pkg(1), 1).unwrap(), sending);
        assert_eq!(db.dp_words(&pkg(2), 1).unwrap(), dps);
        assert_eq!(db.catalog_words().unwrap(), words);
        assert_eq!(db.reports(1, 1, |_| true).unwrap()[0].0, 101);
        let q = MessageQuery {
            id: Some(status::SENDER_PROGRESS),
            from: Some(1),
            ..Default::default()
        };
        let got = db.messages(&q).unwrap();
        assert!(got.iter().all(|(p, _)| *p > 100));
        assert_eq!(got.len(), walk(&db, &q).len());
        // A count limit: the newest 50 stay, up to what the parent has.
        let p = db.prune_reports(300, None, Some(50)).unwrap();
        assert_eq!(
            p,
            Pruned {
                removed: 150,
                first_kept: 251
            }
        );
        // Young reports within the count stay.
        let p = db.prune_reports(300, Some(at(-7200)), Some(50)).unwrap();
        assert_eq!(p.removed, 0);
        // A young report at the head does not shield older ones behind it (a backlog that
        // arrived late): they go by the time index.
        let young = message(1);
        let mut young = young;
        young.time = at(999_999);
        let d2 = tempfile::tempdir().unwrap();
        let db2 = open(&d2.path().join("db"));
        db2.append_own_reports(at(999_999), vec![Report::Status(young)])
            .unwrap();
        fill(&db2, 100);
        let p = db2.prune_reports(u64::MAX, Some(at(500)), None).unwrap();
        assert_eq!(p.first_kept, 1, "the young head stays");
        let left: Vec<u64> = db2
            .reports(1, usize::MAX, |_| true)
            .unwrap()
            .iter()
            .map(|(p, _)| *p)
            .collect();
        // Messages 0..49 are at 0..490 s (every 7th an hour earlier): all go; from 50 on,
        // those at or after the cutoff's minute stay.
        assert!(left.len() < 60 && left.len() > 40, "{left:?}");
        assert!(db2
            .reports(1, usize::MAX, |_| true)
            .unwrap()
            .iter()
            .skip(1)
            .all(|(_, e)| matches!(&e.body, Report::Status(m) if m.time >= at(480))));
        // A rebuild re-indexes what is left and keeps the roll-ups.
        assert!(!db.reindex_reports().unwrap());
        assert_eq!(db.sendings(&pkg(1), 1).unwrap(), sending);
        assert_eq!(db.catalog_words().unwrap(), words);
        let q = MessageQuery::default();
        let got: Vec<u64> = db
            .messages(&q)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(got, (251..=300).collect::<Vec<_>>());
    }

    #[test]
    fn a_rebuild_of_a_whole_log_recomputes_the_same_rollups_and_indexes() {
        let d = tempfile::tempdir().unwrap();
        let db = open(&d.path().join("db"));
        fill(&db, 250);
        let before = db.report_digest().unwrap();
        let r = db.rebuild().unwrap();
        assert!(r.report_rollups);
        assert_eq!(r.report_digest_before, before);
        assert_eq!(r.report_digest_after, before);
        // A damaged roll-up is replaced by what the log says.
        db.trees[STATUS]
            .insert(keys::status_catalog(code("S01")), &b"junk"[..])
            .unwrap();
        assert_ne!(db.report_digest().unwrap(), before);
        let r = db.rebuild().unwrap();
        assert_eq!(r.report_digest_after, before);
    }
}
