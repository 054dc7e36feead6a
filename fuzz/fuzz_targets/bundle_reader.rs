//! A courier volume from a medium: opened, every section read (blobs capped, chunk records
//! handed over), then the trailer checked. Nothing may panic, and nothing is believed
//! unless the whole volume verifies with the signer's key.
#![no_main]

use courier::{SectionKind, VolumeReader};
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

/// What a blob section may decompress to here (the site's own cap is larger; a smaller one
/// keeps the fuzzer fast and still crosses it).
const MAX_BLOB: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(mut v) = VolumeReader::open(Cursor::new(data), data.len() as u64) else {
        return;
    };
    let mut staged = 0usize;
    loop {
        match v.next_section() {
            Ok(Some(s)) => {
                let r = match s.0 {
                    SectionKind::Chunks => v
                        .read_chunks(s, |_, file| {
                            staged += file.len();
                            Ok(())
                        })
                        .map(|_| ()),
                    _ if data.len() % 2 == 0 => v.read_blob(s, MAX_BLOB).map(|b| {
                        assert!(b.len() as u64 <= MAX_BLOB);
                    }),
                    _ => v.skip(s),
                };
                if r.is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    // The seeds are signed with this key; anything the fuzzer changed must fail here.
    let key = SigningKey::from_bytes(&[1; 32]).verifying_key();
    let _ = v.finish(&key, "the fuzzer's site");
    let _ = staged;
});
