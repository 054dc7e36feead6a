//! Mutual TLS 1.3 for QUIC between sites, authenticated by pinned certificate fingerprints.
//!
//! Sites use self-signed certificates, so there is no CA: a peer is who its certificate's
//! SHA-256 fingerprint says, and only fingerprints configured as pins are accepted. The
//! verifiers below do two things, both required:
//!
//! 1. `verify_*_cert`: the presented end-entity certificate's fingerprint is one of the pins;
//! 2. `verify_tls13_signature`: the handshake signature really verifies against that
//!    certificate's public key, with the ring provider's algorithms. Without this a peer that
//!    copied a pinned certificate (it is public) could impersonate its owner; the test
//!    `a_stolen_certificate_without_its_key_is_refused` guards it.
//!
//! TLS 1.2 is not offered; its signature check is implemented anyway and refuses.

use crate::identity::{self, IdentityError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The ALPN protocol of site-to-site links.
pub const ALPN: &[u8] = b"siterep/1";

/// Why this site's TLS identity or a QUIC configuration cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The identity's files could not be read, or are not valid.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused the configuration (a key that does not fit the certificate, say).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the TLS configuration for QUIC; holds its message.
    #[error("QUIC crypto configuration: {0}")]
    Quic(String),
}

/// This site's certificate and private key, as TLS needs them.
pub struct TlsIdentity {
    /// The self-signed certificate, DER.
    pub cert: CertificateDer<'static>,
    /// Its private key, PKCS#8 DER.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of `cert`, lower-case hex: what peers pin.
    pub fingerprint: String,
}

impl TlsIdentity {
    /// Loads `tls/cert.pem` and `tls/key.pem` from a data directory.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let der = identity::load_cert_der(dir)?;
        let path = dir.join(identity::KEY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
            path: path.clone(),
            source,
        })?;
        let key = pem::parse(text).map_err(|e| IdentityError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if key.tag() != "PRIVATE KEY" {
            return Err(IdentityError::Invalid {
                path,
                reason: format!("PEM block is {:?}, expected PRIVATE KEY", key.tag()),
            }
            .into());
        }
        Ok(TlsIdentity {
            fingerprint: identity::fingerprint(&der),
            cert: CertificateDer::from(der),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.into_contents())),
        })
    }
}

/// The fingerprints a site accepts, each with the name of the peer it belongs to (a site code
/// or a DP id). Shared and live: a `child add` takes effect without a restart.
#[derive(Debug, Default)]
pub struct Pins {
    by_fingerprint: RwLock<HashMap<String, String>>,
}

impl Pins {
    /// An empty set, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Pins::default())
    }
    /// Pins `fingerprint` (any case) for `peer`, replacing the peer it was pinned for.
    pub fn insert(&self, fingerprint: &str, peer: &str) {
        self.by_fingerprint
            .write()
            .expect("pins lock")
            .insert(fingerprint.to_ascii_lowercase(), peer.to_string());
    }
    /// Unpins `fingerprint` (any case).
    pub fn remove(&self, fingerprint: &str) {
        self.by_fingerprint
            .write()
            .expect("pins lock")
            .remove(&fingerprint.to_ascii_lowercase());
    }
    /// The peer a fingerprint is pinned for. `fingerprint` is lower-case, as
    /// [`identity::fingerprint`] gives it.
    pub fn peer(&self, fingerprint: &str) -> Option<String> {
        self.by_fingerprint
            .read()
            .expect("pins lock")
            .get(fingerprint)
            .cloned()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a peer certificate by pin, and handshake signatures for real.
#[derive(Debug)]
struct PinnedVerifier {
    pins: Arc<Pins>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    fn new(pins: Arc<Pins>) -> Self {
        PinnedVerifier {
            pins,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn check_pin(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let fp = identity::fingerprint(end_entity);
        if self.pins.peer(&fp).is_some() {
            Ok(())
        } else {
            tracing::warn!(fingerprint = %fp, "peer certificate refused: not pinned");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_pin(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_pin(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// How long a link may be silent before it is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alives keep an idle but healthy link open (and find a dead one within the timeout).
pub const KEEP_ALIVE: Duration = Duration::from_secs(4);

/// The most a connection buffers unacknowledged: small, so that bytes already handed to QUIC
/// neither hold up a preempting job nor escape the rate limit for long.
pub const SEND_WINDOW: u64 = 4 << 20;

/// A congestion controller quinn offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Congestion {
    /// Loss-based (quinn's default): every lost datagram halves its window, so a WAN that
    /// drops 1% of datagrams runs at a small share of its bandwidth.
    Cubic,
    /// Model-based: paces at the measured bandwidth and round trip, and takes random loss
    /// for what it is.
    Bbr,
}

/// The controller every link uses (`bench wan` measures both).
pub const CONGESTION: Congestion = Congestion::Bbr;

fn transport() -> Arc<quinn::TransportConfig> {
    transport_for(CONGESTION)
}

/// The links' transport settings with congestion controller `cc` (for benchmarks that
/// compare controllers; the links use [`CONGESTION`]).
pub fn transport_for(cc: Congestion) -> Arc<quinn::TransportConfig> {
    transport_with(IDLE_TIMEOUT, Some(KEEP_ALIVE), cc)
}

fn transport_with(
    idle: Duration,
    keep_alive: Option<Duration>,
    cc: Congestion,
) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    if cc == Congestion::Bbr {
        t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle).expect("idle timeout fits"),
    ));
    t.keep_alive_interval(keep_alive);
    // What the sender writes may sit in quinn's buffer only briefly: the rate limit is
    // enforced on bytes written, and a preempting job must not queue behind megabytes of a
    // lower one (the scheduler preempts at the next chunk, but bytes already handed to quinn
    // still go first). The default (10 MB) would hold seconds of a slow link.
    t.send_window(SEND_WINDOW);
    // One stream may take as much as a connection sends (quinn's default, 1.25 MB, holds a
    // stream to 25 MB/s at 50 ms RTT, however wide the link).
    t.stream_receive_window(quinn::VarInt::from_u32(SEND_WINDOW as u32));
    Arc::new(t)
}

/// QUIC server configuration: present `me`, require a client certificate pinned in `pins`.
pub fn server_config(me: &TlsIdentity, pins: Arc<Pins>) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PinnedVerifier::new(pins)))
        .with_single_cert(vec![me.cert.clone()], me.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// QUIC client configuration: present `me`, accept only a server certificate pinned in `pins`.
pub fn client_config(me: &TlsIdentity, pins: Arc<Pins>) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(pins)))
        .with_client_auth_cert(vec![me.cert.clone()], me.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The fingerprint of the certificate the peer of `conn` presented (and that the verifiers
/// checked).
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<String> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| identity::fingerprint(c))
}

/// The server name every site connects with; identity comes from the pin, not the name.
pub const SERVER_NAME: &str = "site.siterep";

#[cfg(test)]
mod tests {
    use super::*;
    use schema::SiteCode;
    use std::net::SocketAddr;

    fn site(code: &str) -> (tempfile::TempDir, TlsIdentity) {
        let d = tempfile::tempdir().unwrap();
        identity::create(d.path(), SiteCode::new(code).unwrap()).unwrap();
        let id = TlsIdentity::load(d.path()).unwrap();
        (d, id)
    }

    /// A server that answers one bidirectional stream by echoing it, and reports the peer's
    /// fingerprint.
    async fn echo_server(
        me: &TlsIdentity,
        pins: Arc<Pins>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Option<String>>) {
        let cfg = server_config(me, pins).unwrap();
        let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ep.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let conn = ep.accept().await?.await.ok()?;
            let fp = peer_fingerprint(&conn);
            let (mut send, mut recv) = conn.accept_bi().await.ok()?;
            let data = recv.read_to_end(1024).await.ok()?;
            send.write_all(&data).await.ok()?;
            send.finish().ok()?;
            conn.closed().await;
            fp
        });
        (addr, h)
    }

    async fn dial(me: &TlsIdentity, pins: Arc<Pins>, addr: SocketAddr) -> Result<Vec<u8>, String> {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(client_config(me, pins).unwrap());
        let conn = ep
            .connect(addr, SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"hello").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let r = recv.read_to_end(1024).await.map_err(|e| e.to_string());
        conn.close(0u32.into(), b"done");
        r
    }

    #[tokio::test]
    async fn pinned_peers_connect_both_ways_authenticated() {
        let (_a, parent) = site("CEN");
        let (_b, child) = site("P01");
        let server_pins = Pins::new();
        server_pins.insert(&child.fingerprint, "P01");
        let client_pins = Pins::new();
        client_pins.insert(&parent.fingerprint, "CEN");
        let (addr, server) = echo_server(&parent, server_pins).await;
        assert_eq!(dial(&child, client_pins, addr).await.unwrap(), b"hello");
        assert_eq!(server.await.unwrap(), Some(child.fingerprint.clone()));
    }

    #[tokio::test]
    async fn an_unpinned_client_is_refused() {
        let (_a, parent) = site("CEN");
        let (_b, child) = site("P01");
        let (_c, stranger) = site("P01");
        let server_pins = Pins::new();
        server_pins.insert(&child.fingerprint, "P01");
        let client_pins = Pins::new();
        client_pins.insert(&parent.fingerprint, "CEN");
        let (addr, server) = echo_server(&parent, server_pins).await;
        assert!(dial(&stranger, client_pins, addr).await.is_err());
        assert_eq!(server.await.unwrap(), None, "nothing served");
    }

    #[tokio::test]
    async fn a_client_refuses_an_unpinned_server() {
        let (_a, parent) = site("CEN");
        let (_b, child) = site("P01");
        let (_c, impostor) = site("CEN");
        let server_pins = Pins::new();
        server_pins.insert(&child.fingerprint, "P01");
        let client_pins = Pins::new();
        client_pins.insert(&parent.fingerprint, "CEN");
        let (addr, _server) = echo_server(&impostor, server_pins).await;
        let err = dial(&child, client_pins, addr).await.unwrap_err();
        assert!(!err.is_empty());
    }

    /// An idle link stays up past the idle timeout thanks to keep-alives (shortened here), and
    /// without them it would not.
    #[tokio::test]
    async fn keep_alives_hold_an_idle_link_open() {
        let (_a, parent) = site("CEN");
        let (_b, child) = site("P01");
        for (keep, survives) in [(Some(Duration::from_millis(200)), true), (None, false)] {
            let server_pins = Pins::new();
            server_pins.insert(&child.fingerprint, "P01");
            let client_pins = Pins::new();
            client_pins.insert(&parent.fingerprint, "CEN");
            let mut scfg = server_config(&parent, server_pins).unwrap();
            scfg.transport_config(transport_with(Duration::from_millis(800), keep, CONGESTION));
            let sep = quinn::Endpoint::server(scfg, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = sep.local_addr().unwrap();
            tokio::spawn(async move {
                let conn = sep.accept().await.unwrap().await.unwrap();
                while let Ok((mut s, mut r)) = conn.accept_bi().await {
                    let d = r.read_to_end(64).await.unwrap();
                    s.write_all(&d).await.unwrap();
                    s.finish().unwrap();
                }
            });
            let mut ccfg = client_config(&child, client_pins).unwrap();
            ccfg.transport_config(transport_with(Duration::from_millis(800), keep, CONGESTION));
            let mut cep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            cep.set_default_client_config(ccfg);
            let conn = cep.connect(addr, SERVER_NAME).unwrap().await.unwrap();
            tokio::time::sleep(Duration::from_millis(2000)).await;
            let echoed = async {
                let (mut s, mut r) = conn.open_bi().await.ok()?;
                s.write_all(b"ping").await.ok()?;
                s.finish().ok()?;
                r.read_to_end(64).await.ok()
            }
            .await;
            assert_eq!(echoed.is_some(), survives, "keep-alive {keep:?}");
        }
    }

    /// A server that presents the real (pinned) certificate of CEN but signs the handshake with
    /// another key, as someone who copied the public certificate would. The client must refuse
    /// because the TLS 1.3 CertificateVerify signature does not verify.
    #[tokio::test]
    async fn a_stolen_certificate_without_its_key_is_refused() {
        #[derive(Debug)]
        struct Stolen(Arc<rustls::sign::CertifiedKey>);
        impl rustls::server::ResolvesServerCert for Stolen {
            fn resolve(
                &self,
                _hello: rustls::server::ClientHello<'_>,
            ) -> Option<Arc<rustls::sign::CertifiedKey>> {
                Some(self.0.clone())
            }
        }
        let (_a, parent) = site("CEN");
        let (_b, child) = site("P01");
        let (_c, thief) = site("XXX");
        let wrong_key = rustls::crypto::ring::sign::any_supported_type(&thief.key).unwrap();
        let forged = rustls::sign::CertifiedKey::new(vec![parent.cert.clone()], wrong_key);
        let server_pins = Pins::new();
        server_pins.insert(&child.fingerprint, "P01");
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(Arc::new(PinnedVerifier::new(server_pins)))
            .with_cert_resolver(Arc::new(Stolen(Arc::new(forged))));
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let cfg = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
        ));
        let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = ep.local_addr().unwrap();
        tokio::spawn(async move {
            if let Some(inc) = ep.accept().await {
                let _ = inc.await;
            }
        });
        let client_pins = Pins::new();
        client_pins.insert(&parent.fingerprint, "CEN");
        let err = dial(&child, client_pins, addr).await.unwrap_err();
        assert!(
            err.to_lowercase().contains("signature") || err.contains("crypto"),
            "refused for the signature: {err}"
        );
    }
}
