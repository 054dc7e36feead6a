//! A distribution point's data directory and `dp.toml`.
//!
//! ```text
//! DIR/dp.toml          this file (id, addresses, the site's pin, pull window, validation)
//! DIR/tls/             its certificate and key (the site pins the certificate)
//! DIR/content/         its content store
//! DIR/state.bin        what it holds and its unsent status messages
//! DIR/admin.json       while running: the admin address and token (mode 0600)
//! DIR/lock             the process lock
//! ```

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_FILE: &str = "dp.toml";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpConfig {
    /// Its id at its site (`DP1`).
    pub id: String,
    /// Where clients (and pull DPs) reach its HTTP server.
    pub listen: SocketAddr,
    /// Its site server's QUIC address, HOST:PORT.
    pub site: String,
    /// SHA-256 of the site server's certificate (`site-server identity` prints it).
    pub site_fingerprint: String,
    /// Chunk requests in flight at most.
    #[serde(default = "default_window")]
    pub window: usize,
    /// How often every stored chunk is re-hashed (`7d`, `12h`; `off` for never).
    #[serde(default = "default_validate")]
    pub validate_every: String,
    /// After a failure to store (the disk is full), how long before trying again.
    #[serde(default = "default_retry")]
    pub retry: String,
    /// HTTP connections served at once (default: from the open-file limit, see
    /// `listener::max_connections`); one more gets a 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// File downloads streaming at once; one more gets a 503 with `Retry-After`.
    #[serde(default = "default_max_downloads")]
    pub max_downloads: usize,
}

fn default_max_downloads() -> usize {
    crate::serve::MAX_DOWNLOADS
}

fn default_window() -> usize {
    64
}
fn default_validate() -> String {
    "7d".into()
}
fn default_retry() -> String {
    "10s".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}; run `dist-point init --data DIR --id ID ...` first")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A positive duration in `dp.toml`: `90s`, `10m`, `12h`, `7d` (the sender's syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match sender::schedule::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("`{s}` is zero: give a positive duration")),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

impl DpConfig {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CONFIG_FILE)
    }

    /// Checks every field; the error names the field and the fix.
    pub fn check(&self) -> Result<(), String> {
        schema::ids::check_dp_id(&self.id)?;
        if self.site.parse::<SocketAddr>().is_err() {
            return Err(format!(
                "site = {:?} is not HOST:PORT: give the site server's QUIC address (its `listen`)",
                self.site
            ));
        }
        let fp = self.site_fingerprint.trim();
        if fp.len() != 64 || !fp.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "site_fingerprint = {:?} is not 64 hex digits: copy it from `site-server identity` at the site",
                self.site_fingerprint
            ));
        }
        if !(1..=1024).contains(&self.window) {
            return Err(format!(
                "window = {} is out of range: use 1 to 1024",
                self.window
            ));
        }
        if self.validate_every != "off" {
            parse_duration(&self.validate_every)
                .map_err(|e| format!("validate_every: {e}, or off"))?;
        }
        parse_duration(&self.retry).map_err(|e| format!("retry: {e}"))?;
        if let Some(n) = self.max_connections {
            if !(1..=65536).contains(&n) {
                return Err(format!(
                    "max_connections = {n} is out of range: use 1 to 65536, or leave it out"
                ));
            }
        }
        if !(1..=65536).contains(&self.max_downloads) {
            return Err(format!(
                "max_downloads = {} is out of range: use 1 to 65536",
                self.max_downloads
            ));
        }
        Ok(())
    }

    pub fn validate_interval(&self) -> Option<Duration> {
        if self.validate_every == "off" {
            None
        } else {
            parse_duration(&self.validate_every).ok()
        }
    }

    pub fn retry_after(&self) -> Duration {
        parse_duration(&self.retry).unwrap_or(Duration::from_secs(10))
    }

    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let cfg: DpConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            reason: e.message().to_string(),
        })?;
        cfg.check()
            .map_err(|reason| ConfigError::Invalid { path, reason })?;
        Ok(cfg)
    }

    /// Writes `dp.toml` (atomically).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let path = Self::path(dir);
        let text = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        let tmp = dir.join("dp.toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DpConfig {
        DpConfig {
            id: "DP1".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            site: "127.0.0.1:7001".into(),
            site_fingerprint: "ab".repeat(32),
            window: default_window(),
            validate_every: default_validate(),
            retry: default_retry(),
            max_connections: None,
            max_downloads: default_max_downloads(),
        }
    }

    #[test]
    fn every_field_is_checked() {
        assert!(cfg().check().is_ok());
        for (f, bad) in [
            (
                "id",
                DpConfig {
                    id: "DP 1".into(),
                    ..cfg()
                },
            ),
            (
                "site",
                DpConfig {
                    site: "nowhere".into(),
                    ..cfg()
                },
            ),
            (
                "site_fingerprint",
                DpConfig {
                    site_fingerprint: "ab".into(),
                    ..cfg()
                },
            ),
            ("window", DpConfig { window: 0, ..cfg() }),
            (
                "max_connections",
                DpConfig {
                    max_connections: Some(0),
                    ..cfg()
                },
            ),
            (
                "max_downloads",
                DpConfig {
                    max_downloads: 0,
                    ..cfg()
                },
            ),
            (
                "validate_every",
                DpConfig {
                    validate_every: "weekly".into(),
                    ..cfg()
                },
            ),
            (
                "retry",
                DpConfig {
                    retry: "0s".into(),
                    ..cfg()
                },
            ),
        ] {
            let e = bad.check().unwrap_err();
            assert!(
                e.contains(f) || e.contains("distribution point id"),
                "{f}: {e}"
            );
        }
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
    }

    #[test]
    fn saves_and_loads() {
        let d = tempfile::tempdir().unwrap();
        cfg().save(d.path()).unwrap();
        assert_eq!(DpConfig::load(d.path()).unwrap(), cfg());
        std::fs::write(DpConfig::path(d.path()), "id = 3").unwrap();
        assert!(DpConfig::load(d.path())
            .unwrap_err()
            .to_string()
            .contains("dp.toml"));
    }
}
