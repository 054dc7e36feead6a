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

#[cfg(test)]
mod tests {
    use super::*;
    use schema::manifest::{FileEntry, Manifest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-file package version of `data`, chunked as a publish would.
    fn version(data: &[u8]) -> PackageVersion {
        // Cut every MiB: the manifest, not the cutter, is what the agent checks against.
        let chunks: Vec<ChunkRef> = data
            .chunks(1 << 20)
            .map(|c| ChunkRef {
                id: ChunkId::of(c),
                len: c.len() as u32,
            })
            .collect();
        let manifest = Manifest {
            files: vec![FileEntry {
                path: "setup.bin".into(),
                mode: 0o644,
                size: data.len() as u64,
                kind: EntryKind::File { chunks },
            }],
        };
        PackageVersion {
            package: "CEN00001".parse().unwrap(),
            name: "p".into(),
            source_version: 1,
            priority: Default::default(),
            manifest_id: manifest.id(),
            manifest,
        }
    }

    /// An HTTP server that answers every request with `body` from the Range asked (200 or
    /// 206), and records the Range headers it saw.
    async fn serve(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u64>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut b).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&b[..n]);
                }
                let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                let from: u64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| {
                        r.trim_end_matches('-')
                            .trim()
                            .trim_end_matches('-')
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0);
                s2.lock().unwrap().push(from);
                let part = &body[from as usize..];
                let head = if from > 0 {
                    format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", part.len())
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        part.len()
                    )
                };
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(part).await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn a_chunk_that_fails_its_hash_is_never_kept_and_the_rest_resumes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..(3 << 20) + 12345)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let v = version(&data);
        let EntryKind::File { chunks } = &v.manifest.files[0].kind else {
            unreachable!()
        };
        assert!(chunks.len() >= 3, "several chunks");
        let mut bad = data.clone();
        let second = chunks[0].len as usize + 5;
        bad[second] ^= 1;
        let cache = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();

        let (addr, _) = serve(bad).await;
        let e = fetch(&http, &addr, cache.path(), &v).await.unwrap_err();
        assert!(
            e.to_string().contains("chunk 2") && e.to_string().contains("fails its hash"),
            "{e}"
        );
        assert!(!is_complete(cache.path(), &v));
        let part = dir_of(cache.path(), &v).join("setup.bin.part");
        assert_eq!(
            std::fs::metadata(&part).unwrap().len(),
            chunks[0].len as u64,
            "only the verified first chunk is kept"
        );

        let (addr, seen) = serve(data.clone()).await;
        let got = fetch(&http, &addr, cache.path(), &v).await.unwrap();
        assert_eq!(got.resumed_from, chunks[0].len as u64);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![chunks[0].len as u64],
            "resumed with a Range"
        );
        assert!(is_complete(cache.path(), &v));
        assert_eq!(
            std::fs::read(dir_of(cache.path(), &v).join("setup.bin")).unwrap(),
            data
        );
    }
}
