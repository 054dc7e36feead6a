//! `courier`: signed bundles on removable media for sites with no usable network link.
//!
//! What it is for: the bundle format (magic, version, header, zstd sections each with its
//! BLAKE3, an ed25519-signed trailer), exporting a parent's config events and missing chunks
//! for a child, importing them all-or-nothing, and receipts that carry the child's reports
//! and cursor back. [`format`] is the file format (written and read as a stream, verified
//! before anything is applied); the site server decides what goes in a bundle and applies
//! what comes out.
//!
//! Entry points: [`VolumeWriter`] (write one volume) and [`VolumeReader`] (read and verify
//! one), over the [`BundleHeader`] both sides agree on.
//!
//! What it is not: a transport. Bundles are files; moving them is the operator's job.

pub mod format;

pub use format::{BundleError, BundleHeader, Kind, SectionKind, VolumeReader, VolumeWriter};
