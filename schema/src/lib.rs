//! `schema`: the types every part of the site hierarchy agrees on.
//!
//! What is here: site codes and ids ([`ids`]), the config events and their versioned envelope
//! ([`event`]), advertisements and their programs' exit rules ([`advert`]), software-update
//! catalog entries ([`catalog`]), reports and status messages ([`report`]) with the one table
//! of every status-message id ([`status`]), the package manifest ([`manifest`]), content-defined
//! chunking ([`chunking`]), the persisted/wire encoding ([`encoding`]), the frames of a
//! site link ([`wire`]), origin signatures with the tree's key ring ([`trust`]), who may
//! decide what ([`authority`]), and machines, collections and agents' reports ([`machine`]).
//!
//! Where a caller starts: [`event::EventEnvelope`] and [`event::ConfigEvent`] (what a config
//! log holds), [`report::ReportEnvelope`] and [`report::StatusMessage`] (what a report log
//! holds), [`status::lookup`] and [`status::render`] (the message catalogue),
//! [`manifest::Manifest`] and [`chunking::Chunker`] (a package version's content),
//! [`encoding::encode`] and [`encoding::decode`] (every record persisted or sent), and
//! [`wire::Frame`] with [`wire::encode_frame`] and [`wire::FrameDecoder`] (a site link).
//!
//! What is not here: any I/O. Nothing in this crate opens a file, a socket or a database; the
//! chunker reads from whatever reader its caller hands it. That keeps the types usable from
//! the daemon, the distribution point, the courier and tests alike. Nor is deciding or
//! applying events here: that is `site-server`'s.

#![warn(missing_docs)]

pub mod advert;
pub mod authority;
pub mod catalog;
pub mod chunking;
pub mod encoding;
pub mod event;
pub mod ids;
pub mod machine;
pub mod manifest;
pub mod report;
pub mod status;
pub mod trust;
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
