//! `schema`: the types every part of the site hierarchy agrees on.
//!
//! What is here: site codes and ids ([`ids`]), the config events and their versioned envelope
//! ([`event`]), advertisements and their programs' exit rules ([`advert`]), software-update
//! catalog entries ([`catalog`]), reports and status messages ([`report`]) with the one table
//! of every status-message id ([`status`]), the package manifest ([`manifest`]), content-defined
//! chunking ([`chunking`]), the persisted/wire encoding ([`encoding`]) and the frames of a
//! site link ([`wire`]).
//!
//! What is not here: any I/O. Nothing in this crate opens a file, a socket or a database; the
//! chunker works on byte slices that its caller fills. That keeps the types usable from the
//! daemon, the distribution point, the courier and tests alike.

pub mod advert;
pub mod catalog;
pub mod chunking;
pub mod encoding;
pub mod event;
pub mod ids;
pub mod manifest;
pub mod report;
pub mod status;
pub mod wire;

pub use ids::{AdvertisementId, ChunkId, IdError, ManifestId, PackageId, SiteCode};

/// Helpers for tests in this workspace (enabled by the `testutil` feature).
#[cfg(any(test, feature = "testutil"))]
pub mod testutil {
    /// Deterministic incompressible bytes (xorshift64): the same `(len, seed)`, the same bytes.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}
