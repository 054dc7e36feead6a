//! The link scheduler (sans-IO): which job's next bytes go on which link now.
//!
//! Everything a link carries is a job with a priority: a batch of config events, a package
//! version's chunks for one destination, a batch of reports. The shell (in `site-server`)
//! tells the scheduler about jobs and their units (a unit is one chunk or one batch), asks
//! [`Scheduler::poll`] what to write next on a link, writes it, and reports what it wrote
//! with [`Scheduler::on_written`]. Time is an argument: a monotonic `Instant` for rates and
//! retry delays, the wall clock for the hour-of-week schedules and boosts.
//!
//! Rules:
//! - Across priorities a higher one goes first; within a priority, first come first served.
//! - A unit, once started, is finished before anything else goes on that link, so a higher
//!   priority job preempts a lower one at the next chunk boundary (SMS waits for the whole
//!   package).
//! - A job goes only in hours when the link's schedule lets its priority through; otherwise
//!   it waits. Bytes are metered against the rate in force ([`crate::schedule::Meter`]).
//! - A package job starts only if fewer than `per_destination` package jobs of the same or
//!   higher priority are sending to that destination, and fewer than `total` over all.
//! - A failed job is retried after `retry_delay`, `retries` times, then it is failed (3532)
//!   until the link's state changes or the operator retries it.
//! - A boosted package ignores schedules and rates until its boost ends.

use crate::schedule::{next_hour, Availability, Grant, Meter, Rate, Week};
use chrono::{DateTime, Utc};
use schema::event::Priority;
use schema::{ChunkId, PackageId, SiteCode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Sent package jobs are kept this long for the status views.
const KEEP_SENT: Duration = Duration::from_secs(3600);

/// The schedule and rate of one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPolicy {
    /// Which priorities may send in each hour of the week.
    pub schedule: Week<Availability>,
    /// How fast the link may send in each hour of the week.
    pub rate: Week<Rate>,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy {
            schedule: Week::always(Availability::All),
            rate: Week::always(Rate::Unlimited),
        }
    }
}

impl LinkPolicy {
    /// Parses the two rule texts (empty: open all week, unlimited).
    pub fn parse(schedule: &str, rate: &str) -> Result<Self, crate::schedule::ScheduleError> {
        Ok(LinkPolicy {
            schedule: Week::parse(schedule, Availability::All)?,
            rate: Week::parse(rate, Rate::Unlimited)?,
        })
    }
}

/// Concurrency and retry limits (SMS's sender defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A package job starts only while fewer package jobs of its priority or higher than
    /// this are sending to its destination (default 3).
    pub per_destination: usize,
    /// The same, counted over all destinations (default 5).
    pub total: usize,
    /// How many times a failed job is retried before it is failed (default 2).
    pub retries: u32,
    /// How long a failed job waits before its retry (default 60 s).
    pub retry_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_destination: 3,
            total: 5,
            retries: 2,
            retry_delay: Duration::from_secs(60),
        }
    }
}

/// A job's id in its [`Scheduler`]: numbered from 1 in the order jobs are made, which is
/// also their first-come, first-served order within a priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct JobId(pub u64);

/// What a job carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum JobKind {
    /// A package version's chunks for one destination.
    Content {
        /// The package.
        package: PackageId,
        /// Its source version.
        version: u32,
    },
    /// Chunks asked for outside any announced package version.
    Chunks,
    /// A batch of config events; `boost` when it carries a boost (it ignores the window).
    Events {
        /// The batch carries a boost: it ignores the link's schedule and rate.
        boost: bool,
    },
    /// A batch of reports.
    Reports,
}

/// Names a unit within its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKey {
    /// A chunk, by id.
    Chunk(ChunkId),
    /// A batch, by its first log position.
    Batch(u64),
}

/// One piece of a job: once started on a link, it is written whole before anything else
/// goes on that link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Which unit.
    pub key: UnitKey,
    /// Its size on the wire in bytes: an encoded frame, or a chunk reply with its header.
    pub len: u64,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its turn: not started yet, or due to go again.
    Queued,
    /// Started. A package job in this state counts against the concurrency limits.
    Sending,
    /// An attempt failed; it goes again at `at`.
    Retrying {
        /// When the retry is due (monotonic time).
        at: Instant,
    },
    /// Out of retries: it waits until its link comes up again or the operator retries it.
    Failed,
    /// Every unit is written. A sent package job is kept an hour for the status views.
    Sent,
}

impl JobState {
    /// The state's name as `status senders` shows it: queued, sending, retrying, failed, sent.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sending => "sending",
            JobState::Retrying { .. } => "retrying",
            JobState::Failed => "failed",
            JobState::Sent => "sent",
        }
    }
}

#[derive(Debug)]
struct Job {
    dest: SiteCode,
    kind: JobKind,
    priority: Priority,
    state: JobState,
    seq: u64,
    units: VecDeque<Unit>,
    total_units: u64,
    done: HashSet<UnitKey>,
    bytes_sent: u64,
    attempts: u32,
    last_error: Option<String>,
    reported_pct: Option<u8>,
    finished: Option<Instant>,
    /// When its first unit was queued, and when its first byte was written: how long a
    /// job waited to start (behind a lower one: the preemption latency).
    queued_at: Option<Instant>,
    first_byte: Option<Instant>,
}

impl Job {
    fn pct(&self) -> u8 {
        if self.total_units == 0 {
            return 100;
        }
        ((self.done.len() as u64 * 100) / self.total_units).min(100) as u8
    }
    fn package(&self) -> Option<(PackageId, u32)> {
        match self.kind {
            JobKind::Content { package, version } => Some((package, version)),
            _ => None,
        }
    }
    /// Package jobs count against the concurrency limits and have a status.
    fn counts(&self) -> bool {
        matches!(self.kind, JobKind::Content { .. })
    }
}

/// What the scheduler has to say for the status log (3531, 3532, 3533).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// 3531: sending, `pct` complete (0 when it starts).
    Sending {
        /// The destination site.
        dest: SiteCode,
        /// The package.
        package: PackageId,
        /// Its source version.
        version: u32,
        /// Percent of the job's units sent, 0 to 100.
        pct: u8,
    },
    /// 3532: an attempt failed; `retry_in` is `None` when no retry is left.
    Error {
        /// The destination site.
        dest: SiteCode,
        /// The package.
        package: PackageId,
        /// Its source version.
        version: u32,
        /// What went wrong.
        error: String,
        /// When the next attempt is due; `None`: the job is failed.
        retry_in: Option<Duration>,
    },
    /// 3533: sent.
    Sent {
        /// The destination site.
        dest: SiteCode,
        /// The package.
        package: PackageId,
        /// Its source version.
        version: u32,
    },
}

/// What to do on a link now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Write `len` bytes of the unit `key` of `job`, from `offset`.
    Send {
        /// The job.
        job: JobId,
        /// What the job carries, so the shell knows where the unit's bytes are.
        kind: JobKind,
        /// The unit.
        key: UnitKey,
        /// Bytes of the unit already written: start here.
        offset: u64,
        /// How many bytes to write now: what the rate allows, at most the rest of the unit.
        len: u64,
    },
    /// Nothing may go before then (a rate, a retry, a window opening).
    Until(Instant),
    /// Nothing to send.
    Idle,
}

#[derive(Debug, Default)]
struct Link {
    policy: LinkPolicy,
    /// Bumped on every policy change, so a shell can tell cheaply whether to pass it on.
    policy_gen: u64,
    meter: Meter,
    current: Option<(JobId, Unit, u64)>,
    connected: bool,
    /// Bytes written per second, the last 60 seconds: (second, bytes).
    history: VecDeque<(u64, u64)>,
    /// Bytes written since start, per priority (high, medium, low).
    sent: [u64; 3],
}

/// The sender of one site: every link it sends on and every job (see the module doc).
#[derive(Debug)]
pub struct Scheduler {
    zone: chrono_tz::Tz,
    limits: Limits,
    epoch: Instant,
    links: BTreeMap<SiteCode, Link>,
    jobs: BTreeMap<JobId, Job>,
    next_id: u64,
    boosts: HashMap<PackageId, Option<DateTime<Utc>>>,
    notices: VecDeque<Notice>,
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

impl Scheduler {
    /// A scheduler with no links and no jobs. `zone` is the site's zone, in which the
    /// hour-of-week rules are read; `now` starts the clock of the per-second byte counts.
    pub fn new(zone: chrono_tz::Tz, limits: Limits, now: Instant) -> Self {
        Scheduler {
            zone,
            limits,
            epoch: now,
            links: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_id: 1,
            boosts: HashMap::new(),
            notices: VecDeque::new(),
        }
    }

    /// The concurrency and retry limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets (or replaces, live) the schedule and rate of the link to `dest`.
    pub fn set_policy(&mut self, dest: SiteCode, policy: LinkPolicy) {
        let l = self.links.entry(dest).or_default();
        l.policy = policy;
        l.policy_gen += 1;
    }

    /// How many times the policy of the link to `dest` was set (0: never).
    pub fn policy_gen(&self, dest: &SiteCode) -> u64 {
        self.links.get(dest).map_or(0, |l| l.policy_gen)
    }

    /// The schedule and rate of the link to `dest`, if the scheduler knows that link.
    pub fn policy(&self, dest: &SiteCode) -> Option<&LinkPolicy> {
        self.links.get(dest).map(|l| &l.policy)
    }

    /// Lets `package` ignore schedules and rates until `until` (forever when `None`).
    pub fn boost(&mut self, package: PackageId, until: Option<DateTime<Utc>>) {
        self.boosts.insert(package, until);
    }

    /// Ends `package`'s boost now.
    pub fn unboost(&mut self, package: &PackageId) {
        self.boosts.remove(package);
    }

    /// Boosts in force at `wall`.
    pub fn boosts(&self, wall: DateTime<Utc>) -> Vec<(PackageId, Option<DateTime<Utc>>)> {
        let mut v: Vec<_> = self
            .boosts
            .iter()
            .filter(|(_, u)| u.is_none_or(|u| u > wall))
            .map(|(p, u)| (*p, *u))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    fn boosted(&self, job: &Job, wall: DateTime<Utc>) -> bool {
        match job.kind {
            JobKind::Events { boost } => boost,
            JobKind::Content { package, .. } => self
                .boosts
                .get(&package)
                .is_some_and(|u| u.is_none_or(|u| u > wall)),
            _ => false,
        }
    }

    /// The job for `package` `version` to `dest` (made if there is none open), whose
    /// destination still misses `remaining` units. A job already sent gets a new one.
    pub fn content_job(
        &mut self,
        dest: SiteCode,
        package: PackageId,
        version: u32,
        priority: Priority,
        remaining: impl IntoIterator<Item = UnitKey>,
    ) -> JobId {
        let kind = JobKind::Content { package, version };
        let open = self
            .jobs
            .iter_mut()
            .find(|(_, j)| j.dest == dest && j.kind == kind && j.state != JobState::Sent);
        let (id, j) = match open {
            Some((id, j)) => (*id, j),
            None => {
                let id = self.add(dest, kind, priority, 0);
                (id, self.jobs.get_mut(&id).expect("added"))
            }
        };
        j.priority = priority;
        let new = remaining
            .into_iter()
            .filter(|k| !j.done.contains(k))
            .count() as u64;
        j.total_units = j.done.len() as u64 + new;
        id
    }

    /// Withdraws `job` if none of it has been written (a batch about to be rebuilt with
    /// more events); returns whether it was withdrawn.
    pub fn withdraw(&mut self, job: JobId) -> bool {
        let Some(j) = self.jobs.get(&job) else {
            return true;
        };
        let started = j.bytes_sent > 0
            || self
                .links
                .get(&j.dest)
                .is_some_and(|l| l.current.is_some_and(|(c, _, _)| c == job));
        if started {
            return false;
        }
        self.jobs.remove(&job);
        true
    }

    /// Drops the unit in progress on the link to `dest` without counting it as written (its
    /// data could not be read here).
    pub fn abandon_unit(&mut self, dest: &SiteCode) {
        if let Some(l) = self.links.get_mut(dest) {
            l.current = None;
        }
    }

    /// A job of another kind (chunks outside any package, events, reports).
    pub fn job(&mut self, dest: SiteCode, kind: JobKind, priority: Priority) -> JobId {
        if kind == JobKind::Chunks {
            if let Some((id, _)) = self
                .jobs
                .iter()
                .find(|(_, j)| j.dest == dest && j.kind == kind && j.state != JobState::Sent)
            {
                return *id;
            }
        }
        self.add(dest, kind, priority, 0)
    }

    fn add(&mut self, dest: SiteCode, kind: JobKind, priority: Priority, total: u64) -> JobId {
        let id = JobId(self.next_id);
        self.next_id += 1;
        self.links.entry(dest).or_default();
        self.jobs.insert(
            id,
            Job {
                dest,
                kind,
                priority,
                state: JobState::Queued,
                seq: id.0,
                units: VecDeque::new(),
                total_units: total,
                done: HashSet::new(),
                bytes_sent: 0,
                attempts: 0,
                last_error: None,
                reported_pct: None,
                finished: None,
                queued_at: None,
                first_byte: None,
            },
        );
        id
    }

    /// Changes the priority of every open job of `package`.
    pub fn set_priority(&mut self, package: PackageId, priority: Priority) {
        for j in self.jobs.values_mut() {
            if j.package().is_some_and(|(p, _)| p == package) {
                j.priority = priority;
            }
        }
    }

    /// Queues a unit of `job` at `now` (a unit already queued is not queued twice).
    pub fn push(&mut self, job: JobId, unit: Unit, now: Instant) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.queued_at.get_or_insert(now);
        if j.units.iter().any(|u| u.key == unit.key) {
            return;
        }
        if matches!(
            j.kind,
            JobKind::Chunks | JobKind::Events { .. } | JobKind::Reports
        ) {
            j.total_units += 1;
        }
        if j.state == JobState::Sent {
            j.state = JobState::Sending;
        }
        j.units.push_back(unit);
    }

    /// What to write on the link to `dest` now.
    pub fn poll(&mut self, dest: &SiteCode, now: Instant, wall: DateTime<Utc>) -> Poll {
        self.prune(now);
        let Some(link) = self.links.get(dest) else {
            return Poll::Idle;
        };
        if let Some((job, unit, offset)) = link.current {
            return self.grant(dest, job, unit, offset, now, wall);
        }
        // Retries that are due.
        for j in self.jobs.values_mut() {
            if let JobState::Retrying { at, .. } = j.state {
                if at <= now && &j.dest == dest {
                    j.state = JobState::Queued;
                }
            }
        }
        let window = link.policy.schedule.at(wall, self.zone);
        let mut wake: Option<Instant> = None;
        fn soon(t: Instant, wake: &mut Option<Instant>) {
            *wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        let mut candidates: Vec<(&JobId, &Job)> =
            self.jobs.iter().filter(|(_, j)| &j.dest == dest).collect();
        candidates.sort_by_key(|(_, j)| (rank(j.priority), j.seq));
        let mut chosen = None;
        for (id, j) in &candidates {
            match j.state {
                JobState::Queued | JobState::Sending => {}
                JobState::Retrying { at, .. } => {
                    soon(at, &mut wake);
                    continue;
                }
                _ => continue,
            }
            if j.units.is_empty() {
                continue;
            }
            let boosted = self.boosted(j, wall);
            if !boosted && !window.allows(j.priority) {
                let secs = (next_hour(wall) - wall).num_milliseconds().max(1) as u64;
                soon(now + Duration::from_millis(secs), &mut wake);
                continue;
            }
            if j.state == JobState::Queued && j.counts() && !self.may_start(j) {
                continue;
            }
            chosen = Some(**id);
            break;
        }
        let Some(id) = chosen else {
            return wake.map_or(Poll::Idle, Poll::Until);
        };
        let j = self.jobs.get_mut(&id).expect("chosen");
        let unit = j.units.pop_front().expect("has units");
        if j.state == JobState::Queued {
            j.state = JobState::Sending;
            if let Some((package, version)) = j.package() {
                if j.reported_pct.is_none() {
                    j.reported_pct = Some(j.pct());
                    self.notices.push_back(Notice::Sending {
                        dest: j.dest,
                        package,
                        version,
                        pct: j.pct(),
                    });
                }
            }
        }
        self.links.get_mut(dest).expect("link").current = Some((id, unit, 0));
        self.grant(dest, id, unit, 0, now, wall)
    }

    /// Fewer than the limits of package jobs of the same or higher priority are sending.
    fn may_start(&self, j: &Job) -> bool {
        let sending = |same_dest: bool| {
            self.jobs
                .values()
                .filter(|o| {
                    o.counts()
                        && o.state == JobState::Sending
                        && rank(o.priority) <= rank(j.priority)
                        && (!same_dest || o.dest == j.dest)
                })
                .count()
        };
        sending(true) < self.limits.per_destination && sending(false) < self.limits.total
    }

    fn grant(
        &mut self,
        dest: &SiteCode,
        job: JobId,
        unit: Unit,
        offset: u64,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Poll {
        let Some(j) = self.jobs.get(&job) else {
            self.links.get_mut(dest).expect("link").current = None;
            return self.poll(dest, now, wall);
        };
        let kind = j.kind;
        let rate = if self.boosted(j, wall) {
            Rate::Unlimited
        } else {
            let link = self.links.get(dest).expect("link");
            link.policy.rate.at(wall, self.zone)
        };
        let link = self.links.get_mut(dest).expect("link");
        match link.meter.grant(now, rate, unit.len - offset) {
            Grant::Bytes(n) => Poll::Send {
                job,
                kind,
                key: unit.key,
                offset,
                len: n,
            },
            Grant::Until(t) => Poll::Until(t),
        }
    }

    /// `bytes` of the unit [`Scheduler::poll`] named were written on the link to `dest`.
    pub fn on_written(&mut self, dest: &SiteCode, bytes: u64, now: Instant, wall: DateTime<Utc>) {
        let Some(link) = self.links.get(dest) else {
            return;
        };
        let Some((id, unit, offset)) = link.current else {
            return;
        };
        let boosted = self.jobs.get(&id).is_some_and(|j| self.boosted(j, wall));
        let priority = self.jobs.get(&id).map(|j| j.priority).unwrap_or_default();
        let rate = link.policy.rate.at(wall, self.zone);
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        let link = self.links.get_mut(dest).expect("link");
        link.sent[rank(priority) as usize] += bytes;
        if !boosted {
            link.meter.on_sent(now, rate, bytes);
        }
        match link.history.back_mut() {
            Some((s, b)) if *s == sec => *b += bytes,
            _ => link.history.push_back((sec, bytes)),
        }
        while link.history.front().is_some_and(|(s, _)| *s + 60 <= sec) {
            link.history.pop_front();
        }
        let offset = offset + bytes;
        if offset < unit.len {
            link.current = Some((id, unit, offset));
        } else {
            link.current = None;
        }
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.bytes_sent += bytes;
        j.first_byte.get_or_insert(now);
        if offset < unit.len {
            return;
        }
        j.done.insert(unit.key);
        let Some((package, version)) = j.package() else {
            if j.units.is_empty() && j.kind != JobKind::Chunks {
                self.jobs.remove(&id);
            }
            return;
        };
        let pct = j.pct();
        if j.done.len() as u64 >= j.total_units && j.units.is_empty() {
            j.state = JobState::Sent;
            j.finished = Some(now);
            j.reported_pct = Some(100);
            self.notices.push_back(Notice::Sent {
                dest: j.dest,
                package,
                version,
            });
        } else if j.reported_pct.is_none_or(|r| pct / 10 > r / 10) {
            j.reported_pct = Some(pct);
            self.notices.push_back(Notice::Sending {
                dest: j.dest,
                package,
                version,
                pct,
            });
        }
    }

    /// An attempt of `job` failed (the unit in progress, if it was this job's, is dropped).
    pub fn on_error(&mut self, job: JobId, error: &str, now: Instant) {
        let limits = self.limits;
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if let Some(link) = self.links.get_mut(&j.dest) {
            if link.current.is_some_and(|(c, u, _)| {
                if c == job {
                    j.units.push_front(u);
                }
                c == job
            }) {
                link.current = None;
            }
        }
        j.attempts += 1;
        j.last_error = Some(error.to_string());
        let retry_in = (j.attempts <= limits.retries).then_some(limits.retry_delay);
        j.state = match retry_in {
            Some(d) => JobState::Retrying { at: now + d },
            None => JobState::Failed,
        };
        if let Some((package, version)) = j.package() {
            self.notices.push_back(Notice::Error {
                dest: j.dest,
                package,
                version,
                error: error.to_string(),
                retry_in,
            });
        }
    }

    /// The link to `dest` is up: jobs waiting to retry, or failed, go again now.
    pub fn on_connect(&mut self, dest: &SiteCode) {
        self.links.entry(*dest).or_default().connected = true;
        for j in self.jobs.values_mut().filter(|j| &j.dest == dest) {
            match j.state {
                JobState::Retrying { .. } => j.state = JobState::Queued,
                JobState::Failed => {
                    j.state = JobState::Queued;
                    j.attempts = 0;
                }
                _ => {}
            }
        }
    }

    /// The link to `dest` is down: what was asked on it is forgotten (the child asks again),
    /// and a package job that had started has failed an attempt.
    pub fn on_disconnect(&mut self, dest: &SiteCode, error: &str, now: Instant) {
        let Some(link) = self.links.get_mut(dest) else {
            return;
        };
        link.connected = false;
        link.current = None;
        let mut failed = Vec::new();
        self.jobs.retain(|id, j| {
            if &j.dest != dest {
                return true;
            }
            j.units.clear();
            match j.kind {
                JobKind::Content { .. } => {
                    if j.state == JobState::Sending {
                        failed.push(*id);
                    }
                    true
                }
                JobKind::Chunks => false,
                _ => false,
            }
        });
        for id in failed {
            self.on_error(id, error, now);
        }
    }

    /// Failed jobs (of `dest`, of `package`, or all) go again now; returns how many.
    pub fn retry(&mut self, dest: Option<SiteCode>, package: Option<PackageId>) -> usize {
        let mut n = 0;
        for j in self.jobs.values_mut() {
            let matches = dest.is_none_or(|d| d == j.dest)
                && package.is_none_or(|p| j.package().is_some_and(|(q, _)| q == p));
            if matches && matches!(j.state, JobState::Failed | JobState::Retrying { .. }) {
                j.state = JobState::Queued;
                j.attempts = 0;
                n += 1;
            }
        }
        n
    }

    /// The next status notice to raise.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    fn prune(&mut self, now: Instant) {
        self.jobs.retain(|_, j| {
            j.finished
                .is_none_or(|t| now.saturating_duration_since(t) < KEEP_SENT)
        });
    }

    /// What `status senders` shows.
    pub fn view(&self, now: Instant, wall: DateTime<Utc>) -> Vec<LinkView> {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        self.links
            .iter()
            .map(|(dest, l)| {
                let mut queue = BTreeMap::new();
                for p in [Priority::High, Priority::Medium, Priority::Low] {
                    queue.insert(p.as_str().to_string(), QueueView::default());
                }
                let mut jobs = Vec::new();
                for (id, j) in self.jobs.iter().filter(|(_, j)| &j.dest == dest) {
                    let open = matches!(
                        j.state,
                        JobState::Queued | JobState::Sending | JobState::Retrying { .. }
                    );
                    if open && (!j.units.is_empty() || j.counts()) {
                        let q = queue.get_mut(j.priority.as_str()).expect("three");
                        q.jobs += 1;
                        q.bytes += j.units.iter().map(|u| u.len).sum::<u64>();
                    }
                    if let Some((package, version)) = j.package() {
                        let retry_in_secs = match j.state {
                            JobState::Retrying { at } => {
                                Some(at.saturating_duration_since(now).as_secs())
                            }
                            _ => None,
                        };
                        jobs.push(JobView {
                            id: id.0,
                            package,
                            version,
                            priority: j.priority,
                            state: j.state.name().to_string(),
                            retry_in_secs,
                            pct: j.pct(),
                            units: j.total_units,
                            units_sent: j.done.len() as u64,
                            bytes_sent: j.bytes_sent,
                            attempts: j.attempts,
                            boosted: self.boosted(j, wall),
                            last_error: j.last_error.clone(),
                            wait_ms: j.queued_at.zip(j.first_byte).map(|(q, f)| {
                                f.saturating_duration_since(q).as_secs_f64() * 1000.0
                            }),
                        });
                    }
                }
                let current = l.current.and_then(|(id, _, _)| {
                    let j = self.jobs.get(&id)?;
                    Some(match j.package() {
                        Some((p, v)) => format!("{p} v{v} {}%", j.pct()),
                        None => match j.kind {
                            JobKind::Events { .. } => "config events".to_string(),
                            JobKind::Reports => "reports".to_string(),
                            _ => "chunks".to_string(),
                        },
                    })
                });
                let minute: u64 = l
                    .history
                    .iter()
                    .filter(|(s, _)| *s + 60 > sec)
                    .map(|(_, b)| b)
                    .sum();
                LinkView {
                    dest: *dest,
                    connected: l.connected,
                    window: l.policy.schedule.at(wall, self.zone),
                    schedule: l.policy.schedule.text().to_string(),
                    rate: l.policy.rate.at(wall, self.zone),
                    rates: l.policy.rate.text().to_string(),
                    queue,
                    current,
                    bytes_per_sec: minute / 60,
                    sent_bytes: [Priority::High, Priority::Medium, Priority::Low]
                        .iter()
                        .map(|p| (p.as_str().to_string(), l.sent[rank(*p) as usize]))
                        .collect(),
                    jobs,
                }
            })
            .collect()
    }
}

/// The open jobs of one priority on a link, in `status senders`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QueueView {
    /// Jobs queued, sending or retrying (a package job counts even with no unit queued).
    pub jobs: u64,
    /// Bytes of their units still queued (the unit being written is not counted).
    pub bytes: u64,
}

/// One package job in `status senders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Its [`JobId`].
    pub id: u64,
    /// The package.
    pub package: PackageId,
    /// Its source version.
    pub version: u32,
    /// The job's priority now.
    pub priority: Priority,
    /// queued, sending, retrying, failed, sent.
    pub state: String,
    /// While retrying: seconds until the retry is due.
    pub retry_in_secs: Option<u64>,
    /// Percent of its units sent, 0 to 100.
    pub pct: u8,
    /// Units the destination needs from it, those sent included.
    pub units: u64,
    /// Units written whole.
    pub units_sent: u64,
    /// Bytes written for it, over every attempt.
    pub bytes_sent: u64,
    /// Failed attempts, counted again from zero when the operator retries it or its link
    /// comes back after it failed.
    pub attempts: u32,
    /// Whether a boost lets it ignore the link's schedule and rate now.
    pub boosted: bool,
    /// The error of its last failed attempt.
    pub last_error: Option<String>,
    /// From its first chunk queued to its first byte written, in ms.
    pub wait_ms: Option<f64>,
}

/// One link in `status senders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkView {
    /// The site the link sends to.
    pub dest: SiteCode,
    /// Whether the link is up.
    pub connected: bool,
    /// The availability in force now.
    pub window: Availability,
    /// The address schedule's rules as written (empty: open all week).
    pub schedule: String,
    /// The rate in force now.
    pub rate: Rate,
    /// The rate limit's rules as written (empty: unlimited).
    pub rates: String,
    /// Per priority: jobs waiting or sending, and the bytes queued.
    pub queue: BTreeMap<String, QueueView>,
    /// The job sending now, with its %.
    pub current: Option<String>,
    /// Bytes per second over the last minute.
    pub bytes_per_sec: u64,
    /// Bytes written since the process started, per priority (`high`, `medium`, `low`).
    #[serde(default)]
    pub sent_bytes: BTreeMap<String, u64>,
    /// Its package jobs: open, failed, and sent within the last hour.
    pub jobs: Vec<JobView>,
}
