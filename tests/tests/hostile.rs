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
