//! Frames of a site link, and their framing on a byte stream.
//!
//! A frame on the wire is a 4-byte little-endian length followed by that many bytes of
//! [`crate::encoding`] (which carries the format version). [`FrameDecoder`] is sans-IO: feed it
//! bytes as they arrive and take whole frames out; it refuses a length over [`MAX_FRAME`]
//! before buffering anything, so a hostile peer cannot make it allocate.

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
        site: SiteCode,
        /// The last position of the parent's config log the child has applied.
        config_applied: u64,
        /// The last position of the child's report log the parent has acknowledged, as the
        /// child knows it.
        reports_acked: u64,
    },
    /// Parent to child: config log entries at consecutive positions from `first`.
    Events {
        first: u64,
        events: Vec<EventEnvelope>,
    },
    /// Child to parent: every config position up to `upto` is applied.
    EventsAck { upto: u64 },
    /// Child to parent: report log entries at consecutive positions from `first`.
    Reports {
        first: u64,
        reports: Vec<ReportEnvelope>,
    },
    /// Parent to child: every report position up to `upto` is stored.
    ReportsAck { upto: u64 },
    /// Ask for chunks by id.
    ChunkRequest { ids: Vec<ChunkId> },
    /// A chunk's raw bytes; the receiver verifies them against `id` before storing.
    Chunk { id: ChunkId, data: Vec<u8> },
    /// The sender does not have this chunk (yet).
    ChunkMissing { id: ChunkId },
    /// The peer refuses the link; `reason` says what to fix.
    Refused { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "frame of {0} bytes is over the {MAX_FRAME}-byte limit: the peer is broken or hostile"
    )]
    TooLarge(usize),
    #[error("frame does not decode: {0}")]
    Decode(#[from] DecodeError),
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
                events: vec![EventEnvelope {
                    origin: cen,
                    origin_seq: 9,
                    time: Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap(),
                    body: ConfigEvent::SyncRequest { catalog_version: 3 },
                }],
            },
            Frame::EventsAck { upto: 42 },
            Frame::ChunkRequest {
                ids: vec![ChunkId::of(b"a"), ChunkId::of(b"b")],
            },
            Frame::Chunk {
                id: ChunkId::of(b"a"),
                data: b"a".repeat(100_000),
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
