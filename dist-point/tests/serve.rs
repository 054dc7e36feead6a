//! The DP's HTTP serving on 127.0.0.1, through its real listener: whole files, ranges,
//! `latest`, refusals; a chunk corrupted on disk is a 500, never bytes; a chunk that cannot
//! be read is a 503 and is not taken for damage; HEAD reads nothing; the download and
//! connection caps answer 503 with `Retry-After`; an idle connection is closed.

use dist_point::serve::{self, Catalog};
use dist_point::ContentStore;
use schema::manifest::{ChunkRef, EntryKind, FileEntry, Manifest};
use schema::testutil::noise;
use schema::{ChunkId, PackageId};
use std::sync::{Arc, Mutex};

struct Versions {
    present: Vec<(u32, Arc<Manifest>)>,
    corrupt: Mutex<Vec<ChunkId>>,
}

impl Catalog for Versions {
    fn present(&self, package: &PackageId) -> Vec<(u32, Arc<Manifest>)> {
        if package.to_string() == "CEN00001" {
            self.present.clone()
        } else {
            vec![]
        }
    }
    fn corrupt(&self, _: &PackageId, _: u32, chunk: &ChunkId, _: &str) {
        self.corrupt.lock().unwrap().push(*chunk);
    }
}

/// Stores `data` in pieces of `piece` bytes; returns the file entry.
fn put_file(store: &ContentStore, path: &str, data: &[u8], piece: usize) -> FileEntry {
    let chunks = data
        .chunks(piece)
        .map(|p| {
            let (id, _) = store.insert(p).unwrap();
            ChunkRef {
                id,
                len: p.len() as u32,
            }
        })
        .collect();
    FileEntry {
        path: path.into(),
        mode: 0o644,
        size: data.len() as u64,
        kind: EntryKind::File { chunks },
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<ContentStore>,
    catalog: Arc<Versions>,
    base: String,
    data: Vec<u8>,
    http: reqwest::Client,
}

async fn rig() -> Rig {
    rig_with(64, 32).await
}

async fn rig_with(max_downloads: usize, max_connections: usize) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ContentStore::open(dir.path().join("content")).unwrap());
    let data = noise(3_000_000, 5);
    let v1 = Manifest {
        files: vec![put_file(
            &store,
            "bin/tool.bin",
            &data[..1_000_000],
            100_000,
        )],
    };
    let v2 = Manifest {
        files: vec![
            put_file(&store, "bin/tool.bin", &data, 300_000),
            put_file(&store, "readme.txt", b"hello\n", 64),
        ],
    };
    let catalog = Arc::new(Versions {
        present: vec![(1, Arc::new(v1)), (2, Arc::new(v2))],
        corrupt: Mutex::new(vec![]),
    });
    let app = serve::router(store.clone(), catalog.clone(), max_downloads);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(dist_point::listener::serve(
        listener,
        app,
        max_connections,
        std::future::pending(),
    ));
    Rig {
        _dir: dir,
        store,
        catalog,
        base,
        data,
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn files_ranges_latest_and_refusals() {
    let r = rig().await;
    let get = |p: &str| r.http.get(format!("{}{p}", r.base));
    // The whole file, equal to the source, with its length and tag.
    let resp = get("/packages/CEN00001/2/files/bin/tool.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "3000000");
    let tag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &r.data[..]);
    // `latest` is version 2; version 1 is another file (another tag).
    let latest = get("/packages/CEN00001/latest/files/bin/tool.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(latest.headers()["etag"].to_str().unwrap(), tag);
    let v1 = get("/packages/CEN00001/1/files/bin/tool.bin")
        .send()
        .await
        .unwrap();
    assert_ne!(v1.headers()["etag"].to_str().unwrap(), tag);
    assert_eq!(v1.bytes().await.unwrap().as_ref(), &r.data[..1_000_000]);
    // Ranges: exactly the bytes asked for, across chunk boundaries.
    for (h, a, b) in [
        ("bytes=299990-300009", 299_990, 300_010),
        ("bytes=2999000-", 2_999_000, 3_000_000),
        ("bytes=-7", 2_999_993, 3_000_000),
        ("bytes=0-0", 0, 1),
    ] {
        let resp = get("/packages/CEN00001/2/files/bin/tool.bin")
            .header("range", h)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "{h}");
        assert_eq!(
            resp.headers()["content-range"].to_str().unwrap(),
            format!("bytes {a}-{}/3000000", b - 1)
        );
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &r.data[a..b], "{h}");
    }
    let resp = get("/packages/CEN00001/2/files/bin/tool.bin")
        .header("range", "bytes=3000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    // The manifest.
    let m: Manifest = get("/packages/CEN00001/2/manifest")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m.files.len(), 2);
    // Not here: 404; not a clean path: 400, nothing read.
    for (p, code) in [
        ("/packages/CEN00001/3/files/bin/tool.bin", 404),
        ("/packages/CEN00002/1/files/bin/tool.bin", 404),
        ("/packages/CEN00001/2/files/nope.txt", 404),
        ("/packages/CEN00001/2/files/../../etc/passwd", 400),
        ("/packages/CEN00001/2/files/bin/../readme.txt", 400),
        ("/packages/CEN00001/2/files/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/packages/CEN00001/2/files/%2Fetc%2Fpasswd", 400),
        ("/packages/CEN00001/2/files/bin//tool.bin", 400),
        ("/packages/CEN00001/two/manifest", 400),
        ("/packages/nonsense/2/manifest", 400),
    ] {
        assert_eq!(raw_get(&r.base, p).await, code, "{p}");
    }
}

/// A GET with the path sent as written (an HTTP client would normalize `..` away).
async fn raw_get(base: &str, path: &str) -> u16 {
    raw(base, "GET", path)
        .await
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The whole answer to one request sent as written, as text (lossy).
async fn raw(base: &str, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_chunk_corrupted_on_disk_is_a_500_never_bytes() {
    let r = rig().await;
    let m = &r.catalog.present[1].1;
    let victim = m.files[0].chunks()[4].id;
    let path = r.store.path_of(&victim);
    let mut b = std::fs::read(&path).unwrap();
    let i = b.len() - 10;
    b[i] ^= 0x40;
    std::fs::write(&path, b).unwrap();
    let resp = r
        .http
        .get(format!("{}/packages/CEN00001/2/files/bin/tool.bin", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let body = resp.text().await.unwrap();
    assert!(body.contains(&victim.to_hex()), "{body}");
    assert_eq!(*r.catalog.corrupt.lock().unwrap(), vec![victim]);
    // A range that does not touch the bad chunk is still served.
    let resp = r
        .http
        .get(format!("{}/packages/CEN00001/2/files/bin/tool.bin", r.base))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &r.data[..100]);
}

#[tokio::test]
async fn a_chunk_that_cannot_be_read_is_a_503_and_is_not_taken_for_damage() {
    let r = rig().await;
    let readme = r.catalog.present[1].1.files[1].chunks()[0].id;
    let path = r.store.path_of(&readme);
    // A directory where the chunk file was: opening works, reading fails with EISDIR, an
    // I/O error like EIO or running out of file descriptors.
    let kept = r._dir.path().join("kept");
    std::fs::rename(&path, &kept).unwrap();
    std::fs::create_dir(&path).unwrap();
    let answer = raw(&r.base, "GET", "/packages/CEN00001/2/files/readme.txt").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer}"
    );
    assert!(answer.contains("nothing was removed"), "{answer}");
    // HEAD is answered from the manifest: nothing is read.
    let head = raw(&r.base, "HEAD", "/packages/CEN00001/2/files/readme.txt").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 6"),
        "{head}"
    );
    // A scrub keeps it too: unreadable is not damaged.
    let scrub = r.store.verify_all().unwrap();
    assert!(scrub.problems.is_empty(), "{:?}", scrub.problems);
    assert_eq!(scrub.unreadable.len(), 1);
    assert!(
        r.catalog.corrupt.lock().unwrap().is_empty(),
        "an I/O error was reported as damage"
    );
    assert!(path.is_dir());
    // Once the disk reads again, the same chunk is served.
    std::fs::remove_dir(&path).unwrap();
    std::fs::rename(&kept, &path).unwrap();
    let body = r
        .http
        .get(format!("{}/packages/CEN00001/2/files/readme.txt", r.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), b"hello\n");
}

#[tokio::test]
async fn downloads_and_connections_beyond_their_caps_are_a_503_and_idle_clients_are_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = rig_with(1, 3).await;
    let addr = r.base.trim_start_matches("http://").to_string();
    // One download that never reads holds the only download slot.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!("GET /packages/CEN00001/2/files/bin/tool.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut first = [0u8; 12];
    slow.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let busy = raw(&r.base, "GET", "/packages/CEN00001/2/files/readme.txt").await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    assert!(
        busy.to_ascii_lowercase().contains("retry-after: 5"),
        "{busy}"
    );
    drop(slow);
    // The slot comes back when the client goes.
    let mut served = false;
    for _ in 0..100 {
        if raw(&r.base, "GET", "/packages/CEN00001/2/files/readme.txt")
            .await
            .starts_with("HTTP/1.1 200")
        {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "the download slot was not given back");

    // Three idle connections take every connection slot; a fourth is refused at once.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let refused = raw(&r.base, "GET", "/packages/CEN00001/2/files/readme.txt").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("connections"), "{refused}");
    // An idle connection is closed after the header timeout, and its slot is free again.
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(
        dist_point::listener::HEADER_TIMEOUT + std::time::Duration::from_secs(5),
        idle[0].read(&mut buf),
    )
    .await
    .expect("an idle connection was not closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let again = raw(&r.base, "GET", "/packages/CEN00001/2/files/readme.txt").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
