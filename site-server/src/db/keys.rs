//! Every tree, cursor and record key of the site database, in one place. Nothing outside
//! `db/` builds a key: callers name a cursor or record with the typed functions here.
//!
//! Trees (opened in this order; projections after them, in `Table::ALL` order):
//! - `config_log`: local position (u64 BE) -> encoded `EventEnvelope`
//! - `report_log`: local position (u64 BE) -> encoded `ReportEnvelope`
//! - `dedupe`: `c`|`r` + origin site (3 bytes) + origin seq (u64 BE) -> local position
//! - `cursors`: the counters, cursors and records below
//! - `agents`: roll-ups of machines' reports (see [`super::agents`]): `m:SITE/NAME` ->
//!   machine record, `i:SITE/NAME` -> its last inventory alone, `a:ADVERT/SITE/NAME` -> where the machine stands with the
//!   advertisement, `seq:NAME` -> the last report number stored of a machine of this site,
//!   `pending:NAME` -> the key an unapproved machine asked with
//! - `status`: roll-ups and indexes of the report log (see [`super::status`]):
//!   `snd:PKG:VER:SITE` -> a sender's last word, `dpw:PKG:VER:SITE:DP` -> a DP's last word,
//!   `cat:SITE` -> a site's catalog word, `x` + index + term hash (8) + position (u64 BE) ->
//!   nothing (messages by attribute), `t` + minute (u64 BE) + position -> nothing (messages
//!   by time), `w` + minute (u64 BE) -> the first position whose
//!   watermark reached that minute, `Wlast` -> the newest watermark minute
//! - `proj_*`: the projections of [`crate::sansio::projection`]

use schema::{PackageId, SiteCode};

/// The trees before the projections, in the order of the index constants.
pub(super) const TREES: [&str; 6] = [
    "config_log",
    "report_log",
    "dedupe",
    "cursors",
    "agents",
    "status",
];
pub(super) const LOG: usize = 0;
pub(super) const REPORTS: usize = 1;
pub(super) const DEDUPE: usize = 2;
pub(super) const CURSORS: usize = 3;
pub(super) const AGENTS: usize = 4;
pub(super) const STATUS: usize = 5;
pub(super) const PROJ: usize = 6;

/// Counters of the `cursors` tree that only the database itself moves.
pub(super) const CONFIG_LEN: &[u8] = b"config_len";
pub(super) const REPORT_LEN: &[u8] = b"report_len";
pub(super) const OWN_CONFIG_SEQ: &[u8] = b"own_config_seq";
pub(super) const OWN_REPORT_SEQ: &[u8] = b"own_report_seq";
/// Present while a rebuild of the projections runs (or was interrupted).
pub(super) const REBUILDING: &[u8] = b"rebuilding";
/// Present once every origin of the config log has its [`config_origin`] key (databases
/// written before those keys existed are indexed once, at open).
pub(super) const CONFIG_ORIGINS_INDEXED: &[u8] = b"config_origins_indexed";
/// Present once the report log's roll-ups and indexes are complete (a database written
/// before they existed is indexed once, at open). `_2`: with the site words.
pub(super) const STATUS_INDEXED: &[u8] = b"status_indexed_2";
/// The prefix of [`config_origin`] keys.
pub(super) const CONFIG_ORIGIN_PREFIX: &[u8] = b"config_origin:";

/// Marks `site` as an origin of events in this site's config log (so, another site than
/// this one: an ancestor).
pub(super) fn config_origin(site: SiteCode) -> Vec<u8> {
    let mut k = CONFIG_ORIGIN_PREFIX.to_vec();
    k.extend_from_slice(&site.as_bytes());
    k
}

/// The dedupe key of an event (`b'c'`) or report (`b'r'`) by its origin and sequence.
pub(super) fn dedupe(kind: u8, origin: SiteCode, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[0] = kind;
    k[1..4].copy_from_slice(&origin.as_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Where the last reported distribution points of `site` are kept (derived from reports).
pub(super) fn reported_dps(site: SiteCode) -> Vec<u8> {
    format!("dps:{site}").into_bytes()
}

/// Where the last reported children of `site` are kept (derived from reports).
pub(super) fn reported_children(site: SiteCode) -> Vec<u8> {
    format!("children:{site}").into_bytes()
}

/// A named u64 in the `cursors` tree (0 until set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(Vec<u8>);

impl Cursor {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The last position of the parent's config log applied here.
pub fn parent_applied() -> Cursor {
    Cursor(b"parent_applied".to_vec())
}

/// The last position of this site's report log the parent acknowledged.
pub fn parent_reports_acked() -> Cursor {
    Cursor(b"parent_reports_acked".to_vec())
}

/// The last position of this site's config log `child` acknowledged.
pub fn child_config_acked(child: SiteCode) -> Cursor {
    Cursor(format!("child:{child}:config_acked").into_bytes())
}

/// The last position of `child`'s report log applied here.
pub fn child_reports_applied(child: SiteCode) -> Cursor {
    Cursor(format!("child:{child}:reports_applied").into_bytes())
}

/// The last position of distribution point `dp`'s outbox applied here.
pub fn dp_reports_applied(dp: &str) -> Cursor {
    Cursor(format!("dp:{dp}:reports").into_bytes())
}

/// 1 once version `version` of `package` was complete here (and its 40210 raised).
pub fn content_complete(package: &PackageId, version: u32) -> Cursor {
    Cursor(format!("content_complete:{package}:{version}").into_bytes())
}

/// A small encoded record beside the cursors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record(String);

impl Record {
    pub(super) fn bytes(&self) -> Vec<u8> {
        format!("record:{}", self.0).into_bytes()
    }
}

/// The courier state of `child` (last export, last receipt).
pub fn courier_state(child: SiteCode) -> Record {
    Record(format!("courier:{child}"))
}

/// The keys of this site's subtree, for verifying its children's reports (a `KeyRing` whose
/// root is this site).
pub(super) fn report_ring() -> Record {
    Record("report-ring".into())
}

/// The freeze alarm's state: whether the last word was "stale".
pub fn view_stale() -> Record {
    Record("view-stale".into())
}

/// The last clean catalog sync (catalog version and each source's fingerprint).
pub fn catalog_last_sync() -> Record {
    Record("catalog-last-sync".into())
}

/// The `agents` tree's key of a machine's record.
pub(super) fn agent_machine(site: SiteCode, name: &str) -> Vec<u8> {
    format!("m:{site}/{}", name.to_ascii_lowercase()).into_bytes()
}

/// The prefix of every machine record (of `site`, if given).
pub(super) fn agent_machines(site: Option<SiteCode>) -> Vec<u8> {
    match site {
        Some(s) => format!("m:{s}/").into_bytes(),
        None => b"m:".to_vec(),
    }
}

/// The `agents` tree's key of a machine's last inventory alone (what `status adverts`
/// counts collections from, without the machine's history).
pub(super) fn agent_inventory(site: SiteCode, name: &str) -> Vec<u8> {
    format!("i:{site}/{}", name.to_ascii_lowercase()).into_bytes()
}

/// The prefix of every [`agent_inventory`] key.
pub(super) const AGENT_INVENTORY_PREFIX: &[u8] = b"i:";

/// The `agents` tree's key of where a machine stands with an advertisement.
pub(super) fn agent_advert(
    advert: &schema::AdvertisementId,
    site: SiteCode,
    name: &str,
) -> Vec<u8> {
    format!("a:{advert}/{site}/{}", name.to_ascii_lowercase()).into_bytes()
}

/// The prefix of the advertisement records (of one advertisement, if given).
pub(super) fn agent_adverts(advert: Option<&schema::AdvertisementId>) -> Vec<u8> {
    match advert {
        Some(a) => format!("a:{a}/").into_bytes(),
        None => b"a:".to_vec(),
    }
}

/// The last report number stored of machine `name` of this site.
pub(super) fn agent_seq(name: &str) -> Vec<u8> {
    format!("seq:{}", name.to_ascii_lowercase()).into_bytes()
}

/// The key an unapproved machine of this site last asked with.
pub(super) fn agent_pending(name: &str) -> Vec<u8> {
    format!("pending:{}", name.to_ascii_lowercase()).into_bytes()
}

/// The prefix of [`agent_pending`] keys.
pub(super) const AGENT_PENDING_PREFIX: &[u8] = b"pending:";

/// The `status` tree's key of a sender's last word about a package version for a site.
pub(super) fn status_sending(package: &PackageId, version: u32, site: SiteCode) -> Vec<u8> {
    format!("snd:{package}:{version}:{site}").into_bytes()
}

/// The prefix of [`status_sending`] keys (of one package version, if given).
pub(super) fn status_sendings(v: Option<(&PackageId, u32)>) -> Vec<u8> {
    match v {
        Some((p, n)) => format!("snd:{p}:{n}:").into_bytes(),
        None => b"snd:".to_vec(),
    }
}

/// The `status` tree's key of a DP's last word about a package version.
pub(super) fn status_dp(package: &PackageId, version: u32, site: SiteCode, dp: &str) -> Vec<u8> {
    format!("dpw:{package}:{version}:{site}:{dp}").into_bytes()
}

/// The prefix of [`status_dp`] keys (of one package version, if given).
pub(super) fn status_dps(v: Option<(&PackageId, u32)>) -> Vec<u8> {
    match v {
        Some((p, n)) => format!("dpw:{p}:{n}:").into_bytes(),
        None => b"dpw:".to_vec(),
    }
}

/// The `status` tree's key of a site's catalog word.
pub(super) fn status_catalog(site: SiteCode) -> Vec<u8> {
    format!("cat:{site}").into_bytes()
}

/// The prefix of [`status_catalog`] keys.
pub(super) const STATUS_CATALOG_PREFIX: &[u8] = b"cat:";

/// How many status messages of one severity were ever stored here.
pub(super) fn status_count(severity: &str) -> Vec<u8> {
    format!("n:{severity}").into_bytes()
}

/// The prefix of [`status_count`] keys.
pub(super) const STATUS_COUNT_PREFIX: &[u8] = b"n:";

/// The word of one site (`sansio::rollups::SiteWord`).
pub(super) fn status_site(site: SiteCode) -> Vec<u8> {
    format!("ste:{site}").into_bytes()
}

/// The prefix of [`status_site`] keys.
pub(super) const STATUS_SITE_PREFIX: &[u8] = b"ste:";

/// The prefix of one index term's entries: `x`, the index, the term's hash.
pub(super) fn status_index(index: u8, term: &[u8]) -> [u8; 10] {
    let mut h = blake3::Hasher::new();
    h.update(&[index]);
    h.update(term);
    let mut k = [0u8; 10];
    k[0] = b'x';
    k[1] = index;
    k[2..].copy_from_slice(&h.finalize().as_bytes()[..8]);
    k
}

/// An index entry: the term's prefix and the position.
pub(super) fn status_index_entry(prefix: &[u8; 10], pos: u64) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..10].copy_from_slice(prefix);
    k[10..].copy_from_slice(&pos.to_be_bytes());
    k
}

/// A time index entry: `t`, the message's minute, its position.
pub(super) fn status_time(minute: u64, pos: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b't';
    k[1..9].copy_from_slice(&minute.to_be_bytes());
    k[9..].copy_from_slice(&pos.to_be_bytes());
    k
}

/// The watermark entry of a minute.
pub(super) fn status_watermark(minute: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'w';
    k[1..].copy_from_slice(&minute.to_be_bytes());
    k
}

/// The newest watermark minute entered.
pub(super) const STATUS_WATERMARK_LAST: &[u8] = b"Wlast";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_ones_existing_databases_hold() {
        let c = SiteCode::new("P01").unwrap();
        let p: PackageId = "CEN00001".parse().unwrap();
        assert_eq!(parent_applied().bytes(), b"parent_applied");
        assert_eq!(parent_reports_acked().bytes(), b"parent_reports_acked");
        assert_eq!(child_config_acked(c).bytes(), b"child:P01:config_acked");
        assert_eq!(
            child_reports_applied(c).bytes(),
            b"child:P01:reports_applied"
        );
        assert_eq!(dp_reports_applied("DP1").bytes(), b"dp:DP1:reports");
        assert_eq!(
            content_complete(&p, 2).bytes(),
            b"content_complete:CEN00001:2"
        );
        assert_eq!(courier_state(c).bytes(), b"record:courier:P01");
        assert_eq!(catalog_last_sync().bytes(), b"record:catalog-last-sync");
        assert_eq!(reported_dps(c), b"dps:P01");
        assert_eq!(reported_children(c), b"children:P01");
        assert_eq!(
            dedupe(b'c', c, 7),
            [b'c', b'P', b'0', b'1', 0, 0, 0, 0, 0, 0, 0, 7]
        );
    }
}
