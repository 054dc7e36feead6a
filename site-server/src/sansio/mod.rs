//! The pure cores of the site: what the shells around them decide and compute, with time and
//! input as arguments. Nothing here does I/O, reads the clock or names tokio, quinn, sled or
//! the file system (a test in `tests/boundaries.rs` keeps it so).
//!
//! - [`projection`]: the state derived from the config log, over any [`projection::ProjectionStore`].
//! - [`decide`]: operator requests turned into events (or refusals).
//! - [`agents`]: collections, machine approvals, the advertisement lifecycle, machines'
//!   reports as status messages, and the roll-ups of `status adverts`.
//! - [`links`]: the state machine of one link's status.
//! - [`fetch`]: what a site still has to fetch from its parent, in what order.
//! - [`child_asks`]: what one child connection asked for, bounded by bytes and count.
//! - [`catalog_plan`]: catalog sources read into updates, and a sync's delta.
//! - [`plugin_args`]: plug-in arguments in CAU's `Name=Value;...` syntax.
//! - [`sync_schedule`]: when the next scheduled catalog sync is.
//! - [`rollups`]: the last word of each sender, DP and catalog, folded message by message;
//!   the filter of `status messages`; what retention removes.
//! - [`refusals`]: refused connections counted per peer address, reported once per interval.
//! - [`scope`]: which reports a child, and which events the parent, may send this site.
//! - [`trust`]: which events and reports this site believes: signatures, authority, order.

pub mod agents;
pub mod catalog_plan;
pub mod child_asks;
pub mod decide;
pub mod fetch;
pub mod links;
pub mod plugin_args;
pub mod projection;
pub mod refusals;
pub mod rollups;
pub mod scope;
pub mod sync_schedule;
pub mod trust;

#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod projection_tests;
#[cfg(test)]
mod test_support;
