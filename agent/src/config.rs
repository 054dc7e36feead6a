//! The agent's data directory: `agent.toml` (what `init` was given), `machine.key` (the
//! machine's ed25519 seed, hex, mode 0600), `state.json` (see [`crate::state`]) and `cache/`
//! (package versions, verified).

use crate::AgentError;
use ed25519_dalek::SigningKey;
use schema::machine::{check_name, Inventory};
use schema::trust::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_FILE: &str = "agent.toml";
pub const KEY_FILE: &str = "machine.key";

/// `agent.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The machine's name (its host name unless given at `init`).
    pub name: String,
    /// The distribution point, `http://HOST:PORT`.
    pub dp: String,
    /// The top site's key: every advertisement must chain to it.
    pub root_key: PublicKey,
    /// Tags collection rules can match (`role = "web"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How often the agent asks its DP for policy (`5m`), with up to a tenth more at random.
    #[serde(default = "default_poll")]
    pub poll: String,
    /// Run `reboot_command` when a program asks for a restart (off unless the operator says).
    #[serde(default)]
    pub allow_reboot: bool,
    /// The command that restarts the machine (run without a shell).
    #[serde(default)]
    pub reboot_command: String,
}

fn default_poll() -> String {
    "5m".into()
}

impl AgentConfig {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CONFIG_FILE)
    }

    pub fn load(dir: &Path) -> Result<AgentConfig, AgentError> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AgentError::Usage(format!(
                    "{} does not exist: make the agent with `site-agent init --data {}`",
                    p.display(),
                    dir.display()
                ))
            } else {
                AgentError::Failed(format!("cannot read {}: {e}", p.display()))
            }
        })?;
        let c: AgentConfig = toml::from_str(&text)
            .map_err(|e| AgentError::Usage(format!("{}: {e}", p.display())))?;
        c.check()
            .map_err(|e| AgentError::Usage(format!("{}: {e}", p.display())))?;
        Ok(c)
    }

    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        self.inventory().check()?;
        if !(self.dp.starts_with("http://") || self.dp.starts_with("https://")) {
            return Err(format!(
                "dp = {:?} is not a URL: write http://HOST:PORT of the distribution point",
                self.dp
            ));
        }
        self.poll_interval()?;
        if self.allow_reboot && self.reboot_command.trim().is_empty() {
            return Err("allow_reboot is on but reboot_command is empty: give the command that restarts this machine".into());
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> Result<Duration, String> {
        parse_duration(&self.poll).map_err(|e| format!("poll: {e}"))
    }

    pub fn save(&self, dir: &Path) -> Result<(), AgentError> {
        let text = toml::to_string_pretty(self).map_err(|e| AgentError::Failed(e.to_string()))?;
        crate::state::write_atomic(&Self::path(dir), text.as_bytes())
    }

    /// What the machine says it is.
    pub fn inventory(&self) -> Inventory {
        Inventory {
            name: self.name.clone(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            tags: self.tags.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// `500ms`, `2s`, `5m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 30s, 5m or 1h"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use ms, s, m, h or d"
            ))
        }
    };
    if ms == 0 {
        return Err(format!("`{s}` is zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// Makes a new key, written with mode 0600.
pub fn new_key(dir: &Path) -> Result<SigningKey, AgentError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| AgentError::Failed("the system has no random numbers".into()))?;
    let p = dir.join(KEY_FILE);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o
        .open(&p)
        .map_err(|e| AgentError::Failed(format!("cannot create {}: {e}", p.display())))?;
    std::io::Write::write_all(&mut f, format!("{}\n", hex::encode(seed)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| AgentError::Failed(format!("cannot write {}: {e}", p.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

pub fn load_key(dir: &Path) -> Result<SigningKey, AgentError> {
    let p = dir.join(KEY_FILE);
    let text = std::fs::read_to_string(&p)
        .map_err(|e| AgentError::Failed(format!("cannot read {}: {e}", p.display())))?;
    let b = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            AgentError::Usage(format!(
                "{} is not 64 hex digits: restore it, or make a new agent with `site-agent init` (and approve its new key)",
                p.display()
            ))
        })?;
    Ok(SigningKey::from_bytes(&b))
}

/// This machine's host name, as the default machine name (`/etc/hostname`, then `HOSTNAME`).
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "machine".into());
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(schema::machine::MAX_NAME)
        .collect();
    if name.is_empty() {
        "machine".into()
    } else {
        name
    }
}
