//! `dist-point`: where content lives.
//!
//! What it is for: the [`store::ContentStore`] that every site server and distribution point
//! uses to keep chunks on disk, each once, named by the BLAKE3 hash of its raw bytes,
//! zstd-compressed when that pays, written atomically (temp file, fsync, rename), verified on
//! every read; [`serve`], the HTTP routes that hand package files to clients (ranges, ETags,
//! `latest`, never a byte that fails verification); and the `dist-point` process: it attaches
//! to one site server over pinned QUIC ([`site_link`]), holds what the site assigns to it
//! ([`plan`], sans-IO), pulls the chunks it misses, at most a window at a time, from ranked
//! source DPs and then the site ([`pull`], sans-IO), verifies and stores them ([`intake`]),
//! validates its store on a schedule, and deletes what nothing needs ([`node`]). It serves
//! its site's agents their policy and passes their signed reports up ([`agents`]). Its HTTP
//! listener caps connections and times out slow clients ([`listener`]).
//!
//! Entry points: [`store::ContentStore`] (for every user of the store), [`daemon::run`] (the
//! DP process) and [`cli::run`] (its commands, also reached as `site-server dist-point`).
//!
//! What it is not: a database. Which chunks a package version needs is in the manifest
//! (schema) and the site's projections (site-server); this crate only knows chunks.

pub mod agents;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod intake;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod pull;
pub mod serve;
pub mod site_link;
pub mod store;

pub use store::{
    verify_encoded, Batch, ContentStore, FileReader, ScrubProblem, ScrubReport, StoreError,
    StoreUsage,
};
