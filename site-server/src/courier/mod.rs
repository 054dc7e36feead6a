//! Courier: what goes into a bundle for a child, and what a bundle or a receipt does when it
//! is imported. The file format is the `courier` crate's; this module decides and applies.
//!
//! - **Export** ([`Site::courier_plan`], [`write_bundle`], [`Site::courier_exported`]): the
//!   parent's config events after the child's last known position (the later of its last
//!   receipt, the last export and what it acknowledged over the network; `--since-receipt`
//!   starts from the receipt only, to redo a lost bundle), and the chunks of every package
//!   version the child's subtree needs that the parent does not know the child has (versions
//!   its last receipt listed, or a bundle since carried). Streamed into volumes of at most
//!   `max_volume` bytes, each verifiable alone.
//! - **Import of a bundle** ([`read_bundle`] then [`Site::courier_apply`]): every volume
//!   present, from this site's parent, for this site, every section and chunk and the
//!   signature verified while the chunks are only staged; then the range is checked against
//!   this site's cursor (already applied: nothing to do; a gap: refused, naming it); then the
//!   chunks are made durable and the events applied with their cursor in one transaction,
//!   exactly as a batch from the network link (so a link that comes back resends nothing).
//! - **Receipts** ([`Site::receipt_plan`], [`write_receipt`], [`Site::receipt_apply`]): the
//!   child's reports since what the parent is known to have, its applied position and the
//!   package versions complete in its store; the parent applies the reports with the child's
//!   cursor and takes the position and inventory as its view of the child.

use ::courier::format::{
    write_chunk, BundleError, BundleHeader, Kind, SectionKind, VolumeReader, VolumeWriter,
};
use chrono::Utc;
use schema::report::ReportEnvelope;
use schema::{ChunkId, SiteCode};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::site::{new_id, BundleEvents, ExportOutcome, ExportPlan, ReadReceipt, ReceiptState};

/// A bundle read and verified, its chunks staged in `batch`.
pub struct ReadBundle<'s> {
    pub header: BundleHeader,
    pub events: BundleEvents,
    /// The staged chunks (one batch per verifying thread): commit them all, or drop them.
    pub batches: Vec<dist_point::Batch<'s>>,
    pub chunks: u64,
}

impl ReadBundle<'_> {
    /// Makes the staged chunks durable and visible; returns those that were new.
    pub fn commit(&mut self) -> Result<Vec<ChunkId>, dist_point::StoreError> {
        let mut out = Vec::new();
        for b in &mut self.batches {
            out.extend(b.commit()?);
        }
        Ok(out)
    }
    pub fn staged(&self) -> bool {
        self.batches.iter().any(|b| !b.is_empty())
    }
}

/// Threads that verify and stage the chunks of a bundle while the reader goes on.
const STAGERS: usize = 2;

/// The most a small section may decompress to (what `schema::encoding` accepts at most).
const MAX_BLOB: u64 = (256 << 20) + 64;

/// The name of volume `n` of `m` for `out`: `out` itself when there is one volume, else
/// `out.001`, `out.002`, ...
pub fn volume_path(out: &Path, n: u32, m: u32) -> PathBuf {
    if m == 1 {
        out.to_path_buf()
    } else {
        let mut s = out.as_os_str().to_owned();
        s.push(format!(".{n:03}"));
        PathBuf::from(s)
    }
}

/// Room a volume needs besides its chunks: preamble, header, events, descriptors, trailer.
const VOLUME_OVERHEAD: u64 = 1 << 20;

/// Splits `chunks` into volumes of at most `max` bytes (the first also holds `events_len`).
fn split(
    chunks: &[(ChunkId, u64)],
    events_len: u64,
    max: Option<u64>,
) -> Result<Vec<std::ops::Range<usize>>, String> {
    let Some(max) = max else {
        return Ok(std::iter::once(0..chunks.len()).collect());
    };
    if events_len + VOLUME_OVERHEAD > max {
        return Err(format!(
            "--max-volume {max} is too small for this bundle's events ({events_len} bytes): give at least {}",
            events_len + VOLUME_OVERHEAD + (8 << 20)
        ));
    }
    let room =
        |first: bool| max.saturating_sub(VOLUME_OVERHEAD + if first { events_len } else { 0 });
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0u64);
    for (i, (_, size)) in chunks.iter().enumerate() {
        // A record: 36 bytes of header, the file, and the stored blocks' 3-byte headers.
        let need = 36 + size + size / 1024 + 64;
        if used + need > room(out.is_empty()) && i > start {
            out.push(start..i);
            start = i;
            used = 0;
        }
        // Checked after the decision, so that a chunk alone in its volume fits too.
        if used + need > room(out.is_empty()) {
            return Err(format!(
                "--max-volume {max} is too small for a chunk of {size} bytes: give at least 8MiB"
            ));
        }
        used += need;
    }
    out.push(start..chunks.len());
    Ok(out)
}

/// A file that starts the writeback of what was written every [`WRITEBACK`] bytes, so that
/// the sync at the end of a large volume finds little left to do.
struct Writeback {
    file: std::fs::File,
    written: u64,
    flushed: u64,
}

const WRITEBACK: u64 = 32 << 20;

impl Writeback {
    fn new(file: std::fs::File) -> Self {
        Writeback {
            file,
            written: 0,
            flushed: 0,
        }
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK {
            use std::os::fd::AsRawFd;
            // SAFETY: only starts writeback of a range of this open file; no memory is passed.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.flushed as i64,
                    (self.written - self.flushed) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.flushed = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl std::io::Seek for Writeback {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Writes `plan` as one or more volumes at `out`, signed with `key`; `progress` hears the
/// chunk bytes written. Memory stays flat: chunk files go one at a time through one buffer.
pub fn write_bundle(
    plan: &ExportPlan,
    store: &dist_point::ContentStore,
    key: &ed25519_dalek::SigningKey,
    out: &Path,
    max_volume: Option<u64>,
    progress: &dyn Fn(u64),
) -> Result<ExportOutcome, String> {
    let events = schema::encoding::encode(&BundleEvents {
        events: plan.events.clone(),
        reports_acked: plan.reports_acked,
    })
    .map_err(|e| e.to_string())?;
    let parts = split(&plan.chunks, events.len() as u64, max_volume)?;
    let m = parts.len() as u32;
    let id = new_id(plan.source, plan.last);
    let mut files = Vec::new();
    let (mut bytes, mut chunk_bytes) = (0, 0);
    let mut buf = Vec::new();
    for (i, range) in parts.into_iter().enumerate() {
        let n = i as u32 + 1;
        let path = volume_path(out, n, m);
        let header = BundleHeader {
            bundle_id: id,
            source: plan.source,
            destination: plan.destination,
            first: plan.first,
            last: plan.last,
            chunks: plan.chunks.len() as u64,
            created: Utc::now(),
            volume: n,
            volumes: m,
        };
        let tmp = path.with_extension("partial");
        let f = std::fs::File::create(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let io = |e: BundleError| format!("cannot write {}: {e}", tmp.display());
        let mut w = VolumeWriter::new(
            std::io::BufWriter::with_capacity(1 << 20, Writeback::new(f)),
            Kind::Bundle,
            &header,
        )
        .map_err(io)?;
        if n == 1 {
            w.section(SectionKind::Events, |w| w.write_all(&events))
                .map_err(io)?;
        }
        if !range.is_empty() {
            let mut failed = None;
            w.section_stored(SectionKind::Chunks, |w| {
                for (id, _) in &plan.chunks[range.clone()] {
                    if let Err(e) = store.read_encoded(id, &mut buf) {
                        failed = Some(format!(
                            "chunk {id} cannot be read from this site's store: {e}"
                        ));
                        return Err(std::io::Error::other("chunk unreadable"));
                    }
                    write_chunk(w, id, &buf)?;
                    chunk_bytes += buf.len() as u64;
                    progress(buf.len() as u64);
                }
                Ok(())
            })
            .map_err(|e| failed.take().unwrap_or_else(|| io(e)))?;
        }
        let mut f = w.finish(key).map_err(io)?;
        f.flush().map_err(|e| e.to_string())?;
        let f = f.into_inner().map_err(|e| e.to_string())?.file;
        f.sync_all()
            .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if max_volume.is_some_and(|m| len > m) {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "volume {n} came to {len} bytes, over --max-volume: nothing kept; give a larger --max-volume"
            ));
        }
        bytes += len;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        sync_dir(&path);
        files.push(path);
    }
    Ok(ExportOutcome {
        bundle_id: id.iter().map(|b| format!("{b:02x}")).collect(),
        files,
        bytes,
        chunks: plan.chunks.len() as u64,
        chunk_bytes,
    })
}

/// Writes a receipt at `out`, signed with `key`.
pub fn write_receipt(
    header: &BundleHeader,
    reports: &[ReportEnvelope],
    state: &ReceiptState,
    key: &ed25519_dalek::SigningKey,
    out: &Path,
) -> Result<u64, String> {
    let r = schema::encoding::encode(&reports.to_vec()).map_err(|e| e.to_string())?;
    let s = schema::encoding::encode(state).map_err(|e| e.to_string())?;
    let tmp = out.with_extension("partial");
    let io = |e: BundleError| format!("cannot write {}: {e}", tmp.display());
    let f =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let mut w = VolumeWriter::new(f, Kind::Receipt, header).map_err(io)?;
    w.section(SectionKind::Reports, |w| w.write_all(&r))
        .map_err(io)?;
    w.section(SectionKind::State, |w| w.write_all(&s))
        .map_err(io)?;
    let f = w.finish(key).map_err(io)?;
    f.sync_all().map_err(|e| e.to_string())?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&tmp, out).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    sync_dir(out);
    Ok(len)
}

/// Makes a rename into the directory of `path` durable (removable media are unplugged).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn open(path: &Path) -> Result<(std::io::BufReader<std::fs::File>, u64), String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    Ok((std::io::BufReader::with_capacity(1 << 20, f), len))
}

/// The kind and header of the file at `path` (no verification beyond the preamble).
pub fn peek(path: &Path) -> Result<(Kind, BundleHeader), String> {
    let (r, len) = open(path)?;
    let v = VolumeReader::open(r, len).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((v.kind, v.header))
}

/// Reads and verifies every volume of one bundle for `me` from `parent` (key `key`), its
/// chunks staged in a batch of `store` (durable and visible only on `batch.commit()`).
pub fn read_bundle<'s>(
    paths: &[PathBuf],
    me: SiteCode,
    parent: SiteCode,
    key: &ed25519_dalek::VerifyingKey,
    store: &'s dist_point::ContentStore,
    progress: &dyn Fn(u64),
) -> Result<ReadBundle<'s>, String> {
    let mut vols = check_volumes(paths, me, parent)?;
    let (events, chunks, batches) = stage_volumes(&vols, key, parent, store, progress)?;
    let header = vols.remove(0).2;
    let events = check_counts(&header, events, chunks)?;
    Ok(ReadBundle {
        header,
        events,
        batches,
        chunks,
    })
}

/// The volumes of one bundle, by number: (number, path, header).
type Volumes = Vec<(u32, PathBuf, BundleHeader)>;

/// Every volume of the same bundle, each once, all present, for this site from its parent,
/// each saying the same of the bundle; sorted by number. Only headers are read.
fn check_volumes(paths: &[PathBuf], me: SiteCode, parent: SiteCode) -> Result<Volumes, String> {
    let mut vols: Volumes = Vec::new();
    for p in paths {
        let (kind, h) = peek(p)?;
        if kind != Kind::Bundle {
            return Err(format!(
                "{} is a receipt, not a bundle: import it at the parent",
                p.display()
            ));
        }
        check_ends(p, &h, me, parent)?;
        if let Some((_, _, first)) = vols.first() {
            if first.bundle_id != h.bundle_id {
                return Err(format!(
                    "{} belongs to bundle {}, not {}: import one bundle at a time",
                    p.display(),
                    h.id_hex(),
                    first.id_hex()
                ));
            }
        }
        if vols.iter().any(|(n, _, _)| *n == h.volume) {
            return Err(format!("volume {} is given twice", h.volume));
        }
        vols.push((h.volume, p.clone(), h));
    }
    vols.sort_by_key(|v| v.0);
    let m = vols[0].2.volumes;
    if m > 999 {
        return Err(format!(
            "{} says the bundle has {m} volumes (at most 999 are written): refused",
            vols[0].1.display()
        ));
    }
    // Every volume must say the same of the bundle (only its own number differs).
    for (_, p, h) in &vols[1..] {
        let same = BundleHeader {
            volume: vols[0].2.volume,
            created: vols[0].2.created,
            ..h.clone()
        };
        if same != vols[0].2 {
            return Err(format!(
                "{} does not agree with {} about the bundle (range, chunks or volumes): refused",
                p.display(),
                vols[0].1.display()
            ));
        }
    }
    let missing: Vec<String> = (1..=m)
        .filter(|n| !vols.iter().any(|v| v.0 == *n))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() || vols.len() as u32 != m {
        return Err(format!(
            "bundle {} has {m} volumes; missing: {}: give every volume to one import",
            vols[0].2.id_hex(),
            missing.join(", ")
        ));
    }
    Ok(vols)
}

/// Reads every volume through its hashes while STAGERS threads verify the chunks and stage
/// them (temporary files only) in their own batches; then checks each volume's signature.
/// Returns the events section, the number of chunks and the staged batches.
fn stage_volumes<'s>(
    vols: &Volumes,
    key: &ed25519_dalek::VerifyingKey,
    parent: SiteCode,
    store: &'s dist_point::ContentStore,
    progress: &dyn Fn(u64),
) -> Result<(Option<BundleEvents>, u64, Vec<dist_point::Batch<'s>>), String> {
    let m = vols[0].2.volumes;
    let mut events = None;
    let mut chunks = 0;
    // Chunks are verified (decoded, hashed) and written to temporary files by STAGERS
    // threads, each with its own batch, while this one reads, hashes and splits the stream.
    let failed: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let (pool_tx, pool_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (batches, read) = std::thread::scope(|scope| {
        let mut txs = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..STAGERS {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(ChunkId, Vec<u8>)>(8);
            txs.push(tx);
            let (failed, pool_tx) = (&failed, pool_tx.clone());
            workers.push(scope.spawn(move || {
                let mut batch = store.batch();
                for (id, file) in rx {
                    if failed.lock().expect("lock").is_none() {
                        if let Err(e) = batch.put_encoded(&id, &file) {
                            *failed.lock().expect("lock") =
                                Some(format!("chunk {id} refused: {e}"));
                        }
                    }
                    let _ = pool_tx.send(file);
                }
                batch
            }));
        }
        let read = (|| -> Result<(), String> {
            let mut next = 0;
            for (n, path, _) in vols {
                let at = |e: BundleError| format!("{} (volume {n} of {m}): {e}", path.display());
                let (r, len) = open(path)?;
                let mut v = VolumeReader::open(r, len).map_err(at)?;
                // The header the signature covers is the one the checks above were made on.
                if Some(&v.header) != vols.iter().find(|x| x.0 == *n).map(|x| &x.2) {
                    return Err(format!(
                        "{} changed while it was being read: refused",
                        path.display()
                    ));
                }
                while let Some(s) = v.next_section().map_err(at)? {
                    match s.0 {
                        SectionKind::Events if *n == 1 && events.is_none() => {
                            let b = v.read_blob(s, MAX_BLOB).map_err(at)?;
                            events = Some(schema::encoding::decode::<BundleEvents>(&b).map_err(
                                |e| {
                                    at(BundleError::Malformed(format!(
                                        "the events do not decode: {e}"
                                    )))
                                },
                            )?);
                        }
                        SectionKind::Chunks => {
                            chunks += v
                                .read_chunks(s, |id, file| {
                                    if let Some(e) = failed.lock().expect("lock").clone() {
                                        return Err(BundleError::Malformed(e));
                                    }
                                    let mut buf = pool_rx.try_recv().unwrap_or_default();
                                    buf.clear();
                                    buf.extend_from_slice(file);
                                    progress(file.len() as u64);
                                    next = (next + 1) % STAGERS;
                                    txs[next].send((id, buf)).map_err(|_| {
                                        BundleError::Malformed("a staging thread stopped".into())
                                    })
                                })
                                .map_err(at)?;
                        }
                        _ => {
                            return Err(at(BundleError::Malformed(format!(
                                "unexpected {} section",
                                s.0.name()
                            ))))
                        }
                    }
                }
                v.finish(key, parent.as_str()).map_err(at)?;
            }
            Ok(())
        })();
        drop(txs);
        let batches: Vec<dist_point::Batch<'_>> = workers
            .into_iter()
            .map(|w| w.join().expect("staging thread"))
            .collect();
        (batches, read)
    });
    read?;
    if let Some(e) = failed.into_inner().expect("lock") {
        return Err(e);
    }
    Ok((events, chunks, batches))
}

/// The events and chunks the bundle carries are the ones its header promises.
fn check_counts(
    header: &BundleHeader,
    events: Option<BundleEvents>,
    chunks: u64,
) -> Result<BundleEvents, String> {
    let events = events.ok_or_else(|| "the bundle has no events section".to_string())?;
    let expected = if header.last >= header.first {
        (header.last - header.first).checked_add(1)
    } else {
        Some(0)
    };
    if expected != Some(events.events.len() as u64) {
        return Err(format!(
            "the bundle says positions {}..{} but carries {} events: refused",
            header.first,
            header.last,
            events.events.len()
        ));
    }
    if chunks != header.chunks {
        return Err(format!(
            "the bundle says {} chunks but carries {chunks}: refused",
            header.chunks
        ));
    }
    Ok(events)
}

fn check_ends(p: &Path, h: &BundleHeader, me: SiteCode, from: SiteCode) -> Result<(), String> {
    if h.destination != me {
        return Err(format!(
            "{} is for site {}, not {me}: take it to {}",
            p.display(),
            h.destination,
            h.destination
        ));
    }
    if h.source != from {
        return Err(format!(
            "{} comes from {}, but this site takes bundles from {from} only",
            p.display(),
            h.source
        ));
    }
    if h.volumes == 0 || h.volume == 0 || h.volume > h.volumes {
        return Err(format!(
            "{}: volume {} of {} makes no sense: refused",
            p.display(),
            h.volume,
            h.volumes
        ));
    }
    Ok(())
}

/// Reads and verifies a receipt from `child` (key `key`) for `me`.
pub fn read_receipt(
    path: &Path,
    me: SiteCode,
    child: SiteCode,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<ReadReceipt, String> {
    let (r, len) = open(path)?;
    let at = |e: BundleError| format!("{}: {e}", path.display());
    let mut v = VolumeReader::open(r, len).map_err(at)?;
    if v.kind != Kind::Receipt {
        return Err(format!("{} is not a receipt", path.display()));
    }
    let h = v.header.clone();
    check_ends(path, &h, me, child)?;
    let (mut reports, mut state) = (None, None);
    while let Some(s) = v.next_section().map_err(at)? {
        let b = v.read_blob(s, MAX_BLOB).map_err(at)?;
        let bad = |e: schema::encoding::DecodeError| {
            at(BundleError::Malformed(format!(
                "the {} section does not decode: {e}",
                s.0.name()
            )))
        };
        match s.0 {
            SectionKind::Reports => {
                reports = Some(schema::encoding::decode::<Vec<ReportEnvelope>>(&b).map_err(bad)?)
            }
            SectionKind::State => {
                state = Some(schema::encoding::decode::<ReceiptState>(&b).map_err(bad)?)
            }
            k => {
                return Err(at(BundleError::Malformed(format!(
                    "unexpected {} section",
                    k.name()
                ))))
            }
        }
    }
    v.finish(key, child.as_str()).map_err(at)?;
    Ok(ReadReceipt {
        source: child,
        first: h.first,
        last: h.last,
        reports: reports.ok_or("the receipt has no reports section")?,
        state: state.ok_or("the receipt has no state section")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_split_under_the_limit_and_the_first_holds_the_events() {
        let c: Vec<(ChunkId, u64)> = (0..10u8).map(|i| (ChunkId::of(&[i]), 1 << 20)).collect();
        let whole = split(&c, 100, None).unwrap();
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..10));
        let parts = split(&c, 100, Some(4 << 20)).unwrap();
        assert!(parts.len() >= 4, "{parts:?}");
        assert_eq!(parts.iter().map(|r| r.len()).sum::<usize>(), 10);
        assert!(split(&c, 100, Some(1 << 20)).is_err());
        // A big chunk after small ones gets a volume of its own, or is refused: never a
        // volume over the limit.
        let mixed = [(ChunkId::of(b"s"), 600 << 10), (ChunkId::of(b"b"), 4 << 20)];
        assert!(split(&mixed, 100, Some(4 << 20)).is_err());
        assert_eq!(
            split(&mixed, 100, Some(11 << 19)).unwrap(),
            vec![0..1, 1..2]
        );
        // Events that do not fit are refused too.
        assert!(split(&[], 8 << 20, Some(8 << 20)).is_err());
        assert_eq!(volume_path(Path::new("/m/b"), 1, 1), PathBuf::from("/m/b"));
        assert_eq!(
            volume_path(Path::new("/m/b"), 2, 3),
            PathBuf::from("/m/b.002")
        );
    }
}
