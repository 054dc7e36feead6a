//! The wire: a peer's byte stream, cut anywhere, through `FrameDecoder`; and chunk reply
//! headers. Nothing may panic or allocate beyond the frame limit, and every frame that
//! decodes must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schema::wire::{encode_frame, ChunkReply, FrameDecoder, CHUNK_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() >= CHUNK_HEADER_LEN {
        let h: [u8; CHUNK_HEADER_LEN] = data[..CHUNK_HEADER_LEN].try_into().unwrap();
        if let Ok(r) = ChunkReply::decode(&h) {
            assert_eq!(ChunkReply::decode(&r.encode()).unwrap(), r);
        }
    }
    // The first byte says how the stream is cut into reads (1..=256 bytes each).
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let step = cut as usize + 1;
    let mut dec = FrameDecoder::new();
    let mut fed = 0;
    for piece in stream.chunks(step) {
        dec.push(piece);
        fed += piece.len();
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    let mut out = Vec::new();
                    encode_frame(&frame, &mut out).expect("a decoded frame encodes");
                    let mut again = FrameDecoder::new();
                    again.push(&out);
                    let back = again.next_frame().expect("decodes").expect("whole");
                    assert_eq!(back, frame);
                    assert_eq!(again.pending(), 0);
                }
                Ok(None) => break,
                Err(_) => return, // final: the link is dropped
            }
        }
        assert!(dec.pending() <= fed);
    }
});
