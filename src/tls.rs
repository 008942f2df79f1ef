//! rustls client configurations for outbound SMTP: one that verifies the
//! server certificate, and one for opportunistic STARTTLS (RFC 7435) that
//! accepts any certificate but can still tell, per connection, whether the
//! certificate would have verified.
//!
//! Everything uses the `ring` provider explicitly; there is no process-wide
//! default provider to depend on.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The two client configurations and the verifier used to judge
/// certificates accepted without verification. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfigs {
    verifying: Arc<ClientConfig>,
    permissive: Arc<ClientConfig>,
    /// `None` when there are no trust anchors: nothing can verify then.
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

impl TlsConfigs {
    /// Trusts the system's roots (rustls-native-certs, which honours
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`). When none load, a warning is
    /// logged and verification simply never succeeds.
    pub fn load() -> anyhow::Result<TlsConfigs> {
        TlsConfigs::from_roots(native_roots())
    }

    /// The system's roots plus the CA certificates in `pem` (tests, private
    /// smarthosts).
    pub fn with_extra_ca(pem: &[u8]) -> anyhow::Result<TlsConfigs> {
        let mut roots = native_roots();
        let mut added = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.context("reading CA certificate PEM")?;
            roots
                .add(certificate)
                .context("adding CA certificate to the trust store")?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "no CA certificate found in the PEM data");
        TlsConfigs::from_roots(roots)
    }

    /// The system's roots plus `extra` (`delivery.tls_ca_file`).
    pub fn with_trust_anchors(extra: &[CertificateDer<'static>]) -> anyhow::Result<TlsConfigs> {
        TlsConfigs::from_roots(roots_with(extra)?)
    }

    /// Configurations trusting exactly `roots`.
    pub fn from_roots(roots: RootCertStore) -> anyhow::Result<TlsConfigs> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let verifier = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .context("building the certificate verifier")?,
            )
        };
        let verifying = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let permissive = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        Ok(TlsConfigs {
            verifying: Arc::new(verifying),
            permissive: Arc::new(permissive),
            verifier,
        })
    }

    /// Handshakes fail unless the certificate verifies for the server name.
    pub fn verifying(&self) -> Arc<ClientConfig> {
        self.verifying.clone()
    }

    /// Handshakes accept any certificate (the handshake signatures are still
    /// checked); ask [`TlsConfigs::would_verify`] afterwards.
    pub fn permissive(&self) -> Arc<ClientConfig> {
        self.permissive.clone()
    }

    /// Whether the certificate chain a server presented verifies for
    /// `server_name` against the trusted roots, now.
    pub fn would_verify(&self, server_name: &ServerName<'_>, chain: &[CertificateDer<'_>]) -> bool {
        self.verification_error(server_name, chain).is_none()
    }

    /// Why the certificate chain a server presented does not verify for
    /// `server_name` against the trusted roots now, or `None` when it does
    /// (what a TLS report counts a session under).
    pub fn verification_error(
        &self,
        server_name: &ServerName<'_>,
        chain: &[CertificateDer<'_>],
    ) -> Option<rustls::Error> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Some(rustls::Error::NoCertificatesPresented);
        };
        let Some(verifier) = &self.verifier else {
            return Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        verifier
            .verify_server_cert(end_entity, intermediates, server_name, &[], UnixTime::now())
            .err()
    }
}

/// The system's roots plus `extra`: what MX certificates and MTA-STS policy
/// hosts are verified against.
pub fn roots_with(extra: &[CertificateDer<'static>]) -> anyhow::Result<RootCertStore> {
    let mut roots = native_roots();
    for certificate in extra {
        roots
            .add(certificate.clone())
            .context("adding a tls_ca_file certificate to the trust store")?;
    }
    Ok(roots)
}

/// The CA certificates of a PEM file, each checked to be usable as a trust
/// anchor. The error names the file and reads as a config error's reason.
pub fn read_trust_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate
            .map_err(|error| format!("{}: not a PEM certificate file: {error}", path.display()))?;
        RootCertStore::empty()
            .add(certificate.clone())
            .map_err(|error| format!("{}: unusable CA certificate: {error}", path.display()))?;
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certificates)
}

fn native_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!("loading system CA certificates: {error}");
    }
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::warn!("{ignored} system CA certificates could not be parsed and are ignored");
    }
    if roots.is_empty() {
        tracing::warn!(
            "no system CA certificates found: no server certificate will verify \
             (opportunistic TLS still works; required TLS will defer)"
        );
    }
    roots
}

/// Accepts every certificate chain, so that opportunistic TLS encrypts even
/// with self-signed or mismatched certificates (RFC 7435). The handshake
/// signatures are still verified: the peer must hold the key it presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The name to send as SNI and to verify the certificate against: the host
/// name without a trailing dot when it is a DNS name, the IP address when the
/// host is an address literal (no SNI is sent for those), else `fallback`.
pub fn server_name(host: &str, fallback: std::net::IpAddr) -> ServerName<'static> {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(fallback.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let fallback = "192.0.2.1".parse().unwrap();
        assert_eq!(
            server_name("mx.example.com.", fallback),
            ServerName::try_from("mx.example.com").unwrap()
        );
        assert_eq!(
            server_name("127.0.0.1", fallback),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]", fallback),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("not a name", fallback),
            ServerName::try_from("192.0.2.1").unwrap()
        );
    }

    #[test]
    fn empty_trust_store_never_verifies() {
        let configs = TlsConfigs::from_roots(RootCertStore::empty()).unwrap();
        let name = ServerName::try_from("mx.test").unwrap();
        assert!(!configs.would_verify(&name, &[]));
        assert_eq!(
            configs.verification_error(&name, &[]),
            Some(rustls::Error::NoCertificatesPresented)
        );
    }
}
