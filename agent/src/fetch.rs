//! Downloads a package version from the distribution point into the agent's cache, each
//! chunk verified against the manifest of the signed event before it is written, resuming
//! from the last verified chunk after an interruption.
//!
//! `cache/PACKAGE-vVERSION/` holds the files; `FILE.part` while a file is coming; the
//! directory's `.complete` (holding the manifest id) once every file is there and verified.

use crate::AgentError;
use schema::event::PackageVersion;
use schema::manifest::{is_clean_relative_path, ChunkRef, EntryKind};
use schema::ChunkId;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const COMPLETE: &str = ".complete";

/// The directory a version is kept in.
pub fn dir_of(cache: &Path, v: &PackageVersion) -> PathBuf {
    cache.join(format!("{}-v{}", v.package, v.source_version))
}

/// Whether `v` is in the cache, whole and verified.
pub fn is_complete(cache: &Path, v: &PackageVersion) -> bool {
    std::fs::read_to_string(dir_of(cache, v).join(COMPLETE))
        .is_ok_and(|t| t.trim() == v.manifest_id.to_hex())
}

/// What a download moved.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fetched {
    pub bytes: u64,
    pub resumed_from: u64,
}

/// Downloads `v` from `base` (the DP) into the cache, unless it is there already.
pub async fn fetch(
    http: &reqwest::Client,
    base: &str,
    cache: &Path,
    v: &PackageVersion,
) -> Result<Fetched, AgentError> {
    let dir = dir_of(cache, v);
    let mut out = Fetched::default();
    if is_complete(cache, v) {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    for f in &v.manifest.files {
        if !is_clean_relative_path(&f.path) {
            return Err(AgentError::Download(format!(
                "the manifest names {:?}, not a clean path inside the package",
                f.path
            )));
        }
        let dest = dir.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        match &f.kind {
            EntryKind::File { chunks } => {
                let done =
                    dest.exists() && std::fs::metadata(&dest).is_ok_and(|m| m.len() == f.size);
                if !done {
                    let url = format!(
                        "{base}/packages/{}/{}/files/{}",
                        v.package, v.source_version, f.path
                    );
                    let got = fetch_file(http, &url, &dest, chunks, f.size).await?;
                    out.bytes += got.bytes;
                    out.resumed_from += got.resumed_from;
                }
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = if f.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| io(&dest, e))?;
                }
            }
            EntryKind::Symlink { target } => {
                #[cfg(unix)]
                {
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(target, &dest).map_err(|e| io(&dest, e))?;
                }
                #[cfg(not(unix))]
                let _ = target;
            }
        }
    }
    crate::state::write_atomic(&dir.join(COMPLETE), v.manifest_id.to_hex().as_bytes())?;
    Ok(out)
}

fn io(p: &Path, e: std::io::Error) -> AgentError {
    AgentError::Failed(format!("cannot write {}: {e}", p.display()))
}

/// One file: the verified prefix of `DEST.part` is kept (cut back to the last whole chunk),
/// the rest asked for with a Range, each chunk hashed before it is written.
async fn fetch_file(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    chunks: &[ChunkRef],
    size: u64,
) -> Result<Fetched, AgentError> {
    let part = dest.with_extension(match dest.extension() {
        Some(e) => format!("{}.part", e.to_string_lossy()),
        None => "part".into(),
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)
        .map_err(|e| io(&part, e))?;
    let have = file.metadata().map_err(|e| io(&part, e))?.len();
    // The whole chunks already written (each was verified before it was).
    let (mut next, mut offset) = (0usize, 0u64);
    while next < chunks.len() && offset + chunks[next].len as u64 <= have {
        offset += chunks[next].len as u64;
        next += 1;
    }
    file.set_len(offset).map_err(|e| io(&part, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io(&part, e))?;
    let resumed_from = offset;
    let mut got = 0u64;
    if next < chunks.len() {
        let mut req = http.get(url);
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let mut r = req
            .send()
            .await
            .map_err(|e| AgentError::Download(format!("{url}: {e}")))?;
        let code = r.status();
        let ok = if offset > 0 {
            code == reqwest::StatusCode::PARTIAL_CONTENT
        } else {
            code == reqwest::StatusCode::OK
        };
        if !ok {
            let text = r.text().await.unwrap_or_default();
            return Err(AgentError::Download(format!(
                "{url} answered {code}: {}",
                text.trim()
            )));
        }
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        let mut buf: Vec<u8> = Vec::with_capacity(chunks[next].len as usize);
        while next < chunks.len() {
            let Some(bytes) = r
                .chunk()
                .await
                .map_err(|e| AgentError::Download(format!("{url}: {e}")))?
            else {
                break;
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() && next < chunks.len() {
                let want = chunks[next].len as usize - buf.len();
                let take = want.min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == chunks[next].len as usize {
                    if ChunkId::of(&buf) != chunks[next].id {
                        w.flush().map_err(|e| io(&part, e))?;
                        return Err(AgentError::Download(format!(
                            "chunk {} of {} (bytes {offset}..) fails its hash: the distribution point served damaged content; nothing of it is kept",
                            next + 1,
                            dest.display()
                        )));
                    }
                    w.write_all(&buf).map_err(|e| io(&part, e))?;
                    offset += buf.len() as u64;
                    got += buf.len() as u64;
                    buf.clear();
                    next += 1;
                }
            }
            if !rest.is_empty() {
                return Err(AgentError::Download(format!(
                    "{url} sent more than the manifest's {size} bytes"
                )));
            }
        }
        w.flush().map_err(|e| io(&part, e))?;
        drop(w);
        if next < chunks.len() {
            return Err(AgentError::Download(format!(
                "{url} ended at byte {offset} of {size}: the download resumes from there"
            )));
        }
    }
    file.sync_all().map_err(|e| io(&part, e))?;
    drop(file);
    std::fs::rename(&part, dest).map_err(|e| io(dest, e))?;
    Ok(Fetched {
        bytes: got,
        resumed_from,
    })
}
