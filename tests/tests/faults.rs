//! The link under network faults, end to end: real `site-server` processes on 127.0.0.1 with
//! the tests crate's fault-injecting UDP proxy between parent and child (this kernel has no
//! netem). A package completes through loss and through delay; a partition in the middle of
//! a transfer shows the link degraded, then active, and the transfer resumes where it was.

use std::time::{Duration, Instant};
use tests::proxy::{Faults, UdpProxy};
use tests::{complete, content_row, distribute, link_child, publish, TestSite};

/// CEN and S01 running, S01 dialing CEN through a proxy with `faults`.
fn through_proxy(faults: Faults) -> (TestSite, TestSite, UdpProxy) {
    let mut cen = TestSite::init("CEN");
    let mut s01 = TestSite::init("S01");
    link_child(&cen, &s01);
    cen.start();
    let proxy = UdpProxy::start(cen.listen_addr().parse().unwrap(), faults).unwrap();
    let (fp, key) = cen.keys();
    s01.cli(&[
        "parent",
        "set",
        "--code",
        "CEN",
        "--addr",
        &proxy.addr().to_string(),
        "--fingerprint",
        &fp,
        "--pubkey",
        &key,
        "--root-key",
        &key,
    ])
    .ok();
    s01.start();
    (cen, s01, proxy)
}

fn chunks_present(site: &TestSite, pkg: &str) -> u64 {
    content_row(site, pkg)
        .and_then(|r| r["chunks_present"].as_u64())
        .unwrap_or(0)
}

/// S01's view of its link to CEN (`status sites`): its state.
fn parent_link_state(s01: &TestSite) -> String {
    let rows = s01.cli(&["status", "sites", "--json"]).json()["links"].clone();
    rows.as_array()
        .and_then(|r| r.iter().find(|x| x["role"] == "parent"))
        .and_then(|x| x["state"].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn a_64_mib_package_completes_at_5_percent_loss_and_at_100_ms_rtt() {
    let (cen, s01, proxy) = through_proxy(Faults {
        loss: 0.05,
        ..Faults::default()
    });
    let lossy = cen.tmp.path().join("lossy");
    tests::big_tree(&lossy, 64);
    let pkg = publish(&cen, &lossy, &["--name", "Lossy"]);
    let t = Instant::now();
    distribute(&cen, &pkg, "S01");
    s01.wait_until(240, "the package complete at S01 through 5% loss", || {
        complete(&s01, &pkg, 1)
    });
    let at_loss = t.elapsed();
    let dropped = proxy.stats().dropped;
    assert!(dropped > 1000, "the proxy dropped only {dropped} datagrams");

    // No jitter: independent per-datagram jitter reorders back-to-back datagrams, which
    // QUIC rightly takes for loss (netem does the same); the loss case is the one above.
    proxy.set(Faults {
        delay: Duration::from_millis(50),
        ..Faults::default()
    });
    let far = cen.tmp.path().join("far");
    tests::big_tree(&far, 64);
    let pkg = publish(&cen, &far, &["--name", "Far"]);
    let t = Instant::now();
    distribute(&cen, &pkg, "S01");
    s01.wait_until(240, "the package complete at S01 at 100 ms RTT", || {
        complete(&s01, &pkg, 1)
    });
    eprintln!(
        "64 MiB at 5% loss: {at_loss:?} ({dropped} datagrams dropped); at 100 ms RTT: {:?}",
        t.elapsed()
    );
}

#[test]
fn a_30_s_partition_mid_transfer_degrades_the_link_and_the_transfer_resumes() {
    // A little delay, so that 64 MiB takes long enough to cut in the middle.
    let slow = Faults {
        delay: Duration::from_millis(20),
        ..Faults::default()
    };
    let (cen, s01, proxy) = through_proxy(slow);
    let src = cen.tmp.path().join("src");
    tests::big_tree(&src, 64);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    distribute(&cen, &pkg, "S01");
    s01.wait_until(60, "the version known at S01", || {
        content_row(&s01, &pkg).is_some()
    });
    let total = content_row(&s01, &pkg).unwrap()["chunks"].as_u64().unwrap();
    s01.wait_until(120, "a quarter of the chunks at S01", || {
        chunks_present(&s01, &pkg) * 4 >= total
    });
    proxy.set(Faults {
        blackhole: true,
        ..slow
    });
    let cut = Instant::now();
    let before = chunks_present(&s01, &pkg);
    assert!(before < total, "the transfer finished before the cut");
    s01.wait_until(30, "the link shown degraded during the partition", || {
        parent_link_state(&s01) == "degraded"
    });
    std::thread::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed()));
    let held = chunks_present(&s01, &pkg);
    assert!(held >= before, "chunks were lost in the partition");
    let down_before = proxy.stats().bytes_down;
    proxy.set(slow);
    s01.wait_until(120, "the link active again", || {
        parent_link_state(&s01) == "active"
    });
    s01.wait_until(180, "the package complete after the partition", || {
        complete(&s01, &pkg, 1)
    });
    // Resumed, not started over: what crossed after the partition is about what was left.
    let after = proxy.stats().bytes_down - down_before;
    let left = (64u64 << 20) * (total - held) / total;
    assert!(
        after < left + left / 4 + (2 << 20),
        "{after} bytes crossed after the partition for about {left} left"
    );
}

#[test]
fn a_site_whose_disk_fills_stops_with_one_message_keeps_nothing_half_written_and_resumes() {
    let mut cen = TestSite::init("CEN");
    let mut s01 = TestSite::init("S01");
    link_child(&cen, &s01);
    cen.start();
    tests::link_parent(&s01, &cen);
    let flag = s01.tmp.path().join("disk-full");
    std::fs::write(&flag, b"").unwrap();
    s01.start_with_env(&[("SITEREP_FAULT_DISK_FULL", flag.to_str().unwrap())]);
    let src = cen.tmp.path().join("src");
    tests::big_tree(&src, 32);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    distribute(&cen, &pkg, "S01");
    s01.wait_until(30, "40212 (disk full) at S01", || {
        !tests::messages(&s01, 40212).is_empty()
    });
    // Past one retry (every 10 s): still one message, nothing kept, not even half-written.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        tests::messages(&s01, 40212).len(),
        1,
        "one message per episode"
    );
    let files = s01.store_listing();
    assert!(files.is_empty(), "stored while the disk is full: {files:?}");
    assert!(chunks_present(&s01, &pkg) == 0);
    // Space comes back: the transfer resumes by itself.
    std::fs::remove_file(&flag).unwrap();
    s01.wait_until(60, "the package complete once space is back", || {
        complete(&s01, &pkg, 1)
    });
    assert_eq!(tests::messages(&s01, 40213).len(), 1);
    assert_eq!(tests::messages(&s01, 40212).len(), 1);
}
