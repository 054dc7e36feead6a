//! `site-server`: the daemon that runs one site of the hierarchy, and its operator CLI.
//!
//! What it is for: the site's config log and report log on sled ([`db`], the only module
//! that touches sled), the projections derived from the log ([`projection`], sans-IO), the
//! decisions that turn operator requests into events ([`decide`], sans-IO), package
//! publishing into the content store ([`publish`]), the admin HTTP API ([`api`], [`site`])
//! and the CLI that drives it ([`cli`], [`client`]), and `site-server demo`.
//!
//! What it is not: the content store (that is `dist-point`), the QUIC transport and sender
//! scheduling (`sender`), or the courier bundle format (`courier`). Replication between sites
//! arrives with the replication issue.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod db;
pub mod decide;
pub mod demo;
pub mod projection;
pub mod publish;
pub mod site;
