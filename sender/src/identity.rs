//! A site's identity on disk: `tls/cert.pem`, `tls/key.pem` and `signing.key` in its data dir.

use ed25519_dalek::SigningKey;
use ring::rand::SecureRandom;
use schema::SiteCode;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The self-signed certificate (PEM), relative to the data directory.
pub const CERT_FILE: &str = "tls/cert.pem";
/// The certificate's private key (PKCS#8 PEM, owner-only), relative to the data directory.
pub const KEY_FILE: &str = "tls/key.pem";
/// The ed25519 signing key's 32-byte seed as hex (owner-only), relative to the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Why an identity cannot be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen could not make the key pair or the certificate.
    #[error("cannot create the TLS certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// A file or directory of the identity could not be read or written (a file to be made
    /// already exists, for one).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file of the identity does not hold what it should.
    #[error("{path} is not valid: {reason}; make a new identity (`site-server init` or `dist-point init`) in a new data directory")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's random source failed; holds its error.
    #[error("no system randomness available: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a site tells others about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicIdentity {
    /// SHA-256 of the certificate's DER, lower-case hex: what peers pin.
    pub fingerprint: String,
    /// The ed25519 verifying key, lower-case hex: what checks this site's bundles.
    pub public_key: String,
}

/// The SHA-256 fingerprint of a DER certificate, lower-case hex.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert_der))
}

/// Checks an operator-given fingerprint (64 hex digits, any case); returns it lower-case.
pub fn check_fingerprint(s: &str) -> Result<String, String> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(format!(
            "invalid fingerprint {s:?}: give the 64 hex digits that `site-server identity` prints on the peer"
        ))
    }
}

/// Checks an operator-given ed25519 public key (64 hex digits, a valid curve point); returns
/// it lower-case.
pub fn check_public_key(s: &str) -> Result<String, String> {
    let t = s.trim().to_ascii_lowercase();
    let mut b = [0u8; 32];
    let bad = || {
        format!("invalid public key {s:?}: give the 64 hex digits that `site-server identity` prints on the peer")
    };
    hex::decode_to_slice(&t, &mut b).map_err(|_| bad())?;
    ed25519_dalek::VerifyingKey::from_bytes(&b).map_err(|_| bad())?;
    Ok(t)
}

/// Writes `contents` to `path`, readable by the owner only, failing if it exists.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Makes a new identity for site `code` in `dir` (which must not hold one yet).
pub fn create(dir: &Path, code: SiteCode) -> Result<PublicIdentity, IdentityError> {
    create_named(dir, code.as_str(), "site")
}

/// Makes a new identity in `dir` for a peer named `name` of kind `kind` (`site`, `dp`): the
/// certificate's common name is `name`, its DNS name `name.kind.siterep`. Peers pin the
/// certificate itself, so the names are for people reading it.
pub fn create_named(dir: &Path, name: &str, kind: &str) -> Result<PublicIdentity, IdentityError> {
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).map_err(io(&tls))?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![format!(
        "{}.{kind}.siterep",
        name.to_ascii_lowercase()
    )])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key)?;
    write_private(&dir.join(KEY_FILE), key.serialize_pem().as_bytes())?;
    let cert_path = dir.join(CERT_FILE);
    fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;

    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    let signing = SigningKey::from_bytes(&seed);
    write_private(
        &dir.join(SIGNING_KEY_FILE),
        format!("{}\n", hex::encode(seed)).as_bytes(),
    )?;
    Ok(PublicIdentity {
        fingerprint: fingerprint(cert.der()),
        public_key: hex::encode(signing.verifying_key().as_bytes()),
    })
}

/// The certificate of the identity in `dir`, as DER.
pub fn load_cert_der(dir: &Path) -> Result<Vec<u8>, IdentityError> {
    let path = dir.join(CERT_FILE);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let p = pem::parse(text).map_err(|e| IdentityError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if p.tag() != "CERTIFICATE" {
        return Err(IdentityError::Invalid {
            path,
            reason: format!("PEM block is {:?}, expected CERTIFICATE", p.tag()),
        });
    }
    Ok(p.into_contents())
}

/// The signing key of the identity in `dir`.
pub fn load_signing_key(dir: &Path) -> Result<SigningKey, IdentityError> {
    let path = dir.join(SIGNING_KEY_FILE);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| IdentityError::Invalid {
        path,
        reason: "expected 64 hex digits".into(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public half of the identity in `dir`.
pub fn load_public(dir: &Path) -> Result<PublicIdentity, IdentityError> {
    Ok(PublicIdentity {
        fingerprint: fingerprint(&load_cert_der(dir)?),
        public_key: hex::encode(load_signing_key(dir)?.verifying_key().as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn operator_given_keys_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let id = create(d.path(), SiteCode::new("P01").unwrap()).unwrap();
        assert_eq!(
            check_fingerprint(&id.fingerprint.to_uppercase()).unwrap(),
            id.fingerprint
        );
        assert_eq!(check_public_key(&id.public_key).unwrap(), id.public_key);
        assert!(check_fingerprint("abc").is_err());
        assert!(check_fingerprint(&"g".repeat(64)).is_err());
        assert!(check_public_key(&"zz".repeat(32)).is_err());
        assert!(check_public_key("00").is_err());
    }

    #[test]
    fn create_then_load_gives_the_same_identity() {
        let d = tempfile::tempdir().unwrap();
        let code = SiteCode::new("CEN").unwrap();
        let made = create(d.path(), code).unwrap();
        assert_eq!(made.fingerprint.len(), 64);
        assert_eq!(made.public_key.len(), 64);
        assert_eq!(load_public(d.path()).unwrap(), made);
        for f in [KEY_FILE, SIGNING_KEY_FILE] {
            let mode = fs::metadata(d.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // a second identity differs and never overwrites the first
        let other = tempfile::tempdir().unwrap();
        assert_ne!(create(other.path(), code).unwrap(), made);
        assert!(create(d.path(), code).is_err());
        assert_eq!(load_public(d.path()).unwrap(), made);
    }
}
