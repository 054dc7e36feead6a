//! Which chunk to ask for next, and from whom (sans-IO).
//!
//! A distribution point asks for at most `window` chunks at once. A pull DP has ranked
//! sources (other DPs of its site); each chunk goes to the first source that is not known to
//! be down, then the next when that one does not have it or sends bad bytes, and finally to
//! the site server, which has everything assigned. A source that does not answer is skipped
//! for [`SOURCE_DOWN_FOR`]; a chunk the site says it lacks is asked for again after
//! [`SITE_MISSING_RETRY`]. Time comes in as arguments.

use schema::ChunkId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long a source that failed to answer is left alone.
pub const SOURCE_DOWN_FOR: Duration = Duration::from_secs(30);
/// How long before a chunk the site said it lacks is asked for again.
pub const SITE_MISSING_RETRY: Duration = Duration::from_secs(5);

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The source of this rank.
    Source(usize),
    /// The site server.
    Site,
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and stored.
    Stored,
    /// The peer does not have it.
    NotThere,
    /// The peer did not answer (connection refused, timeout, link lost).
    Down,
    /// The bytes did not verify.
    Bad,
}

#[derive(Debug)]
pub struct Puller {
    window: usize,
    sources: Vec<Option<Instant>>,
    /// Chunks to ask for, with the rank of the next route to try.
    queue: VecDeque<(ChunkId, usize)>,
    queued: HashSet<ChunkId>,
    in_flight: HashMap<ChunkId, Route>,
    later: Vec<(Instant, ChunkId)>,
    paused_until: Option<Instant>,
    site_up: bool,
}

impl Puller {
    pub fn new(window: usize) -> Self {
        Puller {
            window: window.max(1),
            sources: Vec::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashMap::new(),
            later: Vec::new(),
            paused_until: None,
            site_up: false,
        }
    }

    /// The ranked sources changed (their number is what matters here).
    pub fn set_sources(&mut self, n: usize) {
        self.sources = vec![None; n];
        for (_, rank) in self.queue.iter_mut() {
            *rank = 0;
        }
    }

    /// What to fetch, most urgent first. Chunks in flight stay in flight.
    pub fn set_wanted(&mut self, wanted: Vec<ChunkId>) {
        let keep: HashMap<ChunkId, usize> = self.queue.drain(..).collect();
        self.queued.clear();
        let waiting: HashSet<ChunkId> = self.later.iter().map(|(_, id)| *id).collect();
        let wanted_set: HashSet<ChunkId> = wanted.iter().copied().collect();
        self.later.retain(|(_, id)| wanted_set.contains(id));
        for id in wanted {
            if self.in_flight.contains_key(&id) || waiting.contains(&id) {
                continue;
            }
            if self.queued.insert(id) {
                self.queue
                    .push_back((id, keep.get(&id).copied().unwrap_or(0)));
            }
        }
    }

    pub fn site_up(&mut self, up: bool) {
        self.site_up = up;
        if !up {
            let lost: Vec<ChunkId> = self
                .in_flight
                .iter()
                .filter(|(_, r)| **r == Route::Site)
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                self.in_flight.remove(&id);
                self.requeue_front(id, self.sources.len());
            }
        }
    }

    /// Stop asking until `until` (the disk is full).
    pub fn pause(&mut self, until: Instant) {
        self.paused_until = Some(until);
    }

    pub fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    fn requeue_front(&mut self, id: ChunkId, rank: usize) {
        if self.queued.insert(id) {
            self.queue.push_front((id, rank));
        }
    }

    /// The requests to make now.
    pub fn next(&mut self, now: Instant) -> Vec<(ChunkId, Route)> {
        let mut due = Vec::new();
        self.later.retain(|(t, id)| {
            if *t <= now {
                due.push(*id);
                false
            } else {
                true
            }
        });
        for id in due.into_iter().rev() {
            self.requeue_front(id, 0);
        }
        let mut out = Vec::new();
        if self.paused(now) {
            return out;
        }
        self.paused_until = None;
        let mut skipped = VecDeque::new();
        while self.in_flight.len() < self.window {
            let Some((id, rank)) = self.queue.pop_front() else {
                break;
            };
            let route = (rank..self.sources.len())
                .find(|&r| self.sources[r].is_none_or(|t| t <= now))
                .map(Route::Source)
                .unwrap_or(Route::Site);
            if route == Route::Site && !self.site_up {
                skipped.push_back((id, rank));
                continue;
            }
            self.queued.remove(&id);
            self.in_flight.insert(id, route);
            out.push((id, route));
        }
        while let Some(x) = skipped.pop_back() {
            self.queue.push_front(x);
        }
        out
    }

    /// The answer to a request.
    pub fn on_result(&mut self, id: &ChunkId, route: Route, outcome: Outcome, now: Instant) {
        if self.in_flight.get(id) != Some(&route) {
            return;
        }
        self.in_flight.remove(id);
        match (route, outcome) {
            (_, Outcome::Stored) => {}
            (Route::Source(r), Outcome::Down) => {
                self.sources[r] = Some(now + SOURCE_DOWN_FOR);
                self.requeue_front(*id, r + 1);
            }
            (Route::Source(r), _) => self.requeue_front(*id, r + 1),
            (Route::Site, Outcome::NotThere) => self.later.push((now + SITE_MISSING_RETRY, *id)),
            (Route::Site, _) => self.requeue_front(*id, self.sources.len()),
        }
    }

    /// A chunk whose storing failed (not its bytes: the disk): ask again, from the start.
    pub fn on_store_failed(&mut self, id: &ChunkId) {
        if self.in_flight.remove(id).is_some() {
            self.requeue_front(*id, 0);
        }
    }

    /// When to look again without being told.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.later
            .iter()
            .map(|(t, _)| *t)
            .chain(self.paused_until)
            .min()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn queued(&self) -> usize {
        self.queue.len() + self.later.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    #[test]
    fn never_more_than_the_window_in_flight() {
        let t = Instant::now();
        let mut p = Puller::new(3);
        p.site_up(true);
        p.set_wanted((0..10).map(id).collect());
        let first = p.next(t);
        assert_eq!(first.len(), 3);
        assert!(p.next(t).is_empty());
        p.on_result(&first[0].0, Route::Site, Outcome::Stored, t);
        assert_eq!(p.next(t), vec![(id(3), Route::Site)]);
    }

    #[test]
    fn sources_in_rank_order_then_the_site_and_a_down_source_is_skipped() {
        let t = Instant::now();
        let mut p = Puller::new(1);
        p.site_up(true);
        p.set_sources(2);
        p.set_wanted(vec![id(1), id(2)]);
        assert_eq!(p.next(t), vec![(id(1), Route::Source(0))]);
        p.on_result(&id(1), Route::Source(0), Outcome::Down, t);
        assert_eq!(p.next(t), vec![(id(1), Route::Source(1))]);
        p.on_result(&id(1), Route::Source(1), Outcome::NotThere, t);
        assert_eq!(p.next(t), vec![(id(1), Route::Site)]);
        p.on_result(&id(1), Route::Site, Outcome::Stored, t);
        // source 0 is still down: the next chunk starts at source 1
        assert_eq!(p.next(t), vec![(id(2), Route::Source(1))]);
        p.on_result(&id(2), Route::Source(1), Outcome::Bad, t);
        assert_eq!(p.next(t), vec![(id(2), Route::Site)]);
        // after the pause, source 0 is tried again
        p.on_result(&id(2), Route::Site, Outcome::Stored, t);
        p.set_wanted(vec![id(3)]);
        assert_eq!(p.next(t + SOURCE_DOWN_FOR), vec![(id(3), Route::Source(0))]);
    }

    #[test]
    fn the_site_lacking_a_chunk_or_being_away_delays_it_and_a_pause_holds_everything() {
        let t = Instant::now();
        let mut p = Puller::new(4);
        p.set_wanted(vec![id(1), id(2)]);
        assert!(p.next(t).is_empty(), "site down, no sources");
        p.site_up(true);
        let got = p.next(t);
        assert_eq!(got.len(), 2);
        p.on_result(&id(1), Route::Site, Outcome::NotThere, t);
        p.site_up(false);
        p.site_up(true);
        assert_eq!(p.next(t), vec![(id(2), Route::Site)]);
        assert_eq!(p.next_wakeup(), Some(t + SITE_MISSING_RETRY));
        assert_eq!(p.next(t + SITE_MISSING_RETRY), vec![(id(1), Route::Site)]);
        p.on_store_failed(&id(1));
        p.pause(t + Duration::from_secs(60));
        assert!(p.next(t + SITE_MISSING_RETRY).is_empty());
        assert_eq!(
            p.next(t + Duration::from_secs(60)),
            vec![(id(1), Route::Site)]
        );
    }
}
