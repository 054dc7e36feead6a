//! `site-server`: the daemon that runs one site of the hierarchy, and its operator CLI.
//!
//! What it is for: the site's config log and report log on sled ([`db`], the only module
//! that touches sled), the projections derived from the log ([`projection`], sans-IO), the
//! decisions that turn operator requests into events ([`decide`], sans-IO), package
//! publishing into the content store ([`publish`]), the daemon's lifecycle ([`daemon`]) and
//! its admin HTTP API ([`api`], [`site`]). The operator CLI, its API client and
//! `site-server demo` live in the binary (`main.rs`, `cli.rs`, `client.rs`, `demo.rs`): this
//! library prints nothing.
//!
//! What it is not: the content store (that is `dist-point`), the QUIC transport and sender
//! scheduling (`sender`), or the courier bundle format (`courier`). Replication between sites
//! arrives with the replication issue.

pub mod api;
pub mod catalog_sources;
pub mod catalog_sync;
pub mod config;
pub mod content;
pub mod courier_ops;
pub mod daemon;
pub mod db;
pub mod decide;
pub mod dp_link;
pub mod fetch;
pub mod links;
pub mod plugin_args;
pub mod projection;
pub mod publish;
pub mod replication;
pub mod sending;
pub mod site;
pub mod sync;
pub mod sync_schedule;
