//! The link scheduler on virtual time: ordering, preemption at chunk boundaries, windows,
//! rates and pulses, concurrency caps, retries, boost.

use chrono::{DateTime, TimeZone, Utc};
use schema::event::Priority::{self, High, Low, Medium};
use schema::{ChunkId, PackageId, SiteCode};
use sender::scheduler::*;
use std::time::{Duration, Instant};

fn site(s: &str) -> SiteCode {
    SiteCode::new(s).unwrap()
}

fn pkg(n: u32) -> PackageId {
    format!("CEN{n:05}").parse().unwrap()
}

fn chunk(n: u32) -> ChunkId {
    ChunkId::of(&n.to_le_bytes())
}

/// A Monday at 09:00 UTC.
fn monday(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0).unwrap()
}

struct Rig {
    s: Scheduler,
    now: Instant,
    wall: DateTime<Utc>,
}

impl Rig {
    fn new(limits: Limits) -> Self {
        let now = Instant::now();
        Rig {
            s: Scheduler::new(chrono_tz::UTC, limits, now),
            now,
            wall: monday(9),
        }
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += chrono::Duration::from_std(d).unwrap();
    }
    fn job(&mut self, dest: &str, p: u32, prio: Priority, chunks: u32, size: u64) -> JobId {
        let keys: Vec<UnitKey> = (0..chunks)
            .map(|c| UnitKey::Chunk(chunk(p * 1000 + c)))
            .collect();
        let id = self.s.content_job(site(dest), pkg(p), 1, prio, keys);
        for c in 0..chunks {
            self.s.push(
                id,
                Unit {
                    key: UnitKey::Chunk(chunk(p * 1000 + c)),
                    len: size,
                },
                Instant::now(),
            );
        }
        id
    }
    /// Sends whole grants until the link has nothing it may send now; returns the jobs of
    /// the units finished, in order.
    fn drain(&mut self, dest: &str, max_units: usize) -> Vec<JobId> {
        let mut order = Vec::new();
        while order.len() < max_units {
            match self.s.poll(&site(dest), self.now, self.wall) {
                Poll::Send {
                    job, offset, len, ..
                } => {
                    self.s.on_written(&site(dest), len, self.now, self.wall);
                    let _ = offset;
                    if !self.in_unit(dest) {
                        order.push(job);
                    }
                }
                Poll::Until(t) => {
                    let d = t.saturating_duration_since(self.now);
                    if d > Duration::from_secs(600) {
                        break;
                    }
                    self.advance(d.max(Duration::from_micros(1)));
                }
                Poll::Idle => break,
            }
        }
        order
    }
    fn in_unit(&mut self, dest: &str) -> bool {
        let v = self.s.view(self.now, self.wall);
        v.iter()
            .find(|l| l.dest == site(dest))
            .is_some_and(|l| l.current.is_some())
    }
    fn notices(&mut self) -> Vec<Notice> {
        std::iter::from_fn(|| self.s.poll_notice()).collect()
    }
}

#[test]
fn higher_priority_first_then_first_come_first_served() {
    let mut r = Rig::new(Limits::default());
    let low = r.job("S01", 1, Low, 2, 100);
    let med1 = r.job("S01", 2, Medium, 2, 100);
    let high = r.job("S01", 3, High, 2, 100);
    let med2 = r.job("S01", 4, Medium, 2, 100);
    let order = r.drain("S01", 100);
    assert_eq!(order, vec![high, high, med1, med1, med2, med2, low, low]);
}

#[test]
fn a_high_job_preempts_a_low_one_at_the_next_chunk_boundary() {
    let mut r = Rig::new(Limits::default());
    let low = r.job("S01", 1, Low, 3, 1000);
    // Half of the low job's first chunk is written...
    let Poll::Send { job, len, .. } = r.s.poll(&site("S01"), r.now, r.wall) else {
        panic!("nothing to send")
    };
    assert_eq!((job, len), (low, 1000));
    r.s.on_written(&site("S01"), 500, r.now, r.wall);
    // ... when a high job arrives: the chunk in progress is finished first, then the high
    // job goes, then the low one resumes.
    let high = r.job("S01", 2, High, 2, 1000);
    match r.s.poll(&site("S01"), r.now, r.wall) {
        Poll::Send {
            job, offset, len, ..
        } => assert_eq!((job, offset, len), (low, 500, 500)),
        other => panic!("{other:?}"),
    }
    r.s.on_written(&site("S01"), 500, r.now, r.wall);
    let order = r.drain("S01", 100);
    assert_eq!(order, vec![high, high, low, low]);
}

#[test]
fn a_window_holds_what_it_does_not_allow_and_lets_it_go_when_it_opens() {
    let mut r = Rig::new(Limits::default());
    r.s.set_policy(
        site("S01"),
        LinkPolicy::parse("mon 09-10 high; mon 10-11 medium+; mon 11-12 closed", "").unwrap(),
    );
    let low = r.job("S01", 1, Low, 1, 10);
    let med = r.job("S01", 2, Medium, 1, 10);
    let high = r.job("S01", 3, High, 1, 10);
    // 09:00-10:00: high only; the others wait (not dropped) until the hour ends.
    assert_eq!(r.drain("S01", 1), vec![high]);
    match r.s.poll(&site("S01"), r.now, r.wall) {
        Poll::Until(t) => assert_eq!(t - r.now, Duration::from_secs(3600)),
        other => panic!("expected a wait for the window, got {other:?}"),
    }
    // 10:00: medium and high.
    r.advance(Duration::from_secs(3600));
    assert_eq!(r.drain("S01", 1), vec![med]);
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Until(_)
    ));
    // 11:00: closed; even a new high job waits.
    r.advance(Duration::from_secs(3600));
    let high2 = r.job("S01", 4, High, 1, 10);
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Until(_)
    ));
    // 12:00: open to all again.
    r.advance(Duration::from_secs(3600));
    assert_eq!(r.drain("S01", 10), vec![high2, low]);
}

#[test]
fn the_window_follows_the_sites_zone() {
    let now = Instant::now();
    let mut s = Scheduler::new("Asia/Seoul".parse().unwrap(), Limits::default(), now);
    s.set_policy(
        site("S01"),
        LinkPolicy::parse("mon 09-18 closed", "").unwrap(),
    );
    let id = s.content_job(site("S01"), pkg(1), 1, High, [UnitKey::Chunk(chunk(1))]);
    s.push(
        id,
        Unit {
            key: UnitKey::Chunk(chunk(1)),
            len: 1,
        },
        Instant::now(),
    );
    // Monday 01:00 UTC is 10:00 in Seoul: closed. Monday 09:00 UTC is 18:00 there: open.
    assert!(matches!(
        s.poll(&site("S01"), now, monday(1)),
        Poll::Until(_)
    ));
    assert!(matches!(
        s.poll(&site("S01"), now, monday(9)),
        Poll::Send { .. }
    ));
}

#[test]
fn a_rate_limit_meters_the_bytes_written() {
    let mut r = Rig::new(Limits::default());
    r.s.set_policy(site("S01"), LinkPolicy::parse("", "* 1MiB/s").unwrap());
    r.job("S01", 1, Medium, 40, 256 << 10); // 10 MiB
    let t0 = r.now;
    let order = r.drain("S01", 1000);
    assert_eq!(order.len(), 40);
    let secs = (r.now - t0).as_secs_f64();
    assert!(
        (9.6..10.1).contains(&secs),
        "10 MiB at 1 MiB/s took {secs} s"
    );
}

#[test]
fn pulse_mode_sends_blocks_with_pauses() {
    let mut r = Rig::new(Limits::default());
    r.s.set_policy(
        site("S01"),
        LinkPolicy::parse("", "* pulse 64KiB 1s").unwrap(),
    );
    r.job("S01", 1, Medium, 4, 128 << 10); // 512 KiB = 8 blocks
    let t0 = r.now;
    let mut writes = Vec::new();
    loop {
        match r.s.poll(&site("S01"), r.now, r.wall) {
            Poll::Send { len, .. } => {
                writes.push(len);
                r.s.on_written(&site("S01"), len, r.now, r.wall);
            }
            Poll::Until(t) => r.advance(t - r.now),
            Poll::Idle => break,
        }
    }
    assert!(writes.iter().all(|w| *w <= 64 << 10), "{writes:?}");
    assert_eq!(writes.iter().sum::<u64>(), 512 << 10);
    // Eight blocks, a pause after each but the last is waited only if more follows.
    let secs = (r.now - t0).as_secs();
    assert_eq!(secs, 7, "8 blocks of 64 KiB one second apart");
}

#[test]
fn concurrency_is_capped_per_destination_and_over_all() {
    let mut r = Rig::new(Limits::default());
    // Four jobs to S01, each of which sends one chunk and then waits for more requests.
    let jobs: Vec<JobId> = (1..5).map(|i| r.job("S01", i, Medium, 1, 10)).collect();
    for i in 1..5 {
        let more = [0, 1].map(|c| UnitKey::Chunk(chunk(i * 1000 + c)));
        r.s.content_job(site("S01"), pkg(i), 1, Medium, more);
    }
    let started = r.drain("S01", 100);
    assert_eq!(
        started,
        jobs[..3].to_vec(),
        "three sendings per destination"
    );
    // Two jobs to S02: only two more may start over all (five).
    let s2: Vec<JobId> = (10..13).map(|i| r.job("S02", i, Medium, 1, 10)).collect();
    for i in 10..13 {
        let more = [0, 1].map(|c| UnitKey::Chunk(chunk(i * 1000 + c)));
        r.s.content_job(site("S02"), pkg(i), 1, Medium, more);
    }
    assert_eq!(
        r.drain("S02", 100),
        s2[..2].to_vec(),
        "five sendings over all"
    );
    // A higher priority is not held behind lower ones that fill the slots.
    let high = r.job("S02", 20, High, 1, 10);
    assert_eq!(r.drain("S02", 100), vec![high]);
}

#[test]
fn a_failed_job_is_retried_after_the_delay_then_failed_until_the_link_changes() {
    let mut r = Rig::new(Limits::default());
    let id = r.job("S01", 1, Medium, 2, 10);
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Send { .. }
    ));
    r.notices();
    r.s.on_error(id, "cannot read chunk: disk error", r.now);
    let n = r.notices();
    assert!(
        matches!(&n[..], [Notice::Error { retry_in: Some(d), error, .. }] if *d == Duration::from_secs(60) && error.contains("disk")),
        "{n:?}"
    );
    // Not before the delay.
    match r.s.poll(&site("S01"), r.now, r.wall) {
        Poll::Until(t) => assert_eq!(t - r.now, Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    r.advance(Duration::from_secs(60));
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Send { .. }
    ));
    r.s.on_error(id, "again", r.now);
    r.advance(Duration::from_secs(60));
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Send { .. }
    ));
    // Third failure: two retries are spent; failed (3532, no retry) and it stays failed.
    r.notices();
    r.s.on_error(id, "third", r.now);
    assert!(matches!(
        &r.notices()[..],
        [Notice::Error { retry_in: None, .. }]
    ));
    r.advance(Duration::from_secs(3600));
    assert_eq!(r.s.poll(&site("S01"), r.now, r.wall), Poll::Idle);
    // The link comes back: it goes again, and is sent.
    r.s.on_connect(&site("S01"));
    assert_eq!(r.drain("S01", 10), vec![id, id]);
    assert!(r.notices().iter().any(|n| matches!(n, Notice::Sent { .. })));
}

#[test]
fn sender_retry_requeues_failed_jobs() {
    let mut r = Rig::new(Limits {
        retries: 0,
        ..Limits::default()
    });
    let id = r.job("S01", 1, Medium, 1, 10);
    let _ = r.s.poll(&site("S01"), r.now, r.wall);
    r.s.on_error(id, "boom", r.now);
    assert_eq!(r.s.poll(&site("S01"), r.now, r.wall), Poll::Idle);
    assert_eq!(r.s.retry(None, Some(pkg(1))), 1);
    assert_eq!(r.drain("S01", 10), vec![id]);
}

#[test]
fn progress_is_reported_at_start_every_ten_percent_and_when_sent() {
    let mut r = Rig::new(Limits::default());
    r.job("S01", 1, Medium, 25, 10);
    r.drain("S01", 100);
    let pcts: Vec<u8> = r
        .notices()
        .iter()
        .filter_map(|n| match n {
            Notice::Sending { pct, .. } => Some(*pct),
            Notice::Sent { .. } => Some(100),
            _ => None,
        })
        .collect();
    assert_eq!(pcts, vec![0, 12, 20, 32, 40, 52, 60, 72, 80, 92, 100]);
}

#[test]
fn a_boosted_package_ignores_the_window_and_the_rate_until_the_boost_ends() {
    let mut r = Rig::new(Limits::default());
    r.s.set_policy(
        site("S01"),
        LinkPolicy::parse("* closed", "* 1KiB/s").unwrap(),
    );
    let id = r.job("S01", 1, Low, 4, 1 << 20);
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Until(_)
    ));
    r.s.boost(pkg(1), Some(r.wall + chrono::Duration::minutes(10)));
    let t0 = r.now;
    // Two chunks go at once, unmetered...
    for _ in 0..2 {
        match r.s.poll(&site("S01"), r.now, r.wall) {
            Poll::Send { job, len, .. } => {
                assert_eq!((job, len), (id, 1 << 20));
                r.s.on_written(&site("S01"), len, r.now, r.wall);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(r.now, t0);
    // ... and when the boost ends the window holds the rest again.
    r.advance(Duration::from_secs(601));
    assert!(matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Until(_)
    ));
}

#[test]
fn a_disconnect_forgets_the_requests_and_fails_an_attempt() {
    let mut r = Rig::new(Limits::default());
    let id = r.job("S01", 1, Medium, 3, 10);
    let _ = r.s.poll(&site("S01"), r.now, r.wall);
    r.s.on_written(&site("S01"), 10, r.now, r.wall);
    r.notices();
    r.s.on_disconnect(&site("S01"), "connection lost", r.now);
    assert!(matches!(&r.notices()[..], [Notice::Error { .. }]));
    assert!(!matches!(
        r.s.poll(&site("S01"), r.now, r.wall),
        Poll::Send { .. }
    ));
    // The child reconnects and asks for the two chunks it still misses: same job, 1 of 3 done.
    r.s.on_connect(&site("S01"));
    let still = [1, 2].map(|c| UnitKey::Chunk(chunk(1000 + c)));
    let again = r.s.content_job(site("S01"), pkg(1), 1, Medium, still);
    assert_eq!(again, id);
    for c in 1..3 {
        r.s.push(
            id,
            Unit {
                key: UnitKey::Chunk(chunk(1000 + c)),
                len: 10,
            },
            Instant::now(),
        );
    }
    assert_eq!(r.drain("S01", 10), vec![id, id]);
    assert!(r.notices().iter().any(|n| matches!(n, Notice::Sent { .. })));
}

#[test]
fn a_chunk_asked_again_is_sent_again_before_the_job_is_sent() {
    let mut r = Rig::new(Limits::default());
    let id = r.job("S01", 1, Medium, 2, 10);
    // The first chunk goes; the destination refuses it (corrupt) and asks again while the
    // second is still queued.
    let Poll::Send { key, .. } = r.s.poll(&site("S01"), r.now, r.wall) else {
        panic!()
    };
    r.s.on_written(&site("S01"), 10, r.now, r.wall);
    r.s.push(id, Unit { key, len: 10 }, r.now);
    assert_eq!(r.drain("S01", 10), vec![id, id]);
    let sent = r
        .notices()
        .iter()
        .filter(|n| matches!(n, Notice::Sent { .. }))
        .count();
    assert_eq!(sent, 1, "sent once, after the resend");
}
