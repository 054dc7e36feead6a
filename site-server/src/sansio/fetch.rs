//! What this site still has to fetch from its parent, and what to ask for next (sans-IO).
//!
//! The content shell (`net/content.rs`) tells the plan what the site wants (chunks of the
//! package versions targeted at it or its subtree, and chunks a child asked for that are not
//! here) and what happened to each request; the plan answers which ids to request now, keeping
//! a bounded window in flight. Time is an argument, so every rule (the window, retry after a
//! "missing", re-request after a corrupt chunk) is tested without a network or a clock.
//!
//! A chunk moves Queued -> InFlight (requested) -> Verified (its bytes checked, written, not
//! yet durable) -> gone (stored). A corrupt answer sends it back to the front of the queue at
//! once (up to [`BAD_BEFORE_PAUSE`] times in a row, then after a pause); "missing" at the
//! parent makes it wait, with a doubling delay, before it is asked for again.

use schema::event::Priority;
use schema::{ChunkId, PackageId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The size assumed for a chunk whose size is not known (asked for by a child).
pub const UNKNOWN_SIZE: u32 = 1 << 20;
/// Corrupt answers in a row for one chunk before it waits [`BAD_PAUSE`].
pub const BAD_BEFORE_PAUSE: u32 = 3;
pub const BAD_PAUSE: Duration = Duration::from_secs(10);
const MISSING_FIRST: Duration = Duration::from_secs(1);
const MISSING_MAX: Duration = Duration::from_secs(30);

/// How much may be requested and not yet verified.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub chunks: usize,
    pub bytes: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            chunks: 256,
            bytes: 48 << 20,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Queued,
    InFlight,
    Verified,
    Waiting { until: Instant },
}

#[derive(Clone, Debug)]
struct Entry {
    size: u32,
    /// 0 high, 1 medium, 2 low: each has its own queue and window, so what is asked for a
    /// high package never waits behind a window full of low ones.
    rank: usize,
    phase: Phase,
    missing: u32,
    bad: u32,
}

/// The fetch plan of one site (see the module doc).
#[derive(Debug, Default)]
pub struct FetchPlan {
    window: Window,
    entries: HashMap<ChunkId, Entry>,
    /// Ids to request, in order, per priority; may hold ids no longer queued there (skipped
    /// when popped).
    queue: [VecDeque<ChunkId>; 3],
    in_flight_chunks: [usize; 3],
    in_flight_bytes: [u64; 3],
    /// What this site still misses per package version, for the parent's sender to know
    /// the job (its size, its progress); and which of them the parent has not heard yet.
    needs: BTreeMap<(PackageId, u32), Vec<ChunkId>>,
    unannounced: BTreeSet<(PackageId, u32)>,
    /// Nothing is requested before this (the disk is full: what came could not be kept).
    paused_until: Option<Instant>,
}

fn rank(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Medium => 1,
        Priority::Low => 2,
    }
}

impl FetchPlan {
    pub fn new(window: Window) -> Self {
        FetchPlan {
            window,
            ..Default::default()
        }
    }

    /// Adds `id` (of `size` raw bytes) to what is wanted, at medium priority. Returns
    /// whether it is new.
    pub fn want(&mut self, id: ChunkId, size: u32) -> bool {
        self.want_at(id, size, Priority::Medium)
    }

    /// Adds `id` at `priority`; a chunk already wanted at a lower one is raised to it.
    pub fn want_at(&mut self, id: ChunkId, size: u32, priority: Priority) -> bool {
        let r = rank(priority);
        if let Some(e) = self.entries.get_mut(&id) {
            if r < e.rank {
                if e.phase == Phase::InFlight {
                    self.in_flight_chunks[e.rank] -= 1;
                    self.in_flight_bytes[e.rank] -= e.size as u64;
                    self.in_flight_chunks[r] += 1;
                    self.in_flight_bytes[r] += e.size as u64;
                }
                e.rank = r;
                if e.phase == Phase::Queued {
                    self.queue[r].push_back(id);
                }
            }
            return false;
        }
        self.entries.insert(
            id,
            Entry {
                size,
                rank: r,
                phase: Phase::Queued,
                missing: 0,
                bad: 0,
            },
        );
        self.queue[r].push_back(id);
        true
    }

    /// This site still misses `ids` of `package` `version` (the parent is told).
    pub fn need(&mut self, package: PackageId, version: u32, ids: Vec<ChunkId>) {
        if self.needs.get(&(package, version)) != Some(&ids) {
            self.unannounced.insert((package, version));
        }
        self.needs.insert((package, version), ids);
    }

    /// `package` `version` is complete here (or no longer wanted).
    pub fn forget_need(&mut self, package: PackageId, version: u32) {
        self.needs.remove(&(package, version));
        self.unannounced.remove(&(package, version));
    }

    /// What the parent has not been told yet.
    pub fn take_announcements(&mut self) -> Vec<(PackageId, u32, Vec<ChunkId>)> {
        std::mem::take(&mut self.unannounced)
            .into_iter()
            .filter_map(|k| self.needs.get(&k).map(|ids| (k.0, k.1, ids.clone())))
            .collect()
    }

    /// Whether `id` is wanted and not yet stored.
    pub fn is_wanted(&self, id: &ChunkId) -> bool {
        self.entries.contains_key(id)
    }

    /// Whether the parent said it does not have `id` and it has not arrived since.
    pub fn is_missing_upstream(&self, id: &ChunkId) -> bool {
        self.entries.get(id).is_some_and(|e| e.missing > 0)
    }

    /// The ids to request now: waiting ones whose time has come go back to the queue, then
    /// the queue is taken in order while the window has room (at least one chunk always
    /// goes when nothing is in flight, whatever its size).
    pub fn next_request(&mut self, now: Instant) -> Vec<ChunkId> {
        if self.paused_until.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.paused_until = None;
        let due: Vec<ChunkId> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::Waiting { until } if until <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let e = self.entries.get_mut(&id).expect("listed");
            e.phase = Phase::Queued;
            self.queue[e.rank].push_back(id);
        }
        let mut out = Vec::new();
        for r in 0..3 {
            while let Some(id) = self.queue[r].front().copied() {
                let Some(e) = self.entries.get(&id) else {
                    self.queue[r].pop_front();
                    continue;
                };
                if e.phase != Phase::Queued || e.rank != r {
                    self.queue[r].pop_front();
                    continue;
                }
                let room = self.in_flight_chunks[r] == 0
                    || (self.in_flight_chunks[r] < self.window.chunks
                        && self.in_flight_bytes[r] + e.size as u64 <= self.window.bytes);
                if !room {
                    break;
                }
                self.queue[r].pop_front();
                self.in_flight_chunks[r] += 1;
                self.in_flight_bytes[r] += e.size as u64;
                self.entries.get_mut(&id).expect("present").phase = Phase::InFlight;
                out.push(id);
            }
        }
        out
    }

    fn release(&mut self, id: &ChunkId) -> Option<&mut Entry> {
        let e = self.entries.get_mut(id)?;
        if e.phase == Phase::InFlight {
            self.in_flight_chunks[e.rank] -= 1;
            self.in_flight_bytes[e.rank] -= e.size as u64;
        }
        Some(e)
    }

    /// `id` arrived and verified; it is being made durable. Frees its room in the window.
    pub fn on_verified(&mut self, id: &ChunkId) {
        if let Some(e) = self.release(id) {
            if e.phase == Phase::InFlight {
                e.phase = Phase::Verified;
                e.bad = 0;
            }
        }
    }

    /// `id` is stored (durable): no longer wanted.
    pub fn on_stored(&mut self, id: &ChunkId) {
        self.release(id);
        self.entries.remove(id);
    }

    /// Writing `id` failed after it verified (local disk trouble): ask for it again.
    pub fn on_store_failed(&mut self, id: &ChunkId) {
        if let Some(e) = self.release(id) {
            e.phase = Phase::Queued;
            let r = e.rank;
            self.queue[r].push_front(*id);
        }
    }

    /// The bytes that came for `id` did not verify. Returns how many times in a row.
    pub fn on_bad(&mut self, id: &ChunkId, now: Instant) -> u32 {
        let Some(e) = self.release(id) else { return 0 };
        e.bad += 1;
        let bad = e.bad;
        if bad < BAD_BEFORE_PAUSE {
            e.phase = Phase::Queued;
            let r = e.rank;
            self.queue[r].push_front(*id);
        } else {
            e.phase = Phase::Waiting {
                until: now + BAD_PAUSE,
            };
        }
        bad
    }

    /// The parent does not have `id`: wait, then ask again (1 s, 2 s, ... up to 30 s).
    pub fn on_missing(&mut self, id: &ChunkId, now: Instant) {
        let Some(e) = self.release(id) else { return };
        let delay = MISSING_FIRST
            .saturating_mul(1u32 << e.missing.min(5))
            .min(MISSING_MAX);
        e.missing += 1;
        e.phase = Phase::Waiting { until: now + delay };
    }

    /// The connection to the parent is gone: what was requested and not answered is asked
    /// for again first on the next one. (Verified chunks are still being stored.)
    pub fn on_disconnect(&mut self) {
        let mut back: Vec<ChunkId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.phase == Phase::InFlight)
            .map(|(id, _)| *id)
            .collect();
        back.sort();
        for id in back.iter().rev() {
            let e = self.entries.get_mut(id).expect("listed");
            e.phase = Phase::Queued;
            self.queue[e.rank].push_front(*id);
        }
        self.in_flight_chunks = [0; 3];
        self.in_flight_bytes = [0; 3];
        // The next connection's parent is told every need again.
        self.unannounced = self.needs.keys().copied().collect();
    }

    /// When a waiting chunk becomes due (or a pause ends), if any.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e.phase {
                Phase::Waiting { until } => Some(until),
                _ => None,
            })
            .chain(self.paused_until)
            .min()
    }

    /// Requests nothing before `until` (what arrives cannot be kept: the disk is full).
    /// Chunks in flight are still taken; those whose storing fails go back in line.
    pub fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    /// Whether requests are paused at `now`.
    pub fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t)
    }

    /// Chunks wanted and not stored yet.
    pub fn outstanding(&self) -> usize {
        self.entries.len()
    }

    /// Chunks requested and not answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight_chunks.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        ChunkId::of(&n.to_le_bytes())
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_requests_go_in_order() {
        let mut p = FetchPlan::new(Window {
            chunks: 3,
            bytes: 10 << 20,
        });
        let t = Instant::now();
        for n in 0..5 {
            assert!(p.want(id(n), 1 << 20));
        }
        assert!(!p.want(id(0), 1 << 20), "wanted once");
        assert_eq!(p.next_request(t), vec![id(0), id(1), id(2)]);
        assert!(p.next_request(t).is_empty(), "window full");
        p.on_verified(&id(1));
        assert_eq!(p.next_request(t), vec![id(3)]);
        p.on_stored(&id(1));
        assert!(!p.is_wanted(&id(1)));
        assert!(p.next_request(t).is_empty());
        p.on_stored(&id(0));
        assert_eq!(p.next_request(t), vec![id(4)]);
        assert_eq!((p.outstanding(), p.in_flight()), (3, 3));
    }

    #[test]
    fn the_byte_window_lets_one_big_chunk_through_alone() {
        let mut p = FetchPlan::new(Window {
            chunks: 100,
            bytes: 1 << 20,
        });
        let t = Instant::now();
        p.want(id(0), 4 << 20);
        p.want(id(1), 1000);
        assert_eq!(p.next_request(t), vec![id(0)]);
        assert!(p.next_request(t).is_empty());
        p.on_verified(&id(0));
        assert_eq!(p.next_request(t), vec![id(1)]);
    }

    #[test]
    fn a_corrupt_chunk_is_asked_for_again_at_once_then_after_a_pause() {
        let mut p = FetchPlan::new(Window::default());
        let t = Instant::now();
        p.want(id(0), 10);
        p.want(id(1), 10);
        assert_eq!(p.next_request(t).len(), 2);
        assert_eq!(p.on_bad(&id(0), t), 1);
        assert_eq!(p.next_request(t), vec![id(0)], "again at once");
        assert_eq!(p.on_bad(&id(0), t), 2);
        assert_eq!(p.next_request(t), vec![id(0)]);
        assert_eq!(p.on_bad(&id(0), t), BAD_BEFORE_PAUSE);
        assert!(p.next_request(t).is_empty(), "paused");
        assert_eq!(p.next_wakeup(), Some(t + BAD_PAUSE));
        assert!(p
            .next_request(t + BAD_PAUSE - Duration::from_millis(1))
            .is_empty());
        assert_eq!(p.next_request(t + BAD_PAUSE), vec![id(0)]);
        p.on_verified(&id(0));
        p.on_stored(&id(0));
        assert_eq!(p.in_flight(), 1);
    }

    #[test]
    fn a_pause_holds_every_request_until_it_ends() {
        let mut p = FetchPlan::new(Window {
            chunks: 4,
            bytes: 1 << 30,
        });
        let t = Instant::now();
        p.want(id(0), 10);
        p.want(id(1), 10);
        p.pause(t + Duration::from_secs(10));
        assert!(p.next_request(t).is_empty());
        assert!(p.is_paused(t + Duration::from_secs(9)));
        assert_eq!(p.next_wakeup(), Some(t + Duration::from_secs(10)));
        assert_eq!(p.next_request(t + Duration::from_secs(10)).len(), 2);
        assert!(!p.is_paused(t + Duration::from_secs(10)));
    }

    #[test]
    fn missing_at_the_parent_waits_with_a_doubling_delay() {
        let mut p = FetchPlan::new(Window::default());
        let t = Instant::now();
        p.want(id(0), 10);
        p.next_request(t);
        p.on_missing(&id(0), t);
        assert!(p.is_missing_upstream(&id(0)));
        assert_eq!(p.in_flight(), 0);
        assert!(p.next_request(t + Duration::from_millis(999)).is_empty());
        let t1 = t + Duration::from_secs(1);
        assert_eq!(p.next_request(t1), vec![id(0)]);
        p.on_missing(&id(0), t1);
        assert_eq!(p.next_wakeup(), Some(t1 + Duration::from_secs(2)));
        for _ in 0..10 {
            let w = p.next_wakeup().unwrap();
            p.next_request(w);
            p.on_missing(&id(0), w);
        }
        let w = p.next_wakeup().unwrap();
        p.next_request(w);
        p.on_missing(&id(0), w);
        assert_eq!(p.next_wakeup(), Some(w + MISSING_MAX), "capped");
    }

    #[test]
    fn a_disconnect_puts_unanswered_requests_first_in_line() {
        let mut p = FetchPlan::new(Window {
            chunks: 2,
            bytes: 1 << 30,
        });
        let t = Instant::now();
        for n in 0..4 {
            p.want(id(n), 10);
        }
        let first = p.next_request(t);
        assert_eq!(first.len(), 2);
        p.on_verified(&first[0]);
        p.on_disconnect();
        assert_eq!(p.in_flight(), 0);
        let again = p.next_request(t);
        assert_eq!(again, vec![first[1], id(2)], "the unanswered one first");
        // A late answer from the old connection is harmless.
        p.on_stored(&first[0]);
        p.on_verified(&first[1]);
        p.on_stored(&first[1]);
        assert_eq!(p.next_request(t), vec![id(3)]);
        assert_eq!(p.in_flight(), 2);
        p.on_verified(&id(2));
        p.on_store_failed(&id(2));
        assert_eq!(p.next_request(t), vec![id(2)], "asked for again");
        assert!(p.next_request(t).is_empty(), "window full");
    }
}
