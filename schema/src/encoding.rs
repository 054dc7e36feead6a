//! The one encoding for everything persisted or sent: a small header, then bincode 2
//! (standard config), zstd-compressed when that pays.
//!
//! ```text
//! offset 0  2 bytes  magic "SR"
//! offset 2  u16 LE   format version (FORMAT_VERSION)
//! offset 4  u8       codec: 0 = raw bincode, 1 = zstd(bincode)
//! offset 5  ...      body
//! ```
//! A reader refuses an unknown magic, format version or codec with an error that says so.

use serde::{de::DeserializeOwned, Serialize};
use std::io::Read;

/// The first two bytes of every record.
pub const MAGIC: [u8; 2] = *b"SR";
/// The format version this build writes, and the only one it reads (1: before origin
/// signatures; 2: before advertisement run options, collections and machine approvals).
pub const FORMAT_VERSION: u16 = 3;
const HEADER_LEN: usize = 5;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// Bodies shorter than this are not worth compressing.
const COMPRESS_FROM: usize = 512;
/// The format version in a record's header, if it has a header.
pub fn version_of(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
        return None;
    }
    Some(u16::from_le_bytes([bytes[2], bytes[3]]))
}

/// The largest decoded body accepted: bounds what a hostile input can make us allocate.
pub const MAX_DECODED: usize = 256 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED>()
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// bincode could not encode the value.
    #[error("cannot encode: {0}")]
    Bincode(#[from] bincode::error::EncodeError),
    /// zstd could not compress the body.
    #[error("cannot compress: {0}")]
    Zstd(#[from] std::io::Error),
}

/// Why bytes are not a record this build reads. Each message says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header; holds the length.
    #[error("truncated record: {0} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// The first two bytes are not [`MAGIC`]; holds them.
    #[error("not a siterep record (magic {0:02x?}, expected \"SR\")")]
    Magic([u8; 2]),
    /// Written in a format version other than [`FORMAT_VERSION`] (by another build).
    #[error("record format version {found} is not supported (this build reads version {FORMAT_VERSION}): {}", if *found < FORMAT_VERSION { "it was written by an older site-server (format 1 has no origin signatures, format 2 no agent policy); initialize a new data directory, nothing older can be migrated" } else { "upgrade site-server" })]
    Version {
        /// The version the record's header carries.
        found: u16,
    },
    /// A codec byte other than raw (0) or zstd (1); holds it.
    #[error("unknown codec {0} in record header")]
    Codec(u8),
    /// The zstd body is corrupt or cut short.
    #[error("record body does not decompress: {0}")]
    Zstd(std::io::Error),
    /// The body decompresses to more than [`MAX_DECODED`] bytes.
    #[error("record body decompresses to more than {MAX_DECODED} bytes")]
    TooLarge,
    /// The body is not a valid encoding of the type asked for (or is over [`MAX_DECODED`]).
    #[error("record body does not decode: {0}")]
    Bincode(#[from] bincode::error::DecodeError),
    /// The value ends before the body does; holds how many bytes are left over.
    #[error("record has {0} trailing bytes after its body")]
    Trailing(usize),
}

/// The canonical bincode bytes of `v`, without header or compression: what ids hash.
pub fn canonical_bytes<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, config()).expect("in-memory encoding of a schema type")
}

/// Encodes `v` with header, compressing large bodies when that makes them smaller.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, EncodeError> {
    let body = bincode::serde::encode_to_vec(v, config())?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    if body.len() >= COMPRESS_FROM {
        let z = zstd::bulk::compress(&body, 3)?;
        if z.len() < body.len() {
            out.push(CODEC_ZSTD);
            out.extend_from_slice(&z);
            return Ok(out);
        }
    }
    out.push(CODEC_RAW);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a record written by [`encode`], checking magic, version and codec first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    let magic = [bytes[0], bytes[1]];
    if magic != MAGIC {
        return Err(DecodeError::Magic(magic));
    }
    let version = u16::from_le_bytes([bytes[2], bytes[3]]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let body = &bytes[HEADER_LEN..];
    match bytes[4] {
        CODEC_RAW => decode_body(body),
        CODEC_ZSTD => {
            let mut out = Vec::new();
            let dec = zstd::stream::read::Decoder::new(body).map_err(DecodeError::Zstd)?;
            dec.take(MAX_DECODED as u64 + 1)
                .read_to_end(&mut out)
                .map_err(DecodeError::Zstd)?;
            if out.len() > MAX_DECODED {
                return Err(DecodeError::TooLarge);
            }
            decode_body(&out)
        }
        c => Err(DecodeError::Codec(c)),
    }
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (v, n) = bincode::serde::decode_from_slice(body, config())?;
    if n != body.len() {
        return Err(DecodeError::Trailing(body.len() - n));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ConfigEvent, EventEnvelope};
    use crate::ids::{PackageId, SiteCode};
    use chrono::{TimeZone, Utc};

    fn sample() -> EventEnvelope {
        EventEnvelope::signed(
            SiteCode::new("CEN").unwrap(),
            7,
            Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
            ConfigEvent::PackageVersionRetired {
                package: "CEN00001".parse::<PackageId>().unwrap(),
                source_version: 2,
            },
            &ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap()
    }

    #[test]
    fn roundtrip_small_and_large() {
        let e = sample();
        assert_eq!(decode::<EventEnvelope>(&encode(&e).unwrap()).unwrap(), e);
        let big: Vec<String> = (0..2000).map(|i| format!("line {i}")).collect();
        let enc = encode(&big).unwrap();
        assert_eq!(enc[4], CODEC_ZSTD);
        assert_eq!(decode::<Vec<String>>(&enc).unwrap(), big);
    }

    #[test]
    fn refuses_unknown_version_magic_codec_and_garbage() {
        let mut enc = encode(&sample()).unwrap();
        enc[2] = 9;
        let err = decode::<EventEnvelope>(&enc).unwrap_err();
        assert!(matches!(err, DecodeError::Version { found: 9 }), "{err}");
        assert!(err.to_string().contains("upgrade"));
        let mut enc = encode(&sample()).unwrap();
        enc[0] = b'X';
        assert!(matches!(
            decode::<EventEnvelope>(&enc),
            Err(DecodeError::Magic(_))
        ));
        let mut enc = encode(&sample()).unwrap();
        enc[4] = 7;
        assert!(matches!(
            decode::<EventEnvelope>(&enc),
            Err(DecodeError::Codec(7))
        ));
        assert!(decode::<EventEnvelope>(&enc[..3]).is_err());
        let enc = encode(&sample()).unwrap();
        assert!(decode::<EventEnvelope>(&enc[..enc.len() - 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode::<EventEnvelope>(&bytes);
        }
    }
}
