//! Machines and their agents: what an agent says about itself ([`Inventory`]), the rules that
//! make a [`Collection`], what it reports per advertisement ([`MachineReport`], [`Step`]),
//! and how its requests and reports are signed (the policy its distribution point hands it
//! is `Policy`, beside the config events).
//!
//! An agent's identity is an ed25519 key that its site approved (a `MachineApproved` event).
//! Every request it makes to its distribution point carries a signature over
//! [`request_bytes`]; every report it makes is signed over [`report_bytes`], so the site
//! checks it again whatever the distribution point says.

use crate::ids::{AdvertisementId, SiteCode};
use crate::trust::{PublicKey, Signature, TrustError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Domain of an agent's request signature.
pub const REQUEST_DOMAIN: &[u8] = b"siterep/agent-request/v1\0";
/// Domain of an agent's report signature.
pub const REPORT_DOMAIN: &[u8] = b"siterep/agent-report/v1\0";
/// How far a signed request's time may be from the distribution point's clock.
pub const REQUEST_SKEW_SECS: i64 = 300;
/// The longest machine name accepted.
pub const MAX_NAME: usize = 64;
/// The most lines of a program's output kept in a report.
pub const TAIL_LINES: usize = 20;
/// The most bytes of a program's output kept in a report.
pub const TAIL_BYTES: usize = 2048;

/// Checks a machine name: 1 to [`MAX_NAME`] characters of letters, digits, `-`, `_` and `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "machine name {name:?} is not valid: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// What an agent reports about its machine: what collection rules look at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The machine's name (its host name unless set at `init`).
    pub name: String,
    /// The operating system (`linux`, `windows`, `macos`, ...).
    pub os: String,
    /// The architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Tags the operator gave the agent at `init` (`role=web`).
    pub tags: BTreeMap<String, String>,
    /// The agent's version.
    pub agent_version: String,
}

/// The most tags an inventory may carry, and the longest tag key, value or other field.
pub const MAX_TAGS: usize = 32;
/// See [`MAX_TAGS`].
pub const MAX_FIELD: usize = 128;

impl Inventory {
    /// Refuses an inventory over the bounds ([`MAX_TAGS`], [`MAX_FIELD`]) or with a bad
    /// name: what a hostile agent could otherwise make every site above store.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        let long = [&self.os, &self.arch, &self.agent_version]
            .into_iter()
            .chain(self.tags.keys())
            .chain(self.tags.values())
            .find(|f| f.len() > MAX_FIELD);
        if let Some(f) = long {
            return Err(format!(
                "an inventory field of {} bytes is over the {MAX_FIELD}-byte limit",
                f.len()
            ));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(format!(
                "{} tags are over the limit of {MAX_TAGS}",
                self.tags.len()
            ));
        }
        Ok(())
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), keeping the end (where a
/// program's output says what went wrong).
pub fn tail_of(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

/// One rule of a collection: a machine matches when every condition given holds (an empty
/// rule matches nothing). Name globs take `*` and `?`; every comparison ignores case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// A glob on the machine's name.
    pub name: Option<String>,
    /// The operating system.
    pub os: Option<String>,
    /// The architecture.
    pub arch: Option<String>,
    /// The machine's site.
    pub site: Option<SiteCode>,
    /// Tags the machine must carry, each with this value.
    pub tags: Vec<(String, String)>,
}

impl Rule {
    /// Whether a machine of `site` with `inv` matches.
    pub fn matches(&self, inv: &Inventory, site: SiteCode) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let any = self.name.is_some()
            || self.os.is_some()
            || self.arch.is_some()
            || self.site.is_some()
            || !self.tags.is_empty();
        any && self.name.as_deref().is_none_or(|g| glob(g, &inv.name))
            && self.os.as_deref().is_none_or(|o| eq(o, &inv.os))
            && self.arch.as_deref().is_none_or(|a| eq(a, &inv.arch))
            && self.site.is_none_or(|s| s == site)
            && self
                .tags
                .iter()
                .all(|(k, v)| inv.tags.get(k).is_some_and(|x| eq(x, v)))
    }

    /// Parses `name=web-*,os=linux,arch=x86_64,site=S01,tag:role=web` (conditions joined by
    /// commas, all of which must hold).
    pub fn parse(s: &str) -> Result<Rule, String> {
        let mut r = Rule::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("rule condition {part:?} has no '=': write KEY=VALUE (name, os, arch, site or tag:KEY)")
            })?;
            let v = v.trim().to_string();
            if v.is_empty() {
                return Err(format!("rule condition {part:?} has an empty value"));
            }
            match k.trim() {
                "name" => r.name = Some(v),
                "os" => r.os = Some(v),
                "arch" => r.arch = Some(v),
                "site" => {
                    r.site = Some(
                        v.parse()
                            .map_err(|e| format!("rule condition {part:?}: {e}"))?,
                    )
                }
                t if t.starts_with("tag:") && t.len() > 4 => r.tags.push((t[4..].to_string(), v)),
                other => {
                    return Err(format!(
                        "rule condition {other:?} is unknown: use name, os, arch, site or tag:KEY"
                    ))
                }
            }
        }
        if r == Rule::default() {
            return Err(format!("rule {s:?} has no condition"));
        }
        Ok(r)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name={n}"));
        }
        if let Some(o) = &self.os {
            parts.push(format!("os={o}"));
        }
        if let Some(a) = &self.arch {
            parts.push(format!("arch={a}"));
        }
        if let Some(s) = &self.site {
            parts.push(format!("site={s}"));
        }
        for (k, v) in &self.tags {
            parts.push(format!("tag:{k}={v}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// A collection: the machines an advertisement goes to. A machine is a member when it is
/// named in `members` or matches any rule (rules add members, as ConfigMgr's query rules do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    /// Its name, unique in the tree.
    pub name: String,
    /// Membership rules; a machine matching any is a member.
    pub rules: Vec<Rule>,
    /// Machines that are members by name.
    pub members: Vec<String>,
}

impl Collection {
    /// Whether a machine of `site` with `inv` is a member.
    pub fn contains(&self, inv: &Inventory, site: SiteCode) -> bool {
        self.members
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&inv.name))
            || self.rules.iter().any(|r| r.matches(inv, site))
    }
}

/// `*` (any run) and `?` (any one character) glob, ignoring ASCII case.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// One step of an advertised program on a machine, as its agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The agent received the advertisement: the machine is in its collection.
    Received,
    /// The program started.
    Started,
    /// The program exited with a success code.
    Succeeded {
        /// Its exit code.
        exit: i32,
    },
    /// The program exited with a failure code (or one no rule lists).
    Failed {
        /// Its exit code.
        exit: i32,
        /// The last lines of its output.
        tail: String,
    },
    /// The program succeeded or failed and the machine must restart to finish (11270).
    RebootPending {
        /// Its exit code.
        exit: i32,
        /// Whether the program succeeded.
        succeeded: bool,
    },
    /// The software is already installed (an already-installed code).
    AlreadyInstalled {
        /// Its exit code.
        exit: i32,
    },
    /// The software does not apply to this machine (a not-applicable code).
    NotApplicable {
        /// Its exit code.
        exit: i32,
    },
    /// The package could not be downloaded or verified; nothing ran.
    DownloadFailed {
        /// Why.
        why: String,
    },
    /// The program could not start, ran past its time limit, or the agent stopped during
    /// the run: nothing is known to be installed.
    Error {
        /// Why.
        why: String,
        /// The last lines of its output, if it ran.
        tail: String,
    },
}

/// Where a machine stands with an advertisement: the columns of `status adverts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    /// Received, not run yet.
    Received,
    /// Running now.
    Running,
    /// Succeeded (or already installed).
    Succeeded,
    /// Failed (its exit code, a download that failed, a time-out, ...).
    Failed,
    /// Must restart to finish.
    RebootPending,
    /// Does not apply to the machine.
    NotApplicable,
}

impl MachineState {
    /// The name tables and JSON use.
    pub fn as_str(&self) -> &'static str {
        match self {
            MachineState::Received => "received",
            MachineState::Running => "running",
            MachineState::Succeeded => "succeeded",
            MachineState::Failed => "failed",
            MachineState::RebootPending => "reboot_pending",
            MachineState::NotApplicable => "not_applicable",
        }
    }
}

impl Step {
    /// The status message id the step is reported as (see [`crate::status`]).
    pub fn status_id(&self) -> u32 {
        use crate::status as s;
        match self {
            Step::Received => s::PROGRAM_RECEIVED,
            Step::Started => s::PROGRAM_STARTED,
            Step::Succeeded { .. } => s::PROGRAM_SUCCEEDED,
            Step::Failed { .. } => s::PROGRAM_FAILED,
            Step::RebootPending { .. } => s::RESTART_REQUIRED,
            Step::AlreadyInstalled { .. } => s::PROGRAM_ALREADY_INSTALLED,
            Step::NotApplicable { .. } => s::PROGRAM_NOT_APPLICABLE,
            Step::DownloadFailed { .. } => s::PROGRAM_DOWNLOAD_FAILED,
            Step::Error { .. } => s::PROGRAM_ERROR,
        }
    }

    /// The state the machine is in after this step.
    pub fn state(&self) -> MachineState {
        match self {
            Step::Received => MachineState::Received,
            Step::Started => MachineState::Running,
            Step::Succeeded { .. } | Step::AlreadyInstalled { .. } => MachineState::Succeeded,
            Step::Failed { .. } | Step::DownloadFailed { .. } | Step::Error { .. } => {
                MachineState::Failed
            }
            Step::RebootPending { .. } => MachineState::RebootPending,
            Step::NotApplicable { .. } => MachineState::NotApplicable,
        }
    }

    /// The step that ends a run, if this one does (not received or started).
    pub fn is_final(&self) -> bool {
        !matches!(self, Step::Received | Step::Started)
    }

    /// The program's exit code, where there is one.
    pub fn exit(&self) -> Option<i32> {
        match self {
            Step::Succeeded { exit }
            | Step::Failed { exit, .. }
            | Step::RebootPending { exit, .. }
            | Step::AlreadyInstalled { exit }
            | Step::NotApplicable { exit } => Some(*exit),
            _ => None,
        }
    }

    /// The output tail or the reason, where there is one.
    pub fn detail(&self) -> &str {
        match self {
            Step::Failed { tail, .. } => tail,
            Step::DownloadFailed { why } => why,
            Step::Error { why, tail } if tail.is_empty() => why,
            Step::Error { tail, .. } => tail,
            _ => "",
        }
    }
}

/// What an agent reports, numbered by the agent 1, 2, 3, ... with no gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineReport {
    /// The agent's number for it.
    pub seq: u64,
    /// When it happened, by the machine's clock.
    pub time: DateTime<Utc>,
    /// What happened.
    pub body: MachineEvent,
}

/// What an agent reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineEvent {
    /// What the machine is (sent at start and when it changes).
    Inventory(Inventory),
    /// A step of an advertised program.
    Program {
        /// The advertisement.
        advert: AdvertisementId,
        /// The advertisement's re-run generation the run belongs to.
        rerun: u32,
        /// What happened.
        step: Step,
    },
}

/// A report and the machine's signature over [`report_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMachineReport {
    /// The report.
    pub report: MachineReport,
    /// The machine key's signature.
    pub sig: Signature,
}

/// What a machine signs for a report: the domain, the machine's name and the report.
pub fn report_bytes(machine: &str, r: &MachineReport) -> Result<Vec<u8>, TrustError> {
    let mut out = REPORT_DOMAIN.to_vec();
    let body = bincode::serde::encode_to_vec((machine, r), bincode::config::standard())
        .map_err(|e| TrustError::Encode(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

impl SignedMachineReport {
    /// `r` signed by `machine`'s key.
    pub fn sign(
        machine: &str,
        r: MachineReport,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<Self, TrustError> {
        let sig = crate::trust::sign(key, &report_bytes(machine, &r)?);
        Ok(SignedMachineReport { report: r, sig })
    }

    /// Whether `key` signed it as `machine`.
    pub fn verifies(&self, machine: &str, key: &PublicKey) -> bool {
        report_bytes(machine, &self.report)
            .map(|b| crate::trust::verifies(key, &b, &self.sig))
            .unwrap_or(false)
    }
}

/// What a machine signs for a request to its distribution point: the domain, the method,
/// the path (with its query), the machine's name, the time (unix seconds) and the BLAKE3 of
/// the body.
pub fn request_bytes(method: &str, path: &str, machine: &str, time: i64, body: &[u8]) -> Vec<u8> {
    let mut out = REQUEST_DOMAIN.to_vec();
    for part in [method.as_bytes(), path.as_bytes(), machine.as_bytes()] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out
}

/// The value of an agent request's `Authorization` header:
/// `Siterep-Machine NAME TIME SIGNATURE`.
pub fn authorization(
    method: &str,
    path: &str,
    machine: &str,
    time: i64,
    body: &[u8],
    key: &ed25519_dalek::SigningKey,
) -> String {
    let sig = crate::trust::sign(key, &request_bytes(method, path, machine, time, body));
    format!("Siterep-Machine {machine} {time} {sig}")
}

/// An `Authorization` header's parts: the machine, the time and the signature.
pub fn parse_authorization(h: &str) -> Result<(String, i64, Signature), String> {
    let mut it = h.split_ascii_whitespace();
    let (Some("Siterep-Machine"), Some(m), Some(t), Some(s), None) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err("the Authorization header is not `Siterep-Machine NAME TIME SIGNATURE`".into());
    };
    check_name(m)?;
    let t: i64 = t
        .parse()
        .map_err(|_| format!("the Authorization time {t:?} is not unix seconds"))?;
    let s: Signature = s
        .parse()
        .map_err(|e| format!("the Authorization signature does not parse: {e}"))?;
    Ok((m.to_string(), t, s))
}

/// What a registration carries: the key the machine signs with and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The machine's key (the request is signed by it).
    pub key: PublicKey,
    /// What the machine is.
    pub inventory: Inventory,
}

/// The most reports an agent sends in one request.
pub const MAX_REPORTS_PER_REQUEST: usize = 256;

/// The answer to an agent's registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Whether the machine is approved at the distribution point's site with this key.
    pub approved: bool,
    /// The site.
    pub site: Option<SiteCode>,
    /// What to do next, for a person.
    pub message: String,
}

/// The answer to an agent's reports: every report up to `upto` is stored at the site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportsStored {
    /// The last of the agent's report numbers the site has stored.
    pub upto: u64,
    /// Why the site stored no further, if it refused one.
    pub refused: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(name: &str) -> Inventory {
        Inventory {
            name: name.into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            tags: [("role".to_string(), "web".to_string())].into(),
            agent_version: "0.1.0".into(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "WEB-01"));
        assert!(glob("*", ""));
        assert!(glob("w?b*1", "web-01"));
        assert!(!glob("web-?", "web-01"));
        assert!(!glob("db*", "web"));
        assert!(glob("*-*-*", "a-b-c"));
    }

    #[test]
    fn rules_need_every_condition() {
        let s01: SiteCode = "S01".parse().unwrap();
        let p01: SiteCode = "P01".parse().unwrap();
        let r = Rule::parse("name=web-*, os=Linux, site=S01, tag:role=web").unwrap();
        assert!(r.matches(&inv("web-1"), s01));
        assert!(!r.matches(&inv("web-1"), p01));
        assert!(!r.matches(&inv("db-1"), s01));
        let mut other = inv("web-1");
        other.tags.clear();
        assert!(!r.matches(&other, s01));
        assert_eq!(Rule::parse(&r.to_string()).unwrap(), r);
        assert!(!Rule::default().matches(&inv("x"), s01));
        for bad in ["", "os", "os=", "colour=red", "site=toolong"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn collection_is_members_or_any_rule() {
        let s01: SiteCode = "S01".parse().unwrap();
        let c = Collection {
            name: "c".into(),
            rules: vec![
                Rule::parse("os=windows").unwrap(),
                Rule::parse("site=S01").unwrap(),
            ],
            members: vec!["DB-9".into()],
        };
        assert!(c.contains(&inv("web"), s01));
        assert!(c.contains(&inv("db-9"), "P01".parse().unwrap()));
        assert!(!c.contains(&inv("web"), "P01".parse().unwrap()));
    }

    #[test]
    fn reports_and_requests_are_bound_to_machine_and_key() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let r = MachineReport {
            seq: 1,
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            body: MachineEvent::Program {
                advert: "CEN00001".parse().unwrap(),
                rerun: 0,
                step: Step::Succeeded { exit: 0 },
            },
        };
        let s = SignedMachineReport::sign("web-1", r, &k).unwrap();
        assert!(s.verifies("web-1", &PublicKey::of(&k)));
        assert!(!s.verifies("web-2", &PublicKey::of(&k)));
        assert!(!s.verifies("web-1", &PublicKey::of(&other)));
        let mut altered = s.clone();
        altered.report.seq = 2;
        assert!(!altered.verifies("web-1", &PublicKey::of(&k)));

        let h = authorization("GET", "/agent/policy", "web-1", 42, b"", &k);
        let (m, t, sig) = parse_authorization(&h).unwrap();
        assert_eq!((m.as_str(), t), ("web-1", 42));
        let bytes = request_bytes("GET", "/agent/policy", "web-1", 42, b"");
        assert!(crate::trust::verifies(&PublicKey::of(&k), &bytes, &sig));
        let moved = request_bytes("POST", "/agent/policy", "web-1", 42, b"");
        assert!(!crate::trust::verifies(&PublicKey::of(&k), &moved, &sig));
        assert!(parse_authorization("Bearer x").is_err());
        assert!(parse_authorization("Siterep-Machine bad/name 1 00").is_err());
    }

    #[test]
    fn inventories_and_tails_are_bounded() {
        assert!(inv("web-1").check().is_ok());
        let mut big = inv("web-1");
        big.os = "x".repeat(MAX_FIELD + 1);
        assert!(big.check().is_err());
        let mut many = inv("web-1");
        for i in 0..=MAX_TAGS {
            many.tags.insert(format!("k{i}"), "v".into());
        }
        assert!(many.check().is_err());
        assert!(inv("bad name").check().is_err());
        assert_eq!(tail_of("abcdef", 3), "def");
        assert_eq!(tail_of("ab", 3), "ab");
        assert_eq!(tail_of("aé€", 3), "€", "cut at a character boundary");
    }

    #[test]
    fn steps_map_to_states_and_ids() {
        assert_eq!(Step::Received.status_id(), 10002);
        assert_eq!(Step::Started.status_id(), 10005);
        assert_eq!(
            Step::Failed {
                exit: 1603,
                tail: String::new()
            }
            .status_id(),
            10006
        );
        assert_eq!(Step::Succeeded { exit: 0 }.status_id(), 10008);
        assert_eq!(
            Step::RebootPending {
                exit: 3010,
                succeeded: true
            }
            .status_id(),
            11270
        );
        assert_eq!(
            Step::AlreadyInstalled { exit: 0 }.state(),
            MachineState::Succeeded
        );
        assert!(!Step::Started.is_final());
    }
}
