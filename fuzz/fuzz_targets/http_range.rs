//! A client's `Range` header against a file size. Nothing may panic; a range that comes out
//! lies inside the file; a plain `bytes=a-b` is answered as RFC 9110 says.
#![no_main]

use dist_point::serve::{parse_range, Unsatisfiable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file's size (8 bytes, little-endian), then the header's value.
    let Some((size, value)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    let got = parse_range(value, size);
    if let Ok(Some((start, end))) = got {
        assert!(start < end && end <= size, "{value:?} of {size}: {start}..{end}");
    }
    // The oracle, in u128, for `bytes=first-last` written with plain digits.
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 30 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((a, b)) = spec.split_once('-') {
        if digits(a) && digits(b) {
            let (first, last): (u128, u128) = (a.parse().unwrap(), b.parse().unwrap());
            let want = if first > last || first >= size as u128 {
                Err(Unsatisfiable)
            } else {
                Ok(Some((first as u64, (last + 1).min(size as u128) as u64)))
            };
            assert_eq!(got, want, "{value:?} of {size}");
        }
    }
});
