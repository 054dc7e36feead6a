//! `sender`: how a site proves who it is and, from the replication issue on, how it talks to
//! its parent and children.
//!
//! What it is for: the site identity made at `init` ([`identity`]: a self-signed TLS
//! certificate whose SHA-256 fingerprint peers pin, and an ed25519 key that signs courier
//! bundles and receipts); QUIC mutual TLS 1.3 between pinned peers ([`tls`]); then, with the
//! replication and sender issues, framing and the sans-IO link scheduler (priorities,
//! address schedules, rate limits, retries, status 3531-3533).
//!
//! What it is not: the replication logic (what to send and when it is applied lives in
//! `site-server`) or storage (`dist-point`'s content store, `site-server`'s sled log).

pub mod identity;
pub mod link;
pub mod schedule;
pub mod scheduler;
pub mod socket;
pub mod tls;
