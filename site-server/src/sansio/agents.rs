//! Machines, collections and the advertisement lifecycle: the operator's requests turned into
//! events (`collection create`, `machine approve`, `adv enable|disable|change|rerun`), a
//! machine's signed reports turned into this site's status messages, and the roll-ups that
//! `status adverts` and `status machine` read (updated as each report is appended).
//!
//! Sans-IO like [`super::decide`]: time and site come in as arguments.

use super::decide::{Ctx, DecideError, Decided, Refusal};
use super::projection::{self, ProjectionStore};
use schema::advert::Advertisement;
use schema::event::ConfigEvent;
use schema::machine::{
    check_name, Collection, Inventory, MachineEvent, MachineReport, MachineState, Step,
};
use schema::report::{Attribute, Report, SiteData, StatusMessage};
use schema::status;
use schema::trust::PublicKey;
use schema::{AdvertisementId, SiteCode};
use serde::{Deserialize, Serialize};

/// `collection create NAME --rule ... --member ...` (or a change: the collection is replaced
/// whole). A collection needs at least one rule or member.
pub fn set_collection<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    c: &Collection,
    replace: bool,
) -> Result<Decided<Collection>, DecideError<S::Error>> {
    super::decide::check_group_name(&c.name).map_err(|_| {
        Refusal::Invalid(format!(
            "collection name {:?} is not valid: use 1 to 32 letters, digits, '-', '_' or '.'",
            c.name
        ))
    })?;
    if c.rules.is_empty() && c.members.is_empty() {
        return Err(Refusal::Invalid(format!(
            "collection {:?} has no rule and no member: give --rule (name=GLOB,os=,arch=,site=,tag:KEY=) or --member HOST",
            c.name
        ))
        .into());
    }
    for m in &c.members {
        check_name(m).map_err(Refusal::Invalid)?;
    }
    let exists = projection::collection(s, &c.name)?.is_some();
    if exists && !replace {
        return Err(Refusal::Invalid(format!(
            "collection {:?} exists already: change it with `site-server collection change {}`",
            c.name, c.name
        ))
        .into());
    }
    if !exists && replace {
        return Err(Refusal::Invalid(format!(
            "collection {:?} does not exist: create it with `site-server collection create {}`",
            c.name, c.name
        ))
        .into());
    }
    let rules: Vec<String> = c.rules.iter().map(|r| r.to_string()).collect();
    let what = format!(
        "rules [{}], members [{}]",
        rules.join("; "),
        c.members.join(", ")
    );
    Ok(Decided {
        event: Some(ConfigEvent::CollectionSet(c.clone())),
        reports: vec![ctx.status(
            status::COLLECTION_SET,
            vec![Attribute::Collection(c.name.clone())],
            vec![c.name.clone(), what],
        )],
        out: c.clone(),
    })
}

/// How a machine came to be approved (for 40511).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovedBy {
    Operator,
    Automatic,
}

/// `machine approve --name HOST --pubkey K` at this site (or automatic approval of a machine
/// that asked). Approving the key it already has changes nothing.
pub fn approve_machine<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    name: &str,
    key: PublicKey,
    by: ApprovedBy,
) -> Result<Decided<bool>, DecideError<S::Error>> {
    check_name(name).map_err(Refusal::Invalid)?;
    if let Some(a) = projection::approval(s, ctx.site, name)? {
        if a.key == key {
            return Ok(Decided {
                event: None,
                reports: vec![],
                out: false,
            });
        }
    }
    let how = match by {
        ApprovedBy::Operator => "by the operator",
        ApprovedBy::Automatic => "automatically",
    };
    Ok(Decided {
        event: Some(ConfigEvent::MachineApproved {
            site: ctx.site,
            name: name.to_string(),
            key,
        }),
        reports: vec![ctx.status(
            status::MACHINE_APPROVED,
            vec![],
            vec![
                name.to_string(),
                key.to_string()[..16].to_string(),
                how.to_string(),
            ],
        )],
        out: true,
    })
}

/// `machine approve --auto [--off]`.
pub fn set_auto_approval<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    enabled: bool,
) -> Result<Decided<bool>, DecideError<S::Error>> {
    let now = projection::auto_approval(s, ctx.site)?;
    Ok(Decided {
        event: (now != enabled).then_some(ConfigEvent::AutoApproval {
            site: ctx.site,
            enabled,
        }),
        reports: vec![],
        out: enabled,
    })
}

/// A change to an advertisement (`adv change`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertChange {
    /// Mandatory times to add.
    pub add_mandatory: Vec<chrono::NaiveDateTime>,
    /// A new recurring schedule in seconds (0: none).
    pub recurring_secs: Option<u64>,
    /// A new command line.
    pub command: Option<String>,
    /// A new time limit in seconds.
    pub timeout_secs: Option<u32>,
}

/// What the lifecycle commands ask of an advertisement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Enable,
    Disable,
    Change(AdvertChange),
    Rerun { failed_only: bool },
}

/// `adv enable|disable|change|rerun ID`. Every one is refused for an advertisement this site
/// does not know; the authority rule (its creator or a site above) is checked again by every
/// site that applies the event.
pub fn lifecycle<S: ProjectionStore>(
    s: &S,
    ctx: &Ctx,
    id: AdvertisementId,
    what: &Lifecycle,
) -> Result<Decided<Advertisement>, DecideError<S::Error>> {
    let Some(mut a) = projection::advert(s, &id)? else {
        return Err(Refusal::Invalid(format!(
            "advertisement {id} does not exist here: list them with `site-server adv list`"
        ))
        .into());
    };
    let attrs = vec![Attribute::Advertisement(id)];
    let (event, report) = match what {
        Lifecycle::Enable | Lifecycle::Disable => {
            let enable = matches!(what, Lifecycle::Enable);
            if a.enabled == enable {
                return Ok(Decided {
                    event: None,
                    reports: vec![],
                    out: a,
                });
            }
            a.enabled = enable;
            if enable {
                (
                    ConfigEvent::AdvertisementEnabled { id },
                    ctx.status(status::ADVERTISEMENT_ENABLED, attrs, vec![id.to_string()]),
                )
            } else {
                (
                    ConfigEvent::AdvertisementDisabled { id },
                    ctx.status(status::ADVERTISEMENT_DISABLED, attrs, vec![id.to_string()]),
                )
            }
        }
        Lifecycle::Change(c) => {
            if c == &AdvertChange::default() {
                return Err(Refusal::Invalid(
                    "nothing to change: give --add-mandatory, --recurring, --command or --timeout"
                        .into(),
                )
                .into());
            }
            for m in &c.add_mandatory {
                if *m < a.start {
                    return Err(Refusal::Invalid(format!(
                        "mandatory time {m} is before the start time {}: give a later one",
                        a.start
                    ))
                    .into());
                }
                if !a.mandatory.contains(m) {
                    a.mandatory.push(*m);
                }
            }
            a.mandatory.sort();
            if let Some(r) = c.recurring_secs {
                a.run.recurring_secs = (r > 0).then_some(r);
            }
            if let Some(cmd) = &c.command {
                if cmd.trim().is_empty() {
                    return Err(Refusal::Invalid("the new command line is empty".into()).into());
                }
                a.program.command_line = cmd.clone();
            }
            if let Some(t) = c.timeout_secs {
                if t == 0 {
                    return Err(Refusal::Invalid(
                        "a time limit of 0 seconds: give --timeout of at least 1s".into(),
                    )
                    .into());
                }
                a.run.timeout_secs = t;
            }
            (
                ConfigEvent::AdvertisementChanged(a.clone()),
                ctx.status(status::ADVERTISEMENT_CHANGED, attrs, vec![id.to_string()]),
            )
        }
        Lifecycle::Rerun { failed_only } => {
            a.run.rerun += 1;
            a.run.rerun_failed_only = *failed_only;
            (
                ConfigEvent::AdvertisementChanged(a.clone()),
                ctx.status(
                    status::ADVERTISEMENT_RERUN,
                    attrs,
                    vec![
                        id.to_string(),
                        a.run.rerun.to_string(),
                        if *failed_only { "the failed" } else { "all" }.to_string(),
                    ],
                ),
            )
        }
    };
    Ok(Decided {
        event: Some(event),
        reports: vec![report],
        out: a,
    })
}

/// A machine's report as this site's reports: a status message per program step (the site
/// is this one and the machine the one that signed, whatever the report says; output and
/// reasons cut to [`schema::machine::TAIL_BYTES`]), the inventory as site data (none if it is
/// over the bounds: nothing a machine says makes every site above store more).
pub fn machine_reports(own: SiteCode, machine: &str, r: &MachineReport) -> Vec<Report> {
    let cut = |s: &String| schema::machine::tail_of(s, schema::machine::TAIL_BYTES);
    match &r.body {
        MachineEvent::Inventory(inv) => {
            let mut inv = inv.clone();
            inv.name = machine.to_string();
            if inv.check().is_err() {
                return vec![];
            }
            vec![Report::SiteData(SiteData::Machine(inv))]
        }
        MachineEvent::Program {
            advert,
            rerun,
            step,
        } => {
            let mut attrs = vec![Attribute::Advertisement(*advert), Attribute::Rerun(*rerun)];
            if let Some(e) = step.exit() {
                attrs.push(Attribute::ExitCode(e));
            }
            let a = advert.to_string();
            let insertion = match step {
                Step::Received | Step::Started => vec![a],
                Step::RebootPending { .. } => vec![],
                Step::Succeeded { exit }
                | Step::AlreadyInstalled { exit }
                | Step::NotApplicable { exit } => vec![a, exit.to_string()],
                Step::Failed { exit, tail } => vec![a, exit.to_string(), cut(tail)],
                Step::DownloadFailed { why } => vec![a, cut(why)],
                Step::Error { why, tail } => vec![a, cut(why), cut(tail)],
            };
            vec![Report::Status(StatusMessage::new(
                step.status_id(),
                own,
                machine,
                r.time,
                attrs,
                insertion,
            ))]
        }
    }
}

/// Where one machine stands with one advertisement, as the roll-up keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertMachine {
    pub advert: AdvertisementId,
    pub site: SiteCode,
    pub machine: String,
    pub state: MachineState,
    /// The status id of the last step.
    pub last_id: u32,
    pub exit: Option<i32>,
    /// The output tail or the reason of the last step, if it has one.
    pub detail: String,
    pub rerun: u32,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// One line of a machine's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: chrono::DateTime<chrono::Utc>,
    pub id: u32,
    pub advert: Option<AdvertisementId>,
    pub text: String,
}

/// A machine as the roll-up keeps it: what it said it is, and its last steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub site: SiteCode,
    pub name: String,
    pub inventory: Option<Inventory>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
    /// The newest last, at most [`HISTORY`].
    pub history: Vec<HistoryEntry>,
}

/// How many steps a machine's record keeps.
pub const HISTORY: usize = 64;

/// The state a program status message puts its machine in, if it is one (with its
/// advertisement and re-run).
pub fn program_step(m: &StatusMessage) -> Option<(AdvertisementId, u32, MachineState)> {
    let state = match m.id {
        status::PROGRAM_RECEIVED => MachineState::Received,
        status::PROGRAM_STARTED => MachineState::Running,
        status::PROGRAM_SUCCEEDED | status::PROGRAM_ALREADY_INSTALLED => MachineState::Succeeded,
        status::PROGRAM_FAILED | status::PROGRAM_DOWNLOAD_FAILED | status::PROGRAM_ERROR => {
            MachineState::Failed
        }
        status::RESTART_REQUIRED => MachineState::RebootPending,
        status::PROGRAM_NOT_APPLICABLE => MachineState::NotApplicable,
        _ => return None,
    };
    let advert = m.attributes.iter().find_map(|a| match a {
        Attribute::Advertisement(id) => Some(*id),
        _ => None,
    })?;
    let rerun = m
        .attributes
        .iter()
        .find_map(|a| match a {
            Attribute::Rerun(r) => Some(*r),
            _ => None,
        })
        .unwrap_or(0);
    Some((advert, rerun, state))
}

/// The roll-up of one advertisement's machine after `m` (a program status message).
pub fn advance(m: &StatusMessage) -> Option<AdvertMachine> {
    let (advert, rerun, state) = program_step(m)?;
    let exit = m.attributes.iter().find_map(|a| match a {
        Attribute::ExitCode(e) => Some(*e),
        _ => None,
    });
    let detail = match m.id {
        status::PROGRAM_FAILED => m.insertion.get(2).cloned(),
        status::PROGRAM_DOWNLOAD_FAILED => m.insertion.get(1).cloned(),
        status::PROGRAM_ERROR => {
            let why = m.insertion.get(1).cloned().unwrap_or_default();
            let tail = m.insertion.get(2).cloned().unwrap_or_default();
            Some(if tail.is_empty() {
                why
            } else {
                format!("{why}: {tail}")
            })
        }
        _ => None,
    }
    .unwrap_or_default();
    Some(AdvertMachine {
        advert,
        site: m.site,
        machine: m.machine.clone(),
        state,
        last_id: m.id,
        exit,
        detail,
        rerun,
        time: m.time,
    })
}

/// A machine's record after `m` (any status message of an agent) or its inventory.
pub fn touch_machine(
    rec: Option<MachineRecord>,
    site: SiteCode,
    name: &str,
    time: chrono::DateTime<chrono::Utc>,
    inventory: Option<&Inventory>,
    step: Option<&StatusMessage>,
) -> MachineRecord {
    let mut r = rec.unwrap_or_else(|| MachineRecord {
        site,
        name: name.to_string(),
        inventory: None,
        last_seen: time,
        history: vec![],
    });
    r.last_seen = r.last_seen.max(time);
    if let Some(inv) = inventory {
        r.inventory = Some(inv.clone());
    }
    if let Some(m) = step {
        r.history.push(HistoryEntry {
            time: m.time,
            id: m.id,
            advert: program_step(m).map(|(a, _, _)| a),
            text: m.text(),
        });
        if r.history.len() > HISTORY {
            let extra = r.history.len() - HISTORY;
            r.history.drain(..extra);
        }
    }
    r
}

/// One row of `status adverts`: an advertisement at one site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertSiteRow {
    pub advert: Option<AdvertisementId>,
    pub site: Option<SiteCode>,
    /// Machines of the site that the collection's rules take in (from their inventory).
    pub in_collection: u64,
    pub received: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub reboot_pending: u64,
    pub not_applicable: u64,
}

impl AdvertSiteRow {
    /// Machines that reported anything (the denominator of the percentages).
    pub fn reported(&self) -> u64 {
        self.received
            + self.running
            + self.succeeded
            + self.failed
            + self.reboot_pending
            + self.not_applicable
    }
    pub fn count(&mut self, s: MachineState) {
        match s {
            MachineState::Received => self.received += 1,
            MachineState::Running => self.running += 1,
            MachineState::Succeeded => self.succeeded += 1,
            MachineState::Failed => self.failed += 1,
            MachineState::RebootPending => self.reboot_pending += 1,
            MachineState::NotApplicable => self.not_applicable += 1,
        }
    }
}

/// The rows of `status adverts`: per advertisement, per site, the machines in each state
/// (`states`) and the machines the collection takes in (`machines`: each machine's site and
/// inventory).
pub fn advert_rows(
    adverts: &[Advertisement],
    collections: &std::collections::BTreeMap<String, Collection>,
    states: &[AdvertMachine],
    machines: &[(SiteCode, Inventory)],
) -> Vec<AdvertSiteRow> {
    use std::collections::BTreeMap;
    fn row(
        rows: &mut BTreeMap<(AdvertisementId, SiteCode), AdvertSiteRow>,
        a: AdvertisementId,
        s: SiteCode,
    ) -> &mut AdvertSiteRow {
        rows.entry((a, s)).or_insert_with(|| AdvertSiteRow {
            advert: Some(a),
            site: Some(s),
            ..Default::default()
        })
    }
    let mut rows = BTreeMap::new();
    for st in states {
        row(&mut rows, st.advert, st.site).count(st.state);
    }
    for a in adverts {
        let Some(c) = collections.get(&a.collection) else {
            continue;
        };
        for (site, inv) in machines {
            if c.contains(inv, *site) {
                row(&mut rows, a.id, *site).in_collection += 1;
            }
        }
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sansio::projection::{apply, MemStore};
    use schema::advert::{ExitRules, Program, RunOptions, TimeBasis};
    use schema::event::EventEnvelope;
    use schema::machine::Rule;
    use schema::trust::Signature;

    fn code(s: &str) -> SiteCode {
        s.parse().unwrap()
    }
    fn t0() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }
    fn ctx() -> Ctx {
        Ctx {
            site: code("CEN"),
            machine: "m".into(),
            now: t0(),
        }
    }
    fn put(s: &MemStore, seq: u64, body: ConfigEvent) {
        let env = EventEnvelope {
            origin: code("CEN"),
            origin_seq: seq,
            time: t0(),
            body,
            sig: Signature::MISSING,
        };
        apply(s, code("CEN"), &env).unwrap();
    }
    fn advert() -> Advertisement {
        Advertisement {
            id: "CEN20001".parse().unwrap(),
            name: "a".into(),
            package: "CEN00001".parse().unwrap(),
            program: Program {
                name: "Install".into(),
                command_line: "install.sh".into(),
                exit: ExitRules::default(),
            },
            collection: "web".into(),
            start: t0().naive_utc(),
            mandatory: vec![],
            time_basis: TimeBasis::Utc,
            enabled: true,
            run: RunOptions::default(),
        }
    }
    fn ok<T>(r: Result<Decided<T>, DecideError<std::convert::Infallible>>) -> Decided<T> {
        match r {
            Ok(d) => d,
            Err(DecideError::Refused(r)) => panic!("refused: {r}"),
            Err(DecideError::Proj(_)) => panic!("projection error"),
        }
    }
    fn refused<T>(r: Result<Decided<T>, DecideError<std::convert::Infallible>>) -> String {
        match r {
            Err(DecideError::Refused(r)) => r.to_string(),
            _ => panic!("not refused"),
        }
    }

    #[test]
    fn the_lifecycle_of_an_advertisement() {
        let s = MemStore::default();
        let id = advert().id;
        assert!(refused(lifecycle(&s, &ctx(), id, &Lifecycle::Disable)).contains("does not exist"));
        put(&s, 1, ConfigEvent::AdvertisementCreated(advert()));
        let d = ok(lifecycle(&s, &ctx(), id, &Lifecycle::Disable));
        assert_eq!(d.event, Some(ConfigEvent::AdvertisementDisabled { id }));
        assert_eq!(d.reports.len(), 1);
        put(&s, 2, d.event.unwrap());
        let again = ok(lifecycle(&s, &ctx(), id, &Lifecycle::Disable));
        assert!(
            again.event.is_none(),
            "disabling a disabled advertisement changes nothing"
        );
        let d = ok(lifecycle(&s, &ctx(), id, &Lifecycle::Enable));
        assert_eq!(d.event, Some(ConfigEvent::AdvertisementEnabled { id }));
        put(&s, 3, d.event.unwrap());
        assert!(projection::advert(&s, &id).unwrap().unwrap().enabled);

        let d = ok(lifecycle(
            &s,
            &ctx(),
            id,
            &Lifecycle::Rerun { failed_only: true },
        ));
        assert_eq!((d.out.run.rerun, d.out.run.rerun_failed_only), (1, true));
        put(&s, 4, d.event.unwrap());
        let d = ok(lifecycle(
            &s,
            &ctx(),
            id,
            &Lifecycle::Rerun { failed_only: false },
        ));
        assert_eq!((d.out.run.rerun, d.out.run.rerun_failed_only), (2, false));

        let later = t0().naive_utc() + chrono::Duration::days(1);
        let change = AdvertChange {
            add_mandatory: vec![later, later],
            recurring_secs: Some(7 * 86400),
            command: Some("setup.sh --quiet".into()),
            timeout_secs: Some(60),
        };
        let d = ok(lifecycle(&s, &ctx(), id, &Lifecycle::Change(change)));
        assert_eq!(
            d.out.mandatory,
            vec![later],
            "a time added twice is there once"
        );
        assert_eq!(d.out.run.recurring_secs, Some(7 * 86400));
        assert_eq!(d.out.program.command_line, "setup.sh --quiet");
        assert_eq!(d.out.run.timeout_secs, 60);
        for bad in [
            AdvertChange::default(),
            AdvertChange {
                add_mandatory: vec![t0().naive_utc() - chrono::Duration::days(1)],
                ..Default::default()
            },
            AdvertChange {
                command: Some("  ".into()),
                ..Default::default()
            },
            AdvertChange {
                timeout_secs: Some(0),
                ..Default::default()
            },
        ] {
            refused(lifecycle(&s, &ctx(), id, &Lifecycle::Change(bad)));
        }
    }

    #[test]
    fn collections_and_approvals() {
        let s = MemStore::default();
        let c = Collection {
            name: "web".into(),
            rules: vec![Rule::parse("os=linux").unwrap()],
            members: vec![],
        };
        assert!(refused(set_collection(&s, &ctx(), &c, true)).contains("does not exist"));
        let d = ok(set_collection(&s, &ctx(), &c, false));
        put(&s, 1, d.event.unwrap());
        assert!(refused(set_collection(&s, &ctx(), &c, false)).contains("exists already"));
        let empty = Collection {
            name: "e".into(),
            ..Default::default()
        };
        assert!(refused(set_collection(&s, &ctx(), &empty, false)).contains("no rule"));

        let k = PublicKey([3; 32]);
        let d = ok(approve_machine(
            &s,
            &ctx(),
            "web-1",
            k,
            ApprovedBy::Operator,
        ));
        assert!(d.out);
        put(&s, 2, d.event.unwrap());
        let same = ok(approve_machine(
            &s,
            &ctx(),
            "WEB-1",
            k,
            ApprovedBy::Automatic,
        ));
        assert!(same.event.is_none(), "the same key again changes nothing");
        let other = ok(approve_machine(
            &s,
            &ctx(),
            "web-1",
            PublicKey([4; 32]),
            ApprovedBy::Operator,
        ));
        assert!(other.event.is_some(), "a new key replaces the old");
        refused(approve_machine(
            &s,
            &ctx(),
            "bad/name",
            k,
            ApprovedBy::Operator,
        ));
        let d = ok(set_auto_approval(&s, &ctx(), true));
        put(&s, 3, d.event.unwrap());
        assert!(ok(set_auto_approval(&s, &ctx(), true)).event.is_none());
    }

    #[test]
    fn a_machines_steps_become_status_messages_and_roll_up() {
        let own = code("S01");
        let step = |seq, step| MachineReport {
            seq,
            time: t0(),
            body: MachineEvent::Program {
                advert: "CEN20001".parse().unwrap(),
                rerun: 1,
                step,
            },
        };
        let long = "x".repeat(10_000);
        let r = machine_reports(
            own,
            "web-3",
            &step(
                1,
                Step::Failed {
                    exit: 3,
                    tail: long,
                },
            ),
        );
        let Report::Status(m) = &r[0] else {
            panic!("a status message")
        };
        assert_eq!((m.id, m.site, m.machine.as_str()), (10006, own, "web-3"));
        assert!(
            m.insertion[2].len() <= schema::machine::TAIL_BYTES,
            "the output is cut"
        );
        let am = advance(m).unwrap();
        assert_eq!(
            (am.state, am.exit, am.rerun),
            (MachineState::Failed, Some(3), 1)
        );

        let inv = Inventory {
            name: "spoofed".into(),
            os: "linux".into(),
            ..Default::default()
        };
        let r = machine_reports(
            own,
            "web-3",
            &MachineReport {
                seq: 2,
                time: t0(),
                body: MachineEvent::Inventory(inv),
            },
        );
        let Report::SiteData(SiteData::Machine(i)) = &r[0] else {
            panic!("site data")
        };
        assert_eq!(i.name, "web-3", "a machine speaks only for itself");

        let rec = touch_machine(None, own, "web-3", t0(), Some(i), Some(m));
        let c = Collection {
            name: "web".into(),
            rules: vec![Rule::parse("os=linux").unwrap()],
            members: vec![],
        };
        let inventories = [(rec.site, rec.inventory.clone().unwrap())];
        let rows = advert_rows(
            &[advert()],
            &[("web".to_string(), c)].into(),
            &[am],
            &inventories,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].in_collection, rows[0].failed), (1, 1));
    }
}
