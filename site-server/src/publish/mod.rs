//! Turning a source directory into a manifest and chunks in the content store.
//!
//! Two passes. [`scan`] walks the source, checks every entry (readable, no special files, no
//! symlink that leaves the tree) and stores nothing, so bad input changes nothing. [`build`]
//! then streams every file through a reusable buffer: the reading thread cuts chunks with
//! FastCDC and hands each to a worker pool that hashes, compresses and writes it; a file is
//! never held whole in memory and the buffers are allocated once.
//!
//! A stat cache (size, mtime, ctime, inode per path, kept per source directory) lets a
//! re-publish skip files that did not change, as git's index does; a file whose timestamps are
//! too close to the cache's own time is re-read anyway ("racy" entries), and `--rehash`
//! ignores the cache.

use dist_point::{ContentStore, StoreError};
use schema::chunking::{Chunker, MAX_SIZE};
use schema::encoding;
use schema::manifest::{ChunkRef, EntryKind, FileEntry, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("source {0} does not exist: give the path of the directory (or file) to publish")]
    Missing(PathBuf),
    #[error("source {path}: cannot read {what}: {source}; fix its permissions or move it out of the source")]
    Unreadable {
        path: PathBuf,
        what: PathBuf,
        source: std::io::Error,
    },
    #[error("source {path}: symlink {link} -> {target} points outside the source tree; copy what it points to into the tree, or remove the link")]
    SymlinkOutside {
        path: PathBuf,
        link: String,
        target: String,
    },
    #[error("source {path}: {what} is a device, socket or fifo, which a package cannot carry; move it out of the source")]
    Special { path: PathBuf, what: String },
    #[error("source {path}: the name {what:?} is not valid UTF-8; rename it")]
    NotUtf8 { path: PathBuf, what: PathBuf },
    #[error("source {0} holds no files: nothing to publish")]
    Empty(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What identifies a file's state without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatKey {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl StatKey {
    fn of(m: &fs::Metadata) -> Self {
        StatKey {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

#[derive(Clone, Debug)]
enum ScanKind {
    File { abs: PathBuf, stat: StatKey },
    Symlink { target: String },
}

#[derive(Clone, Debug)]
struct ScanEntry {
    rel: String,
    mode: u32,
    kind: ScanKind,
}

/// A checked source tree, ready to be built.
#[derive(Debug)]
pub struct Scanned {
    /// The canonical source path.
    pub root: PathBuf,
    entries: Vec<ScanEntry>,
    /// Bytes in regular files.
    pub bytes: u64,
}

impl Scanned {
    pub fn files(&self) -> usize {
        self.entries.len()
    }
}

fn lexical_normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The path of `to` relative to directory `from` (both absolute and normalized).
fn relative(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Walks and checks the source. Opens every file once to prove it readable; stores nothing.
pub fn scan(source: &Path) -> Result<Scanned, PublishError> {
    let unreadable = |what: &Path, source_err: std::io::Error| PublishError::Unreadable {
        path: source.to_path_buf(),
        what: what.to_path_buf(),
        source: source_err,
    };
    let meta = match fs::metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PublishError::Missing(source.to_path_buf()))
        }
        Err(e) => return Err(unreadable(source, e)),
    };
    let root = fs::canonicalize(source).map_err(|e| unreadable(source, e))?;
    let not_utf8 = |what: &Path| PublishError::NotUtf8 {
        path: source.to_path_buf(),
        what: what.to_path_buf(),
    };
    let mut entries = Vec::new();
    let mut bytes = 0u64;
    // (absolute path, relative path). The source directory itself has the empty relative
    // path; a single-file source is a package of that one file, under its own name.
    let top = if meta.is_dir() {
        String::new()
    } else {
        root.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| not_utf8(&root))?
            .to_string()
    };
    let mut stack: Vec<(PathBuf, String)> = vec![(root.clone(), top)];
    while let Some((abs, rel)) = stack.pop() {
        let m = fs::symlink_metadata(&abs).map_err(|e| unreadable(&abs, e))?;
        let ft = m.file_type();
        let mode = m.mode() & 0o7777;
        if ft.is_dir() {
            let mut kids = read_dir_sorted(&abs).map_err(|e| unreadable(&abs, e))?;
            kids.reverse();
            for (kabs, name) in kids {
                let name = name.ok_or_else(|| not_utf8(&kabs))?;
                let krel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((kabs, krel));
            }
        } else if ft.is_file() {
            File::open(&abs).map_err(|e| unreadable(&abs, e))?;
            bytes += m.len();
            entries.push(ScanEntry {
                rel,
                mode,
                kind: ScanKind::File {
                    abs,
                    stat: StatKey::of(&m),
                },
            });
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(|e| unreadable(&abs, e))?;
            let link_dir = abs.parent().unwrap_or(Path::new("/"));
            let resolved = match fs::canonicalize(&abs) {
                Ok(p) => p,
                Err(_) => lexical_normalize(&link_dir.join(&target)),
            };
            if !resolved.starts_with(&root) {
                return Err(PublishError::SymlinkOutside {
                    path: source.to_path_buf(),
                    link: rel,
                    target: target.display().to_string(),
                });
            }
            let target = if target.is_relative() {
                target.to_string_lossy().into_owned()
            } else {
                relative(link_dir, &resolved)
            };
            entries.push(ScanEntry {
                rel,
                mode: 0o777,
                kind: ScanKind::Symlink { target },
            });
        } else {
            return Err(PublishError::Special {
                path: source.to_path_buf(),
                what: rel,
            });
        }
    }
    if entries.is_empty() {
        return Err(PublishError::Empty(source.to_path_buf()));
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Scanned {
        root,
        entries,
        bytes,
    })
}

fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<(PathBuf, Option<String>)>> {
    let mut v: Vec<(PathBuf, Option<String>)> = fs::read_dir(dir)?
        .map(|e| e.map(|e| (e.path(), e.file_name().to_str().map(String::from))))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// Per source directory: what each file's chunks were when it last had this stat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatCache {
    /// When the cache was written (ns since the epoch): entries whose timestamps are not
    /// safely before this are re-read.
    pub written_ns: i128,
    pub files: BTreeMap<String, (StatKey, Vec<ChunkRef>)>,
}

/// Where the stat cache of `root` lives under `cache_dir`.
pub fn cache_path(cache_dir: &Path, root: &Path) -> PathBuf {
    let h = blake3::hash(root.as_os_str().as_encoded_bytes());
    cache_dir.join(&h.to_hex()[..32])
}

/// Loads a stat cache; a missing or unreadable one is an empty cache (it is only a hint).
pub fn load_cache(path: &Path) -> StatCache {
    fs::read(path)
        .ok()
        .and_then(|b| encoding::decode(&b).ok())
        .unwrap_or_default()
}

/// Writes a stat cache atomically (temp file, rename).
pub fn save_cache(path: &Path, cache: &StatCache) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(
        &tmp,
        encoding::encode(cache).map_err(std::io::Error::other)?,
    )?;
    fs::rename(tmp, path)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// What [`build`] produced.
pub struct Built {
    pub manifest: Manifest,
    /// Chunks this build added to the store.
    pub new_chunks: u64,
    /// Bytes read from files (not counting files reused from the stat cache).
    pub bytes_read: u64,
    /// Files whose chunks came from the stat cache.
    pub files_cached: u64,
    pub cache: StatCache,
}

/// Threads that read and cut files.
const READERS: usize = 2;

/// Consecutive chunks (often of several small files) handed to a worker at once, so a small
/// file does not cost a channel round trip. Jobs are pooled and reused.
#[derive(Default)]
struct Job {
    data: Vec<u8>,
    parts: Vec<Part>,
}

/// One chunk of a [`Job`]: chunk `index` of entry `file`, at `data[start..start + len]`.
struct Part {
    file: usize,
    index: usize,
    start: usize,
    len: usize,
}

/// A job is sent once it holds this many bytes.
const JOB_BYTES: usize = 2 * MAX_SIZE;

/// Per job: (entry, chunk index, chunk, whether new) for each of its chunks.
type JobResult = Result<Vec<(usize, usize, ChunkRef, bool)>, StoreError>;

/// Reader `reader` of [`READERS`]: reads and cuts its share of the files that are not cached,
/// sending each chunk to the workers in a pooled buffer. Returns (entry, bytes, chunks) per file.
fn read_files(
    reader: usize,
    scanned: &Scanned,
    cached: &[Option<Vec<ChunkRef>>],
    chunker: &Chunker,
    pool_rx: &Mutex<Receiver<Job>>,
    job_tx: SyncSender<Job>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(usize, u64, usize)>, PublishError> {
    let mut readbuf = Vec::new();
    let mut done = Vec::new();
    let take = || {
        pool_rx
            .lock()
            .expect("job pool lock")
            .recv()
            .map_err(std::io::Error::other)
    };
    let mut job: Option<Job> = None;
    let files = scanned
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.kind {
            ScanKind::File { abs, .. } if cached[i].is_none() => Some((i, abs)),
            _ => None,
        });
    for (i, abs) in files.skip(reader).step_by(READERS) {
        let unreadable = |source| PublishError::Unreadable {
            path: scanned.root.clone(),
            what: abs.clone(),
            source,
        };
        let f = File::open(abs).map_err(unreadable)?;
        let mut index = 0usize;
        let n = chunker
            .for_each_chunk(f, &mut readbuf, |c| -> Result<(), std::io::Error> {
                let full = job
                    .as_ref()
                    .is_some_and(|j| j.data.len() + c.len() > JOB_BYTES);
                if full {
                    job_tx
                        .send(job.take().expect("a full job"))
                        .map_err(std::io::Error::other)?;
                }
                let j = match &mut job {
                    Some(j) => j,
                    None => job.insert(take()?),
                };
                j.parts.push(Part {
                    file: i,
                    index,
                    start: j.data.len(),
                    len: c.len(),
                });
                j.data.extend_from_slice(c);
                index += 1;
                progress(c.len() as u64);
                Ok(())
            })
            .map_err(unreadable)?;
        done.push((i, n, index));
    }
    if let Some(j) = job.filter(|j| !j.parts.is_empty()) {
        // The workers outlive the readers, so this only fails if they are gone with an error
        // that the collector reports.
        let _ = job_tx.send(j);
    }
    Ok(done)
}

/// Chunks, hashes, compresses and stores every file of `scanned`; returns the manifest.
/// `progress` is called with the number of bytes just consumed.
pub fn build(
    store: &ContentStore,
    scanned: &Scanned,
    old_cache: Option<&StatCache>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Built, PublishError> {
    let started_ns = now_ns();
    let cached = from_cache(store, scanned, old_cache, progress);
    let (read, results) = chunk_into_store(store, scanned, &cached.chunks, progress)?;
    let mut sizes = cached.sizes;
    let mut counts: Vec<usize> = vec![0; scanned.entries.len()];
    let mut bytes_read = 0u64;
    for (i, n, count) in read {
        bytes_read += n;
        sizes[i] = n;
        counts[i] = count;
    }
    let mut new_chunks = 0u64;
    let mut slots: Vec<Vec<Option<ChunkRef>>> = counts.iter().map(|n| vec![None; *n]).collect();
    for r in results.iter() {
        for (file, index, c, new) in r? {
            new_chunks += new as u64;
            slots[file][index] = Some(c);
        }
    }
    store.sync()?;
    let (manifest, cache) = assemble(scanned, cached.chunks, &sizes, &slots, started_ns);
    Ok(Built {
        manifest,
        new_chunks,
        bytes_read,
        files_cached: cached.files,
        cache,
    })
}

/// What the stat cache spares reading: per entry, its chunk list and size if cached.
struct FromCache {
    chunks: Vec<Option<Vec<ChunkRef>>>,
    sizes: Vec<u64>,
    files: u64,
}

/// The files whose stat matches the cache, whose timestamps are older than the cache by a
/// second (a file changed in the same second as the cache was written is read again), and
/// whose chunks are all in the store.
fn from_cache(
    store: &ContentStore,
    scanned: &Scanned,
    old_cache: Option<&StatCache>,
    progress: &(dyn Fn(u64) + Sync),
) -> FromCache {
    let mut out = FromCache {
        chunks: vec![None; scanned.entries.len()],
        sizes: vec![0; scanned.entries.len()],
        files: 0,
    };
    let trusted_before = old_cache.map(|c| c.written_ns - 1_000_000_000);
    for (i, e) in scanned.entries.iter().enumerate() {
        if let (ScanKind::File { stat, .. }, Some(cache), Some(limit)) =
            (&e.kind, old_cache, trusted_before)
        {
            if let Some((cstat, chunks)) = cache.files.get(&e.rel) {
                if cstat == stat
                    && stat.mtime_ns < limit
                    && stat.ctime_ns < limit
                    && chunks.iter().all(|c| store.has(&c.id))
                {
                    out.chunks[i] = Some(chunks.clone());
                    out.sizes[i] = stat.size;
                    out.files += 1;
                    progress(stat.size);
                }
            }
        }
    }
    out
}

/// Per file read: (entry, bytes, chunks).
type FilesRead = Vec<(usize, u64, usize)>;

/// Reads and cuts every file not `cached` (two reader threads), hashes, compresses and
/// writes the chunks (twice as many workers as cores, each through its own batch), and makes
/// each full batch durable on a committer thread. Returns (entry, bytes, chunks) per file
/// read, and the workers' results.
fn chunk_into_store(
    store: &ContentStore,
    scanned: &Scanned,
    cached: &[Option<Vec<ChunkRef>>],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(FilesRead, Receiver<JobResult>), PublishError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
        // Twice the cores: a worker blocked in a write or an open leaves its core to another.
        * 2;
    let pool_size = workers * 3;
    let chunker = Chunker::default();
    let (job_tx, job_rx) = sync_channel::<Job>(workers * 2);
    let job_rx = Mutex::new(job_rx);
    let (pool_tx, pool_rx) = sync_channel::<Job>(pool_size);
    let pool_rx = Mutex::new(pool_rx);
    for _ in 0..pool_size {
        pool_tx
            .send(Job {
                data: Vec::with_capacity(JOB_BYTES),
                parts: Vec::new(),
            })
            .expect("pool has room");
    }
    let (res_tx, res_rx) = channel::<JobResult>();
    let (commit_tx, commit_rx) = sync_channel::<dist_point::Batch<'_>>(workers);
    let read = std::thread::scope(|sc| {
        for _ in 0..workers {
            let (job_rx, pool_tx, res_tx) = (&job_rx, pool_tx.clone(), res_tx.clone());
            let commit_tx = commit_tx.clone();
            sc.spawn(move || store_jobs(store, job_rx, pool_tx, res_tx, commit_tx));
        }
        {
            let res_tx = res_tx.clone();
            sc.spawn(move || {
                for mut b in commit_rx {
                    if let Err(e) = b.commit() {
                        // The receiver outlives this scope: the error is read after it.
                        res_tx.send(Err(e)).ok();
                    }
                }
            });
        }
        drop(commit_tx);
        drop(res_tx);
        // Readers: files are dealt out round-robin, so many small files do not serialize
        // behind one thread's open/read/cut.
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let job_tx = job_tx.clone();
                let (pool_rx, chunker) = (&pool_rx, &chunker);
                sc.spawn(move || read_files(r, scanned, cached, chunker, pool_rx, job_tx, progress))
            })
            .collect();
        drop(job_tx);
        let mut result = Ok(Vec::new());
        for h in readers {
            match (&mut result, h.join().expect("reader thread")) {
                (Ok(all), Ok(more)) => all.extend(more),
                (Ok(_), Err(e)) => result = Err(e),
                (Err(_), _) => {}
            }
        }
        result
    })?;
    Ok((read, res_rx))
}

/// A worker: hashes, compresses and writes the chunks of each job through its own batch and
/// hands it, full, to the committer (one sync per batch, and no worker waits for the disk).
/// The job's buffers go back to the pool.
fn store_jobs<'s>(
    store: &'s ContentStore,
    job_rx: &Mutex<Receiver<Job>>,
    pool_tx: SyncSender<Job>,
    res_tx: std::sync::mpsc::Sender<JobResult>,
    commit_tx: SyncSender<dist_point::Batch<'s>>,
) {
    let mut batch = store.batch();
    loop {
        let mut job = match job_rx.lock().expect("job queue lock").recv() {
            Ok(j) => j,
            Err(_) => break,
        };
        let r: JobResult = job
            .parts
            .iter()
            .map(|p| {
                let raw = &job.data[p.start..p.start + p.len];
                let (id, new) = batch.insert(raw)?;
                let c = ChunkRef {
                    id,
                    len: p.len as u32,
                };
                Ok((p.file, p.index, c, new))
            })
            .collect();
        job.data.clear();
        job.parts.clear();
        // A closed channel means the publish is being abandoned: nothing to report to.
        pool_tx.send(job).ok();
        res_tx.send(r).ok();
        if batch.is_full() {
            commit_tx
                .send(std::mem::replace(&mut batch, store.batch()))
                .ok();
        }
    }
    commit_tx.send(batch).ok();
}

/// The manifest (entries in scan order) and the stat cache to save for the next publish.
fn assemble(
    scanned: &Scanned,
    mut cached: Vec<Option<Vec<ChunkRef>>>,
    sizes: &[u64],
    slots: &[Vec<Option<ChunkRef>>],
    started_ns: i128,
) -> (Manifest, StatCache) {
    let mut files = Vec::with_capacity(scanned.entries.len());
    let mut cache = StatCache {
        written_ns: started_ns,
        files: BTreeMap::new(),
    };
    for (i, e) in scanned.entries.iter().enumerate() {
        let kind = match &e.kind {
            ScanKind::Symlink { target } => EntryKind::Symlink {
                target: target.clone(),
            },
            ScanKind::File { stat, .. } => {
                let chunks = match cached[i].take() {
                    Some(c) => c,
                    None => slots[i]
                        .iter()
                        .map(|c| c.expect("every chunk of a read file has a result"))
                        .collect(),
                };
                // A file whose size changed while it was read is not cached.
                if sizes[i] == stat.size {
                    cache.files.insert(e.rel.clone(), (*stat, chunks.clone()));
                }
                EntryKind::File { chunks }
            }
        };
        let size = match &kind {
            EntryKind::File { .. } => sizes[i],
            EntryKind::Symlink { target } => target.len() as u64,
        };
        files.push(FileEntry {
            path: e.rel.clone(),
            mode: e.mode,
            size,
            kind,
        });
    }
    (Manifest { files }, cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::testutil::noise;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("bin/sub")).unwrap();
        fs::write(d.path().join("bin/big.dat"), noise(3_000_000, 1)).unwrap();
        fs::write(d.path().join("readme.txt"), b"hello\n".repeat(1000)).unwrap();
        fs::write(d.path().join("bin/sub/empty"), b"").unwrap();
        symlink("../readme.txt", d.path().join("bin/readme-link")).unwrap();
        d
    }

    fn store() -> (tempfile::TempDir, ContentStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path().join("c")).unwrap();
        (d, s)
    }

    #[test]
    fn builds_a_manifest_that_reads_back() {
        let src = tree();
        let (_d, s) = store();
        let scanned = scan(src.path()).unwrap();
        let b = build(&s, &scanned, None, &|_| {}).unwrap();
        let m = &b.manifest;
        m.validate().unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin/big.dat",
                "bin/readme-link",
                "bin/sub/empty",
                "readme.txt"
            ]
        );
        assert_eq!(
            m.file("bin/readme-link").unwrap().kind,
            EntryKind::Symlink {
                target: "../readme.txt".into()
            }
        );
        let big = m.file("bin/big.dat").unwrap();
        assert!(big.chunks().len() >= 3);
        let mut out = Vec::new();
        s.reader(big.chunks()).read_to_end(&mut out).unwrap();
        assert_eq!(out, noise(3_000_000, 1));
        assert_eq!(b.new_chunks as usize, m.unique_chunks().len());
        // Same tree again: same manifest, nothing new, whether or not the cache is used.
        let again = build(&s, &scan(src.path()).unwrap(), None, &|_| {}).unwrap();
        assert_eq!(again.manifest, b.manifest);
        assert_eq!(again.new_chunks, 0);
    }

    #[test]
    fn a_changed_file_adds_only_its_changed_chunks() {
        let src = tree();
        let (_d, s) = store();
        let first = build(&s, &scan(src.path()).unwrap(), None, &|_| {}).unwrap();
        let mut data = noise(3_000_000, 1);
        data[1_500_000] ^= 0x55;
        fs::write(src.path().join("bin/big.dat"), &data).unwrap();
        let second = build(&s, &scan(src.path()).unwrap(), Some(&first.cache), &|_| {}).unwrap();
        assert_ne!(second.manifest.id(), first.manifest.id());
        assert!(
            second.new_chunks >= 1 && second.new_chunks <= 2,
            "{}",
            second.new_chunks
        );
    }

    #[test]
    fn stat_cache_skips_unchanged_files_but_not_racy_ones() {
        let src = tree();
        let (_d, s) = store();
        let scanned = scan(src.path()).unwrap();
        let mut first = build(&s, &scanned, None, &|_| {}).unwrap();
        // Files written just now are "racy" against a cache written just now: re-read.
        let racy = build(&s, &scanned, Some(&first.cache), &|_| {}).unwrap();
        assert_eq!(racy.files_cached, 0);
        // Pretend the cache was written long after the files: they are trusted.
        first.cache.written_ns += 10_000_000_000;
        let cached = build(&s, &scanned, Some(&first.cache), &|_| {}).unwrap();
        assert_eq!(cached.files_cached, 3);
        assert_eq!(cached.bytes_read, 0);
        assert_eq!(cached.manifest, first.manifest);
        // A chunk gone from the store makes its file re-read.
        let big = first.manifest.file("bin/big.dat").unwrap().chunks()[0].id;
        fs::remove_file(s.path_of(&big)).unwrap();
        let healed = build(&s, &scanned, Some(&first.cache), &|_| {}).unwrap();
        assert_eq!(healed.files_cached, 2);
        assert!(s.has(&big));
    }

    #[test]
    fn bad_sources_are_refused_before_anything_is_stored() {
        let (_d, s) = store();
        let missing = scan(Path::new("/nonexistent/source")).unwrap_err();
        assert!(matches!(missing, PublishError::Missing(_)), "{missing}");

        let src = tree();
        symlink("/etc/hostname", src.path().join("escape")).unwrap();
        let err = scan(src.path()).unwrap_err();
        assert!(matches!(err, PublishError::SymlinkOutside { .. }), "{err}");
        assert!(err.to_string().contains("escape"));
        fs::remove_file(src.path().join("escape")).unwrap();
        symlink("../../outside", src.path().join("bin/dangling")).unwrap();
        assert!(matches!(
            scan(src.path()).unwrap_err(),
            PublishError::SymlinkOutside { .. }
        ));
        fs::remove_file(src.path().join("bin/dangling")).unwrap();

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            scan(empty.path()).unwrap_err(),
            PublishError::Empty(_)
        ));
        assert_eq!(s.verify_all().unwrap().chunks_ok, 0);
    }

    #[test]
    fn a_single_file_is_a_package_of_one() {
        let src = tree();
        let (_d, s) = store();
        let b = build(
            &s,
            &scan(&src.path().join("readme.txt")).unwrap(),
            None,
            &|_| {},
        )
        .unwrap();
        assert_eq!(b.manifest.files.len(), 1);
        assert_eq!(b.manifest.files[0].path, "readme.txt");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/c/d")), "../c/d");
        assert_eq!(relative(Path::new("/a"), Path::new("/a/x")), "x");
    }
}
