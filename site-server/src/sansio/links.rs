//! Link state, as ConfigMgr shows its replication links: Active while connected, Degraded after
//! [`DEGRADED_AFTER`] failed attempts in a row, Failed after twice that, with the last error.
//!
//! Sans-IO: [`LinkStatus`] changes only through its `on_*` methods, which take the time.

use chrono::{DateTime, Utc};
use schema::SiteCode;
use serde::{Deserialize, Serialize};

/// Failed attempts in a row before a link is Degraded (Failed after twice as many).
pub const DEGRADED_AFTER: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Configured, never connected since the daemon started.
    Waiting,
    Active,
    Degraded,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Parent,
    Child,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub peer: SiteCode,
    pub role: Role,
    pub state: LinkState,
    /// Failed attempts (or drops) since the last successful connection.
    pub failures: u32,
    pub last_error: Option<String>,
    /// When the state last changed.
    pub since: DateTime<Utc>,
    /// Connections made since this process started (the first and every reconnect).
    #[serde(default)]
    pub connects: u64,
}

impl LinkStatus {
    pub fn new(peer: SiteCode, role: Role, now: DateTime<Utc>) -> Self {
        LinkStatus {
            peer,
            role,
            state: LinkState::Waiting,
            failures: 0,
            last_error: None,
            since: now,
            connects: 0,
        }
    }

    fn set(&mut self, state: LinkState, now: DateTime<Utc>) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }

    pub fn on_connected(&mut self, now: DateTime<Utc>) {
        self.failures = 0;
        self.connects += 1;
        self.set(LinkState::Active, now);
    }

    /// A connection attempt failed, or an active link dropped, with `error`.
    pub fn on_failure(&mut self, now: DateTime<Utc>, error: String) {
        self.failures += 1;
        self.last_error = Some(error);
        let state = if self.failures >= 2 * DEGRADED_AFTER {
            LinkState::Failed
        } else if self.failures >= DEGRADED_AFTER {
            LinkState::Degraded
        } else if self.state == LinkState::Active {
            // One drop of an active link: still counted, shown as degraded until it is back.
            LinkState::Degraded
        } else {
            self.state
        };
        self.set(state, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_failures_and_recover() {
        let t = Utc::now();
        let mut l = LinkStatus::new(SiteCode::new("CEN").unwrap(), Role::Parent, t);
        assert_eq!(l.state, LinkState::Waiting);
        for _ in 0..DEGRADED_AFTER - 1 {
            l.on_failure(t, "refused".into());
        }
        assert_eq!(l.state, LinkState::Waiting);
        l.on_failure(t, "refused".into());
        assert_eq!(l.state, LinkState::Degraded);
        for _ in 0..DEGRADED_AFTER {
            l.on_failure(t, "timeout".into());
        }
        assert_eq!(l.state, LinkState::Failed);
        assert_eq!(l.last_error.as_deref(), Some("timeout"));
        l.on_connected(t);
        assert_eq!((l.state, l.failures), (LinkState::Active, 0));
        l.on_failure(t, "reset".into());
        assert_eq!(l.state, LinkState::Degraded);
    }
}
