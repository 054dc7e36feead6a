//! Serving package files to clients over HTTP, from the content store.
//!
//! - `GET /packages/{id}/{version}/manifest`: the version's manifest (JSON);
//! - `GET /packages/{id}/{version}/files/{path}`: the file, reassembled from its chunks, with
//!   `Content-Length`, `ETag` (BLAKE3 over the file's chunk ids: it names the content
//!   exactly) and one byte `Range` (`bytes=a-b`, `a-`, `-n`), so `curl -O` and `curl -C -`
//!   work; `HEAD` too, answered from the manifest without reading a chunk;
//! - `{version}` may be `latest`: the newest version fully present here.
//!
//! What is served is only what [`Catalog`] says is fully present. Every chunk is verified as
//! it is read, so a client never receives bytes that do not hash to their name. The first
//! [`PREFLIGHT`] bytes of the range are also verified before the response starts, so a bad
//! chunk there is a 500 with a clear body (and [`Catalog::corrupt`] is told); a bad chunk
//! further into a large file ends the body short of its `Content-Length` (the client sees
//! a failed transfer, and `curl -C -` resumes it once the chunk is fetched again). A path
//! with `..`, an absolute path or an empty part is a 400 and nothing is read.
//!
//! Only damage is damage: a chunk that cannot be read (an I/O error, no file descriptor
//! left) is a 503 with `Retry-After` and nothing is removed or re-fetched. At most
//! [`MAX_DOWNLOADS`] bodies stream at once (a 503 beyond), each from a task that drops a
//! client which takes nothing for [`SEND_TIMEOUT`].

use crate::store::{ContentStore, StoreError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use schema::manifest::{ChunkRef, Manifest};
use schema::{ChunkId, PackageId};
use std::sync::Arc;

/// How much of a range is verified before the response starts: a file up to this size is a
/// clean 500 if any chunk is bad; beyond it, a chunk that fails mid-way ends the body short.
pub const PREFLIGHT: u64 = 64 << 20;

/// What the server may serve: the package versions fully present in the store.
pub trait Catalog: Send + Sync + 'static {
    /// The versions of `package` fully present here, with their manifests.
    fn present(&self, package: &PackageId) -> Vec<(u32, Arc<Manifest>)>;
    /// A chunk failed verification while being served (raise a status message, re-fetch).
    fn corrupt(&self, package: &PackageId, version: u32, chunk: &ChunkId, reason: &str);
}

/// How many file downloads run at once by default (`max_downloads` in `dp.toml`); beyond it
/// a client gets a 503 with `Retry-After`.
pub const MAX_DOWNLOADS: usize = 128;
/// How long a download may wait for its client to take more bytes before it is dropped.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The `Retry-After` of a 503 (too many downloads, or a chunk that could not be read).
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Clone)]
struct Served {
    store: Arc<ContentStore>,
    catalog: Arc<dyn Catalog>,
    /// Taken by each GET of a file for as long as its body streams.
    downloads: Arc<tokio::sync::Semaphore>,
}

/// The HTTP routes (see the module doc), with at most `max_downloads` bodies streaming.
pub fn router(store: Arc<ContentStore>, catalog: Arc<dyn Catalog>, max_downloads: usize) -> Router {
    Router::new()
        .route("/packages/{id}/{version}/manifest", get(manifest))
        .route("/packages/{id}/{version}/files/{*path}", get(file))
        .with_state(Served {
            store,
            catalog,
            downloads: Arc::new(tokio::sync::Semaphore::new(max_downloads.max(1))),
        })
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body + "\n",
    )
        .into_response()
}

/// The version asked for, if fully present.
fn resolve(
    st: &Served,
    id: &str,
    version: &str,
) -> Result<(PackageId, u32, Arc<Manifest>), (StatusCode, String)> {
    let package: PackageId = id
        .parse()
        .map_err(|e: schema::IdError| (StatusCode::BAD_REQUEST, format!("{e}")))?;
    let present = st.catalog.present(&package);
    let found = if version == "latest" {
        present.iter().max_by_key(|(v, _)| *v).cloned()
    } else {
        let v: u32 = version.parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("version {version:?} is not a number or `latest`"),
            )
        })?;
        present.iter().find(|(p, _)| *p == v).cloned()
    };
    match found {
        Some((v, m)) => Ok((package, v, m)),
        None => Err((
            StatusCode::NOT_FOUND,
            format!("package {package} version {version} is not fully present on this distribution point"),
        )),
    }
}

async fn manifest(
    State(st): State<Served>,
    Path((id, version)): Path<(String, String)>,
) -> Response {
    match resolve(&st, &id, &version) {
        Ok((_, _, m)) => axum::Json(m.as_ref().clone()).into_response(),
        Err((code, why)) => text(code, why),
    }
}

/// A clean relative path: no leading `/`, no `.`, `..` or empty part.
fn clean(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// The ETag of a file: BLAKE3 over its chunk ids.
pub fn etag(chunks: &[ChunkRef]) -> String {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.id.0);
    }
    format!("\"{}\"", h.finalize().to_hex())
}

/// The `Range` header of a request against `size` (see [`parse_range`]).
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => parse_range(v, size),
        None => Ok(None),
    }
}

/// A `Range` the file cannot satisfy, or one that is not a byte range: answered with 416.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A decimal number of the `Range` grammar (ASCII digits only, no sign); one longer than
/// `u64` saturates, as a position beyond any file is still a valid position.
fn position(s: &str) -> Result<u64, Unsatisfiable> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Unsatisfiable);
    }
    Ok(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// Parses one `Range` header value (`bytes=a-b`, `a-`, `-n`) against a file of `size`
/// bytes, as RFC 9110 says: `Ok(None)` for the whole file (no byte unit, or several ranges,
/// which the whole file also answers), `Ok(Some((start, end)))` with `start < end <= size`,
/// or [`Unsatisfiable`].
pub fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None); // another unit: ignored, the whole file (RFC 9110)
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole file is a valid answer
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n = position(b)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size)
    } else {
        let s = position(a)?;
        let e = if b.is_empty() {
            size
        } else {
            let last = position(b)?;
            if last < s {
                return Err(Unsatisfiable);
            }
            last.saturating_add(1).min(size)
        };
        (s, e)
    };
    if start >= end || start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

async fn file(
    State(st): State<Served>,
    method: Method,
    headers: HeaderMap,
    Path((id, version, path)): Path<(String, String, String)>,
) -> Response {
    if !clean(&path) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("path {path:?} is not a clean relative path inside the package"),
        );
    }
    let (package, version, m) = match resolve(&st, &id, &version) {
        Ok(x) => x,
        Err((code, why)) => return text(code, why),
    };
    let Some(entry) = m.files.iter().find(|f| f.path == path) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("package {package} version {version} has no file {path:?}"),
        );
    };
    let chunks: Vec<ChunkRef> = entry.chunks().to_vec();
    let size = entry.size;
    let tag = etag(&chunks);
    let (start, end, partial) = match range(&headers, size) {
        Ok(None) => (0, size, false),
        Ok(Some((s, e))) => (s, e, true),
        Err(Unsatisfiable) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response()
        }
    };
    // The chunks that hold bytes start..end, and where the range begins in the first.
    let mut pos = 0u64;
    let mut first_skip = 0u64;
    let mut wanted = Vec::new();
    for c in &chunks {
        let (c0, c1) = (pos, pos + c.len as u64);
        pos = c1;
        if c1 <= start || c0 >= end {
            continue;
        }
        if wanted.is_empty() {
            first_skip = start - c0;
        }
        wanted.push(*c);
    }
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, tag.parse().expect("hex"));
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("static"));
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("static"),
    );
    h.insert(header::CONTENT_LENGTH, (end - start).into());
    let status = if partial {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1)
                .parse()
                .expect("ascii"),
        );
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if method == Method::HEAD {
        // What a GET would answer, from the manifest alone: nothing is read.
        return (status, h).into_response();
    }
    let Ok(permit) = st.downloads.clone().try_acquire_owned() else {
        return busy("every download slot of this distribution point is taken; retry later".into());
    };
    // Verify before the first byte: a bad chunk there is a 500, never bytes. Past the
    // first PREFLIGHT bytes a bad chunk ends the transfer short instead (each chunk is
    // verified again as it is read), so that a large file is not hashed twice.
    let store = st.store.clone();
    let mut ahead = 0u64;
    let check: Vec<ChunkRef> = wanted
        .iter()
        .take_while(|c| {
            let go = ahead < PREFLIGHT;
            ahead += c.len as u64;
            go
        })
        .copied()
        .collect();
    let verified = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        for c in &check {
            if let Err(e) = store.get_into(&c.id, &mut buf) {
                return Err((c.id, e));
            }
        }
        Ok(())
    })
    .await;
    match verified {
        Ok(Ok(())) => {}
        Ok(Err((chunk, e))) if e.is_damage() || matches!(e, StoreError::Missing(_)) => {
            let reason = e.to_string();
            st.catalog.corrupt(&package, version, &chunk, &reason);
            let what = match e {
                StoreError::Missing(_) => "is missing",
                _ => "failed verification",
            };
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "{path:?} of package {package} version {version} cannot be served: chunk {chunk} {what} ({reason}); the distribution point fetches it again, retry later"
                ),
            );
        }
        Ok(Err((chunk, e))) => {
            // An I/O error says nothing about the bytes: keep the chunk, let the client retry.
            tracing::error!(%package, version, %chunk, error = %e, "cannot read a chunk to serve; kept");
            return busy(format!(
                "{path:?} of package {package} version {version} cannot be read right now (chunk {chunk}: {e}); nothing was removed, retry later"
            ));
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}")),
    }
    let body = stream(
        st,
        package,
        version,
        wanted,
        first_skip,
        end - start,
        permit,
    );
    (status, h, body).into_response()
}

/// A 503 with `Retry-After`: the request was fine, the server cannot answer it now.
fn busy(why: String) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, why);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        RETRY_AFTER_SECS.to_string().parse().expect("digits"),
    );
    r
}

/// Streams `len` bytes from `chunks`, skipping `skip` bytes of the first. Each chunk is read
/// (and verified again) on a blocking thread that is given back at once; a task, not a
/// thread, waits for the client. A client that takes no bytes for [`SEND_TIMEOUT`] is
/// dropped. A failure ends the body early (the client sees a short transfer against
/// `Content-Length`, never wrong bytes); only damage is reported as such.
fn stream(
    st: Served,
    package: PackageId,
    version: u32,
    chunks: Vec<ChunkRef>,
    skip: u64,
    len: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _permit = permit;
        let mut left = len;
        let mut skip = skip as usize;
        for c in chunks {
            if left == 0 {
                break;
            }
            let store = st.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(c.len as usize);
                store.get_into(&c.id, &mut buf).map(|()| buf)
            })
            .await;
            let buf = match read {
                Ok(Ok(buf)) => buf,
                Ok(Err(e)) => {
                    if e.is_damage() || matches!(e, StoreError::Missing(_)) {
                        st.catalog.corrupt(&package, version, &c.id, &e.to_string());
                    } else {
                        tracing::error!(%package, version, chunk = %c.id, error = %e, "cannot read a chunk to serve; kept");
                    }
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut b = bytes::Bytes::from(buf);
            if skip > 0 {
                b = b.slice(skip.min(b.len())..);
                skip = 0;
            }
            if b.len() as u64 > left {
                b = b.slice(..left as usize);
            }
            left -= b.len() as u64;
            if tx.send_timeout(Ok(b), SEND_TIMEOUT).await.is_err() {
                return; // the client went away, or stopped reading
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, v.parse().unwrap());
            m
        };
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range(&h("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(range(&h("bytes=90-"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&h("bytes=-10"), 100), Ok(Some((90, 100))));
        assert_eq!(range(&h("bytes=95-200"), 100), Ok(Some((95, 100))));
        assert_eq!(range(&h("bytes=100-"), 100), Err(Unsatisfiable));
        assert_eq!(range(&h("bytes=5-1"), 100), Err(Unsatisfiable));
        assert_eq!(range(&h("bytes=-0"), 100), Err(Unsatisfiable));
        // Digits only, and a last position beyond u64 is still a position past the end.
        assert_eq!(range(&h("bytes=+5-"), 100), Err(Unsatisfiable));
        assert_eq!(range(&h("bytes=5--1"), 100), Err(Unsatisfiable));
        assert_eq!(
            range(&h("bytes=5-99999999999999999999999"), 100),
            Ok(Some((5, 100)))
        );
        assert_eq!(
            range(&h("bytes=-99999999999999999999999"), 100),
            Ok(Some((0, 100)))
        );
        assert_eq!(range(&h("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(range(&h("items=0-1"), 100), Ok(None));
    }

    #[test]
    fn only_clean_relative_paths() {
        for ok in ["a", "bin/tool.bin", "docs/a b.txt"] {
            assert!(clean(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/."] {
            assert!(!clean(bad), "{bad}");
        }
    }
}
