//! `sender`: how a site proves who it is, and how it sends to its parent, its children and its
//! distribution points.
//!
//! What it is for: the identity made at `init` ([`identity`]: a self-signed TLS certificate
//! whose SHA-256 fingerprint peers pin, and an ed25519 key that signs courier bundles and
//! receipts); QUIC mutual TLS 1.3 between pinned peers ([`tls`]), on a UDP socket with large
//! kernel buffers ([`socket`]); frames over QUIC streams ([`link`]); and the sans-IO sender:
//! hour-of-week address schedules, rate limits and the rate meter ([`schedule`]), and the
//! link scheduler that orders jobs by priority, preempts at chunk boundaries, caps
//! concurrency, retries and raises status 3531-3533 ([`scheduler`]).
//!
//! Where a caller starts: [`identity::create`] and [`identity::load_public`];
//! [`tls::TlsIdentity::load`], [`tls::Pins`], [`tls::server_config`] and
//! [`tls::client_config`]; [`socket::endpoint`]; [`link::FrameWriter`] and
//! [`link::FrameReader`]; [`scheduler::Scheduler`] with its [`scheduler::LinkPolicy`].
//!
//! What it is not: the replication logic (what to send and when it is applied lives in
//! `site-server`), storage (`dist-point`'s content store, `site-server`'s sled log), or a
//! clock: the scheduler and the meter take the time as an argument.

#![warn(missing_docs)]

pub mod identity;
pub mod link;
pub mod schedule;
pub mod scheduler;
pub mod socket;
pub mod tls;
