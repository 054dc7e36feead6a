//! `site-server`: the daemon that runs one site of the hierarchy.
//!
//! Entry points:
//! - [`daemon::run`]: the site daemon (`site-server run`): opens the site, serves the admin
//!   API, links to the parent and the children over QUIC, runs the catalog schedule.
//! - [`site::Site`]: one running site and every operation the admin API exposes.
//! - [`db::Db`]: the config and report logs and the projections on sled.
//! - [`publish::build`]: a source directory into the content store and a manifest.
//! - [`courier`]: bundles and receipts for sites reached by removable media.
//! - [`catalog::sync::sync_now`]: the top site's catalog sync.
//! - [`ui`]: the operator's console (web pages, live updates) and `/metrics`.
//! - [`harness`]: a local hierarchy of real processes on 127.0.0.1, for the demo, the
//!   end-to-end tests and the benchmarks.
//!
//! The folders say what each part is: [`sansio`] holds the pure cores (no I/O, no clock),
//! [`db`] is the only user of sled, [`site`] owns the shared state of a running site, [`net`]
//! holds the QUIC shells, and [`catalog`], [`courier`] and [`publish`] the shells of those
//! features. The operator CLI lives in the binary (`src/main.rs`, `src/cli/`): this library
//! prints nothing.
//!
//! What it is not: the content store (that is `dist-point`), the QUIC transport and sender
//! scheduling (`sender`), or the courier bundle format (the `courier` crate).

pub mod api;
pub mod catalog;
pub mod config;
pub mod courier;
pub mod daemon;
pub mod db;
#[cfg(feature = "forge")]
pub mod forge;
pub mod harness;
pub mod net;
pub mod publish;
pub mod sansio;
pub mod site;
pub mod ui;
