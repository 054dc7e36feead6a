//! `courier`: signed bundles on removable media for sites with no usable network link.
//!
//! What it is for: the bundle format (magic, version, header, zstd sections each with its
//! BLAKE3, an ed25519-signed trailer), exporting a parent's config events and missing chunks
//! for a child, importing them all-or-nothing, and receipts that carry the child's reports
//! and cursor back. The courier issue fills this in; for now it fixes the format constants
//! that the rest of the workspace may refer to.
//!
//! What it is not: a transport. Bundles are files; moving them is the operator's job.

/// The magic at the start of every bundle volume.
pub const BUNDLE_MAGIC: [u8; 8] = *b"SRBUNDLE";
/// The bundle format version this build writes and reads.
pub const BUNDLE_FORMAT_VERSION: u16 = 1;
