//! Trust from the top, end to end: a middle site built with the test-only `forge` hook plays
//! a compromised P01 (it signs a CEN-origin advertisement with its own key, signs with a key
//! nobody delegated, withholds one of CEN's events, forges S01's report, writes a bundle with
//! a forged event), and every site below or above it refuses, raising a message and changing
//! nothing. Then the operator's side: the freeze alarm on an expired checkpoint and its
//! all-clear, key rotation without a restart, and a revocation.

use serde_json::Value;
use tests::{
    advertise, link_child, link_parent, log_keys, messages, publish, sample_tree, three_tiers,
    TestSite,
};

/// The config log and content store of `s`: what a refusal must not change.
fn snapshot(s: &TestSite) -> (String, Vec<(std::path::PathBuf, u64)>) {
    (s.cli(&["log", "--json"]).ok(), s.store_listing())
}

/// The test-only hook: `site` appends a forgery to its own logs, as a compromised site would.
fn forge(site: &TestSite, what: &str, origin: &str, key: &str) -> String {
    let (addr, token) = site.admin();
    let body = serde_json::json!({"what": what, "origin": origin, "key": key}).to_string();
    let (code, out) = tests::http(&addr, "POST", "/v1/test/forge", Some(&token), &body);
    assert_eq!(code, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// CEN -> P01 -> S01 with a package and an advertisement of CEN's everywhere.
fn tree_with_an_advert() -> (TestSite, TestSite, TestSite, String) {
    let (cen, p01, s01) = three_tiers();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    advertise(&cen, &pkg, "Install").ok();
    let want = log_keys(&cen);
    s01.wait_until(30, "CEN's log at S01", || {
        let at = log_keys(&s01);
        want.iter().all(|k| at.contains(k))
    });
    (cen, p01, s01, pkg)
}

/// Waits for a 40220 at `s` that names `id` and `why`; returns its text.
fn refusal_at(s: &TestSite, id: &str, why: &str) -> String {
    let mut text = String::new();
    s.wait_until(30, &format!("the refusal of {id} at {}", s.code), || {
        messages(s, 40220).iter().any(|m| {
            text = m["text"].as_str().unwrap_or_default().to_string();
            text.contains(id) && text.contains(why)
        })
    });
    text
}

#[test]
fn a_middle_site_cannot_sign_for_the_top() {
    let (_cen, p01, s01, _pkg) = tree_with_an_advert();
    let before = snapshot(&s01);
    // P01 signs a CEN-origin advertisement (a command line for every machine below it).
    let id = forge(&p01, "event", "CEN", "own");
    let text = refusal_at(&s01, &id, "does not verify with CEN's delegated key");
    assert!(text.contains("nothing applied"), "{text}");
    // S01 stays where it was, says so on the link, and asks again (and refuses again).
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(snapshot(&s01), before);
    let sites = s01.cli(&["status", "sites", "--json"]).json()["links"].clone();
    let err = sites[0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains(&id), "{sites}");
    assert_eq!(
        messages(&s01, 40220).len(),
        1,
        "one message, not one per retry"
    );
}

#[test]
fn an_event_signed_by_an_undelegated_key_is_refused() {
    let (_cen, p01, s01, _pkg) = tree_with_an_advert();
    let before = snapshot(&s01);
    let id = forge(&p01, "event", "X99", "fresh");
    refusal_at(&s01, &id, "no key is delegated to X99");
    assert_eq!(snapshot(&s01), before);
    // And under P01's own name with a key nobody delegated to it.
    let (_cen, p01, s01, _pkg) = tree_with_an_advert();
    let before = snapshot(&s01);
    let id = forge(&p01, "event", "P01", "fresh");
    refusal_at(&s01, &id, "does not verify with P01's delegated key");
    assert_eq!(snapshot(&s01), before);
}

#[test]
fn a_withheld_event_is_refused_with_the_gap_named() {
    let (cen, mut p01, s01, pkg) = tree_with_an_advert();
    // P01 is down while CEN decides two more things; it comes back (on the same port, where
    // S01 dials it) withholding the first.
    p01.pin_listen_port();
    p01.stop();
    advertise(&cen, &pkg, "Repair").ok();
    advertise(&cen, &pkg, "Remove").ok();
    let cen_log = log_keys(&cen);
    let n = cen_log
        .iter()
        .filter(|(o, _)| o == "CEN")
        .map(|(_, s)| *s)
        .max()
        .unwrap();
    let before = snapshot(&s01);
    p01.start_with_env(&[("SITEREP_FORGE_WITHHOLD", &format!("CEN:{}", n - 1))]);
    refusal_at(
        &s01,
        &format!("CEN:{n}"),
        &format!("CEN:{n} arrived but CEN:{} was never applied here", n - 1),
    );
    assert_eq!(snapshot(&s01), before);
    assert!(!log_keys(&s01).contains(&("CEN".into(), n)));
}

#[test]
fn a_bundle_carrying_a_forged_event_is_refused() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    let mut s02 = TestSite::init("S02");
    link_child(&cen, &p01);
    cen.start();
    link_parent(&p01, &cen);
    tests::link_courier(&p01, &s02);
    p01.start();
    s02.start();
    let work = cen.tmp.path().to_path_buf();
    let src = work.join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    advertise(&cen, &pkg, "Install").ok();
    let want = log_keys(&cen);
    p01.wait_until(30, "CEN's log at P01", || {
        let at = log_keys(&p01);
        want.iter().all(|k| at.contains(k))
    });
    let export = |name: &str| {
        let b = work.join(name);
        p01.cli(&[
            "courier",
            "export",
            "--to",
            "S02",
            "--out",
            b.to_str().unwrap(),
        ])
        .ok();
        b
    };
    let b1 = export("b1.bundle");
    s02.cli(&["courier", "import", b1.to_str().unwrap()]).ok();
    let before = snapshot(&s02);
    // P01 forges CEN's advertisement and writes it into a bundle it signs as itself: the
    // bundle's own signature is good, the event's is not.
    let id = forge(&p01, "event", "CEN", "own");
    let b2 = export("b2.bundle");
    let r = s02.cli(&["courier", "import", b2.to_str().unwrap()]);
    r.fails(1, &[&id, "does not verify"]);
    assert_eq!(snapshot(&s02), before);
    assert_eq!(messages(&s02, 40220).len(), 1);
}

#[test]
fn a_forged_report_is_refused_at_the_top() {
    let (cen, p01, s01, _pkg) = tree_with_an_advert();
    // S01's own reports reach CEN, signed by S01 and verified there.
    cen.wait_until(30, "S01's start message at CEN", || {
        messages(&cen, schema::status::SITE_SERVER_STARTED)
            .iter()
            .any(|m| m["origin"] == "S01")
    });
    let id = forge(&p01, "report", "S01", "own");
    cen.wait_until(30, "the forged report refused at CEN", || {
        messages(&cen, 40208).iter().any(|m| {
            let t = m["text"].as_str().unwrap_or_default();
            t.contains(&format!("report {id}")) && t.contains("does not verify")
        })
    });
    let seq: u64 = id.split(':').nth(1).unwrap().parse().unwrap();
    let at_cen = messages(&cen, schema::status::SITE_SERVER_STARTED);
    assert!(
        !at_cen
            .iter()
            .any(|m| m["origin"] == "S01" && m["origin_seq"] == seq),
        "{at_cen:?}"
    );
    // S01 goes on reporting: its next messages still arrive.
    drop(s01);
}

#[test]
fn an_expired_checkpoint_raises_the_freeze_alarm_and_a_new_one_clears_it() {
    let (cen, _p01, s01, _pkg) = tree_with_an_advert();
    let view = s01.cli(&["status", "sync"]).ok();
    assert!(view.contains("the view from the top is current"), "{view}");
    // A checkpoint that expires at once: S01 says its view is stale, and keeps working.
    cen.cli(&["key", "checkpoint", "--expiry", "2s"]).ok();
    s01.wait_until(30, "the freeze alarm at S01", || {
        !messages(&s01, 40221).is_empty()
    });
    let view = s01.cli(&["status", "sync"]).ok();
    assert!(
        view.contains("the view from the top is 0 hours old"),
        "{view}"
    );
    let sites = s01.cli(&["status", "sites"]).ok();
    assert!(sites.contains("the view from the top is"), "{sites}");
    assert_eq!(messages(&s01, 40221).len(), 1, "said once");
    // A current one clears it.
    cen.cli(&["key", "checkpoint"]).ok();
    s01.wait_until(30, "the all-clear at S01", || {
        !messages(&s01, 40222).is_empty()
    });
    let view = s01.cli(&["status", "sync"]).ok();
    assert!(view.contains("the view from the top is current"), "{view}");
}

#[test]
fn rotation_keeps_the_tree_working_without_a_restart() {
    let (cen, p01, s01, pkg) = tree_with_an_advert();
    let key_at = |s: &TestSite, site: &str| -> Vec<Value> {
        let v = s.cli(&["key", "show", "--json"]).json();
        v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["site"] == site)
            .map(|k| k["keys"].as_array().unwrap().clone())
            .unwrap_or_default()
    };
    // P01 rotates: CEN delegates the new key; S01 learns it; P01 signs with it.
    let out = p01.cli(&["key", "rotate", "--json"]).json();
    let new = out["pending_key"][0].as_str().unwrap().to_string();
    s01.wait_until(30, "P01's new key at S01", || {
        key_at(&s01, "P01").iter().any(|k| k[1] == new)
    });
    p01.wait_until(30, "P01 signing with its new key", || {
        p01.cli(&["key", "show", "--json"]).json()["origin_key"] == new
    });
    advertise(&p01, &pkg, "Local").ok();
    // CEN rotates its own key and goes on deciding.
    cen.cli(&["key", "rotate"]).ok();
    advertise(&cen, &pkg, "After").ok();
    // S01 rotates too; its reports still reach CEN.
    s01.cli(&["key", "rotate"]).ok();
    let want = log_keys(&p01);
    s01.wait_until(30, "P01's and CEN's new events at S01", || {
        let at = log_keys(&s01);
        want.iter().all(|k| at.contains(k))
    });
    assert!(key_at(&s01, "CEN").len() >= 2);
    s01.wait_until(30, "S01's new key delegated", || {
        s01.cli(&["key", "show", "--json"]).json()["pending_key"].is_null()
    });
    s01.cli(&["dp", "group", "create", "AFTER"]).ok();
    cen.wait_until(30, "S01's message after its rotation at CEN", || {
        messages(&cen, schema::status::DP_GROUP_CREATED)
            .iter()
            .any(|m| m["origin"] == "S01")
    });
    let refused = messages(&s01, 40220);
    assert!(refused.is_empty(), "{refused:?}");
    let refused = messages(&cen, 40208);
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn a_revoked_sites_later_events_are_refused_below_it() {
    let (cen, p01, s01, pkg) = tree_with_an_advert();
    cen.cli(&["key", "revoke", "--site", "P01"]).ok();
    p01.wait_until(30, "the revocation at P01", || {
        p01.cli(&["key", "show", "--json"]).json()["sites"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["site"] == "P01" && k["revoked_by"] == "CEN")
    });
    // P01 itself originates nothing more ...
    advertise(&p01, &pkg, "Late").fails(2, &["not delegated"]);
    // ... and a compromised P01 that signs anyway is refused below it.
    let want = log_keys(&p01);
    s01.wait_until(30, "the revocation at S01", || {
        let at = log_keys(&s01);
        want.iter().all(|k| at.contains(k))
    });
    let before = snapshot(&s01);
    let id = forge(&p01, "event", "P01", "own");
    refusal_at(&s01, &id, "P01's key was revoked by CEN");
    assert_eq!(snapshot(&s01), before);
}
