//! `site.toml` and the layout of a site's data directory.

use schema::SiteCode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "site.toml";
pub const ADMIN_FILE: &str = "admin.json";
pub const LOCK_FILE: &str = "lock";

/// The paths inside a data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn content(&self) -> PathBuf {
        self.root.join("content")
    }
    pub fn admin(&self) -> PathBuf {
        self.root.join(ADMIN_FILE)
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }
    /// This site's current origin key after a rotation (before one: `signing.key`).
    pub fn origin_key(&self) -> PathBuf {
        self.root.join("origin.key")
    }
    /// A rotation's new key, waiting for the parent's delegation.
    pub fn origin_next_key(&self) -> PathBuf {
        self.root.join("origin-next.key")
    }
    pub fn publish_cache(&self) -> PathBuf {
        self.root.join("publish-cache")
    }
    /// The console's viewer token (mode 0600; `site-server ui token` prints it).
    pub fn ui_token(&self) -> PathBuf {
        self.root.join("ui-token")
    }
}

/// What `site.toml` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// This site's code.
    pub code: SiteCode,
    /// Where the site listens for its children and its DPs (QUIC).
    pub listen: SocketAddr,
    /// Where the admin HTTP API listens; loopback only.
    pub api: SocketAddr,
    /// The zone schedules are evaluated in ("UTC" unless set).
    #[serde(default = "default_zone")]
    pub zone: String,
    /// The top site's public key (64 hex digits): the trust root every origin signature
    /// chains to. None at the top, whose own key is the root (see [`SiteConfig::trust_root`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<String>,
    /// This site's parent; none at the top of the hierarchy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// This site's children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildLink>,
    /// This site's distribution points: which certificate is each one's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dps: Vec<DpLink>,
    /// The sender's concurrency and retry limits (SMS's defaults unless set).
    #[serde(default, skip_serializing_if = "SenderLimits::is_default")]
    pub sender: SenderLimits,
    /// Catalog sync (top site only): its schedule and sources. Read afresh at every sync, so
    /// an edit needs no restart.
    #[serde(default, skip_serializing_if = "SyncConfig::is_empty")]
    pub sync: SyncConfig,
    /// The top's checkpoints (read at the top only).
    #[serde(default, skip_serializing_if = "TrustConfig::is_default")]
    pub trust: TrustConfig,
    /// `[reports]`: how long the report log keeps what the parent already has.
    #[serde(default, skip_serializing_if = "ReportsConfig::is_default")]
    pub reports: ReportsConfig,
    /// `[storage]`: the database's memory and flush interval.
    #[serde(default, skip_serializing_if = "StorageConfig::is_default")]
    pub storage: StorageConfig,
    /// `[ui]`: the operator's console and `/metrics`.
    #[serde(default, skip_serializing_if = "UiConfig::is_default")]
    pub ui: UiConfig,
}

/// `[trust]` of `site.toml`: how often the top signs a checkpoint, and for how long one
/// vouches for the view from the top.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// How often the top signs a checkpoint (`1h` unless set).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: String,
    /// How long after signing a checkpoint expires (`24h` unless set).
    #[serde(default = "default_checkpoint_expiry")]
    pub checkpoint_expiry: String,
}

fn default_checkpoint_every() -> String {
    "1h".into()
}
fn default_checkpoint_expiry() -> String {
    "24h".into()
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            checkpoint_every: default_checkpoint_every(),
            checkpoint_expiry: default_checkpoint_expiry(),
        }
    }
}

impl TrustConfig {
    fn is_default(&self) -> bool {
        *self == TrustConfig::default()
    }

    /// (interval, expiry), checked: both at least a second, the expiry longer than the interval.
    pub fn durations(&self) -> Result<(std::time::Duration, std::time::Duration), String> {
        let d = |name: &str, v: &str| {
            sender::schedule::parse_duration(v)
                .map_err(|e| format!("[trust] {name}: {e}"))
                .and_then(|d| {
                    if d < std::time::Duration::from_secs(1) {
                        Err(format!("[trust] {name} = \"{v}\": must be at least 1s"))
                    } else {
                        Ok(d)
                    }
                })
        };
        let every = d("checkpoint_every", &self.checkpoint_every)?;
        let expiry = d("checkpoint_expiry", &self.checkpoint_expiry)?;
        if expiry <= every {
            return Err(format!(
                "[trust] checkpoint_expiry = \"{}\" must be longer than checkpoint_every = \"{}\", or every site would raise the freeze alarm between two checkpoints",
                self.checkpoint_expiry, self.checkpoint_every
            ));
        }
        Ok((every, expiry))
    }
}

/// `[reports]` of `site.toml`: retention of the report log. Reports the parent has
/// acknowledged (every report, at the top) are removed once older than `keep` or beyond the
/// newest `max`; the roll-ups of `status` keep what they said. A report not yet passed up is
/// never removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    /// How long reports are kept (`90d` unless set; `forever` keeps them by age).
    #[serde(default = "default_reports_keep")]
    pub keep: String,
    /// The most reports kept (2,000,000 unless set; 0: no limit by count).
    #[serde(default = "default_reports_max")]
    pub max: u64,
    /// How often retention runs (`10m` unless set).
    #[serde(default = "default_reports_every")]
    pub every: String,
}

fn default_reports_keep() -> String {
    "90d".into()
}
fn default_reports_max() -> u64 {
    2_000_000
}
fn default_reports_every() -> String {
    "10m".into()
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            keep: default_reports_keep(),
            max: default_reports_max(),
            every: default_reports_every(),
        }
    }
}

/// Retention as the daemon applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Reports older than this go (`None`: kept by age).
    pub keep: Option<std::time::Duration>,
    /// Beyond the newest this many, reports go (`None`: no limit by count).
    pub max: Option<u64>,
    pub every: std::time::Duration,
}

impl ReportsConfig {
    fn is_default(&self) -> bool {
        *self == ReportsConfig::default()
    }

    /// The retention, checked.
    pub fn retention(&self) -> Result<Retention, String> {
        let keep = if self.keep == "forever" {
            None
        } else {
            let d = sender::schedule::parse_duration(&self.keep)
                .map_err(|e| format!("[reports] keep: {e} (or \"forever\")"))?;
            if d < std::time::Duration::from_secs(3600) {
                return Err(format!(
                    "[reports] keep = \"{}\": keep reports at least 1h, or the sites above see gaps in what just happened",
                    self.keep
                ));
            }
            Some(d)
        };
        let every = sender::schedule::parse_duration(&self.every)
            .map_err(|e| format!("[reports] every: {e}"))?;
        if every < std::time::Duration::from_secs(1) {
            return Err(format!(
                "[reports] every = \"{}\": must be at least 1s",
                self.every
            ));
        }
        Ok(Retention {
            keep,
            max: (self.max > 0).then_some(self.max),
            every,
        })
    }
}

/// `[storage]` of `site.toml`: what the site's database may hold in memory, and how often it
/// writes behind (appends are flushed before they are answered either way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The database's page cache (`16MiB` unless set; sled's own default is 1 GiB, too much
    /// for one of many sites on a machine). A top site answering status for a big tree
    /// may want more.
    #[serde(default = "default_storage_cache")]
    pub cache: String,
    /// How often the database flushes what no append flushed (`1s` unless set).
    #[serde(default = "default_storage_flush_every")]
    pub flush_every: String,
}

fn default_storage_cache() -> String {
    "16MiB".into()
}
fn default_storage_flush_every() -> String {
    "1s".into()
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache: default_storage_cache(),
            flush_every: default_storage_flush_every(),
        }
    }
}

impl StorageConfig {
    fn is_default(&self) -> bool {
        *self == StorageConfig::default()
    }

    /// The settings, checked: a cache of at least 1 MiB, a flush interval of 10ms to 1h.
    pub fn storage(&self) -> Result<crate::db::Tuning, String> {
        let cache_bytes = sender::schedule::parse_size(&self.cache)
            .map_err(|e| format!("[storage] cache: {e}"))?;
        if cache_bytes < 1 << 20 {
            return Err(format!(
                "[storage] cache = \"{}\": give at least 1MiB",
                self.cache
            ));
        }
        let flush = sender::schedule::parse_duration(&self.flush_every)
            .map_err(|e| format!("[storage] flush_every: {e}"))?;
        if flush < std::time::Duration::from_millis(10)
            || flush > std::time::Duration::from_secs(3600)
        {
            return Err(format!(
                "[storage] flush_every = \"{}\": give 10ms to 1h",
                self.flush_every
            ));
        }
        Ok(crate::db::Tuning {
            cache_bytes,
            flush_every_ms: flush.as_millis() as u64,
        })
    }
}

/// `[ui]` of `site.toml`: where the console (and `/metrics`) listens, and its TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// `127.0.0.1:0` unless set (loopback, a free port at each start; `admin.json` and
    /// `ui token` say which). Another address than loopback is served over TLS only.
    #[serde(default = "default_ui_listen")]
    pub listen: SocketAddr,
    /// A certificate chain and its private key (PEM files) to serve TLS with. Unset: a
    /// loopback console is plain HTTP, another one uses the site's own certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Host names the console is reached by, besides IP addresses and `localhost`: a
    /// request naming another host is refused (DNS rebinding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

fn default_ui_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            listen: default_ui_listen(),
            cert: None,
            key: None,
            hosts: Vec::new(),
        }
    }
}

impl UiConfig {
    fn is_default(&self) -> bool {
        *self == UiConfig::default()
    }

    /// Whether the console is served over TLS.
    pub fn tls(&self) -> bool {
        self.cert.is_some() || !self.listen.ip().is_loopback()
    }

    /// Checks what serde cannot: cert and key come together; host names are names.
    pub fn check(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(
                "[ui] cert and key: give both (a PEM certificate chain and its key), or neither"
                    .into(),
            );
        }
        for h in &self.hosts {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !ok {
                return Err(format!(
                    "[ui] hosts: {h:?} is not a host name (letters, digits, '-' and '.'; no port)"
                ));
            }
        }
        Ok(())
    }
}

/// `[sync]` of `site.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// `daily 02:00` or `weekly sun 02:00`, in the site's zone; none: by hand only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The sources, read in this order (`[[sync.source]]`).
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SyncSource>,
}

impl SyncConfig {
    pub fn is_empty(&self) -> bool {
        self.schedule.is_none() && self.sources.is_empty()
    }

    /// The schedule, parsed.
    pub fn schedule(&self) -> Result<Option<crate::sansio::sync_schedule::SyncSchedule>, String> {
        self.schedule
            .as_deref()
            .map(crate::sansio::sync_schedule::SyncSchedule::parse)
            .transpose()
    }

    /// Checks the schedule and every source (names, plug-ins, arguments).
    pub fn check(&self) -> Result<(), String> {
        self.schedule()?;
        for (i, s) in self.sources.iter().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(format!(
                    "sync source {:?}: a name is letters, digits, '-', '_' or '.'",
                    s.name
                ));
            }
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(format!(
                    "sync source {} is listed twice: give each its own name",
                    s.name
                ));
            }
            crate::sansio::plugin_args::source_settings(&s.name, &s.plugin, &s.args)?;
        }
        Ok(())
    }
}

/// One catalog source: a plug-in and its arguments (`Name=Value;Name2="with spaces"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSource {
    /// Its name: what the catalog records as each update's source.
    pub name: String,
    /// `apt` or `json`.
    pub plugin: String,
    #[serde(default)]
    pub args: String,
}

/// A distribution point attached to this site (`site-server dp add`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpLink {
    /// Its id, unique at this site (`DP1`); the tree names it `SITE/ID`.
    pub id: String,
    /// SHA-256 of its certificate (pinned).
    pub fingerprint: String,
    /// Where clients reach its HTTP server (shown in status; needed if it is a source).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// A pull DP's sources, in rank order: ids of other DPs of this site. It asks them
    /// before the site server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// Checks the pull-DP sources of `dps`: each names another DP of the site that has an
/// address, none twice, and no chain of sources comes back to where it started.
pub fn check_dp_sources(dps: &[DpLink]) -> Result<(), String> {
    for d in dps {
        for (i, s) in d.sources.iter().enumerate() {
            if *s == d.id {
                return Err(format!(
                    "distribution point {} cannot be its own source: remove --source {s}",
                    d.id
                ));
            }
            if d.sources[..i].contains(s) {
                return Err(format!(
                    "distribution point {}: source {s} is listed twice",
                    d.id
                ));
            }
            let Some(src) = dps.iter().find(|o| o.id == *s) else {
                return Err(format!(
                    "distribution point {}: source {s} is not a distribution point of this site: add it first (`site-server dp add`), or name another",
                    d.id
                ));
            };
            if src.address.is_empty() {
                return Err(format!(
                    "distribution point {}: source {s} has no address for pulling from it: give it one (`site-server dp set --id {s} --address HOST:PORT`)",
                    d.id
                ));
            }
        }
    }
    // A loop: following sources from a DP reaches that DP again.
    for d in dps {
        let mut path = vec![d.id.as_str()];
        if let Some(cycle) = find_loop(dps, &d.id, &mut path) {
            return Err(format!(
                "distribution point sources would loop ({cycle}): a pull DP must not pull, directly or through others, from itself; drop one of these sources"
            ));
        }
    }
    Ok(())
}

fn find_loop<'a>(dps: &'a [DpLink], at: &str, path: &mut Vec<&'a str>) -> Option<String> {
    let d = dps.iter().find(|o| o.id == at)?;
    for s in &d.sources {
        if path.first() == Some(&s.as_str()) {
            let mut p = path.clone();
            p.push(s);
            return Some(p.join(" -> "));
        }
        if path.contains(&s.as_str()) {
            continue;
        }
        path.push(s);
        if let Some(c) = find_loop(dps, s, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

pub use schema::ids::check_dp_id;

/// `[sender]` in `site.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderLimits {
    /// Package sendings at once to one child.
    pub per_destination: usize,
    /// Package sendings at once over all children.
    pub total: usize,
    /// Retries of a failed sending before it is failed (3532).
    pub retries: u32,
    /// Delay before a retry, e.g. "1m", "30s".
    pub retry_delay: String,
    /// The priority reports travel up at when they hold an error ...
    pub error_reports: schema::event::Priority,
    /// ... and when they do not.
    pub other_reports: schema::event::Priority,
}

impl Default for SenderLimits {
    fn default() -> Self {
        SenderLimits {
            per_destination: 3,
            total: 5,
            retries: 2,
            retry_delay: "1m".into(),
            error_reports: schema::event::Priority::High,
            other_reports: schema::event::Priority::Medium,
        }
    }
}

impl SenderLimits {
    /// The priority a batch of reports travels up at: that of errors if it holds one.
    pub fn report_priority(
        &self,
        reports: &[schema::report::ReportEnvelope],
    ) -> schema::event::Priority {
        use schema::report::Report;
        let error = reports.iter().any(|r| {
            matches!(&r.body, Report::Status(m) if m.severity == schema::status::Severity::Error)
        });
        if error {
            self.error_reports
        } else {
            self.other_reports
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn limits(&self) -> Result<sender::scheduler::Limits, String> {
        if self.per_destination == 0 || self.total == 0 {
            return Err("[sender] per_destination and total must be at least 1".into());
        }
        Ok(sender::scheduler::Limits {
            per_destination: self.per_destination,
            total: self.total,
            retries: self.retries,
            retry_delay: sender::schedule::parse_duration(&self.retry_delay)
                .map_err(|e| format!("[sender] retry_delay: {e}"))?,
        })
    }
}

/// The link to the parent: where to dial it and which certificate and key are its.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentLink {
    pub code: SiteCode,
    /// HOST:PORT of the parent's QUIC listener; empty when it is reached by courier only.
    #[serde(default)]
    pub addr: String,
    /// SHA-256 of the parent's certificate (pinned).
    pub fingerprint: String,
    /// The parent's ed25519 key (checks its courier bundles).
    pub public_key: String,
}

/// A child: which certificate and key are its, and whether it is reached only by courier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildLink {
    pub code: SiteCode,
    pub fingerprint: String,
    pub public_key: String,
    #[serde(default)]
    pub courier: bool,
    /// Address schedule: which priorities may go in which hours (empty: all, 24x7).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub schedule: String,
    /// Rate limit per hour of the week (empty: unlimited).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rate: String,
}

impl ChildLink {
    /// The link's schedule and rate, parsed.
    pub fn policy(&self) -> Result<sender::scheduler::LinkPolicy, String> {
        sender::scheduler::LinkPolicy::parse(&self.schedule, &self.rate)
            .map_err(|e| format!("child {}: {e}", self.code))
    }
}

fn default_zone() -> String {
    "UTC".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not an initialized site data directory (no site.toml): run `site-server init --code CODE --data {0}` first")]
    NotInitialized(String),
    #[error("{path} is malformed: {reason}; fix the file or re-run `site-server init` in a new directory")]
    Malformed { path: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A change that would make `site.toml` invalid (nothing is written).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl SiteConfig {
    pub fn new(code: SiteCode, listen: SocketAddr, api: SocketAddr) -> Self {
        SiteConfig {
            code,
            listen,
            api,
            zone: default_zone(),
            parent: None,
            children: Vec::new(),
            dps: Vec::new(),
            sender: SenderLimits::default(),
            sync: SyncConfig::default(),
            root_key: None,
            trust: TrustConfig::default(),
            reports: ReportsConfig::default(),
            storage: StorageConfig::default(),
            ui: UiConfig::default(),
        }
    }

    /// Checks what serde cannot: the admin API stays on loopback.
    /// The trust root: the configured top site's key, or this site's own key (`own`, as
    /// `identity` prints it) when it has no parent; None for a site below the top that has
    /// not been told it (`parent set --root-key`).
    pub fn trust_root(&self, own: &str) -> Option<String> {
        match (&self.root_key, &self.parent) {
            (Some(k), _) => Some(k.clone()),
            (None, None) => Some(own.to_string()),
            (None, Some(_)) => None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(k) = &self.root_key {
            match sender::identity::check_public_key(k) {
                Ok(t) if t == *k => {}
                Ok(_) => return Err("root_key: write the key in lower-case hex".into()),
                Err(e) => return Err(format!("root_key: {e}")),
            }
        }
        self.trust.durations()?;
        self.reports.retention()?;
        self.storage.storage()?;
        self.ui.check()?;
        if !self.api.ip().is_loopback() {
            return Err(format!(
                "api = \"{}\" is not a loopback address: the admin API listens on 127.0.0.1 or ::1 only",
                self.api
            ));
        }
        let check_keys = |who: String, fp: &str, key: &str| -> Result<(), String> {
            let fp_ok = sender::identity::check_fingerprint(fp).map(|f| f == fp);
            let key_ok = sender::identity::check_public_key(key).map(|k| k == key);
            match (fp_ok, key_ok) {
                (Ok(true), Ok(true)) => Ok(()),
                (Err(e), _) | (_, Err(e)) => Err(format!("{who}: {e}")),
                _ => Err(format!(
                    "{who}: write fingerprints and keys in lower-case hex"
                )),
            }
        };
        if let Some(p) = &self.parent {
            if p.code == self.code {
                return Err(format!(
                    "parent {} is this site itself: a site cannot be its own parent",
                    p.code
                ));
            }
            // An empty address: the parent is reached by courier bundles only.
            if !p.addr.is_empty() {
                check_addr(&p.addr).map_err(|e| format!("parent {}: {e}", p.code))?;
            }
            check_keys(format!("parent {}", p.code), &p.fingerprint, &p.public_key)?;
        }
        for (i, c) in self.children.iter().enumerate() {
            if c.code == self.code {
                return Err(format!(
                    "child {} is this site itself: give the child's own code",
                    c.code
                ));
            }
            if self.parent.as_ref().is_some_and(|p| p.code == c.code) {
                return Err(format!(
                    "{} is this site's parent and cannot also be its child",
                    c.code
                ));
            }
            if self.children[..i].iter().any(|o| o.code == c.code) {
                return Err(format!("child {} is listed twice: remove one", c.code));
            }
            if self.children[..i]
                .iter()
                .any(|o| o.fingerprint == c.fingerprint)
            {
                return Err(format!("child {} has the certificate fingerprint of another child: each site has its own certificate", c.code));
            }
            check_keys(format!("child {}", c.code), &c.fingerprint, &c.public_key)?;
            c.policy()?;
        }
        for (i, d) in self.dps.iter().enumerate() {
            check_dp_id(&d.id)?;
            if self.dps[..i].iter().any(|o| o.id == d.id) {
                return Err(format!(
                    "distribution point {} is listed twice: remove one",
                    d.id
                ));
            }
            let fp_ok =
                sender::identity::check_fingerprint(&d.fingerprint).map(|f| f == d.fingerprint);
            match fp_ok {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "distribution point {}: write its fingerprint in lower-case hex",
                        d.id
                    ))
                }
                Err(e) => return Err(format!("distribution point {}: {e}", d.id)),
            }
            // One certificate, one peer: a pin shared by two would let one speak as the other.
            if let Some(o) = self.dps[..i]
                .iter()
                .find(|o| o.fingerprint == d.fingerprint)
            {
                return Err(format!(
                    "distribution point {} has the certificate fingerprint of distribution point {}: each DP has its own certificate",
                    d.id, o.id
                ));
            }
            if let Some(c) = self
                .children
                .iter()
                .find(|c| c.fingerprint == d.fingerprint)
            {
                return Err(format!(
                    "distribution point {} has the certificate fingerprint of child {}: each peer has its own certificate",
                    d.id, c.code
                ));
            }
        }
        check_dp_sources(&self.dps)?;
        self.tz()?;
        self.sender.limits()?;
        self.sync.check()?;
        Ok(())
    }

    /// The zone schedules are evaluated in.
    pub fn tz(&self) -> Result<chrono_tz::Tz, String> {
        sender::schedule::parse_zone(&self.zone).map_err(|e| e.to_string())
    }

    pub fn load(dir: &DataDir) -> Result<Self, ConfigError> {
        let path = dir.config();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotInitialized(dir.root.display().to_string()))
            }
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let malformed = |reason: String| ConfigError::Malformed {
            path: path.display().to_string(),
            reason,
        };
        let cfg: SiteConfig =
            toml::from_str(&text).map_err(|e| malformed(e.message().to_string()))?;
        cfg.validate().map_err(malformed)?;
        Ok(cfg)
    }

    /// Writes `site.toml` atomically (temp file, rename) after validating.
    pub fn save(&self, dir: &DataDir) -> Result<(), ConfigError> {
        self.validate().map_err(ConfigError::Invalid)?;
        let tmp = dir.root.join("site.toml.tmp");
        std::fs::write(&tmp, self.to_toml())
            .and_then(|_| std::fs::rename(&tmp, dir.config()))
            .map_err(|source| ConfigError::Write {
                path: dir.config().display().to_string(),
                source,
            })
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("site config serializes");
        format!(
            "# Site configuration written by `site-server init`.\n\
             # code: this site's code; listen: QUIC address for children;\n\
             # api: admin HTTP API (loopback only); zone: schedule time zone.\n{body}"
        )
    }
}

/// Writes `bytes` to `path` atomically with mode 0600 (a temporary file beside it, synced,
/// then renamed): for the files that hold a token.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Checks a `HOST:PORT` address without resolving it.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let bad = || format!("address {addr:?} is not HOST:PORT (e.g. 127.0.0.1:4710)");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(bad());
    }
    Ok(())
}

/// Whether `p` exists and is a directory that holds a site.
pub fn is_initialized(p: &Path) -> bool {
    p.join(CONFIG_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use schema::status;

    #[test]
    fn reports_with_an_error_go_up_at_the_error_priority() {
        use schema::event::Priority;
        use schema::report::{Report, ReportEnvelope, StatusMessage};
        let code = SiteCode::new("P01").unwrap();
        let env = |id| ReportEnvelope {
            origin: code,
            origin_seq: 1,
            time: chrono::Utc::now(),
            body: Report::Status(StatusMessage::new(
                id,
                code,
                "m".to_string(),
                chrono::Utc::now(),
                vec![],
                vec![],
            )),
            sig: schema::trust::Signature::MISSING,
        };
        let limits = SenderLimits::default();
        assert_eq!(
            limits.report_priority(&[
                env(status::PACKAGE_CONTENT_COMPLETE),
                env(status::SENDER_PROGRESS)
            ]),
            Priority::Medium
        );
        assert_eq!(
            limits.report_priority(&[
                env(status::PACKAGE_CONTENT_COMPLETE),
                env(status::SENDER_ERROR)
            ]),
            Priority::High
        );
        let quiet = SenderLimits {
            error_reports: Priority::Medium,
            other_reports: Priority::Low,
            ..SenderLimits::default()
        };
        assert_eq!(
            quiet.report_priority(&[env(status::PACKAGE_CONTENT_COMPLETE)]),
            Priority::Low
        );
        assert_eq!(
            quiet.report_priority(&[env(status::CHUNK_CORRUPT_REMOVED)]),
            Priority::Medium
        );
    }

    use super::*;

    #[test]
    fn retention_and_storage_are_checked_with_the_fix_named() {
        let r = ReportsConfig::default().retention().unwrap();
        assert_eq!(r.keep, Some(std::time::Duration::from_secs(90 * 86400)));
        assert_eq!(r.max, Some(2_000_000));
        let forever = ReportsConfig {
            keep: "forever".into(),
            max: 0,
            ..Default::default()
        };
        assert_eq!(forever.retention().unwrap().keep, None);
        assert_eq!(forever.retention().unwrap().max, None);
        for (keep, needle) in [("10m", "at least 1h"), ("soon", "not a duration")] {
            let bad = ReportsConfig {
                keep: keep.into(),
                ..Default::default()
            };
            let e = bad.retention().unwrap_err();
            assert!(e.contains("[reports] keep") && e.contains(needle), "{e}");
        }
        let t = StorageConfig::default().storage().unwrap();
        assert_eq!((t.cache_bytes, t.flush_every_ms), (16 << 20, 1000));
        let bad = StorageConfig {
            cache: "10KiB".into(),
            ..Default::default()
        };
        assert!(bad.storage().unwrap_err().contains("at least 1MiB"));
        let bad = StorageConfig {
            flush_every: "2h".into(),
            ..Default::default()
        };
        assert!(bad.storage().unwrap_err().contains("10ms to 1h"));
    }

    #[test]
    fn roundtrip_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        assert!(matches!(
            SiteConfig::load(&dir),
            Err(ConfigError::NotInitialized(_))
        ));
        let cfg = SiteConfig::new(
            SiteCode::new("CEN").unwrap(),
            "127.0.0.1:4710".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        );
        std::fs::write(dir.config(), cfg.to_toml()).unwrap();
        assert_eq!(SiteConfig::load(&dir).unwrap(), cfg);
        for bad in [
            "code = \"cen\"\nlisten = \"127.0.0.1:1\"\napi = \"127.0.0.1:0\"\n",
            "code = \"CEN\"\nlisten = \"127.0.0.1:1\"\napi = \"10.0.0.1:0\"\n",
            "code = \"CEN\"\nlisten = \"127.0.0.1:1\"\napi = \"127.0.0.1:0\"\ntypo = 1\n",
            "not toml at all [",
            "code = \"CEN\"\nlisten = \"127.0.0.1:1\"\napi = \"127.0.0.1:0\"\nroot_key = \"00ff\"\n",
        ] {
            std::fs::write(dir.config(), bad).unwrap();
            let err = SiteConfig::load(&dir).unwrap_err();
            assert!(matches!(err, ConfigError::Malformed { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn the_console_is_tls_off_loopback_and_cert_and_key_come_together() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        let base = SiteConfig::new(
            SiteCode::new("CEN").unwrap(),
            "127.0.0.1:4710".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .to_toml();
        std::fs::write(dir.config(), &base).unwrap();
        let c = SiteConfig::load(&dir).unwrap();
        assert!(
            c.ui.listen.ip().is_loopback() && !c.ui.tls(),
            "loopback, plain, by default"
        );
        std::fs::write(
            dir.config(),
            format!("{base}\n[ui]\nlisten = \"0.0.0.0:4780\"\n"),
        )
        .unwrap();
        assert!(
            SiteConfig::load(&dir).unwrap().ui.tls(),
            "another address: TLS only"
        );
        std::fs::write(
            dir.config(),
            format!("{base}\n[ui]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n"),
        )
        .unwrap();
        assert!(
            SiteConfig::load(&dir).unwrap().ui.tls(),
            "a named certificate: TLS"
        );
        for (extra, needle) in [
            ("cert = \"/c.pem\"\n", "give both"),
            ("hosts = [\"evil.example:80\"]\n", "not a host name"),
            ("token = \"x\"\n", "unknown field"),
        ] {
            std::fs::write(dir.config(), format!("{base}\n[ui]\n{extra}")).unwrap();
            let e = SiteConfig::load(&dir).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }

    #[test]
    fn one_certificate_is_one_peer() {
        let d = tempfile::tempdir().unwrap();
        let dir = DataDir::new(d.path());
        let base = SiteConfig::new(
            SiteCode::new("CEN").unwrap(),
            "127.0.0.1:4710".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .to_toml();
        let (a, b, k) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let child =
            format!("[[children]]\ncode = \"S01\"\nfingerprint = \"{a}\"\npublic_key = \"{k}\"\n");
        let dp = |id: &str, fp: &str| format!("[[dps]]\nid = \"{id}\"\nfingerprint = \"{fp}\"\n");
        std::fs::write(dir.config(), format!("{base}{child}{}", dp("DP1", &b))).unwrap();
        SiteConfig::load(&dir).unwrap();
        for (extra, needle) in [
            (dp("DP1", &a), "fingerprint of child S01"),
            (
                format!("{}{}", dp("DP1", &b), dp("DP2", &b)),
                "fingerprint of distribution point DP1",
            ),
        ] {
            std::fs::write(dir.config(), format!("{base}{child}{extra}")).unwrap();
            let err = SiteConfig::load(&dir).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
