//! `dist-point`: where content lives.
//!
//! What it is for: the [`store::ContentStore`] that every site server and distribution point
//! uses to keep chunks on disk, each once, named by the BLAKE3 hash of its raw bytes,
//! zstd-compressed when that pays, written atomically (temp file, fsync, rename), verified on
//! every read; [`serve`], the HTTP routes that hand package files to clients (ranges, ETags,
//! `latest`, never a byte that fails verification); and, as the distribution-point issue goes
//! on, the `dist-point` process that pulls the chunks it misses from its site server.
//!
//! What it is not: a database. Which chunks a package version needs is in the manifest
//! (schema) and the site's projections (site-server); this crate only knows chunks.

pub mod serve;
pub mod store;

pub use store::{
    verify_encoded, Batch, ContentStore, FileReader, ScrubProblem, ScrubReport, StoreError,
};
