//! Trust from the top: what an origin signs, and which keys may sign for which site.
//!
//! Hop-by-hop pinning proves only who passed an event on. An origin signature proves who
//! decided it: the origin signs the canonical bytes of what it originates ([`event_bytes`],
//! [`report_bytes`]: a domain tag naming the kind and its version, then the fields in bincode's
//! standard encoding, which has one form for one value), and every site checks the signature
//! against the key the tree has delegated to that origin ([`KeyRing`]).
//!
//! The chain of keys: the top site's key is the trust root. The top delegates a key to each
//! child it adds, and every site to its own children ([`KeyRing::delegate`]): a chain that
//! ends at the root, and the tree of who delegated to whom is the tree of authority. A site
//! may revoke the delegation of any site below it ([`KeyRing::revoke`]). A rotation is a new
//! delegation for the same site, valid from an origin sequence number on; the older key still
//! verifies what it signed before that number.
//!
//! The key ring is state built by applying delegation and revocation events in log order; it
//! does no I/O and reads no clock.

use crate::ids::SiteCode;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The domain tag of a signed config event (format version 2 of its signed bytes: the body by
/// its BLAKE3).
pub const EVENT_DOMAIN: &[u8] = b"siterep/event/v2\0";
/// The domain tag of a signed report (format version 2 of its signed bytes).
pub const REPORT_DOMAIN: &[u8] = b"siterep/report/v2\0";

/// An ed25519 public key: a site's (or DP's, or machine's) delegated signing key. Written as
/// 64 hex digits in JSON, as its 32 bytes in bincode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let mut b = [0u8; 32];
            hex::decode_to_slice(&s, &mut b).map_err(serde::de::Error::custom)?;
            Ok(PublicKey(b))
        } else {
            Ok(PublicKey(<[u8; 32]>::deserialize(d)?))
        }
    }
}

impl PublicKey {
    /// The public half of `key`.
    pub fn of(key: &ed25519_dalek::SigningKey) -> Self {
        PublicKey(key.verifying_key().to_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &hex::encode(self.0)[..16])
    }
}

impl std::str::FromStr for PublicKey {
    type Err = TrustError;
    /// 64 hex digits.
    fn from_str(s: &str) -> Result<Self, TrustError> {
        let bytes = hex::decode(s.trim()).map_err(|_| TrustError::BadKeyText)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| TrustError::BadKeyText)?;
        ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| TrustError::BadKeyText)?;
        Ok(PublicKey(key))
    }
}

/// An ed25519 signature (two 32-byte halves, as serde has no 64-byte arrays).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    r: [u8; 32],
    s: [u8; 32],
}

impl Signature {
    /// No signature (all zeros): what an unsigned envelope carries in tests of code that does
    /// not verify; it never verifies.
    pub const MISSING: Signature = Signature {
        r: [0; 32],
        s: [0; 32],
    };

    fn from_dalek(sig: ed25519_dalek::Signature) -> Self {
        let b = sig.to_bytes();
        let (r, s) = b.split_at(32);
        Signature {
            r: r.try_into().expect("32 bytes"),
            s: s.try_into().expect("32 bytes"),
        }
    }

    fn to_dalek(self) -> ed25519_dalek::Signature {
        let mut b = [0u8; 64];
        b[..32].copy_from_slice(&self.r);
        b[32..].copy_from_slice(&self.s);
        ed25519_dalek::Signature::from_bytes(&b)
    }
}

impl fmt::Display for Signature {
    /// 128 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", hex::encode(self.r), hex::encode(self.s))
    }
}

impl std::str::FromStr for Signature {
    type Err = String;
    /// 128 hex digits, as [`fmt::Display`] writes them.
    fn from_str(s: &str) -> Result<Self, String> {
        let b = hex::decode(s.trim()).map_err(|_| "a signature is 128 hex digits".to_string())?;
        if b.len() != 64 {
            return Err("a signature is 128 hex digits".into());
        }
        Ok(Signature {
            r: b[..32].try_into().expect("32 bytes"),
            s: b[32..].try_into().expect("32 bytes"),
        })
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", &hex::encode(self.r)[..16])
    }
}

/// Why a signature, a key or a delegation is refused. Each says what and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Not 64 hex digits of a valid ed25519 point.
    #[error("not a public key: expected 64 hex digits (as `site-server identity` prints)")]
    BadKeyText,
    /// The signed bytes could not be made (an encoding failure).
    #[error("cannot encode what is signed: {0}")]
    Encode(String),
    /// No key is delegated to the origin (for that sequence number).
    #[error(
        "no key is delegated to {origin} for its number {seq}: the event is not from the tree"
    )]
    Undelegated {
        /// The origin that claims it.
        origin: SiteCode,
        /// Its sequence number.
        seq: u64,
    },
    /// The origin's delegation is revoked.
    #[error("{origin}'s key was revoked by {by}: its later events are refused")]
    Revoked {
        /// The revoked site.
        origin: SiteCode,
        /// Who revoked it.
        by: SiteCode,
    },
    /// The signature does not verify under the delegated key.
    #[error("the signature of {origin}:{seq} does not verify with {origin}'s delegated key: altered or forged on the way")]
    BadSignature {
        /// The origin that claims it.
        origin: SiteCode,
        /// Its sequence number.
        seq: u64,
    },
    /// The first delegation a ring takes must be the top's genesis.
    #[error("the first key event must be the top site's delegation of the trust root key to itself, not one by {by}: is this site's root key (site.toml root_key) the top's?")]
    NoGenesis {
        /// Who tried.
        by: SiteCode,
    },
    /// A delegation or revocation by a site without authority over its subject.
    #[error("{by} has no authority over {site}: only the top or a site above {site} may delegate or revoke its key")]
    NoAuthority {
        /// Who tried.
        by: SiteCode,
        /// Over whom.
        site: SiteCode,
    },
}

/// The bytes an origin signs for a config event: [`EVENT_DOMAIN`], then origin, sequence
/// number and time (seconds and nanoseconds since the epoch) in bincode's standard encoding,
/// then the BLAKE3 of the body's bincode standard encoding. `body` is the event's body
/// (`ConfigEvent`), passed generically so that this module needs no event types.
///
/// The body is hashed as it is encoded (never held encoded whole), so that a big event (the
/// whole Debian catalog in one delta) costs one pass of BLAKE3 and a signature over a few
/// dozen bytes, not a buffer of its size and SHA-512 over it twice.
pub fn event_bytes<B: Serialize>(
    origin: SiteCode,
    seq: u64,
    time: &chrono::DateTime<chrono::Utc>,
    body: &B,
) -> Result<Vec<u8>, TrustError> {
    signed_bytes(EVENT_DOMAIN, origin, seq, time, body)
}

/// The bytes an origin signs for a report: [`REPORT_DOMAIN`], then as [`event_bytes`].
pub fn report_bytes<B: Serialize>(
    origin: SiteCode,
    seq: u64,
    time: &chrono::DateTime<chrono::Utc>,
    body: &B,
) -> Result<Vec<u8>, TrustError> {
    signed_bytes(REPORT_DOMAIN, origin, seq, time, body)
}

/// A time as seconds and nanoseconds since the epoch: its signed form does not depend on
/// how a library prints times.
fn instant(t: &chrono::DateTime<chrono::Utc>) -> (i64, u32) {
    (t.timestamp(), t.timestamp_subsec_nanos())
}

fn signed_bytes<B: Serialize>(
    domain: &[u8],
    origin: SiteCode,
    seq: u64,
    time: &chrono::DateTime<chrono::Utc>,
    body: &B,
) -> Result<Vec<u8>, TrustError> {
    let enc = |e: bincode::error::EncodeError| TrustError::Encode(e.to_string());
    let mut out = domain.to_vec();
    let head =
        bincode::serde::encode_to_vec((origin, seq, instant(time)), bincode::config::standard())
            .map_err(enc)?;
    out.extend_from_slice(&head);
    let mut w = HashWriter {
        hasher: blake3::Hasher::new(),
        buf: [0; HASH_BLOCK],
        len: 0,
    };
    bincode::serde::encode_into_std_write(body, &mut w, bincode::config::standard())
        .map_err(enc)?;
    w.hasher.update(&w.buf[..w.len]);
    out.extend_from_slice(w.hasher.finalize().as_bytes());
    Ok(out)
}

/// What BLAKE3 is handed at a time: 8 of its 1 KiB chunks, what its SIMD paths take at once.
const HASH_BLOCK: usize = 8 << 10;

/// Bincode writes field by field; this hands BLAKE3 whole blocks, from a buffer on the stack
/// (no allocation per event, none of the body's size).
struct HashWriter {
    hasher: blake3::Hasher,
    buf: [u8; HASH_BLOCK],
    len: usize,
}

impl std::io::Write for HashWriter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (HASH_BLOCK - self.len).min(data.len());
            self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len == HASH_BLOCK {
                self.hasher.update(&self.buf);
                self.len = 0;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether every `(key, bytes, signature)` verifies: one batch verification (about three
/// times cheaper per signature than one by one). `false` says only that one does not: check
/// them one by one with [`verifies`] to find which.
pub fn verify_all(items: &[(PublicKey, &[u8], Signature)]) -> bool {
    let mut keys = Vec::with_capacity(items.len());
    for (k, _, _) in items {
        match ed25519_dalek::VerifyingKey::from_bytes(&k.0) {
            Ok(vk) if !vk.is_weak() => keys.push(vk),
            _ => return false,
        }
    }
    let msgs: Vec<&[u8]> = items.iter().map(|(_, b, _)| *b).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items.iter().map(|(_, _, s)| s.to_dalek()).collect();
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok()
}

/// Signs `bytes` (from [`event_bytes`] or [`report_bytes`]).
pub fn sign(key: &ed25519_dalek::SigningKey, bytes: &[u8]) -> Signature {
    Signature::from_dalek(key.sign(bytes))
}

/// Whether `sig` over `bytes` verifies with `key` (strictly: no malleable signatures).
pub fn verifies(key: &PublicKey, bytes: &[u8], sig: &Signature) -> bool {
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    vk.verify_strict(bytes, &sig.to_dalek()).is_ok()
}

/// One key delegated to a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The site the key speaks for.
    pub site: SiteCode,
    /// Its key.
    pub key: PublicKey,
    /// The first of the site's own sequence numbers the key signs (a rotation's new key takes
    /// over from here; the older key keeps what it signed before).
    pub valid_from: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SiteKeys {
    /// Who delegated to this site: its parent in the tree of authority (none for the root).
    parent: Option<SiteCode>,
    /// Its keys with their `valid_from`, in that order (a later delegation with the same
    /// number comes after the earlier one and takes over its numbers; the earlier key still
    /// verifies reports).
    keys: Vec<(u64, PublicKey)>,
    /// Set by a revocation, cleared by a later delegation.
    revoked_by: Option<SiteCode>,
}

/// One site's keys as operators see them (`identity --json`, `status sites`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteKeyView {
    /// The site.
    pub site: SiteCode,
    /// Who delegated its key (none for the top).
    pub delegated_by: Option<SiteCode>,
    /// Its keys, each with the first number it signs, oldest first.
    pub keys: Vec<(u64, PublicKey)>,
    /// Who revoked it, if its delegation is revoked.
    pub revoked_by: Option<SiteCode>,
}

/// The keys of the tree (see the module doc). Built by applying delegations and revocations
/// in log order, starting from the trust root: the top site's first key.
///
/// Until the top's first event (its genesis: a delegation of the root key to itself) is
/// applied, the ring knows the root key but not the top's code; [`KeyRing::delegate`] takes
/// that genesis only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRing {
    root_key: PublicKey,
    root: Option<SiteCode>,
    sites: BTreeMap<SiteCode, SiteKeys>,
}

impl KeyRing {
    /// A ring that trusts `root_key` and nothing else yet: the next delegation it takes must
    /// be the genesis (a site delegating `root_key` to itself from its number 1).
    pub fn new(root_key: PublicKey) -> Self {
        KeyRing {
            root_key,
            root: None,
            sites: BTreeMap::new(),
        }
    }

    /// A ring whose genesis is applied: `root` is the top with `root_key`.
    pub fn with_root(root: SiteCode, root_key: PublicKey) -> Self {
        let mut r = KeyRing::new(root_key);
        r.delegate(
            root,
            &Delegation {
                site: root,
                key: root_key,
                valid_from: 1,
            },
        )
        .expect("a genesis delegation is always taken by an empty ring");
        r
    }

    /// The top site, once its genesis is applied.
    pub fn root(&self) -> Option<SiteCode> {
        self.root
    }

    /// The trust root: the top site's first key.
    pub fn root_key(&self) -> PublicKey {
        self.root_key
    }

    /// Whether `site` is `above` or below it in the tree of authority.
    pub fn within(&self, site: SiteCode, above: SiteCode) -> bool {
        let mut at = Some(site);
        // The chain is at most as long as the ring is large: a bound against any cycle.
        for _ in 0..=self.sites.len() {
            match at {
                Some(s) if s == above => return true,
                Some(s) => at = self.sites.get(&s).and_then(|k| k.parent),
                None => return false,
            }
        }
        false
    }

    /// Whether `site` has a delegated key (revoked or not).
    pub fn knows(&self, site: SiteCode) -> bool {
        self.sites.contains_key(&site)
    }

    /// `by` delegates `d.key` to `d.site`. Refused unless `by` is in the ring (not revoked)
    /// and `d.site` is new (it becomes `by`'s child) or already below `by`; the root's own
    /// key changes only by the root. An empty ring takes only the genesis.
    pub fn delegate(&mut self, by: SiteCode, d: &Delegation) -> Result<(), TrustError> {
        let no = || TrustError::NoAuthority { by, site: d.site };
        if self.root.is_none() {
            if by != d.site || d.key != self.root_key || d.valid_from != 1 {
                return Err(TrustError::NoGenesis { by });
            }
            self.root = Some(by);
            self.sites.insert(
                by,
                SiteKeys {
                    parent: None,
                    keys: vec![(1, d.key)],
                    revoked_by: None,
                },
            );
            return Ok(());
        }
        let by_ok = self.sites.get(&by).is_some_and(|k| k.revoked_by.is_none());
        if !by_ok {
            return Err(no());
        }
        let below = d.site == by || self.within(d.site, by);
        match self.sites.get_mut(&d.site) {
            None => {
                self.sites.insert(
                    d.site,
                    SiteKeys {
                        parent: Some(by),
                        keys: vec![(d.valid_from, d.key)],
                        revoked_by: None,
                    },
                );
                Ok(())
            }
            Some(_) if Some(d.site) == self.root && by != d.site => Err(no()),
            Some(_) if !below => Err(no()),
            Some(k) => {
                let at = k.keys.partition_point(|(f, _)| *f <= d.valid_from);
                k.keys.insert(at, (d.valid_from, d.key));
                k.revoked_by = None;
                Ok(())
            }
        }
    }

    /// `by` revokes `site`'s delegation: its events verified after this are refused until a
    /// new delegation. Only a site above `site` may (not the site itself, not the root's).
    ///
    /// A site this ring has never seen is not in this part of the tree: its revocation
    /// changes nothing here (the sites that know it check the authority).
    pub fn revoke(&mut self, by: SiteCode, site: SiteCode) -> Result<(), TrustError> {
        if !self.sites.contains_key(&site) && self.sites.contains_key(&by) && site != by {
            return Ok(());
        }
        let by_ok = self.sites.get(&by).is_some_and(|k| k.revoked_by.is_none());
        let above = by_ok && site != by && self.within(site, by);
        match self.sites.get_mut(&site) {
            Some(k) if above => {
                k.revoked_by = Some(by);
                Ok(())
            }
            _ => Err(TrustError::NoAuthority { by, site }),
        }
    }

    /// The key that signs `origin`'s number `seq`. Before the genesis, the root key (only
    /// the genesis itself can then be applied).
    pub fn key_for(&self, origin: SiteCode, seq: u64) -> Result<PublicKey, TrustError> {
        if self.root.is_none() {
            return Ok(self.root_key);
        }
        let k = self
            .sites
            .get(&origin)
            .ok_or(TrustError::Undelegated { origin, seq })?;
        if let Some(by) = k.revoked_by {
            return Err(TrustError::Revoked { origin, by });
        }
        k.keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map(|(_, key)| *key)
            .ok_or(TrustError::Undelegated { origin, seq })
    }

    /// Checks `sig` over `bytes` as `origin`'s number `seq`.
    pub fn verify(
        &self,
        origin: SiteCode,
        seq: u64,
        bytes: &[u8],
        sig: &Signature,
    ) -> Result<(), TrustError> {
        let key = self.key_for(origin, seq)?;
        if verifies(&key, bytes, sig) {
            Ok(())
        } else {
            Err(TrustError::BadSignature { origin, seq })
        }
    }

    /// Checks `sig` over `bytes` (a report of `origin`'s, number `seq`) against every key
    /// delegated to `origin`: a report's numbers are not its events', so any of its keys
    /// that is not revoked verifies it.
    pub fn verify_any(
        &self,
        origin: SiteCode,
        seq: u64,
        bytes: &[u8],
        sig: &Signature,
    ) -> Result<(), TrustError> {
        let k = self
            .sites
            .get(&origin)
            .ok_or(TrustError::Undelegated { origin, seq })?;
        if let Some(by) = k.revoked_by {
            return Err(TrustError::Revoked { origin, by });
        }
        if k.keys.iter().any(|(_, key)| verifies(key, bytes, sig)) {
            Ok(())
        } else {
            Err(TrustError::BadSignature { origin, seq })
        }
    }

    /// Every site's keys, by site code.
    pub fn view(&self) -> Vec<SiteKeyView> {
        self.sites
            .iter()
            .map(|(site, k)| SiteKeyView {
                site: *site,
                delegated_by: k.parent,
                keys: k.keys.iter().map(|(f, key)| (*f, *key)).collect(),
                revoked_by: k.revoked_by,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ed25519_dalek::SigningKey;

    fn code(s: &str) -> SiteCode {
        SiteCode::new(s).unwrap()
    }

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn time() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()
    }

    /// CEN (key 1) -> P01 (key 2) -> S01 (key 3), and P02 (key 4) beside P01.
    fn ring() -> KeyRing {
        let mut r = KeyRing::with_root(code("CEN"), PublicKey::of(&key(1)));
        for (by, site, k) in [("CEN", "P01", 2), ("P01", "S01", 3), ("CEN", "P02", 4)] {
            r.delegate(
                code(by),
                &Delegation {
                    site: code(site),
                    key: PublicKey::of(&key(k)),
                    valid_from: 1,
                },
            )
            .unwrap();
        }
        r
    }

    fn signed(origin: &str, seq: u64, body: &str, k: u8) -> (Vec<u8>, Signature) {
        let b = event_bytes(code(origin), seq, &time(), &body).unwrap();
        let s = sign(&key(k), &b);
        (b, s)
    }

    #[test]
    fn each_site_signs_with_its_delegated_key_and_nothing_else_verifies() {
        let r = ring();
        let (b, s) = signed("S01", 7, "advert", 3);
        assert_eq!(r.verify(code("S01"), 7, &b, &s), Ok(()));
        // P01 (key 2) signing as CEN, or as its own child: refused.
        let (b, s) = signed("CEN", 7, "advert", 2);
        assert_eq!(
            r.verify(code("CEN"), 7, &b, &s),
            Err(TrustError::BadSignature {
                origin: code("CEN"),
                seq: 7
            })
        );
        let (b, s) = signed("S01", 7, "advert", 2);
        assert!(r.verify(code("S01"), 7, &b, &s).is_err());
        // An origin nobody delegated to.
        let (b, s) = signed("X99", 1, "advert", 9);
        assert_eq!(
            r.verify(code("X99"), 1, &b, &s),
            Err(TrustError::Undelegated {
                origin: code("X99"),
                seq: 1
            })
        );
    }

    #[test]
    fn the_signature_covers_origin_number_time_and_body() {
        let r = ring();
        let (_, s) = signed("S01", 7, "advert", 3);
        for b in [
            event_bytes(code("S01"), 8, &time(), &"advert").unwrap(),
            event_bytes(code("P01"), 7, &time(), &"advert").unwrap(),
            event_bytes(
                code("S01"),
                7,
                &(time() + chrono::Duration::seconds(1)),
                &"advert",
            )
            .unwrap(),
            event_bytes(code("S01"), 7, &time(), &"advert!").unwrap(),
            report_bytes(code("S01"), 7, &time(), &"advert").unwrap(),
        ] {
            assert!(r.verify(code("S01"), 7, &b, &s).is_err());
        }
    }

    #[test]
    fn only_a_site_above_may_delegate_or_revoke() {
        let mut r = ring();
        let d = |site: &str, k: u8| Delegation {
            site: code(site),
            key: PublicKey::of(&key(k)),
            valid_from: 1,
        };
        // P02 cannot re-key P01 (a sibling) or S01 (its sibling's child), nor the root.
        for site in ["P01", "S01", "CEN"] {
            assert_eq!(
                r.delegate(code("P02"), &d(site, 9)),
                Err(TrustError::NoAuthority {
                    by: code("P02"),
                    site: code(site)
                })
            );
        }
        assert!(r.revoke(code("P02"), code("S01")).is_err());
        assert!(r.revoke(code("S01"), code("S01")).is_err());
        assert!(r.revoke(code("P01"), code("CEN")).is_err());
        // An unknown site cannot delegate at all.
        assert!(r.delegate(code("X99"), &d("S05", 9)).is_err());
        // The top may revoke anything below it; a revoked site delegates nothing.
        r.revoke(code("CEN"), code("P01")).unwrap();
        let (b, s) = signed("P01", 3, "x", 2);
        assert_eq!(
            r.verify(code("P01"), 3, &b, &s),
            Err(TrustError::Revoked {
                origin: code("P01"),
                by: code("CEN")
            })
        );
        assert!(r.delegate(code("P01"), &d("S02", 9)).is_err());
        // Its child still verifies (its own delegation stands), and the tree stays a tree.
        let (b, s) = signed("S01", 3, "x", 3);
        assert_eq!(r.verify(code("S01"), 3, &b, &s), Ok(()));
        assert!(r.within(code("S01"), code("CEN")));
        assert!(!r.within(code("P02"), code("P01")));
    }

    #[test]
    fn a_rotation_keeps_what_the_old_key_signed_before_it() {
        let mut r = ring();
        r.delegate(
            code("P01"),
            &Delegation {
                site: code("S01"),
                key: PublicKey::of(&key(30)),
                valid_from: 10,
            },
        )
        .unwrap();
        let (b, s) = signed("S01", 9, "x", 3);
        assert_eq!(r.verify(code("S01"), 9, &b, &s), Ok(()));
        let (b, s) = signed("S01", 10, "x", 3);
        assert!(r.verify(code("S01"), 10, &b, &s).is_err());
        let (b, s) = signed("S01", 10, "x", 30);
        assert_eq!(r.verify(code("S01"), 10, &b, &s), Ok(()));
    }

    #[test]
    fn an_empty_ring_takes_only_the_tops_genesis() {
        let root = PublicKey::of(&key(1));
        let mut r = KeyRing::new(root);
        let d = |site: &str, k: u8, from: u64| Delegation {
            site: code(site),
            key: PublicKey::of(&key(k)),
            valid_from: from,
        };
        // Before the genesis only the root key verifies, and only a genesis is taken.
        let (b, s) = signed("P01", 1, "x", 2);
        assert!(r.verify(code("P01"), 1, &b, &s).is_err());
        for (by, dl) in [
            ("P01", d("P01", 2, 1)),
            ("CEN", d("CEN", 2, 1)),
            ("CEN", d("CEN", 1, 2)),
            ("CEN", d("P01", 1, 1)),
        ] {
            assert_eq!(
                r.delegate(code(by), &dl),
                Err(TrustError::NoGenesis { by: code(by) })
            );
        }
        r.delegate(code("CEN"), &d("CEN", 1, 1)).unwrap();
        assert_eq!(r, KeyRing::with_root(code("CEN"), root));
        assert_eq!(r.root(), Some(code("CEN")));
        // The top rotates its own key; nobody else may.
        r.delegate(code("CEN"), &d("P01", 2, 1)).unwrap();
        assert!(r.delegate(code("P01"), &d("CEN", 9, 5)).is_err());
        r.delegate(code("CEN"), &d("CEN", 5, 5)).unwrap();
        let (b, s) = signed("CEN", 5, "x", 5);
        assert_eq!(r.verify(code("CEN"), 5, &b, &s), Ok(()));
        // A second delegation from the same number takes over that number; the first key
        // still verifies reports (a site rotated before it signed any event).
        r.delegate(code("CEN"), &d("P01", 7, 1)).unwrap();
        let (b, s) = signed("P01", 1, "x", 7);
        assert_eq!(r.verify(code("P01"), 1, &b, &s), Ok(()));
        let b = report_bytes(code("P01"), 4, &time(), &"r").unwrap();
        assert_eq!(r.verify_any(code("P01"), 4, &b, &sign(&key(2), &b)), Ok(()));
        // Reports verify under any of a site's keys.
        let b = report_bytes(code("CEN"), 99, &time(), &"r").unwrap();
        assert_eq!(
            r.verify_any(code("CEN"), 99, &b, &sign(&key(1), &b)),
            Ok(())
        );
        assert!(r
            .verify_any(code("CEN"), 99, &b, &sign(&key(2), &b))
            .is_err());
    }

    #[test]
    fn a_batch_verifies_only_if_every_signature_does() {
        let items: Vec<(PublicKey, Vec<u8>, Signature)> = (0..20u8)
            .map(|i| {
                let (b, s) = signed("CEN", i as u64 + 1, "x", i % 3 + 1);
                (PublicKey::of(&key(i % 3 + 1)), b, s)
            })
            .collect();
        let view = |v: &[(PublicKey, Vec<u8>, Signature)]| -> Vec<(PublicKey, Vec<u8>, Signature)> {
            v.to_vec()
        };
        let as_refs = |v: &[(PublicKey, Vec<u8>, Signature)]| -> bool {
            let r: Vec<(PublicKey, &[u8], Signature)> =
                v.iter().map(|(k, b, s)| (*k, b.as_slice(), *s)).collect();
            verify_all(&r)
        };
        assert!(as_refs(&items));
        let mut bad = view(&items);
        bad[7].2 = bad[8].2;
        assert!(!as_refs(&bad));
        let mut bad = view(&items);
        bad[3].0 = PublicKey::of(&key(9));
        assert!(!as_refs(&bad));
    }

    #[test]
    fn keys_print_and_parse_as_hex() {
        let k = PublicKey::of(&key(5));
        assert_eq!(k.to_string().parse::<PublicKey>(), Ok(k));
        assert_eq!("zz".parse::<PublicKey>(), Err(TrustError::BadKeyText));
        assert_eq!(
            "00".repeat(31).parse::<PublicKey>(),
            Err(TrustError::BadKeyText)
        );
    }

    #[test]
    fn signed_bytes_are_stable() {
        // The canonical form is part of the format: this must never change within v2.
        let b = event_bytes(code("CEN"), 1, &time(), &"x").unwrap();
        assert!(b.starts_with(EVENT_DOMAIN));
        let body = bincode::serde::encode_to_vec("x", bincode::config::standard()).unwrap();
        assert_eq!(
            hex::encode(&b[EVENT_DOMAIN.len()..]),
            format!("0343454e01fc000524d600{}", blake3::hash(&body).to_hex())
        );
        assert_eq!(&body, b"\x01x");
    }
}
