//! Frames of a site link, and their framing on a byte stream.
//!
//! A frame on the wire is a 4-byte little-endian length followed by that many bytes of
//! [`crate::encoding`] (which carries the format version). [`FrameDecoder`] is sans-IO: feed it
//! bytes as they arrive and take whole frames out; it refuses a length over [`MAX_FRAME`]
//! before buffering anything, so a hostile peer cannot make it allocate.
//!
//! A connection has two streams, both opened by the child: the *control* stream (frames both
//! ways: hello, events and their acks down, reports and their acks up) and the *content*
//! stream (child to parent: [`Frame::ChunkRequest`] frames; parent to child: chunk replies).
//! A chunk reply is not a frame, so that chunk bytes are neither re-encoded nor compressed
//! again: it is a fixed [`CHUNK_HEADER_LEN`]-byte header followed by `len` bytes of the chunk
//! file as the sender stores it (which the receiver verifies before storing):
//!
//! ```text
//! offset 0  u8       kind: 1 chunk (followed by `len` bytes), 2 missing (no body)
//! offset 1  3 bytes  zero
//! offset 4  u32 LE   len
//! offset 8  32 bytes chunk id (BLAKE3 of the chunk's raw bytes)
//! ```

use crate::encoding::{self, DecodeError, EncodeError};
use crate::event::EventEnvelope;
use crate::ids::{ChunkId, SiteCode};
use crate::report::ReportEnvelope;
use serde::{Deserialize, Serialize};

/// The largest frame accepted: a batch of events or a chunk (1 MiB raw) fits many times.
pub const MAX_FRAME: usize = 64 << 20;

/// What travels on a link. Variants only grow at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame of a connection, from the child: who it is and where it stands.
    Hello {
        /// The child's site code; the parent refuses it unless its certificate is pinned for
        /// that code.
        site: SiteCode,
        /// The last position of the parent's config log the child has applied.
        config_applied: u64,
        /// The last position of the child's report log the parent has acknowledged, as the
        /// child knows it.
        reports_acked: u64,
    },
    /// Parent to child: config log entries at consecutive positions from `first`.
    Events {
        /// The config log position of the first event.
        first: u64,
        /// The events, in log order.
        events: Vec<EventEnvelope>,
    },
    /// Child to parent: every config position up to `upto` is applied.
    EventsAck {
        /// The last config log position applied.
        upto: u64,
    },
    /// Child to parent: report log entries at consecutive positions from `first`.
    Reports {
        /// The child's report log position of the first report.
        first: u64,
        /// The reports, in log order.
        reports: Vec<ReportEnvelope>,
    },
    /// Parent to child: every report position up to `upto` is stored.
    ReportsAck {
        /// The last report log position stored.
        upto: u64,
    },
    /// Child to parent, on the content stream: send these chunks. The answers come as
    /// [`ChunkReply`] records, not frames (see the module doc).
    ChunkRequest {
        /// The chunks wanted.
        ids: Vec<ChunkId>,
    },
    /// The peer refuses the link; `reason` says what to fix.
    Refused {
        /// One line for the operator: what is wrong and what to fix.
        reason: String,
    },
    /// Child to parent, on the content stream: of `package` `version`, the child still
    /// misses `ids`. The parent's sender makes it one job (its priority, its progress, its
    /// 3531/3533) and knows which job each requested chunk belongs to.
    Need {
        /// The package.
        package: crate::PackageId,
        /// Its source version.
        version: u32,
        /// The version's chunks the child lacks.
        ids: Vec<ChunkId>,
    },
    /// Parent to child, on the control stream: the link's address schedule and rate limit
    /// (rule texts, as in `site.toml`), so what the child sends up (its reports) honours
    /// them too. Sent when the link comes up and whenever the parent changes them.
    LinkPolicy {
        /// The address schedule's rules (empty: open to all priorities all week).
        schedule: String,
        /// The rate limit's rules (empty: unlimited).
        rate: String,
    },
    /// Distribution point to its site, first frame on the control stream: which DP this is
    /// (the site checks it against the id its certificate is pinned for).
    DpHello {
        /// The DP's id at its site (`DP1`).
        dp: String,
    },
    /// Site to distribution point, on the control stream: everything the DP must hold now,
    /// and where a pull DP takes chunks from first. Sent when the link comes up and whenever
    /// it changes; the DP keeps the last one, so it serves and validates while the site is
    /// away.
    DpAssign {
        /// The site's code.
        site: SiteCode,
        /// Every package version the DP must hold.
        versions: Vec<DpAssignment>,
        /// For a pull DP, the DPs it asks before the site, in rank order; empty otherwise.
        sources: Vec<DpSource>,
    },
    /// Distribution point to its site: status messages from the DP's outbox, at consecutive
    /// positions from `first`. The site stores them in its report log (they flow up) and
    /// answers [`Frame::ReportsAck`].
    DpReports {
        /// The DP's outbox position of the first message.
        first: u64,
        /// The messages, in outbox order.
        messages: Vec<DpMessage>,
    },
    /// Site to distribution point, on the control stream: what the DP serves its agents
    /// ([`crate::event::Policy`]'s events, in the site's log order). Sent when the link
    /// comes up and whenever it changes; the DP keeps the last one.
    DpPolicy {
        /// The events.
        events: Vec<crate::event::EventEnvelope>,
    },
    /// Distribution point to its site: a machine that is not approved (with this key) asked
    /// to register. The site approves it if it approves machines automatically, else it
    /// says so once (40510) and waits for the operator.
    DpMachineSeen {
        /// The machine's name.
        name: String,
        /// The key it signed with.
        key: crate::trust::PublicKey,
        /// What it says it is.
        inventory: crate::machine::Inventory,
    },
    /// Distribution point to its site: reports of one approved machine, each signed by it;
    /// answered by [`Frame::DpMachineAck`] with the same `req`.
    DpMachineReports {
        /// The DP's number for this request.
        req: u64,
        /// The machine.
        machine: String,
        /// Its reports, in its order.
        reports: Vec<crate::machine::SignedMachineReport>,
    },
    /// Site to distribution point: the answer to [`Frame::DpMachineReports`].
    DpMachineAck {
        /// The request answered.
        req: u64,
        /// The last of the machine's report numbers stored.
        upto: u64,
        /// Why reports were refused, if any were.
        refused: Option<String>,
    },
}

/// A status message raised by a distribution point. The site turns it into a
/// [`crate::report::StatusMessage`] with its own code as the site and the DP's pinned id as
/// the machine (a DP cannot speak for anyone else), and accepts only the distribution ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpMessage {
    /// The catalogue id; only ids [`dp_may_raise`] allows are accepted.
    pub id: u32,
    /// When the DP raised it.
    pub time: chrono::DateTime<chrono::Utc>,
    /// What it is about (package, version, DP).
    pub attributes: Vec<crate::report::Attribute>,
    /// `%1`, `%2`, ... of the catalogue's text template.
    pub insertion: Vec<String>,
}

/// The status ids a distribution point may raise (2342/2330 and the DP block of 40150-).
pub fn dp_may_raise(id: u32) -> bool {
    matches!(
        id,
        2330 | 2342 | 40150..=40153 | crate::status::AGENT_REQUESTS_REFUSED
    )
}

/// One package version a distribution point must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpAssignment {
    /// The package.
    pub package: crate::PackageId,
    /// The package's name, for people.
    pub name: String,
    /// The source version to hold.
    pub version: u32,
    /// The package's priority: a DP fetches the chunks of higher ones first.
    pub priority: crate::event::Priority,
    /// The id of `manifest`.
    pub manifest_id: crate::ManifestId,
    /// The version's files and chunks: what the DP fetches and serves.
    pub manifest: crate::manifest::Manifest,
    /// Older versions of the package that are not retired: the DP keeps the one it has
    /// until `version` is complete, so clients never see the package vanish.
    pub keep: Vec<u32>,
}

/// A source a pull distribution point asks first (in rank order), before its site server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpSource {
    /// The source's id at the same site (`DP2`).
    pub dp: String,
    /// Its HTTP address, HOST:PORT.
    pub address: String,
}

/// Length of a chunk reply's header on the content stream.
pub const CHUNK_HEADER_LEN: usize = 40;
/// The largest chunk file accepted in a reply (a 4 MiB chunk stored raw, plus its header).
pub const MAX_CHUNK_FILE: usize = (4 << 20) + 64;

/// The header of one answer on the content stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkReply {
    /// `len` bytes of chunk file follow.
    Chunk {
        /// The chunk.
        id: ChunkId,
        /// Bytes of chunk file that follow, at most [`MAX_CHUNK_FILE`].
        len: u32,
    },
    /// The sender does not have this chunk (ask again later).
    Missing {
        /// The chunk asked for.
        id: ChunkId,
    },
}

impl ChunkReply {
    /// The [`CHUNK_HEADER_LEN`]-byte header, laid out as the module doc shows.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        let (kind, len, id) = match self {
            ChunkReply::Chunk { id, len } => (1, *len, id),
            ChunkReply::Missing { id } => (2, 0, id),
        };
        h[0] = kind;
        h[4..8].copy_from_slice(&len.to_le_bytes());
        h[8..].copy_from_slice(&id.0);
        h
    }

    /// Decodes a header, refusing an unknown kind or a length over [`MAX_CHUNK_FILE`] before
    /// the caller reads (or allocates for) the body.
    pub fn decode(h: &[u8; CHUNK_HEADER_LEN]) -> Result<Self, FrameError> {
        let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        let id = ChunkId(h[8..].try_into().expect("32 bytes"));
        match h[0] {
            1 if len as usize <= MAX_CHUNK_FILE => Ok(ChunkReply::Chunk { id, len }),
            1 => Err(FrameError::TooLarge(len as usize)),
            2 => Ok(ChunkReply::Missing { id }),
            k => Err(FrameError::BadReply(k)),
        }
    }
}

/// Why a frame or a chunk reply is refused. On a received stream every one is final: drop
/// the link.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A chunk reply header of unknown kind; holds the kind byte.
    #[error("chunk reply of unknown kind {0}: the peer is broken or runs another version")]
    BadReply(u8),
    /// A frame, or a chunk file, over its size limit; holds the length.
    #[error(
        "frame of {0} bytes is over the {MAX_FRAME}-byte limit: the peer is broken or hostile"
    )]
    TooLarge(usize),
    /// A frame body that is not a valid record.
    #[error("frame does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A frame that could not be encoded (the sending side's error).
    #[error("frame does not encode: {0}")]
    Encode(#[from] EncodeError),
}

/// Appends `frame`, length-prefixed, to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let body = encoding::encode(frame)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Reassembles frames from a byte stream (sans-IO).
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived. An error is final: drop the link.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = encoding::decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        Ok(Some(frame?))
    }

    /// Bytes received but not yet part of a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ConfigEvent;
    use chrono::{TimeZone, Utc};

    fn frames() -> Vec<Frame> {
        let cen = SiteCode::new("CEN").unwrap();
        vec![
            Frame::Hello {
                site: SiteCode::new("P01").unwrap(),
                config_applied: 41,
                reports_acked: 7,
            },
            Frame::Events {
                first: 42,
                events: vec![EventEnvelope::signed(
                    cen,
                    9,
                    Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap(),
                    ConfigEvent::SyncRequest { catalog_version: 3 },
                    &ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
                )
                .unwrap()],
            },
            Frame::EventsAck { upto: 42 },
            Frame::ChunkRequest {
                ids: vec![ChunkId::of(b"a"), ChunkId::of(b"b")],
            },
            Frame::Refused {
                reason: "unknown site".into(),
            },
        ]
    }

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let mut stream = Vec::new();
        for f in frames() {
            encode_frame(&f, &mut stream).unwrap();
        }
        for piece in [1, 3, 4, 5, 1000, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for part in stream.chunks(piece) {
                d.push(part);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames(), "piece {piece}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn chunk_replies_round_trip_and_bad_headers_are_refused() {
        for r in [
            ChunkReply::Chunk {
                id: ChunkId::of(b"a"),
                len: 1 << 20,
            },
            ChunkReply::Missing {
                id: ChunkId::of(b"b"),
            },
        ] {
            assert_eq!(ChunkReply::decode(&r.encode()).unwrap(), r);
        }
        let mut h = ChunkReply::Chunk {
            id: ChunkId::of(b"a"),
            len: MAX_CHUNK_FILE as u32 + 1,
        }
        .encode();
        assert!(matches!(
            ChunkReply::decode(&h),
            Err(FrameError::TooLarge(_))
        ));
        h[0] = 7;
        assert!(matches!(
            ChunkReply::decode(&h),
            Err(FrameError::BadReply(7))
        ));
    }

    #[test]
    fn a_huge_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::new();
        d.push(&u32::MAX.to_le_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
        let mut d = FrameDecoder::new();
        d.push(&3u32.to_le_bytes());
        d.push(b"xyz");
        assert!(matches!(d.next_frame(), Err(FrameError::Decode(_))));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut d = FrameDecoder::new();
            d.push(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
