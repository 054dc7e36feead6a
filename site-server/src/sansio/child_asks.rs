//! What one child connection has asked this site for, with bounds (sans-IO), so that a
//! pinned child cannot make its parent read, hold or fetch without limit.
//!
//! - A chunk is served only if the child announced it in a `Need` for a package version this
//!   site knows (the shell checks the ids against the manifest before [`ChildAsks::announce`]);
//!   anything else is answered "missing" and never fetched from this site's own parent.
//! - Replies read and waiting to be sent hold at most [`ChildAsks::MAX_REPLY_BYTES`]; further
//!   asks wait their turn (deferred) and are read as replies go out.
//! - At most [`ChildAsks::MAX_OUTSTANDING`] chunks may be asked and not yet answered: a child
//!   that asks for more breaks the protocol (its own window is far smaller) and the link ends.
//! - A chunk asked for twice while still outstanding is one ask.

use schema::ChunkId;
use std::collections::{HashMap, HashSet, VecDeque};

/// The child asked for more than it may have outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooMany {
    pub outstanding: usize,
}

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the child asked for {} chunks at once, more than the {} allowed",
            self.outstanding,
            ChildAsks::MAX_OUTSTANDING
        )
    }
}

/// The asks of one child connection (see the module doc).
#[derive(Debug, Default)]
pub struct ChildAsks {
    announced: HashSet<ChunkId>,
    /// Replies read and queued, with their size.
    ready: HashMap<ChunkId, u64>,
    ready_bytes: u64,
    /// Asked and not handed out yet, in order.
    queued: VecDeque<ChunkId>,
    queued_set: HashSet<ChunkId>,
    /// Handed out by [`ChildAsks::next_to_read`]: being read, or fetched from this site's parent.
    reading: HashSet<ChunkId>,
}

impl ChildAsks {
    /// Bytes of replies held in memory for one child at most (one chunk over is allowed).
    pub const MAX_REPLY_BYTES: u64 = 64 << 20;
    /// Chunks asked and not answered at most.
    pub const MAX_OUTSTANDING: usize = 8192;

    /// The child needs `ids` (already checked against a manifest this site knows).
    pub fn announce(&mut self, ids: impl IntoIterator<Item = ChunkId>) {
        self.announced.extend(ids);
    }

    /// Chunks asked and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.ready.len() + self.queued.len() + self.reading.len()
    }

    /// The child asks for `ids`; returns those to answer "missing" at once (not announced).
    /// The others are queued for [`ChildAsks::next_to_read`]; one asked again while outstanding is
    /// one ask.
    pub fn request(&mut self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, TooMany> {
        let mut missing = Vec::new();
        for id in ids {
            if !self.announced.contains(id) {
                missing.push(*id);
                continue;
            }
            if self.ready.contains_key(id)
                || self.queued_set.contains(id)
                || self.reading.contains(id)
            {
                continue;
            }
            if self.outstanding() >= Self::MAX_OUTSTANDING {
                return Err(TooMany {
                    outstanding: self.outstanding() + 1,
                });
            }
            self.queued.push_back(*id);
            self.queued_set.insert(*id);
        }
        Ok(missing)
    }

    /// The next ask to read, while the replies held are under the budget.
    pub fn next_to_read(&mut self) -> Option<ChunkId> {
        if self.ready_bytes >= Self::MAX_REPLY_BYTES {
            return None;
        }
        let id = self.queued.pop_front()?;
        self.queued_set.remove(&id);
        self.reading.insert(id);
        Some(id)
    }

    /// The reply for `id` (`bytes` long) is read and queued.
    pub fn on_ready(&mut self, id: ChunkId, bytes: u64) {
        if self.reading.remove(&id) && self.ready.insert(id, bytes).is_none() {
            self.ready_bytes += bytes;
        }
    }

    /// `id` was answered without a reply held (missing here, unreadable): no longer
    /// outstanding.
    pub fn on_answered(&mut self, id: &ChunkId) {
        self.reading.remove(id);
    }

    /// The reply for `id` was sent: its bytes are free.
    pub fn on_sent(&mut self, id: &ChunkId) {
        if let Some(b) = self.ready.remove(id) {
            self.ready_bytes -= b;
        }
    }

    /// Bytes of replies held now.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ChunkId {
        ChunkId::of(&n.to_be_bytes())
    }

    #[test]
    fn only_announced_chunks_are_read_and_the_rest_is_missing() {
        let mut a = ChildAsks::default();
        a.announce([id(1), id(2)]);
        assert_eq!(
            a.request(&[id(1), id(3), id(1)]).unwrap(),
            [id(3)],
            "an unannounced id is missing at once, a repeated one is one ask"
        );
        assert_eq!(a.next_to_read(), Some(id(1)));
        assert_eq!(a.next_to_read(), None);
        assert_eq!(a.request(&[id(1)]).unwrap(), [], "still outstanding");
        assert_eq!(a.outstanding(), 1);
        a.on_answered(&id(1));
        assert_eq!(a.outstanding(), 0);
    }

    #[test]
    fn replies_held_are_bounded_by_bytes_and_queued_asks_follow_sent_replies() {
        let mut a = ChildAsks::default();
        let ids: Vec<ChunkId> = (0..60).map(id).collect();
        a.announce(ids.clone());
        assert!(a.request(&ids).unwrap().is_empty());
        let mut read = Vec::new();
        while let Some(i) = a.next_to_read() {
            a.on_ready(i, 4 << 20);
            read.push(i);
        }
        assert_eq!(read.len(), 16, "64 MiB of 4 MiB replies");
        assert_eq!(a.ready_bytes(), ChildAsks::MAX_REPLY_BYTES);
        assert_eq!(a.outstanding(), 60);
        // A reply sent frees room for the next ask, in order.
        a.on_sent(&read[0]);
        assert_eq!(a.next_to_read(), Some(id(16)));
        a.on_ready(id(16), 4 << 20);
        assert_eq!(a.next_to_read(), None, "the budget is spent again");
    }

    #[test]
    fn a_child_that_asks_for_too_much_breaks_the_protocol() {
        let mut a = ChildAsks::default();
        let ids: Vec<ChunkId> = (0..(ChildAsks::MAX_OUTSTANDING as u32 + 1))
            .map(id)
            .collect();
        a.announce(ids.clone());
        let e = a.request(&ids).unwrap_err();
        assert_eq!(e.outstanding, ChildAsks::MAX_OUTSTANDING + 1);
        assert!(e.to_string().contains("more than the 8192 allowed"));
    }
}
