//! `state.json`: what the agent has received, run and not yet reported. Written whole,
//! atomically (temporary file, fsync, rename), after every change that matters: before a
//! program starts (so a restart in the middle of a run is known) and after it ends.

use crate::plan::AdvertRecord;
use crate::AgentError;
use chrono::{DateTime, Utc};
use schema::machine::{MachineEvent, MachineReport, SignedMachineReport};
use schema::AdvertisementId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const STATE_FILE: &str = "state.json";
/// The most reports kept while the distribution point cannot take them; the oldest go first.
pub const MAX_OUTBOX: usize = 10_000;

/// A run under way, recorded before the program starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub advert: AdvertisementId,
    pub rerun: u32,
    pub due: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub pid: Option<u32>,
    /// The program, to recognise the process after a restart (a pid can be reused).
    #[serde(default)]
    pub program: String,
}

/// See the module doc.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The site the agent's distribution point belongs to, once it said.
    pub site: Option<schema::SiteCode>,
    /// Whether the DP said this machine is approved (with this key).
    pub approved: bool,
    /// The policy's tag (sent as If-None-Match).
    pub policy_etag: Option<String>,
    /// The last inventory reported (so a change is reported once).
    pub inventory_reported: Option<schema::machine::Inventory>,
    /// Per advertisement.
    pub adverts: BTreeMap<AdvertisementId, AdvertRecord>,
    /// The run under way, if the agent stopped during one.
    pub running: Option<Running>,
    /// The next report number.
    pub next_seq: u64,
    /// Signed reports the DP has not taken yet, oldest first.
    pub outbox: Vec<SignedMachineReport>,
    /// When the last poll answered, and what it said.
    pub last_poll: Option<(DateTime<Utc>, String)>,
}

impl State {
    pub fn load(dir: &Path) -> Result<State, AgentError> {
        let p = dir.join(STATE_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                AgentError::Failed(format!(
                    "{} does not parse ({e}): move it away; the agent starts over and reports what it runs again",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                next_seq: 1,
                ..State::default()
            }),
            Err(e) => Err(AgentError::Failed(format!("cannot read {}: {e}", p.display()))),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let b = serde_json::to_vec_pretty(self).map_err(|e| AgentError::Failed(e.to_string()))?;
        write_atomic(&dir.join(STATE_FILE), &b)
    }

    /// Signs and queues a report.
    pub fn report(
        &mut self,
        machine: &str,
        key: &ed25519_dalek::SigningKey,
        now: DateTime<Utc>,
        body: MachineEvent,
    ) -> Result<(), AgentError> {
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        let r = MachineReport {
            seq,
            time: now,
            body,
        };
        let s = SignedMachineReport::sign(machine, r, key)
            .map_err(|e| AgentError::Failed(e.to_string()))?;
        self.outbox.push(s);
        if self.outbox.len() > MAX_OUTBOX {
            let extra = self.outbox.len() - MAX_OUTBOX;
            tracing::warn!(
                dropped = extra,
                "the outbox is full: the oldest reports are dropped"
            );
            self.outbox.drain(..extra);
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    r.map_err(|e| AgentError::Failed(format!("cannot write {}: {e}", path.display())))
}
