//! Which events and reports this site believes (sans-IO): the origin's signature under the
//! key the tree delegated to it, the origin's authority over what the event changes, and
//! every origin's numbers applied without a gap.
//!
//! The rules, each a refusal that names the origin and the reason:
//! - **Signature.** An event verifies under the key its origin holds for its number
//!   ([`KeyRing::key_for`]); a report under any key its origin holds that is not revoked.
//! - **No withholding, no rollback.** An origin's number `n` applies only after `n - 1`;
//!   a number already applied is skipped by the log's dedupe key, never applied again.
//! - **Authority is the subtree.** An event may change only what its origin owns or what lies
//!   in its subtree: a package or advertisement is changed only by the site that created it
//!   or a site above that one; a target, a DP of a group, a delegation or a revocation names
//!   only sites below the origin (as far as this site's ring knows the tree); catalog deltas
//!   and checkpoints come from the top only.
//! - **Genesis.** The first event of the tree is the top's delegation of the trust root key
//!   to itself; nothing verifies before it.

use schema::event::{ConfigEvent, EventEnvelope};
use schema::report::{KeyReport, Report, ReportEnvelope};
use schema::trust::{KeyRing, PublicKey};

/// Checks `env` against `ring` and, if it is believed, applies what it changes to the ring
/// (a delegation, a revocation). `prev_applied`: whether the origin's previous number has
/// been applied at this site. `Err` says why not, naming the origin.
pub fn admit_event(
    ring: &mut KeyRing,
    env: &EventEnvelope,
    prev_applied: bool,
) -> Result<(), String> {
    check_order(env, prev_applied)?;
    verify_event(ring, env)?;
    apply_authorized(ring, env)
}

/// As [`admit_event`] for an event whose signature was already verified under `verified`
/// (by a batch check run beside the transaction): if that is the key the ring holds for it
/// now, the signature is not checked again.
pub fn admit_event_verified(
    ring: &mut KeyRing,
    env: &EventEnvelope,
    prev_applied: bool,
    verified: Option<PublicKey>,
) -> Result<(), String> {
    check_order(env, prev_applied)?;
    let now = ring.key_for(env.origin, env.origin_seq).ok();
    if verified.is_none() || verified != now {
        verify_event(ring, env)?;
    }
    apply_authorized(ring, env)
}

/// The key each event of a batch will be checked against, as the ring will stand when its
/// turn comes (a delegation or revocation earlier in the batch counts); `None` where there
/// is none (the check will refuse it).
pub fn expected_keys(ring: &KeyRing, events: &[EventEnvelope]) -> Vec<Option<PublicKey>> {
    let mut r = ring.clone();
    events
        .iter()
        .map(|env| {
            let k = r.key_for(env.origin, env.origin_seq).ok();
            if matches!(
                env.body,
                ConfigEvent::SiteKeyDelegated(_) | ConfigEvent::SiteKeyRevoked { .. }
            ) {
                let _ = apply_authorized(&mut r, env);
            }
            k
        })
        .collect()
}

/// Which events verify under their `expected` key: all at once when they all do (one batch
/// verification), else one by one. `Some(key)` for each that does.
pub fn verify_expected(
    events: &[EventEnvelope],
    expected: &[Option<PublicKey>],
) -> Vec<Option<PublicKey>> {
    let bytes: Vec<Option<Vec<u8>>> = events.iter().map(|e| e.signed_bytes().ok()).collect();
    let items: Vec<(PublicKey, &[u8], schema::trust::Signature)> = events
        .iter()
        .zip(expected)
        .zip(&bytes)
        .filter_map(|((e, k), b)| Some(((*k)?, b.as_deref()?, e.sig)))
        .collect();
    if items.len() == events.len() && schema::trust::verify_all(&items) {
        return expected.to_vec();
    }
    events
        .iter()
        .zip(expected)
        .zip(&bytes)
        .map(|((e, k), b)| {
            let (k, b) = ((*k)?, b.as_deref()?);
            schema::trust::verifies(&k, b, &e.sig).then_some(k)
        })
        .collect()
}

/// The contiguity rule: `env`'s number follows one already applied.
pub fn check_order(env: &EventEnvelope, prev_applied: bool) -> Result<(), String> {
    if env.origin_seq > 1 && !prev_applied {
        return Err(format!(
            "{o}:{n} arrived but {o}:{p} was never applied here: an event of {o} was withheld on the way",
            o = env.origin,
            n = env.origin_seq,
            p = env.origin_seq - 1
        ));
    }
    Ok(())
}

/// The signature rule for an event.
pub fn verify_event(ring: &KeyRing, env: &EventEnvelope) -> Result<(), String> {
    let bytes = env.signed_bytes().map_err(|e| e.to_string())?;
    ring.verify(env.origin, env.origin_seq, &bytes, &env.sig)
        .map_err(|e| match ring.root() {
            // Before the genesis the only key is this site's trust root.
            None => format!(
                "{}:{} is not signed by this site's trust root {}..: root_key in site.toml must be the top's key (its `site-server identity` prints it)",
                env.origin,
                env.origin_seq,
                &ring.root_key().to_string()[..16]
            ),
            Some(_) => e.to_string(),
        })
}

/// The authority rules for an event whose signature is verified, then its change to the ring
/// ([`schema::authority::authorize`]: agents apply the same rules to their policy).
pub fn apply_authorized(ring: &mut KeyRing, env: &EventEnvelope) -> Result<(), String> {
    schema::authority::authorize(ring, env)
}

/// Checks a report's signature against `ring` (the keys of this site's subtree) and, if it
/// is believed, applies its key change to the ring. Scope (which child may speak for which
/// origin) is [`crate::sansio::scope`]'s; this is only whether the origin signed it.
pub fn admit_report(ring: &mut KeyRing, env: &ReportEnvelope) -> Result<(), String> {
    let bytes = env.signed_bytes().map_err(|e| e.to_string())?;
    ring.verify_any(env.origin, env.origin_seq, &bytes, &env.sig)
        .map_err(|e| format!("report {}:{}: {e}", env.origin, env.origin_seq))?;
    match &env.body {
        Report::Key(KeyReport::Delegated(d)) => ring.delegate(env.origin, d),
        Report::Key(KeyReport::Revoked { site }) => ring.revoke(env.origin, *site),
        _ => Ok(()),
    }
    .map_err(|e| format!("report {}:{}: {e}", env.origin, env.origin_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ed25519_dalek::SigningKey;
    use schema::event::DistributionTarget;
    use schema::trust::{Delegation, PublicKey};
    use schema::PackageId;
    use schema::SiteCode;

    fn code(s: &str) -> SiteCode {
        SiteCode::new(s).unwrap()
    }
    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }
    fn ev(origin: &str, seq: u64, body: ConfigEvent, k: u8) -> EventEnvelope {
        let t = chrono::Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap();
        EventEnvelope::signed(code(origin), seq, t, body, &key(k)).unwrap()
    }
    fn deleg(site: &str, k: u8, from: u64) -> ConfigEvent {
        ConfigEvent::SiteKeyDelegated(Delegation {
            site: code(site),
            key: PublicKey::of(&key(k)),
            valid_from: from,
        })
    }
    fn retire(pkg: &str) -> ConfigEvent {
        ConfigEvent::PackageVersionRetired {
            package: pkg.parse::<PackageId>().unwrap(),
            source_version: 1,
        }
    }

    /// CEN (key 1) delegates P01 (2) and P02 (4); P01 delegates S01 (3). As S01 sees it.
    fn tree() -> KeyRing {
        let mut r = KeyRing::new(PublicKey::of(&key(1)));
        admit_event(&mut r, &ev("CEN", 1, deleg("CEN", 1, 1), 1), false).unwrap();
        admit_event(&mut r, &ev("CEN", 2, deleg("P01", 2, 1), 1), true).unwrap();
        admit_event(&mut r, &ev("CEN", 3, deleg("P02", 4, 1), 1), true).unwrap();
        admit_event(&mut r, &ev("P01", 1, deleg("S01", 3, 1), 2), false).unwrap();
        r
    }

    #[test]
    fn nothing_before_the_genesis() {
        let mut r = KeyRing::new(PublicKey::of(&key(1)));
        // Signed by the root key but not a genesis; a genesis by another key.
        assert!(admit_event(&mut r, &ev("CEN", 1, retire("CEN00001"), 1), false).is_err());
        assert!(admit_event(&mut r, &ev("P01", 1, deleg("P01", 2, 1), 2), false).is_err());
        assert_eq!(r.root(), None);
    }

    #[test]
    fn a_middle_site_cannot_speak_for_the_top() {
        let mut r = tree();
        // P01 signs an event as CEN: the signature is P01's, not CEN's.
        let e = admit_event(&mut r, &ev("CEN", 4, retire("CEN00001"), 2), true).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // An origin nobody delegated to.
        let e = admit_event(&mut r, &ev("X99", 1, retire("X9900001"), 9), false).unwrap_err();
        assert!(e.contains("no key is delegated to X99"), "{e}");
        // P01 under its own key, changing CEN's package or targeting P02: outside its authority.
        let e = admit_event(&mut r, &ev("P01", 2, retire("CEN00001"), 2), true).unwrap_err();
        assert!(
            e.contains("P01 has no authority over package CEN00001"),
            "{e}"
        );
        let target = ConfigEvent::DistributionTargetsAdded {
            package: "CEN00001".parse().unwrap(),
            targets: vec![DistributionTarget::Site(code("P02"))],
        };
        let e = admit_event(&mut r, &ev("P01", 2, target, 2), true).unwrap_err();
        assert!(e.contains("outside its subtree"), "{e}");
        // ... or issuing checkpoints, or re-keying a sibling.
        let cp = ConfigEvent::Checkpoint {
            issued: 9,
            expires: chrono::Utc::now(),
        };
        assert!(admit_event(&mut r, &ev("P01", 2, cp, 2), true).is_err());
        assert!(admit_event(&mut r, &ev("P01", 2, deleg("P02", 9, 1), 2), true).is_err());
        // Within its subtree it may: its own package, a target below it.
        let own = ConfigEvent::DistributionTargetsAdded {
            package: "CEN00001".parse().unwrap(),
            targets: vec![DistributionTarget::Site(code("S01"))],
        };
        admit_event(&mut r, &ev("P01", 2, own, 2), true).unwrap();
        admit_event(&mut r, &ev("P01", 3, retire("P0100001"), 2), true).unwrap();
        // CEN may change anything below it.
        admit_event(&mut r, &ev("CEN", 4, retire("P0100001"), 1), true).unwrap();
    }

    #[test]
    fn a_batch_is_verified_under_the_keys_it_will_meet() {
        let r = tree();
        // P01 rotates in the middle of the batch: its next event is checked with the new key.
        let batch = vec![
            ev("CEN", 4, retire("CEN00001"), 1),
            ev("P01", 2, deleg("S01", 30, 2), 2),
            ev("S01", 1, retire("S0100001"), 3),
            ev("S01", 2, retire("S0100001"), 30),
        ];
        let expected = expected_keys(&r, &batch);
        let keys: Vec<Option<PublicKey>> = [1, 2, 3, 30]
            .iter()
            .map(|k| Some(PublicKey::of(&key(*k))))
            .collect();
        assert_eq!(expected, keys);
        assert_eq!(verify_expected(&batch, &expected), keys);
        // A forged one among them is found, the rest still verify.
        let mut forged = batch.clone();
        forged[2] = ev("S01", 1, retire("S0100001"), 2);
        let v = verify_expected(&forged, &expected);
        assert_eq!(v[2], None);
        assert_eq!((v[0], v[1], v[3]), (keys[0], keys[1], keys[3]));
        // What the batch check verified is not checked again; what it did not is, and fails.
        let mut ring = r.clone();
        admit_event_verified(&mut ring, &forged[0], true, v[0]).unwrap();
        let e = admit_event_verified(&mut r.clone(), &forged[2], false, v[2]).unwrap_err();
        assert!(
            e.contains("does not verify with S01's delegated key"),
            "{e}"
        );
    }

    #[test]
    fn a_withheld_number_is_named() {
        let mut r = tree();
        let e = admit_event(&mut r, &ev("CEN", 6, retire("CEN00001"), 1), false).unwrap_err();
        assert!(
            e.contains("CEN:6 arrived but CEN:5 was never applied"),
            "{e}"
        );
    }

    #[test]
    fn revoked_keys_sign_nothing_more_and_rotations_take_over() {
        let mut r = tree();
        admit_event(&mut r, &ev("P01", 2, deleg("S01", 30, 5), 2), true).unwrap();
        admit_event(&mut r, &ev("S01", 4, retire("S0100001"), 3), true).unwrap();
        assert!(admit_event(&mut r, &ev("S01", 5, retire("S0100001"), 3), true).is_err());
        admit_event(&mut r, &ev("S01", 5, retire("S0100001"), 30), true).unwrap();
        let revoke = ConfigEvent::SiteKeyRevoked { site: code("S01") };
        admit_event(&mut r, &ev("CEN", 4, revoke, 1), true).unwrap();
        let e = admit_event(&mut r, &ev("S01", 6, retire("S0100001"), 30), true).unwrap_err();
        assert!(e.contains("revoked by CEN"), "{e}");
    }

    #[test]
    fn reports_verify_under_the_origins_keys_and_carry_key_changes_up() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap();
        let rep = |origin: &str, seq: u64, body: Report, k: u8| {
            ReportEnvelope::signed(code(origin), seq, t, body, &key(k)).unwrap()
        };
        // CEN's view: it delegated P01 itself; P01 reports S01's key.
        let mut r = KeyRing::with_root(code("CEN"), PublicKey::of(&key(1)));
        r.delegate(
            code("CEN"),
            &Delegation {
                site: code("P01"),
                key: PublicKey::of(&key(2)),
                valid_from: 1,
            },
        )
        .unwrap();
        let data = || Report::SiteData(schema::report::SiteData::Children(vec![]));
        // S01 unknown yet; then P01 reports its delegation; then S01's report verifies.
        assert!(admit_report(&mut r, &rep("S01", 1, data(), 3)).is_err());
        let d = Report::Key(KeyReport::Delegated(Delegation {
            site: code("S01"),
            key: PublicKey::of(&key(3)),
            valid_from: 1,
        }));
        admit_report(&mut r, &rep("P01", 1, d, 2)).unwrap();
        admit_report(&mut r, &rep("S01", 1, data(), 3)).unwrap();
        // P01 forging S01's report with its own key: refused.
        let e = admit_report(&mut r, &rep("S01", 2, data(), 2)).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
    }
}
