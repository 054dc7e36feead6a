//! Counters of what crossed this site's links since the process started, for `/metrics`
//! (Prometheus counters start again at zero with the process; `rate()` expects that).
//!
//! Shared state: written by the fetcher's storing thread (`net::content`) with relaxed
//! atomics; read by the
//! metrics collector and the console's sampler. The map's lock is taken alone, only to find
//! or add a peer's entry; nothing waits on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What arrived from one peer.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Bytes of chunks received, as sent (zstd-compressed).
    pub received_bytes: AtomicU64,
    /// Chunks received from the peer (verified or not).
    pub chunks_fetched: AtomicU64,
    /// Chunks that hashed to their name and were stored.
    pub chunks_verified: AtomicU64,
    /// Chunks refused: they did not decode or hash to their name.
    pub chunks_refused: AtomicU64,
}

/// A copy of one peer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCount {
    pub received_bytes: u64,
    pub chunks_fetched: u64,
    pub chunks_verified: u64,
    pub chunks_refused: u64,
}

/// Every peer's counters.
#[derive(Debug, Default)]
pub struct Counters {
    peers: Mutex<BTreeMap<String, Arc<PeerCounters>>>,
}

impl Counters {
    /// The counters of `peer` (a site code, or `dp:ID`), made at first use.
    pub fn peer(&self, peer: &str) -> Arc<PeerCounters> {
        let mut m = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(peer.to_string()).or_default().clone()
    }

    /// Adds `bytes` received from `peer`.
    pub fn received(&self, peer: &str, bytes: u64) {
        self.peer(peer)
            .received_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// A copy of every peer's counters.
    pub fn snapshot(&self) -> BTreeMap<String, PeerCount> {
        let m = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(k, c)| {
                let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    k.clone(),
                    PeerCount {
                        received_bytes: g(&c.received_bytes),
                        chunks_fetched: g(&c.chunks_fetched),
                        chunks_verified: g(&c.chunks_verified),
                        chunks_refused: g(&c.chunks_refused),
                    },
                )
            })
            .collect()
    }
}
