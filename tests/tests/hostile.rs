//! Hostile peers and failing disks, end to end on 127.0.0.1: what a peer sends is believed
//! only as far as its place in the tree allows, and an I/O error is never taken for damage.

use tests::{
    complete, distribute, link_child, link_parent, messages, publish, sample_tree, TestSite,
};

/// CEN -> S01, both running.
fn two_tiers() -> (TestSite, TestSite) {
    let mut cen = TestSite::init("CEN");
    let mut s01 = TestSite::init("S01");
    link_child(&cen, &s01);
    cen.start();
    link_parent(&s01, &cen);
    s01.start();
    (cen, s01)
}

#[test]
fn a_chunk_the_top_cannot_read_is_kept_and_sent_once_it_reads_again() {
    let (cen, s01) = two_tiers();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    // The top holds the only copy of every chunk. One of them cannot be read: a directory
    // where its file was (opening works, reading fails with EISDIR, an I/O error).
    let (victim, _) = cen
        .store_listing()
        .into_iter()
        .next()
        .expect("a chunk file at CEN");
    let kept = cen.tmp.path().join("kept-chunk");
    std::fs::rename(&victim, &kept).unwrap();
    std::fs::create_dir(&victim).unwrap();
    distribute(&cen, &pkg, "S01");
    cen.wait_until(30, "40207 (unreadable) at CEN", || {
        !messages(&cen, 40207).is_empty()
    });
    assert!(
        messages(&cen, 40204).is_empty(),
        "an I/O error was taken for a corrupt chunk: {:?}",
        messages(&cen, 40204)
    );
    assert!(victim.is_dir(), "the unreadable chunk was removed");
    assert!(!complete(&s01, &pkg, 1));
    // The disk reads again: the child's next ask gets the chunk.
    std::fs::remove_dir(&victim).unwrap();
    std::fs::rename(&kept, &victim).unwrap();
    s01.wait_until(60, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    assert!(messages(&cen, 40204).is_empty());
}

/// Dials `addr` `n` times as a peer nobody pinned (it pins the site, so the handshake gets as
/// far as the site refusing its certificate); returns how many connections were refused.
fn stranger_dials(addr: &str, site_fingerprint: &str, n: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    sender::identity::create(dir.path(), schema::SiteCode::new("X99").unwrap()).unwrap();
    let me = sender::tls::TlsIdentity::load(dir.path()).unwrap();
    let pins = sender::tls::Pins::new();
    pins.insert(site_fingerprint, "site");
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ep = sender::socket::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
        ep.set_default_client_config(sender::tls::client_config(&me, pins).unwrap());
        let mut refused = 0;
        for _ in 0..n {
            let dial = ep.connect(addr, sender::tls::SERVER_NAME).unwrap();
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                match dial.await {
                    // TLS 1.3: the client may finish before the server refuses it.
                    Ok(c) => c.closed().await.to_string(),
                    Err(e) => e.to_string(),
                }
            })
            .await;
            if r.is_ok() {
                refused += 1;
            }
        }
        refused
    })
}

#[test]
fn a_flood_of_refused_handshakes_is_one_message_per_address_and_a_child_still_links() {
    let (cen, s01) = two_tiers();
    cen.wait_until(20, "S01's link up at CEN", || {
        !messages(&cen, 40200).is_empty()
    });
    let before = tests::messages(&cen, 40202).len();
    let refused = stranger_dials(&cen.listen_addr(), &cen.keys().0, 300);
    assert_eq!(refused, 300, "every stranger's connection was refused");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let said = messages(&cen, 40202);
    assert!(
        said.len() - before <= 2,
        "300 refusals from one address raised {} messages",
        said.len() - before
    );
    assert!(said[before]["insertion"][0]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1"));
    // The site still serves its child: a package reaches S01.
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    distribute(&cen, &pkg, "S01");
    s01.wait_until(60, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
}

#[test]
fn a_child_that_redials_while_its_old_connection_lingers_replaces_it_and_completes() {
    let (cen, mut s01) = two_tiers();
    let src = cen.tmp.path().join("src");
    tests::big_tree(&src, 48);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    distribute(&cen, &pkg, "S01");
    // Mid-transfer, the child dies without a word and comes straight back: the parent still
    // holds the old connection (it has not timed out) when the new one arrives.
    s01.wait_until(60, "S01 fetching", || {
        tests::content_row(&s01, &pkg)
            .and_then(|r| r["chunks_present"].as_u64())
            .is_some_and(|n| n > 0)
    });
    s01.kill9();
    s01.start();
    s01.wait_until(120, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    let log = cen.daemon_log();
    assert!(
        log.contains("replaces the older one"),
        "the redial did not replace the lingering connection"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A child that speaks the protocol as it likes: its own QUIC client with a certificate the
/// parent pinned for `code`.
struct Rogue {
    rt: tokio::runtime::Runtime,
    conn: quinn::Connection,
    w: sender::link::FrameWriter,
    r: sender::link::FrameReader,
    _dir: tempfile::TempDir,
}

impl Rogue {
    /// Pins a new certificate for `code` at `parent` (restarting it) and dials it.
    fn join(parent: &mut TestSite, code: &str) -> Rogue {
        let dir = tempfile::tempdir().unwrap();
        let id =
            sender::identity::create(dir.path(), schema::SiteCode::new(code).unwrap()).unwrap();
        parent.pin_listen_port();
        parent
            .cli(&[
                "child",
                "add",
                "--code",
                code,
                "--fingerprint",
                &id.fingerprint,
                "--pubkey",
                &id.public_key,
            ])
            .ok();
        parent.stop();
        parent.start();
        let me = sender::tls::TlsIdentity::load(dir.path()).unwrap();
        let pins = sender::tls::Pins::new();
        pins.insert(&parent.keys().0, "parent");
        let addr: std::net::SocketAddr = parent.listen_addr().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let (conn, w, r) = rt.block_on(async {
            let mut ep = sender::socket::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
            ep.set_default_client_config(sender::tls::client_config(&me, pins).unwrap());
            let conn = ep
                .connect(addr, sender::tls::SERVER_NAME)
                .unwrap()
                .await
                .unwrap();
            let (send, recv) = conn.open_bi().await.unwrap();
            (
                conn,
                sender::link::FrameWriter::new(send),
                sender::link::FrameReader::new(recv),
            )
        });
        Rogue {
            rt,
            conn,
            w,
            r,
            _dir: dir,
        }
    }

    fn send(&mut self, f: schema::wire::Frame) {
        self.rt.block_on(self.w.send(&f)).unwrap();
    }

    /// The next frame from the parent other than a link policy, within 10 s.
    fn recv(&mut self) -> schema::wire::Frame {
        self.rt.block_on(async {
            loop {
                let f = tokio::time::timeout(std::time::Duration::from_secs(10), self.r.recv())
                    .await
                    .expect("a frame within 10 s")
                    .expect("the link is up");
                if !matches!(f, schema::wire::Frame::LinkPolicy { .. }) {
                    return f;
                }
            }
        })
    }

    /// Opens a content stream, sends `frames` on it and reads `n` chunk reply headers:
    /// (kind, id) with kind 1 a chunk (its bytes are read and dropped) and 2 missing.
    fn ask(
        &mut self,
        stream: &mut Option<(quinn::SendStream, quinn::RecvStream)>,
        frames: &[schema::wire::Frame],
        n: usize,
    ) -> Result<Vec<(u8, String)>, String> {
        let conn = self.conn.clone();
        self.rt.block_on(async {
            if stream.is_none() {
                *stream = Some(conn.open_bi().await.map_err(|e| e.to_string())?);
            }
            let (send, recv) = stream.as_mut().unwrap();
            for f in frames {
                let mut buf = Vec::new();
                schema::wire::encode_frame(f, &mut buf).unwrap();
                send.write_all(&buf).await.map_err(|e| e.to_string())?;
            }
            let mut out = Vec::new();
            for _ in 0..n {
                let mut h = [0u8; schema::wire::CHUNK_HEADER_LEN];
                tokio::time::timeout(std::time::Duration::from_secs(10), recv.read_exact(&mut h))
                    .await
                    .map_err(|_| "no answer within 10 s".to_string())?
                    .map_err(|e| e.to_string())?;
                let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
                if h[0] == 1 {
                    let mut body = vec![0u8; len];
                    recv.read_exact(&mut body)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                out.push((h[0], hex_of(&h[8..])));
            }
            Ok(out)
        })
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_rogue_child_is_believed_only_for_itself_and_bounded() {
    use schema::report::{Report, ReportEnvelope, StatusMessage};
    use schema::wire::Frame;
    let mut cen = TestSite::init("CEN");
    cen.start();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    let chunk = cen.store_listing()[0]
        .0
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut rogue = Rogue::join(&mut cen, "S01");
    let s01 = schema::SiteCode::new("S01").unwrap();

    // A position past the end of the parent's log is taken as the end, not overflowed.
    rogue.send(Frame::Hello {
        site: s01,
        config_applied: u64::MAX,
        reports_acked: 0,
    });
    rogue.send(Frame::EventsAck { upto: u64::MAX });

    // Reports in the name of the parent, of a stranger, and a claim that the parent is its
    // child: refused and counted; its own report is stored.
    let now = chrono::Utc::now();
    // Signed with the rogue's own (pinned, delegated) key: what is refused here is refused
    // for its origin, not its signature.
    let key = sender::identity::load_signing_key(rogue._dir.path()).unwrap();
    let report_n = |origin: &str, seq: u64, body: Report| {
        ReportEnvelope::signed(schema::SiteCode::new(origin).unwrap(), seq, now, body, &key)
            .unwrap()
    };
    let report = |origin: &str, body: Report| report_n(origin, 1, body);
    let status = |site: &str| {
        Report::Status(StatusMessage::new(
            schema::status::SITE_SERVER_STARTED,
            schema::SiteCode::new(site).unwrap(),
            "rogue",
            now,
            vec![],
            vec![],
        ))
    };
    rogue.send(Frame::Reports {
        first: 1,
        reports: vec![
            report("CEN", status("CEN")),
            report("X77", status("X77")),
            report(
                "S01",
                Report::SiteData(schema::report::SiteData::Children(vec![
                    schema::SiteCode::new("CEN").unwrap(),
                ])),
            ),
            report_n("S01", 2, status("S01")),
        ],
    });
    assert_eq!(rogue.recv(), Frame::ReportsAck { upto: 4 });
    let refused = messages(&cen, 40208);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["insertion"][1], "3");
    let started = messages(&cen, schema::status::SITE_SERVER_STARTED);
    assert!(
        started
            .iter()
            .all(|m| m["machine"] != "rogue" || m["site"] == "S01"),
        "{started:?}"
    );
    assert!(started.iter().any(|m| m["site"] == "S01"));
    // CEN's own next reports still go in (its key 1 was not taken).
    publish(&cen, &src.join("docs"), &["--name", "Docs"]);
    assert!(!messages(&cen, schema::status::PACKAGE_PUBLISHED).is_empty());

    // Content: a chunk never announced is missing (and not fetched from anywhere); announced
    // for a version CEN knows, it is sent; a Need for a package CEN does not know is ignored.
    let id: schema::ChunkId = chunk.parse().unwrap();
    let mut stream = None;
    let got = rogue
        .ask(&mut stream, &[Frame::ChunkRequest { ids: vec![id] }], 1)
        .unwrap();
    assert_eq!(got, [(2, chunk.clone())], "unannounced: missing");
    let pkg_id: schema::PackageId = pkg.parse().unwrap();
    let got = rogue
        .ask(
            &mut stream,
            &[
                Frame::Need {
                    package: "CEN99999".parse().unwrap(),
                    version: 1,
                    ids: vec![id],
                },
                Frame::ChunkRequest { ids: vec![id] },
            ],
            1,
        )
        .unwrap();
    assert_eq!(got, [(2, chunk.clone())], "a need for an unknown package");
    let got = rogue
        .ask(
            &mut stream,
            &[
                Frame::Need {
                    package: pkg_id,
                    version: 1,
                    ids: vec![id],
                },
                Frame::ChunkRequest { ids: vec![id] },
            ],
            1,
        )
        .unwrap();
    assert_eq!(got, [(1, chunk.clone())], "announced: sent");
    // A second content stream on the same connection is stopped.
    let mut second = None;
    let r = rogue.ask(&mut second, &[Frame::ChunkRequest { ids: vec![id] }], 1);
    assert!(r.is_err(), "{r:?}");
    // The link is still up and CEN did not fall over.
    assert!(rogue.conn.close_reason().is_none());
    assert!(!cen.daemon_log().contains("panicked"));
}
