//! Identifiers: site codes, package and advertisement ids, content hashes.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid id. The message names the rule so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a site code; holds the text given.
    #[error("invalid site code {0:?}: a site code is exactly 3 characters, each A-Z or 0-9 (e.g. CEN, P01)")]
    SiteCode(String),
    /// Not a package id; holds the text given.
    #[error("invalid package id {0:?}: a package id is a site code followed by 5 digits (e.g. CEN00001)")]
    PackageId(String),
    /// Not an advertisement id; holds the text given.
    #[error("invalid advertisement id {0:?}: an advertisement id is a site code followed by 5 digits (e.g. CEN20001)")]
    AdvertisementId(String),
    /// Not a BLAKE3 hash in hex; holds the text given.
    #[error("invalid hash {0:?}: expected 64 hexadecimal characters (a BLAKE3 hash)")]
    Hash(String),
}

/// A site code: 3 characters, each an upper-case ASCII letter or a digit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteCode([u8; 3]);

impl SiteCode {
    /// Checks `s` and makes a site code of it.
    pub fn new(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != 3
            || !b
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(IdError::SiteCode(s.to_string()));
        }
        Ok(SiteCode([b[0], b[1], b[2]]))
    }
    /// The code as text (`CEN`).
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters and digits.
        std::str::from_utf8(&self.0).expect("site code is ASCII")
    }
    /// The code's three ASCII bytes.
    pub fn as_bytes(&self) -> [u8; 3] {
        self.0
    }
    /// A site code from three bytes, checked as [`SiteCode::new`] checks text.
    pub fn from_bytes(b: [u8; 3]) -> Result<Self, IdError> {
        Self::new(&String::from_utf8_lossy(&b))
    }
}

/// Checks a DP id: 1 to 15 letters, digits, `-` or `_`.
pub fn check_dp_id(id: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "distribution point id {id:?} is not valid: use 1 to 15 letters, digits, '-' or '_' (e.g. DP1)"
        ))
    }
}

impl FromStr for SiteCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}
impl fmt::Display for SiteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for SiteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteCode({})", self.as_str())
    }
}

/// Serializes ids as their display string, parsed back with validation.
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}
string_serde!(SiteCode);
string_serde!(PackageId);
string_serde!(AdvertisementId);

fn parse_site_number(s: &str) -> Option<(SiteCode, u32)> {
    if s.len() != 8 || !s.is_ascii() {
        return None;
    }
    let site = SiteCode::new(&s[..3]).ok()?;
    let digits = &s[3..];
    if !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((site, digits.parse().ok()?))
}

/// A package id: the originating site's code and a 5-digit number it allocated (`CEN00001`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PackageId {
    /// The site that created the package.
    pub site: SiteCode,
    /// The number that site allocated, 1 to [`PackageId::MAX_NUMBER`].
    pub number: u32,
}

impl PackageId {
    /// The largest number a 5-digit id can carry.
    pub const MAX_NUMBER: u32 = 99_999;
    /// A package id, or `None` unless `number` is 1 to [`PackageId::MAX_NUMBER`].
    pub fn new(site: SiteCode, number: u32) -> Option<Self> {
        (1..=Self::MAX_NUMBER)
            .contains(&number)
            .then_some(PackageId { site, number })
    }
}
impl fmt::Display for PackageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:05}", self.site, self.number)
    }
}
impl FromStr for PackageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_site_number(s)
            .and_then(|(site, n)| PackageId::new(site, n))
            .ok_or_else(|| IdError::PackageId(s.to_string()))
    }
}

/// An advertisement id: same shape as a package id. Sites number advertisements from
/// [`AdvertisementId::FIRST_NUMBER`], as SMS did, so the two never read alike.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AdvertisementId {
    /// The site that created the advertisement.
    pub site: SiteCode,
    /// The number that site allocated (5 digits, from [`AdvertisementId::FIRST_NUMBER`]).
    pub number: u32,
}
impl AdvertisementId {
    /// The first number a site allocates to an advertisement.
    pub const FIRST_NUMBER: u32 = 20_001;
}
impl fmt::Display for AdvertisementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:05}", self.site, self.number)
    }
}
impl FromStr for AdvertisementId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_site_number(s)
            .filter(|(_, n)| *n >= 1)
            .map(|(site, number)| AdvertisementId { site, number })
            .ok_or_else(|| IdError::AdvertisementId(s.to_string()))
    }
}

/// A BLAKE3 hash. Shown and written in JSON as 64 hex characters, encoded as 32 raw bytes.
macro_rules! hash_type {
    ($(#[$m:meta])* $t:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $t(pub [u8; 32]);

        impl $t {
            /// The BLAKE3 hash of `bytes`.
            pub fn of(bytes: &[u8]) -> Self {
                $t(*blake3::hash(bytes).as_bytes())
            }
            /// The 64 lower-case hex characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 12 hex characters, for tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }
        }
        impl From<blake3::Hash> for $t {
            fn from(h: blake3::Hash) -> Self {
                $t(*h.as_bytes())
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.short())
            }
        }
        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let mut b = [0u8; 32];
                hex::decode_to_slice(s, &mut b).map_err(|_| IdError::Hash(s.to_string()))?;
                Ok($t(b))
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(de::Error::custom)
                } else {
                    Ok($t(<[u8; 32]>::deserialize(d)?))
                }
            }
        }
    };
}
hash_type!(
    /// The id of a chunk: the BLAKE3 hash of its raw (uncompressed) bytes.
    ChunkId
);
hash_type!(
    /// The id of a package version: the BLAKE3 hash of its manifest's encoding.
    ManifestId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_codes() {
        for ok in ["CEN", "P01", "S01", "999"] {
            assert_eq!(SiteCode::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "ce", "cen", "CENT", "C-N", "CÉN", "C N"] {
            assert!(SiteCode::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn package_ids() {
        let p: PackageId = "CEN00001".parse().unwrap();
        assert_eq!(p.to_string(), "CEN00001");
        assert_eq!(p.number, 1);
        for bad in ["CEN0001", "CEN000001", "cen00001", "CEN0000A", "CEN00000"] {
            assert!(bad.parse::<PackageId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_hex_in_json_and_raw_in_bincode() {
        let id = ChunkId::of(b"hello");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        assert_eq!(serde_json::from_str::<ChunkId>(&json).unwrap(), id);
        let bin = bincode::serde::encode_to_vec(id, bincode::config::standard()).unwrap();
        assert_eq!(bin.len(), 32);
        let (back, _): (ChunkId, _) =
            bincode::serde::decode_from_slice(&bin, bincode::config::standard()).unwrap();
        assert_eq!(back, id);
    }
}
