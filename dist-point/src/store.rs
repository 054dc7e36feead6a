//! The content store: chunks on disk by id.
//!
//! Layout: `ROOT/ab/abcdef...` (the first two hex digits fan out into 256 directories); a
//! chunk being written is a temporary file `.tmp.*` beside its final name. Each chunk file is
//!
//! ```text
//! offset 0  2 bytes  magic "SC"
//! offset 2  u8       format version (1)
//! offset 3  u8       codec: 0 raw, 1 zstd
//! offset 4  u32 LE   raw length
//! offset 8  ...      payload (raw bytes, or one zstd frame)
//! ```
//!
//! Invariants: a chunk file appears under its final name only complete and durable (it is
//! written to a temporary file, synced, then renamed); a chunk is stored only if the BLAKE3 of
//! its raw bytes equals its id; every read re-hashes, so a chunk that rotted on disk is never
//! returned.
//!
//! Many chunks at once go through a [`Batch`]: its temporary files are made durable with one
//! `syncfs` instead of one `fsync` each, then renamed. That is the same guarantee (nothing is
//! renamed before its bytes are on disk) at a fraction of the cost for publish and transfer.

use schema::ChunkId;
use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

const MAGIC: [u8; 2] = *b"SC";
const VERSION: u8 = 1;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const HEADER_LEN: usize = 8;
/// zstd level: 3 is zstd's default, the best speed/ratio trade for content that is written
/// once and read many times.
const LEVEL: i32 = 3;
/// The largest raw chunk accepted (a little over the chunker's maximum).
pub const MAX_CHUNK: usize = 4 << 20;
/// The largest chunk file (header and a chunk stored raw because it does not compress): no
/// peer's answer for one chunk may be longer.
pub const MAX_CHUNK_FILE: usize = HEADER_LEN + MAX_CHUNK;

impl StoreError {
    /// The bytes are damaged (they do not decode or do not hash to their name). Only this
    /// justifies removing a stored chunk: an I/O error (`EIO`, no file descriptor left, a
    /// full disk) says nothing about the data, and the chunk may be the only copy.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreError::HashMismatch { .. }
                | StoreError::Corrupt { .. }
                | StoreError::BadEncoding { .. }
        )
    }

    /// The disk (or the user's quota) is full: nothing is wrong with the data.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {expected} refused: its bytes hash to {actual}")]
    HashMismatch { expected: ChunkId, actual: ChunkId },
    #[error("chunk {id} is corrupt on disk ({path}): {reason}; run a scrub and fetch it again")]
    Corrupt {
        id: ChunkId,
        path: PathBuf,
        reason: String,
    },
    #[error("chunk {id} refused: {reason}")]
    BadEncoding { id: ChunkId, reason: String },
    #[error("chunk {0} is not in the content store")]
    Missing(ChunkId),
    #[error("chunk of {0} bytes is larger than the {MAX_CHUNK}-byte limit")]
    TooLarge(usize),
    #[error("content store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a scrub found wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubProblem {
    pub path: PathBuf,
    pub id: Option<ChunkId>,
    pub reason: String,
}

/// The result of [`ContentStore::verify_all`].
#[derive(Debug, Clone, Default)]
pub struct ScrubReport {
    pub chunks_ok: u64,
    pub raw_bytes: u64,
    /// Temporary files left by killed writers, removed by this scrub.
    pub stale_tmp_removed: u64,
    /// Damaged or misnamed files: safe to remove (and fetch again).
    pub problems: Vec<ScrubProblem>,
    /// Files that could not be read (an I/O error): kept, never taken for damage.
    pub unreadable: Vec<ScrubProblem>,
}

/// Per-thread reusable buffers and compressor: publishing calls `insert` thousands of times
/// and fresh allocations are slow on first touch.
struct Scratch {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
    out: Vec<u8>,
    file: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let s = s.get_or_insert_with(|| Scratch {
            compressor: zstd::bulk::Compressor::new(LEVEL).expect("zstd compressor"),
            decompressor: zstd::bulk::Decompressor::new().expect("zstd decompressor"),
            out: Vec::new(),
            file: Vec::new(),
        });
        f(s)
    })
}

/// Chunks on disk by id. Cheap to share between threads (`&ContentStore` is `Sync`).
pub struct ContentStore {
    root: PathBuf,
    /// Renames happened since the last [`ContentStore::sync`].
    dirty: AtomicBool,
    counter: AtomicU64,
}

/// Temporary files older than this are leftovers of a killed writer; a scrub removes them.
const STALE_TMP: Duration = Duration::from_secs(3600);
const TMP_PREFIX: &str = ".tmp.";

impl ContentStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for i in 0..=255u8 {
            let d = root.join(hex::encode([i]));
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(ContentStore {
            root,
            dirty: AtomicBool::new(false),
            counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where chunk `id` lives.
    pub fn path_of(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn has(&self, id: &ChunkId) -> bool {
        self.path_of(id).is_file()
    }

    /// Stores `raw` as chunk `id` after checking that it hashes to `id`; refuses a mismatch.
    /// Returns whether the chunk was new. Durable on return (fsync, rename).
    pub fn put(&self, id: &ChunkId, raw: &[u8]) -> Result<bool, StoreError> {
        verify(id, raw)?;
        self.write_one(id, raw)
    }

    /// Stores local content: hashes `raw` (so the id is right by construction) and stores it
    /// unless present. Returns the id and whether the chunk was new.
    pub fn insert(&self, raw: &[u8]) -> Result<(ChunkId, bool), StoreError> {
        let id = ChunkId::of(raw);
        let new = self.write_one(&id, raw)?;
        Ok((id, new))
    }

    /// A batch for writing many chunks with one sync (see the module doc).
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            pending: Vec::new(),
            bytes: 0,
        }
    }

    fn write_one(&self, id: &ChunkId, raw: &[u8]) -> Result<bool, StoreError> {
        let Some(tmp) = self.write_tmp(id, raw, true)? else {
            return Ok(false);
        };
        let path = self.path_of(id);
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        self.dirty.store(true, Ordering::Relaxed);
        Ok(true)
    }

    /// Writes the chunk file to a temporary name beside its final one (fdatasync'ed if
    /// `sync`). `None` if the chunk is already stored.
    fn write_tmp(
        &self,
        id: &ChunkId,
        raw: &[u8],
        sync: bool,
    ) -> Result<Option<PathBuf>, StoreError> {
        if raw.len() > MAX_CHUNK {
            return Err(StoreError::TooLarge(raw.len()));
        }
        if self.has(id) {
            return Ok(None);
        }
        with_scratch(|s| {
            s.out.clear();
            s.out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            let compressed = s
                .compressor
                .compress_to_buffer(raw, &mut s.out)
                .map(|_| !s.out.is_empty() && s.out.len() < raw.len() - raw.len() / 32)
                .unwrap_or(false);
            let (codec, payload): (u8, &[u8]) = if compressed {
                (CODEC_ZSTD, &s.out)
            } else {
                (CODEC_RAW, raw)
            };
            let mut header = [0u8; HEADER_LEN];
            header[..2].copy_from_slice(&MAGIC);
            header[2] = VERSION;
            header[3] = codec;
            header[4..8].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            self.write_file_tmp(id, &[&header, payload], sync).map(Some)
        })
    }

    /// Writes `parts` (a whole chunk file) to a fresh temporary file beside `id`'s final name.
    fn write_file_tmp(
        &self,
        id: &ChunkId,
        parts: &[&[u8]],
        sync: bool,
    ) -> Result<PathBuf, StoreError> {
        let path = self.path_of(id);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(format!(
            "{TMP_PREFIX}{}.{}.{n}",
            id.short(),
            std::process::id()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let write = (|| {
            for p in parts {
                f.write_all(p)?;
            }
            if sync {
                f.sync_data()?;
            } else {
                // Start writeback now, without waiting for it, so the batch's sync finds
                // the bytes already on their way to disk.
                // SAFETY: the descriptor is open for the duration of the call.
                unsafe {
                    libc::sync_file_range(
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                        0,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            Ok(())
        })();
        drop(f);
        if let Err(e) = write {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        Ok(tmp)
    }

    /// The chunk file of `id` as stored (header and payload, compressed or not), without
    /// verifying it: for sending to a peer, which verifies what it receives. Replaces `out`.
    pub fn read_encoded(&self, id: &ChunkId, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let path = self.path_of(id);
        out.clear();
        match File::open(&path) {
            Ok(mut f) => {
                let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
                out.reserve(len);
                f.read_to_end(out).map_err(io_err(&path))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::Missing(*id)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(())
    }

    /// Removes chunk `id` (one found corrupt, so that it is fetched again). Absent is fine.
    pub fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Every chunk id in the store (file names; the files are not read).
    pub fn ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut out = Vec::new();
        for i in 0..=255u8 {
            let dir = self.root.join(hex::encode([i]));
            for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let e = e.map_err(io_err(&dir))?;
                if let Ok(id) = e.file_name().to_string_lossy().parse::<ChunkId>() {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// How many chunks the store holds and their bytes on disk (compressed), from the file
    /// names and sizes (the files are not read). Walks every file: call it now and then, not
    /// per request.
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let mut u = StoreUsage::default();
        for i in 0..=255u8 {
            let dir = self.root.join(hex::encode([i]));
            for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let e = e.map_err(io_err(&dir))?;
                if e.file_name().to_string_lossy().parse::<ChunkId>().is_ok() {
                    u.chunks += 1;
                    // A chunk removed between the listing and this look is simply not counted.
                    u.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        Ok(u)
    }

    /// Removes every temporary file: call it only while no writer is running (at the start
    /// of the process that holds the store's lock). Returns how many were removed.
    pub fn remove_temporaries(&self) -> usize {
        let mut n = 0;
        for i in 0..=255u8 {
            let Ok(rd) = fs::read_dir(self.root.join(hex::encode([i]))) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX)
                    && fs::remove_file(e.path()).is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }

    /// Flushes the whole filesystem of the store to disk (one journal commit for everything
    /// written since the last one).
    fn syncfs(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.root).map_err(io_err(&self.root))?;
        // SAFETY: syncfs only reads the descriptor, which lives until the end of this block.
        let r = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        if r != 0 {
            return Err(io_err(&self.root)(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Makes the renames since the last call durable. Call it before recording anywhere that
    /// the chunks are present.
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            self.syncfs()?;
        }
        Ok(())
    }

    /// Reads chunk `id` into `out` (replacing its contents), verifying its hash.
    pub fn get_into(&self, id: &ChunkId, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let path = self.path_of(id);
        let corrupt = |reason: String| StoreError::Corrupt {
            id: *id,
            path: path.clone(),
            reason,
        };
        with_scratch(|s| {
            s.file.clear();
            match File::open(&path) {
                Ok(mut f) => f.read_to_end(&mut s.file).map_err(io_err(&path))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::Missing(*id))
                }
                Err(e) => return Err(io_err(&path)(e)),
            };
            decode_chunk_file(&s.file, &mut s.decompressor, out).map_err(corrupt)
        })?;
        let actual = ChunkId::of(out);
        if actual != *id {
            return Err(corrupt(format!("content hashes to {actual}")));
        }
        Ok(())
    }

    /// Reads chunk `id`, verifying its hash.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.get_into(id, &mut out)?;
        Ok(out)
    }

    /// Scrub: re-reads and re-hashes every chunk file and names every one that is corrupt,
    /// unreadable or misnamed.
    pub fn verify_all(&self) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let mut buf = Vec::new();
        for i in 0..=255u8 {
            let dir = self.root.join(hex::encode([i]));
            let mut names: Vec<_> = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .filter_map(|e| e.ok())
                .collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) {
                    let stale = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| t + STALE_TMP < SystemTime::now())
                        .unwrap_or(false);
                    if stale && fs::remove_file(&path).is_ok() {
                        report.stale_tmp_removed += 1;
                    }
                    continue;
                }
                let id = match name.parse::<ChunkId>() {
                    Ok(id) if name.starts_with(&hex::encode([i])) => id,
                    _ => {
                        report.problems.push(ScrubProblem {
                            path,
                            id: None,
                            reason: "not a chunk file name (64 hex digits)".into(),
                        });
                        continue;
                    }
                };
                match self.get_into(&id, &mut buf) {
                    Ok(()) => {
                        report.chunks_ok += 1;
                        report.raw_bytes += buf.len() as u64;
                    }
                    Err(StoreError::Corrupt { reason, .. }) => report.problems.push(ScrubProblem {
                        path,
                        id: Some(id),
                        reason,
                    }),
                    Err(e) if !e.is_damage() => report.unreadable.push(ScrubProblem {
                        path,
                        id: Some(id),
                        reason: e.to_string(),
                    }),
                    Err(e) => report.problems.push(ScrubProblem {
                        path,
                        id: Some(id),
                        reason: e.to_string(),
                    }),
                }
            }
        }
        Ok(report)
    }

    /// A reader that reassembles a file from its chunk list, verifying every chunk.
    pub fn reader<'a>(&'a self, chunks: &'a [schema::manifest::ChunkRef]) -> FileReader<'a> {
        FileReader {
            store: self,
            chunks,
            next: 0,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

/// What [`ContentStore::usage`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreUsage {
    pub chunks: u64,
    pub bytes: u64,
}

/// Checks a chunk file received from a peer (as [`ContentStore::read_encoded`] gives it):
/// its header, that it decodes, and that the decoded bytes hash to `id`.
pub fn verify_encoded(id: &ChunkId, file: &[u8]) -> Result<(), StoreError> {
    // A raw chunk file (incompressible content, the bulk of a transfer) is hashed where it
    // lies, without decoding it into a copy first.
    if file.len() >= HEADER_LEN && file[..2] == MAGIC && file[2] == VERSION && file[3] == CODEC_RAW
    {
        let raw_len = u32::from_le_bytes(file[4..8].try_into().expect("4 bytes")) as usize;
        let payload = &file[HEADER_LEN..];
        if raw_len > MAX_CHUNK || payload.len() != raw_len {
            return Err(StoreError::BadEncoding {
                id: *id,
                reason: format!("header says {raw_len} bytes, {} follow", payload.len()),
            });
        }
        return verify(id, payload);
    }
    with_scratch(|s| {
        let mut raw = std::mem::take(&mut s.out);
        let r = decode_chunk_file(file, &mut s.decompressor, &mut raw)
            .map_err(|reason| StoreError::BadEncoding { id: *id, reason })
            .and_then(|()| verify(id, &raw));
        s.out = raw;
        r
    })
}

fn verify(id: &ChunkId, raw: &[u8]) -> Result<(), StoreError> {
    let actual = ChunkId::of(raw);
    if actual != *id {
        return Err(StoreError::HashMismatch {
            expected: *id,
            actual,
        });
    }
    Ok(())
}

/// Chunks written together and made durable together: temporary files first, then one
/// `syncfs`, then the renames. The owner commits it (see [`Batch::is_full`]); a batch is
/// `Send`, so a writer can hand full batches to a committing thread and keep going.
/// Uncommitted temporary files are removed on drop.
pub struct Batch<'a> {
    store: &'a ContentStore,
    /// (id, temporary file, final path) of every chunk written since the last commit.
    pending: Vec<(ChunkId, PathBuf, PathBuf)>,
    bytes: usize,
}

impl Batch<'_> {
    pub const MAX_CHUNKS: usize = 256;
    pub const MAX_BYTES: usize = 64 << 20;

    /// As [`ContentStore::put`]: refuses bytes that do not hash to `id`. The chunk becomes
    /// visible at the next commit.
    pub fn put(&mut self, id: &ChunkId, raw: &[u8]) -> Result<bool, StoreError> {
        verify(id, raw)?;
        self.add(id, raw)
    }

    /// As [`ContentStore::insert`], visible at the next commit.
    pub fn insert(&mut self, raw: &[u8]) -> Result<(ChunkId, bool), StoreError> {
        let id = ChunkId::of(raw);
        let new = self.add(&id, raw)?;
        Ok((id, new))
    }

    /// Stores a chunk file received from a peer, as it came (no recompression), after
    /// [`verify_encoded`] accepts it; refuses it otherwise. Visible at the next commit.
    pub fn put_encoded(&mut self, id: &ChunkId, file: &[u8]) -> Result<bool, StoreError> {
        verify_encoded(id, file)?;
        if self.pending.iter().any(|(p, _, _)| p == id) || self.store.has(id) {
            return Ok(false);
        }
        let tmp = self.store.write_file_tmp(id, &[file], false)?;
        self.pending.push((*id, tmp, self.store.path_of(id)));
        self.bytes += file.len();
        Ok(true)
    }

    /// The ids written since the last commit.
    pub fn pending_ids(&self) -> Vec<ChunkId> {
        self.pending.iter().map(|(id, _, _)| *id).collect()
    }

    /// Bytes written since the last commit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn add(&mut self, id: &ChunkId, raw: &[u8]) -> Result<bool, StoreError> {
        if self.pending.iter().any(|(p, _, _)| p == id) {
            return Ok(false);
        }
        let Some(tmp) = self.store.write_tmp(id, raw, false)? else {
            return Ok(false);
        };
        self.pending.push((*id, tmp, self.store.path_of(id)));
        self.bytes += raw.len();
        Ok(true)
    }

    /// Whether the batch holds [`Batch::MAX_CHUNKS`] chunks or [`Batch::MAX_BYTES`] bytes:
    /// time to commit it (here, or on a thread that does only that).
    pub fn is_full(&self) -> bool {
        self.pending.len() >= Self::MAX_CHUNKS || self.bytes >= Self::MAX_BYTES
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Makes every pending chunk durable and visible; returns their ids.
    pub fn commit(&mut self) -> Result<Vec<ChunkId>, StoreError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        self.store.syncfs()?;
        let mut done = Vec::with_capacity(self.pending.len());
        let mut pending = std::mem::take(&mut self.pending).into_iter();
        while let Some((id, tmp, path)) = pending.next() {
            if let Err(e) = fs::rename(&tmp, &path) {
                // Nothing of this batch is left behind half-done: this and the rest go.
                let _ = fs::remove_file(&tmp);
                for (_, t, _) in pending {
                    let _ = fs::remove_file(t);
                }
                return Err(io_err(&path)(e));
            }
            done.push(id);
        }
        self.bytes = 0;
        self.store.dirty.store(true, Ordering::Relaxed);
        Ok(done)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for (_, tmp, _) in self.pending.drain(..) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Decodes a chunk file's bytes into `out` (no hash check).
fn decode_chunk_file(
    file: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if file.len() < HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than its header",
            file.len()
        ));
    }
    if file[..2] != MAGIC || file[2] != VERSION {
        return Err("bad magic or format version in chunk header".into());
    }
    let raw_len = u32::from_le_bytes(file[4..8].try_into().expect("4 bytes")) as usize;
    if raw_len > MAX_CHUNK {
        return Err(format!("header claims {raw_len} bytes, over the limit"));
    }
    let payload = &file[HEADER_LEN..];
    out.clear();
    match file[3] {
        CODEC_RAW => out.extend_from_slice(payload),
        CODEC_ZSTD => {
            out.reserve(raw_len);
            decompressor
                .decompress_to_buffer(payload, out)
                .map_err(|e| format!("zstd payload does not decompress: {e}"))?;
        }
        c => return Err(format!("unknown codec {c}")),
    }
    if out.len() != raw_len {
        return Err(format!(
            "decodes to {} bytes, header says {raw_len}",
            out.len()
        ));
    }
    Ok(())
}

/// Reads a file back from its chunks, in order, verifying each chunk as it is loaded.
pub struct FileReader<'a> {
    store: &'a ContentStore,
    chunks: &'a [schema::manifest::ChunkRef],
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for FileReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(c) = self.chunks.get(self.next) else {
                return Ok(0);
            };
            self.store
                .get_into(&c.id, &mut self.buf)
                .map_err(io::Error::other)?;
            if self.buf.len() != c.len as usize {
                return Err(io::Error::other(format!(
                    "chunk {} is {} bytes, manifest says {}",
                    c.id,
                    self.buf.len(),
                    c.len
                )));
            }
            self.next += 1;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::manifest::ChunkRef;
    use schema::testutil::noise;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path().join("chunks")).unwrap();
        (d, s)
    }

    #[test]
    fn put_get_has_and_dedupe() {
        let (_d, s) = store();
        let text = b"hello world ".repeat(10_000);
        let (id, new) = s.insert(&text).unwrap();
        assert!(new);
        assert!(s.has(&id));
        assert_eq!(s.get(&id).unwrap(), text);
        assert!(!s.insert(&text).unwrap().1, "stored once");
        // compressible content is stored compressed, noise raw
        assert!(fs::metadata(s.path_of(&id)).unwrap().len() < 10_000);
        let n = noise(100_000, 1);
        let (nid, _) = s.insert(&n).unwrap();
        assert_eq!(
            fs::metadata(s.path_of(&nid)).unwrap().len(),
            100_000 + HEADER_LEN as u64
        );
        assert_eq!(s.get(&nid).unwrap(), n);
        s.sync().unwrap();
        let r = s.verify_all().unwrap();
        assert_eq!((r.chunks_ok, r.problems.len()), (2, 0));
    }

    #[test]
    fn batches_become_visible_at_commit_and_clean_up_on_drop() {
        let (_d, s) = store();
        let mut b = s.batch();
        let (a, new) = b.insert(&noise(1000, 5)).unwrap();
        assert!(new);
        assert!(
            !b.insert(&noise(1000, 5)).unwrap().1,
            "same chunk twice in a batch"
        );
        assert!(!s.has(&a), "not visible before commit");
        let wrong = b.put(&ChunkId::of(b"x"), b"y").unwrap_err();
        assert!(matches!(wrong, StoreError::HashMismatch { .. }));
        b.commit().unwrap();
        assert!(s.has(&a));
        let (c, _) = b.insert(&noise(1000, 6)).unwrap();
        drop(b);
        assert!(!s.has(&c), "uncommitted chunk dropped");
        let all: Vec<_> = (0..=255u8)
            .flat_map(|i| fs::read_dir(s.root().join(hex::encode([i]))).unwrap())
            .collect();
        assert_eq!(all.len(), 1, "no temporary file left");
        // A full batch committed on another thread.
        let mut b = s.batch();
        for i in 0..(Batch::MAX_CHUNKS as u64 + 3) {
            b.insert(&noise(100, 1001 + 2 * i)).unwrap();
        }
        assert!(b.is_full());
        std::thread::scope(|sc| sc.spawn(move || b.commit().unwrap()).join().unwrap());
        assert!(s.has(&ChunkId::of(&noise(100, 1001))));
        s.sync().unwrap();
        assert_eq!(
            s.verify_all().unwrap().chunks_ok,
            Batch::MAX_CHUNKS as u64 + 4
        );
    }

    #[test]
    fn encoded_chunks_travel_as_stored_and_are_verified_on_arrival() {
        let (_d, a) = store();
        let (_e, b) = store();
        let text = b"compressible ".repeat(20_000);
        let (tid, _) = a.insert(&text).unwrap();
        let (nid, _) = a.insert(&noise(50_000, 9)).unwrap();
        let mut file = Vec::new();
        let mut batch = b.batch();
        for id in [tid, nid] {
            a.read_encoded(&id, &mut file).unwrap();
            assert!(batch.put_encoded(&id, &file).unwrap());
        }
        assert_eq!(batch.commit().unwrap(), vec![tid, nid]);
        assert_eq!(b.get(&tid).unwrap(), text);
        assert_eq!(
            fs::read(b.path_of(&tid)).unwrap(),
            fs::read(a.path_of(&tid)).unwrap(),
            "stored as it came, not recompressed"
        );
        // Flipped payload byte, wrong id, truncation, garbage header: all refused, nothing kept.
        a.read_encoded(&nid, &mut file).unwrap();
        let mut bad = file.clone();
        bad[100] ^= 1;
        let (_f, c) = store();
        let mut batch = c.batch();
        assert!(matches!(
            batch.put_encoded(&nid, &bad).unwrap_err(),
            StoreError::HashMismatch { .. }
        ));
        assert!(batch.put_encoded(&tid, &file).is_err());
        assert!(matches!(
            batch
                .put_encoded(&nid, &file[..file.len() - 1])
                .unwrap_err(),
            StoreError::BadEncoding { .. }
        ));
        assert!(batch.put_encoded(&nid, b"SC\x01\x09\0\0\0\0").is_err());
        assert!(batch.is_empty());
        assert!(batch.commit().unwrap().is_empty());
        assert!(!c.has(&nid) && !c.has(&tid));
        assert!(matches!(
            c.read_encoded(&nid, &mut file).unwrap_err(),
            StoreError::Missing(_)
        ));
        a.remove(&nid).unwrap();
        assert!(!a.has(&nid));
        a.remove(&nid).unwrap();
    }

    #[test]
    fn put_refuses_a_mismatch_and_stores_nothing() {
        let (_d, s) = store();
        let id = ChunkId::of(b"right");
        let err = s.put(&id, b"wrong").unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert!(!s.has(&id));
        assert!(!s.has(&ChunkId::of(b"wrong")));
        assert!(s.put(&id, b"right").unwrap());
    }

    #[test]
    fn rot_is_caught_on_read_and_by_scrub() {
        let (_d, s) = store();
        let (a, _) = s.insert(&b"abc".repeat(50_000)).unwrap();
        let (b, _) = s.insert(&noise(70_000, 2)).unwrap();
        let p = s.path_of(&b);
        let mut bytes = fs::read(&p).unwrap();
        bytes[5000] ^= 1;
        fs::write(&p, bytes).unwrap();
        assert!(matches!(s.get(&b), Err(StoreError::Corrupt { .. })));
        assert!(s.get(&a).is_ok());
        let r = s.verify_all().unwrap();
        assert_eq!(r.chunks_ok, 1);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].id, Some(b));
        assert_eq!(r.problems[0].path, p);
        // a truncated compressed chunk
        let pa = s.path_of(&a);
        let bytes = fs::read(&pa).unwrap();
        fs::write(&pa, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(s.verify_all().unwrap().problems.len(), 2);
    }

    #[test]
    fn reader_reassembles_and_refuses_bad_chunks() {
        let (_d, s) = store();
        let parts = [noise(300_000, 3), b"xyz".repeat(100_000), noise(10, 4)];
        let chunks: Vec<ChunkRef> = parts
            .iter()
            .map(|p| ChunkRef {
                id: s.insert(p).unwrap().0,
                len: p.len() as u32,
            })
            .collect();
        let mut out = Vec::new();
        s.reader(&chunks).read_to_end(&mut out).unwrap();
        assert_eq!(out, parts.concat());
        let missing = [ChunkRef {
            id: ChunkId::of(b"absent"),
            len: 6,
        }];
        assert!(s.reader(&missing).read_to_end(&mut Vec::new()).is_err());
    }
}
