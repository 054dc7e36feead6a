//! Retention of the report log with real processes on 127.0.0.1: a site removes only the
//! reports its parent has acknowledged, never one it has not passed on, and the top still
//! holds what was removed below.

use std::time::Duration;
use tests::{messages, three_tiers_with, TestSite};

/// S01 keeps at most 3 reports and runs retention every second.
fn keep_three(s: &TestSite) {
    let path = s.data().join("site.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{toml}\n[reports]\nmax = 3\nevery = \"1s\"\n"),
    )
    .unwrap();
}

/// S01's report log: (first position held, the log's length, the parent's acknowledgement).
fn report_log(s01: &TestSite) -> (u64, u64, u64) {
    let first = s01
        .cli(&[
            "status", "messages", "--json", "--from", "1", "--limit", "1",
        ])
        .json();
    let first = first[0]["position"].as_u64().unwrap_or(0);
    let sites = s01.cli(&["status", "sites", "--json"]).json();
    let len = sites["site"]["logs"]["reports"].as_u64().unwrap();
    let acked = sites["links"][0]["reports_cursor"].as_u64().unwrap();
    (first, len, acked)
}

#[test]
fn retention_removes_only_what_the_parent_has_acknowledged() {
    let (cen, mut p01, mut s01) = three_tiers_with(|_, _, s01| keep_three(s01));
    // Two restarts: two more 40002 and 40001 each, so there is something to remove.
    for _ in 0..2 {
        s01.stop();
        s01.start();
    }
    // Reports up to the top, then the acknowledged ones go.
    s01.wait_until(30, "S01's log pruned to its newest 3", || {
        let (first, len, acked) = report_log(&s01);
        acked == len && len >= 5 && first > 1 && len - first < 3
    });
    assert!(
        messages(&cen, 40001).iter().any(|m| m["site"] == "S01"),
        "the top still has what S01 removed"
    );

    // The parent away: S01 restarts twice (four more reports); none is removed, however
    // many retention runs pass.
    p01.pin_listen_port();
    p01.stop();
    let (_, _, acked) = report_log(&s01);
    for _ in 0..2 {
        s01.stop();
        s01.start();
    }
    std::thread::sleep(Duration::from_secs(3));
    let (first, len, acked_now) = report_log(&s01);
    assert_eq!(acked_now, acked, "nothing acknowledged while P01 is down");
    assert!(len >= acked + 4, "{len} {acked}");
    let held = s01
        .cli(&[
            "status",
            "messages",
            "--json",
            "--from",
            &(acked + 1).to_string(),
        ])
        .json();
    let positions: Vec<u64> = held
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["position"].as_u64())
        .collect();
    assert!(
        first <= acked + 1,
        "an unacknowledged report was removed: first {first}, acked {acked}"
    );
    // Every status message after the acknowledgement is still there (site data reports,
    // which are not messages, fill the gaps).
    assert!(positions.len() as u64 >= 4 && positions.iter().all(|p| *p > acked));

    // The parent back: they go up, and then they go.
    p01.start();
    s01.wait_until(60, "S01's new reports acknowledged and pruned", || {
        let (first, len, acked) = report_log(&s01);
        acked == len && len - first < 3
    });
}
