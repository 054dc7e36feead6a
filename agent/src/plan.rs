//! The agent's pure core: what a policy says once verified against the trust root, and when
//! an advertisement runs. Time, the policy and the agent's record come in as arguments;
//! nothing here does I/O or reads the clock.

use chrono::{DateTime, NaiveDateTime, Utc};
use schema::advert::{Advertisement, TimeBasis};
use schema::event::Policy;
use schema::event::{ConfigEvent, PackageVersion};
use schema::machine::{Collection, Inventory};
use schema::trust::{KeyRing, PublicKey};
use schema::{AdvertisementId, PackageId, SiteCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A policy whose every event verified: signed under a key that chains to the trust root,
/// by a site with authority over it.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// The distribution point's site.
    pub site: Option<SiteCode>,
    pub adverts: BTreeMap<AdvertisementId, Advertisement>,
    pub collections: BTreeMap<String, Collection>,
    /// Package versions not retired, by package and version.
    pub versions: BTreeMap<(PackageId, u32), PackageVersion>,
}

impl Verified {
    /// The newest version of `package` not retired.
    pub fn current(&self, package: PackageId) -> Option<&PackageVersion> {
        self.versions
            .range((package, 0)..=(package, u32::MAX))
            .next_back()
            .map(|(_, v)| v)
    }

    /// The enabled and disabled advertisements whose collection takes this machine in.
    pub fn mine<'a>(
        &'a self,
        inv: &'a Inventory,
        site: SiteCode,
    ) -> impl Iterator<Item = &'a Advertisement> + 'a {
        self.adverts.values().filter(move |a| {
            self.collections
                .get(&a.collection)
                .is_some_and(|c| c.contains(inv, site))
        })
    }
}

/// Replays `p`'s events in order from the trust root: each must verify under the key the
/// ring holds for its origin and number, and pass the authority rule
/// ([`schema::authority::authorize`]). The first that does not stops the replay: nothing of a
/// policy that fails its check is believed.
pub fn verify(p: &Policy, root: PublicKey) -> Result<Verified, String> {
    let mut ring = KeyRing::new(root);
    let mut v = Verified {
        site: p.site,
        ..Default::default()
    };
    for e in &p.events {
        let bytes = e.signed_bytes().map_err(|e| e.to_string())?;
        ring.verify(e.origin, e.origin_seq, &bytes, &e.sig)
            .map_err(|why| {
                format!(
                    "event {}:{} ({}) does not chain to the trust root {}..: {why}",
                    e.origin,
                    e.origin_seq,
                    e.body.kind(),
                    &root.to_string()[..16]
                )
            })?;
        schema::authority::authorize(&mut ring, e)
            .map_err(|why| format!("event {}:{} is refused: {why}", e.origin, e.origin_seq))?;
        match &e.body {
            ConfigEvent::AdvertisementCreated(a) | ConfigEvent::AdvertisementChanged(a) => {
                v.adverts.insert(a.id, a.clone());
            }
            ConfigEvent::AdvertisementDisabled { id }
            | ConfigEvent::AdvertisementEnabled { id } => {
                if let Some(a) = v.adverts.get_mut(id) {
                    a.enabled = matches!(e.body, ConfigEvent::AdvertisementEnabled { .. });
                }
            }
            ConfigEvent::CollectionSet(c) => {
                v.collections.insert(c.name.clone(), c.clone());
            }
            ConfigEvent::PackageVersionPublished(pv) if pv.manifest.id() == pv.manifest_id => {
                v.versions
                    .insert((pv.package, pv.source_version), pv.clone());
            }
            ConfigEvent::PackageVersionRetired {
                package,
                source_version,
            } => {
                v.versions.remove(&(*package, *source_version));
            }
            _ => {}
        }
    }
    Ok(v)
}

/// `t` in UTC: as it is, or read as the machine's wall-clock time (`local`, which maps a
/// local time to UTC; `None` for a time that does not exist there, in a DST gap).
pub fn instant(
    a: &Advertisement,
    t: NaiveDateTime,
    local: &dyn Fn(NaiveDateTime) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match a.time_basis {
        TimeBasis::Utc => Some(t.and_utc()),
        TimeBasis::ClientLocal => local(t),
    }
}

/// The latest time at or before `now` when the advertisement is due: its start, a
/// mandatory time, or a recurrence from the start. `None` before the start.
pub fn due_at(
    a: &Advertisement,
    now: DateTime<Utc>,
    local: &dyn Fn(NaiveDateTime) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let start = instant(a, a.start, local)?;
    if start > now {
        return None;
    }
    let mut due = start;
    for m in &a.mandatory {
        if let Some(t) = instant(a, *m, local) {
            if t <= now && t > due {
                due = t;
            }
        }
    }
    if let Some(every) = a.run.recurring_secs.filter(|s| *s > 0) {
        let k = (now - start).num_seconds().max(0) as u64 / every;
        let t = start + chrono::Duration::seconds((k * every) as i64);
        if t > due {
            due = t;
        }
    }
    Some(due)
}

/// The next time after `now` when the advertisement becomes due (to sleep until).
pub fn next_due(
    a: &Advertisement,
    now: DateTime<Utc>,
    local: &dyn Fn(NaiveDateTime) -> Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let start = instant(a, a.start, local)?;
    let mut next: Option<DateTime<Utc>> = (start > now).then_some(start);
    let mut consider = |t: DateTime<Utc>| {
        if t > now && next.is_none_or(|n| t < n) {
            next = Some(t);
        }
    };
    for m in &a.mandatory {
        if let Some(t) = instant(a, *m, local) {
            consider(t);
        }
    }
    if let Some(every) = a.run.recurring_secs.filter(|s| *s > 0) {
        if start <= now {
            let k = (now - start).num_seconds().max(0) as u64 / every + 1;
            consider(start + chrono::Duration::seconds((k * every) as i64));
        }
    }
    next
}

/// How a run ended, as the agent keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// Success, already installed or not applicable: nothing left to do.
    Done,
    /// Success that waits for a restart.
    RebootPending,
    /// Anything else: a later assignment (or a re-run of the failed) runs it again.
    Failed,
}

/// The agent's record of one advertisement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertRecord {
    /// The re-run generation whose "received" was reported.
    pub received: Option<u32>,
    /// The last run: its assignment (due time), re-run generation and end.
    pub last: Option<LastRun>,
}

/// The last run of an advertisement on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub due: DateTime<Utc>,
    pub rerun: u32,
    pub end: RunEnd,
}

/// What to do about one advertisement now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing now.
    Nothing,
    /// Run it for the assignment due at `due`.
    Run { due: DateTime<Utc> },
    /// A re-run of the failed was asked and this machine's last run did not fail: note the
    /// generation, run nothing.
    Adopt { rerun: u32 },
}

/// Whether to run `a` now, given this machine's record of it: once per assignment (the
/// start, each mandatory time, each recurrence), again at a later assignment only if the
/// last run failed, and again at once when a re-run newer than the last run is asked (of
/// every machine, or of those whose last run failed). A disabled advertisement never runs.
pub fn decide(
    a: &Advertisement,
    rec: &AdvertRecord,
    now: DateTime<Utc>,
    local: &dyn Fn(NaiveDateTime) -> Option<DateTime<Utc>>,
) -> Decision {
    if !a.enabled {
        return Decision::Nothing;
    }
    let Some(due) = due_at(a, now, local) else {
        return Decision::Nothing;
    };
    let Some(last) = rec.last else {
        return Decision::Run { due };
    };
    if a.run.rerun > last.rerun {
        return if !a.run.rerun_failed_only || last.end == RunEnd::Failed {
            Decision::Run { due }
        } else {
            Decision::Adopt { rerun: a.run.rerun }
        };
    }
    if due > last.due && last.end == RunEnd::Failed {
        return Decision::Run { due };
    }
    Decision::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::advert::{ExitRules, Program, RunOptions};

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }
    fn u(s: &str) -> DateTime<Utc> {
        t(s).and_utc()
    }
    fn no_local(_: NaiveDateTime) -> Option<DateTime<Utc>> {
        None
    }

    fn advert() -> Advertisement {
        Advertisement {
            id: "CEN20001".parse().unwrap(),
            name: "x".into(),
            package: "CEN00001".parse().unwrap(),
            program: Program {
                name: "install".into(),
                command_line: "install.sh".into(),
                exit: ExitRules::default(),
            },
            collection: "all".into(),
            start: t("2026-12-01 10:00"),
            mandatory: vec![t("2026-12-02 10:00")],
            time_basis: TimeBasis::Utc,
            enabled: true,
            run: RunOptions::default(),
        }
    }

    fn last(due: &str, end: RunEnd, rerun: u32) -> AdvertRecord {
        AdvertRecord {
            received: Some(0),
            last: Some(LastRun {
                due: u(due),
                rerun,
                end,
            }),
        }
    }

    #[test]
    fn runs_once_per_assignment_and_retries_only_failures() {
        let a = advert();
        let none = AdvertRecord::default();
        assert_eq!(
            decide(&a, &none, u("2026-12-01 09:59"), &no_local),
            Decision::Nothing
        );
        assert_eq!(
            decide(&a, &none, u("2026-12-01 10:00"), &no_local),
            Decision::Run {
                due: u("2026-12-01 10:00")
            }
        );
        let ok = last("2026-12-01 10:00", RunEnd::Done, 0);
        assert_eq!(
            decide(&a, &ok, u("2026-12-01 12:00"), &no_local),
            Decision::Nothing
        );
        assert_eq!(
            decide(&a, &ok, u("2026-12-03 12:00"), &no_local),
            Decision::Nothing,
            "a success is not run again at a later assignment"
        );
        let failed = last("2026-12-01 10:00", RunEnd::Failed, 0);
        assert_eq!(
            decide(&a, &failed, u("2026-12-01 12:00"), &no_local),
            Decision::Nothing,
            "not twice for one assignment"
        );
        assert_eq!(
            decide(&a, &failed, u("2026-12-02 10:30"), &no_local),
            Decision::Run {
                due: u("2026-12-02 10:00")
            },
            "a failure runs again at the next mandatory time"
        );
        let mut off = a.clone();
        off.enabled = false;
        assert_eq!(
            decide(&off, &none, u("2026-12-05 00:00"), &no_local),
            Decision::Nothing
        );
    }

    #[test]
    fn recurring_and_reruns() {
        let mut a = advert();
        a.mandatory.clear();
        a.run.recurring_secs = Some(7 * 86400);
        assert_eq!(
            due_at(&a, u("2026-12-09 09:00"), &no_local),
            Some(u("2026-12-08 10:00"))
        );
        assert_eq!(
            next_due(&a, u("2026-12-09 09:00"), &no_local),
            Some(u("2026-12-15 10:00"))
        );
        let failed = last("2026-12-01 10:00", RunEnd::Failed, 0);
        assert_eq!(
            decide(&a, &failed, u("2026-12-09 09:00"), &no_local),
            Decision::Run {
                due: u("2026-12-08 10:00")
            }
        );
        let ok = last("2026-12-01 10:00", RunEnd::Done, 0);
        a.run.rerun = 1;
        assert!(matches!(
            decide(&a, &ok, u("2026-12-02 09:00"), &no_local),
            Decision::Run { .. }
        ));
        a.run.rerun_failed_only = true;
        assert_eq!(
            decide(&a, &ok, u("2026-12-02 09:00"), &no_local),
            Decision::Adopt { rerun: 1 }
        );
        assert!(matches!(
            decide(&a, &failed, u("2026-12-02 09:00"), &no_local),
            Decision::Run { .. }
        ));
        let adopted = last("2026-12-01 10:00", RunEnd::Done, 1);
        assert_eq!(
            decide(&a, &adopted, u("2026-12-02 09:00"), &no_local),
            Decision::Nothing
        );
    }

    #[test]
    fn client_local_times_go_through_the_machine_zone() {
        let mut a = advert();
        a.time_basis = TimeBasis::ClientLocal;
        let plus2 = |n: NaiveDateTime| Some(n.and_utc() - chrono::Duration::hours(2));
        assert_eq!(
            due_at(&a, u("2026-12-01 08:30"), &plus2),
            Some(u("2026-12-01 08:00"))
        );
        assert_eq!(due_at(&a, u("2026-12-01 07:59"), &plus2), None);
        assert_eq!(
            due_at(&a, u("2026-12-05 00:00"), &no_local),
            None,
            "a time that does not exist locally never comes"
        );
    }
}
