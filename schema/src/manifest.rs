//! The package manifest: what files a package version has and which chunks make each one.

use crate::encoding;
use crate::ids::{ChunkId, ManifestId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A reference to one chunk of a file: its id and its raw length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk's id: BLAKE3 of its raw bytes.
    pub id: ChunkId,
    /// Its raw (uncompressed) length in bytes.
    pub len: u32,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file: its content is the concatenation of these chunks.
    File {
        /// The file's chunks, in order.
        chunks: Vec<ChunkRef>,
    },
    /// A symbolic link that resolves inside the package (relative target).
    Symlink {
        /// The link's target, relative to the directory that holds the link.
        target: String,
    },
}

/// One entry of a package: a relative, `/`-separated path, its Unix mode bits and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where the entry sits in the package (see [`is_clean_relative_path`]).
    pub path: String,
    /// Unix mode bits: permissions with setuid, setgid and sticky (`0o7777` at most).
    pub mode: u32,
    /// In bytes: a file's length (the sum of its chunks' lengths), a symlink's target length.
    pub size: u64,
    /// A file or a symlink.
    pub kind: EntryKind,
}

impl FileEntry {
    /// A file's chunks, in order; none for a symlink.
    pub fn chunks(&self) -> &[ChunkRef] {
        match &self.kind {
            EntryKind::File { chunks } => chunks,
            EntryKind::Symlink { .. } => &[],
        }
    }
}

/// A package version's content. Entries are sorted by path, so equal trees give equal
/// manifests and equal ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The entries, sorted by path, each path once.
    pub files: Vec<FileEntry>,
}

/// Why [`Manifest::validate`] refuses a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A path that is not a clean relative path; holds it.
    #[error("manifest path {0:?} is not a clean relative path (no leading '/', no '.', '..' or empty parts)")]
    BadPath(String),
    /// A path listed twice or out of order; holds it.
    #[error("manifest lists {0:?} twice or out of order")]
    Order(String),
    /// A file whose size is not the sum of its chunks' lengths.
    #[error("manifest entry {path:?} says {size} bytes but its chunks add up to {sum}")]
    Size {
        /// The entry's path.
        path: String,
        /// The size the entry states.
        size: u64,
        /// What its chunks' lengths add up to.
        sum: u64,
    },
}

/// Whether `p` is a clean relative path: parts separated by '/', none empty, '.' or '..'.
pub fn is_clean_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\0')
        && !p.contains('\\')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Manifest {
    /// The manifest's id: BLAKE3 of its canonical encoding.
    pub fn id(&self) -> ManifestId {
        ManifestId::of(&encoding::canonical_bytes(self))
    }

    /// The sum of every entry's size, in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every chunk the version needs, each once.
    pub fn unique_chunks(&self) -> BTreeSet<ChunkRef>
    where
        ChunkRef: Ord,
    {
        self.files
            .iter()
            .flat_map(|f| f.chunks().iter().copied())
            .collect()
    }

    /// How many chunk references the files hold, a chunk used twice counted twice.
    pub fn chunk_count(&self) -> usize {
        self.files.iter().map(|f| f.chunks().len()).sum()
    }

    /// The entry at `path`, if there is one (found by binary search: `files` must be sorted).
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Checks what a reader of a received manifest relies on: clean paths, sorted and unique,
    /// sizes that match the chunks.
    pub fn validate(&self) -> Result<(), ManifestError> {
        for (i, f) in self.files.iter().enumerate() {
            if !is_clean_relative_path(&f.path) {
                return Err(ManifestError::BadPath(f.path.clone()));
            }
            if i > 0 && self.files[i - 1].path >= f.path {
                return Err(ManifestError::Order(f.path.clone()));
            }
            if let EntryKind::File { chunks } = &f.kind {
                let sum: u64 = chunks.iter().map(|c| c.len as u64).sum();
                if sum != f.size {
                    return Err(ManifestError::Size {
                        path: f.path.clone(),
                        size: f.size,
                        sum,
                    });
                }
            }
        }
        Ok(())
    }
}

impl PartialOrd for ChunkRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ChunkRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.id, self.len).cmp(&(other.id, other.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[&[u8]]) -> FileEntry {
        let chunks: Vec<ChunkRef> = data
            .iter()
            .map(|d| ChunkRef {
                id: ChunkId::of(d),
                len: d.len() as u32,
            })
            .collect();
        FileEntry {
            path: path.into(),
            mode: 0o644,
            size: data.iter().map(|d| d.len() as u64).sum(),
            kind: EntryKind::File { chunks },
        }
    }

    #[test]
    fn id_is_stable_and_content_sensitive() {
        let a = Manifest {
            files: vec![file("a", &[b"x", b"y"]), file("b/c", &[b"x"])],
        };
        assert!(a.validate().is_ok());
        assert_eq!(a.id(), a.clone().id());
        let mut b = a.clone();
        b.files[1].mode = 0o755;
        assert_ne!(a.id(), b.id());
        assert_eq!(a.unique_chunks().len(), 2);
        assert_eq!(a.file("b/c").unwrap().size, 1);
    }

    #[test]
    fn validate_refuses_escapes_and_disorder() {
        for bad in ["/etc/passwd", "../x", "a/../b", "a//b", "./a", ""] {
            let m = Manifest {
                files: vec![file(bad, &[b"x"])],
            };
            assert!(m.validate().is_err(), "{bad}");
        }
        let m = Manifest {
            files: vec![file("b", &[b"x"]), file("a", &[b"x"])],
        };
        assert!(m.validate().is_err());
        let mut m = Manifest {
            files: vec![file("a", &[b"x"])],
        };
        m.files[0].size = 7;
        assert!(m.validate().is_err());
    }
}
