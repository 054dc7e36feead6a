//! The sender on the wire, between real processes on 127.0.0.1: rate limits measured at the
//! receiver, a window that holds a low job while a high one passes, preemption of a low
//! transfer by a high package. These take tens of seconds (they wait on real rates); they are
//! the slow ones of the suite and run in CI all the same.

use serde_json::Value;
use std::time::{Duration, Instant};
use tests::{
    big_tree, complete, content_row, distribute, link_child, link_parent, messages, publish,
    sample_tree, TestSite,
};

/// CEN -> P01 with `schedule` and `rate` set on CEN's link to P01 before it starts.
fn two_sites(schedule: &str, rate: &str) -> (TestSite, TestSite) {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    link_child(&cen, &p01);
    let mut args = vec!["child", "set", "--code", "P01"];
    if !schedule.is_empty() {
        args.extend(["--schedule", schedule]);
    }
    if !rate.is_empty() {
        args.extend(["--rate", rate]);
    }
    cen.cli(&args).ok();
    cen.start();
    link_parent(&p01, &cen);
    p01.start();
    (cen, p01)
}

fn present(site: &TestSite, pkg: &str) -> (u64, u64) {
    content_row(site, pkg).map_or((0, 0), |r| {
        (
            r["bytes_present"].as_u64().unwrap(),
            r["bytes"].as_u64().unwrap(),
        )
    })
}

fn senders(site: &TestSite) -> Value {
    site.cli(&["status", "senders", "--json"]).json()
}

#[test]
fn a_4_mib_s_limit_delivers_64_mib_in_16_s() {
    let (cen, p01) = two_sites("", "* 4MiB/s");
    let src = cen.tmp.path().join("big");
    big_tree(&src, 64);
    let pkg = publish(&cen, &src, &["--name", "Big"]);
    distribute(&cen, &pkg, "P01");
    // Measured at the receiver: from the first bytes stored to the last.
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (done_at, total) = loop {
        assert!(Instant::now() < deadline, "64 MiB did not arrive in 60 s");
        let (have, all) = present(&p01, &pkg);
        let now = Instant::now();
        if have > 0 && first.is_none() {
            first = Some((now, have));
        }
        if all > 0 && have == all {
            break (now, all);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (t0, b0) = first.expect("seen before complete");
    let secs = (done_at - t0).as_secs_f64();
    let rate = (total - b0) as f64 / secs / (1 << 20) as f64;
    eprintln!("64 MiB at 4 MiB/s: {secs:.2} s from the first bytes, {rate:.2} MiB/s");
    assert!(
        (3.6..=4.4).contains(&rate),
        "4 MiB/s limit: received {rate:.2} MiB/s ({secs:.2} s)"
    );
    // The sender said so: 3531 at the start and every 10%, 3533 at the end.
    let sending = messages(&cen, 3531);
    assert!(sending.len() >= 10, "3531 at least every 10%: {sending:?}");
    assert_eq!(messages(&cen, 3533).len(), 1);
    let v = senders(&cen);
    assert_eq!(
        v["links"][0]["rate"],
        serde_json::json!({ "limit": 4 << 20 })
    );
}

#[test]
fn a_window_holds_a_low_job_while_a_high_job_passes_and_a_live_edit_opens_it() {
    let (cen, p01) = two_sites("* high", "");
    let low_src = cen.tmp.path().join("low");
    sample_tree(&low_src);
    let high_src = cen.tmp.path().join("high");
    big_tree(&high_src, 16);
    let low = publish(&cen, &low_src, &["--name", "Low", "--priority", "low"]);
    distribute(&cen, &low, "P01");
    let high = publish(&cen, &high_src, &["--name", "High", "--priority", "high"]);
    distribute(&cen, &high, "P01");
    p01.wait_until(30, "the high package at P01", || complete(&p01, &high, 1));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !complete(&p01, &low, 1),
        "the low package passed a high-only window"
    );
    let v = senders(&cen);
    let link = &v["links"][0];
    assert_eq!(link["window"], "high");
    assert!(
        link["queue"]["low"]["jobs"].as_u64().unwrap() >= 1,
        "the low job waits, it is not dropped: {link}"
    );
    // The window holds P01's reports too: they go up at medium (no error among them), and
    // the parent told P01 the link's schedule.
    assert!(
        messages(&cen, 40210).is_empty(),
        "P01's info reports passed a high-only window"
    );
    let up = senders(&p01);
    assert_eq!(up["links"][0]["dest"], "CEN");
    assert_eq!(up["links"][0]["window"], "high");
    // Opened while the daemon runs: the low package follows, no restart, and the reports.
    cen.cli(&["child", "set", "--code", "P01", "--schedule", "* all"])
        .ok();
    p01.wait_until(30, "the low package after the window opened", || {
        complete(&p01, &low, 1)
    });
    cen.wait_until(30, "P01's complete messages at CEN", || {
        messages(&cen, 40210).len() == 2
    });
}

#[test]
fn a_high_package_preempts_a_low_transfer_at_the_next_chunk() {
    let (cen, p01) = two_sites("", "* 4MiB/s");
    let low_src = cen.tmp.path().join("low");
    big_tree(&low_src, 256);
    let high_src = cen.tmp.path().join("high");
    big_tree(&high_src, 16);
    let low = publish(&cen, &low_src, &["--name", "Low", "--priority", "low"]);
    distribute(&cen, &low, "P01");
    p01.wait_until(30, "the low transfer under way", || {
        present(&p01, &low).0 > 0
    });
    let high = publish(&cen, &high_src, &["--name", "High", "--priority", "high"]);
    let t0 = Instant::now();
    distribute(&cen, &high, "P01");
    let mut first = None;
    p01.wait_until(30, "the high package at P01", || {
        let (have, all) = present(&p01, &high);
        if have > 0 && first.is_none() {
            first = Some(t0.elapsed());
        }
        all > 0 && have == all
    });
    let first = first.expect("first chunk seen");
    eprintln!(
        "first high chunk {:.0} ms after distribute",
        first.as_secs_f64() * 1000.0
    );
    assert!(
        first < Duration::from_millis(1000),
        "the first chunk of the high package arrived {first:?} after it was targeted"
    );
    let (have, all) = present(&p01, &low);
    assert!(
        have < all,
        "the low package finished first ({have} of {all})"
    );
    // The low one resumes after.
    let v = senders(&cen);
    assert_eq!(
        v["links"][0]["current"].as_str().map(|c| c.contains(&low)),
        Some(true)
    );
}

#[test]
fn a_boost_lets_a_package_through_a_closed_window() {
    let (cen, p01) = two_sites("* closed", "");
    let src = cen.tmp.path().join("urgent");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Urgent", "--priority", "low"]);
    distribute(&cen, &pkg, "P01");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        content_row(&p01, &pkg).is_none(),
        "a closed window let events through"
    );
    cen.cli(&["sender", "boost", "--package", &pkg, "--for", "1h"])
        .ok();
    // The boost travels with the events it lifts, and the content follows, window closed.
    p01.wait_until(30, "the boosted package at P01", || complete(&p01, &pkg, 1));
    let v = senders(&cen);
    assert_eq!(v["boosts"][0]["package"], pkg.as_str());
    assert_eq!(v["links"][0]["window"], "closed");
    assert_eq!(messages(&cen, 40130).len(), 1);
    // Ended: the next package waits again.
    cen.cli(&["sender", "boost", "--package", &pkg, "--off"])
        .ok();
    let src2 = cen.tmp.path().join("later");
    big_tree(&src2, 16);
    let pkg2 = publish(&cen, &src2, &["--name", "Later"]);
    distribute(&cen, &pkg2, "P01");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !complete(&p01, &pkg2, 1),
        "a package passed a closed window unboosted"
    );
}
