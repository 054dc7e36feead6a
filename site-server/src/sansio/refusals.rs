//! Refused connections, counted per peer address (sans-IO), so that anyone who can reach
//! the QUIC port cannot grow the report log one message per failed handshake.
//!
//! The first refusal from an address is reported at once; further ones within
//! [`Refusals::INTERVAL`] are only counted, and [`Refusals::flush`] reports each address's
//! count once its interval is over. An address quiet for a whole interval is forgotten.
//! At most [`Refusals::MAX_PEERS`] addresses are tracked; the rest are counted together
//! (as `None`). Time is an argument; the address type is the caller's (the shell uses
//! `std::net::IpAddr`), so this core names no network type.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long refusals from one address are counted before the count is reported.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// One message to raise: `count` refusals from `peer` (`None`: from untracked addresses),
/// the last one for `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary<P> {
    pub peer: Option<P>,
    pub count: u64,
    pub reason: String,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Refusals counted since the last message.
    unreported: u64,
    last_reason: String,
}

/// The refusal counts (see the module doc).
#[derive(Debug)]
pub struct Refusals<P> {
    peers: HashMap<P, Window>,
    others: Option<Window>,
}

impl<P> Default for Refusals<P> {
    fn default() -> Self {
        Refusals {
            peers: HashMap::new(),
            others: None,
        }
    }
}

impl<P: Copy + Eq + Hash + Ord> Refusals<P> {
    /// How long refusals from one address are counted before the count is reported.
    pub const INTERVAL: Duration = INTERVAL;
    /// How many addresses are tracked one by one.
    pub const MAX_PEERS: usize = 1024;

    /// A connection from `peer` was refused for `reason`. Returns the message to raise now,
    /// if this is the first refusal from that address in its interval.
    pub fn on_refusal(&mut self, peer: P, reason: &str, now: Instant) -> Option<Summary<P>> {
        let tracked = self.peers.len() < Self::MAX_PEERS || self.peers.contains_key(&peer);
        let (slot, who) = if tracked {
            (self.peers.get_mut(&peer), Some(peer))
        } else {
            (self.others.as_mut(), None)
        };
        if let Some(w) = slot {
            w.unreported += 1;
            w.last_reason = reason.to_string();
            return None;
        }
        let w = Window {
            started: now,
            unreported: 0,
            last_reason: reason.to_string(),
        };
        match who {
            Some(p) => {
                self.peers.insert(p, w);
            }
            None => self.others = Some(w),
        }
        Some(Summary {
            peer: who,
            count: 1,
            reason: reason.to_string(),
        })
    }

    /// The counts of every interval that is over; an address with nothing new is forgotten.
    pub fn flush(&mut self, now: Instant) -> Vec<Summary<P>> {
        let mut out = Vec::new();
        let mut due = |peer: Option<P>, w: &mut Window| -> bool {
            if now.saturating_duration_since(w.started) < INTERVAL {
                return true;
            }
            if w.unreported == 0 {
                return false;
            }
            out.push(Summary {
                peer,
                count: w.unreported,
                reason: w.last_reason.clone(),
            });
            w.unreported = 0;
            w.started = now;
            true
        };
        self.peers.retain(|p, w| due(Some(*p), w));
        if let Some(w) = self.others.as_mut() {
            if !due(None, w) {
                self.others = None;
            }
        }
        out.sort_by_key(|s| s.peer);
        out
    }

    /// Refusals counted and not yet reported: more than a few means someone is knocking.
    pub fn pending(&self) -> u64 {
        self.peers.values().map(|w| w.unreported).sum::<u64>()
            + self.others.as_ref().map_or(0, |w| w.unreported)
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Refusals = super::Refusals<u32>;

    fn ip(n: u32) -> u32 {
        0x7f00_0000 + n
    }

    #[test]
    fn the_first_refusal_is_said_at_once_and_the_rest_once_per_interval() {
        let t = Instant::now();
        let mut r = Refusals::default();
        assert_eq!(
            r.on_refusal(ip(1), "bad pin", t),
            Some(Summary {
                peer: Some(ip(1)),
                count: 1,
                reason: "bad pin".into()
            })
        );
        for i in 0..999 {
            assert_eq!(r.on_refusal(ip(1), &format!("bad pin {i}"), t), None);
        }
        assert_eq!(r.pending(), 999);
        assert!(r.flush(t + Duration::from_secs(59)).is_empty());
        let said = r.flush(t + Refusals::INTERVAL);
        assert_eq!(
            said,
            [Summary {
                peer: Some(ip(1)),
                count: 999,
                reason: "bad pin 998".into()
            }]
        );
        assert_eq!(r.pending(), 0);
        // Quiet for a whole interval: forgotten, so the next refusal is said at once again.
        assert!(r.flush(t + 2 * Refusals::INTERVAL).is_empty());
        assert_eq!(r.tracked(), 0);
        assert!(r
            .on_refusal(ip(1), "x", t + 3 * Refusals::INTERVAL)
            .is_some());
    }

    #[test]
    fn addresses_beyond_the_cap_are_counted_together() {
        let t = Instant::now();
        let mut r = Refusals::default();
        let mut said = 0;
        for n in 0..(Refusals::MAX_PEERS as u32 + 500) {
            said += r.on_refusal(ip(n), "x", t).is_some() as usize;
        }
        assert_eq!(r.tracked(), Refusals::MAX_PEERS);
        // One message per tracked address, one for all the others, then their count.
        assert_eq!(said, Refusals::MAX_PEERS + 1);
        let later = r.flush(t + Refusals::INTERVAL);
        assert_eq!(
            later,
            [Summary {
                peer: None,
                count: 499,
                reason: "x".into()
            }]
        );
    }
}
