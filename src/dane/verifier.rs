//! The rustls certificate verifier of a DANE session (RFC 7672 §3,
//! RFC 7671 §5): the server's certificate must match one of the host's
//! usable TLSA records. DANE-EE matches the certificate or its public key
//! and ignores names and dates; DANE-TA matches a certificate of the
//! presented chain, which then has to lead from the server's certificate
//! to it (signatures, validity dates) with a name among the reference
//! identifiers.
//!
//! One verifier per connection: it keeps its [`Verdict`], so the client
//! can log and count how the handshake was judged. Session resumption is
//! off in its configuration: a resumed session would skip the check.

use std::sync::{Arc, Mutex};

use rustls::client::Resumption;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::policy::Expectation;
use super::tlsa::Usage;
use crate::outcome::CertificateFailure;

/// How the server's certificate was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Matched {
        usage: Usage,
        /// The record that matched, in presentation form.
        record: String,
        /// DANE-TA: the reference identifier the certificate carries.
        name: Option<String>,
    },
    Failed {
        failure: CertificateFailure,
        detail: String,
    },
}

/// Checks one server's certificate against one host's TLSA records.
#[derive(Debug)]
pub struct DaneVerifier {
    expectation: Arc<Expectation>,
    provider: Arc<CryptoProvider>,
    verdict: Mutex<Option<Verdict>>,
}

impl DaneVerifier {
    /// A verifier for one connection to a host with `expectation`.
    pub fn new(expectation: Arc<Expectation>) -> Arc<DaneVerifier> {
        Arc::new(DaneVerifier {
            expectation,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            verdict: Mutex::new(None),
        })
    }

    /// The client configuration of that connection: this verifier, no
    /// session resumption, no client certificate.
    pub fn client_config(self: &Arc<Self>) -> anyhow::Result<Arc<ClientConfig>> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// The verdict of the handshake, once the server's certificate was
    /// seen.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.lock().expect("verdict").clone()
    }

    pub fn expectation(&self) -> &Expectation {
        &self.expectation
    }

    /// Judges a presented chain (end entity first) at `now`.
    pub fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Verdict {
        let records = &self.expectation.records;
        for (usage, record) in records {
            if *usage == Usage::EndEntity && record.matches(end_entity) {
                return Verdict::Matched {
                    usage: *usage,
                    record: record.to_string(),
                    name: None,
                };
            }
        }
        let mut first_failure = None;
        for (usage, record) in records {
            if *usage != Usage::TrustAnchor {
                continue;
            }
            for anchor in intermediates.iter().filter(|cert| record.matches(cert)) {
                match self.chain_to(anchor, end_entity, intermediates, now) {
                    Ok(name) => {
                        return Verdict::Matched {
                            usage: *usage,
                            record: record.to_string(),
                            name: Some(name),
                        };
                    }
                    Err(failed) => {
                        first_failure.get_or_insert(failed);
                    }
                }
            }
        }
        first_failure.unwrap_or_else(|| Verdict::Failed {
            failure: CertificateFailure::NotTrusted,
            detail: format!(
                "the certificate matches none of the {} usable TLSA records of {}",
                records.len(),
                self.expectation.base
            ),
        })
    }

    /// A DANE-TA match: the chain from `end_entity` leads to `anchor` and
    /// the certificate names a reference identifier. `Ok` is that name.
    fn chain_to(
        &self,
        anchor: &CertificateDer<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<String, Verdict> {
        let not_trusted = |detail: String| Verdict::Failed {
            failure: CertificateFailure::NotTrusted,
            detail,
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned()).map_err(|error| {
            not_trusted(format!("the matched trust anchor is unusable: {error}"))
        })?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| not_trusted(format!("trust anchor: {error}")))?;
        let ids = &self.expectation.reference_ids;
        for name in ids {
            let Ok(server_name) = ServerName::try_from(name.as_str()) else {
                continue;
            };
            match webpki.verify_server_cert(end_entity, intermediates, &server_name, &[], now) {
                Ok(_) => return Ok(name.clone()),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => continue,
                Err(error) => {
                    let failure = match &error {
                        rustls::Error::InvalidCertificate(
                            CertificateError::Expired
                            | CertificateError::ExpiredContext { .. }
                            | CertificateError::NotValidYet
                            | CertificateError::NotValidYetContext { .. },
                        ) => CertificateFailure::Expired,
                        _ => CertificateFailure::NotTrusted,
                    };
                    return Err(Verdict::Failed {
                        failure,
                        detail: format!("DANE-TA chain: {error}"),
                    });
                }
            }
        }
        Err(Verdict::Failed {
            failure: CertificateFailure::HostMismatch,
            detail: format!(
                "the certificate chains to the DANE-TA anchor but names none of {}",
                ids.join(", ")
            ),
        })
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.judge(end_entity, intermediates, now);
        let result = match &verdict {
            Verdict::Matched { .. } => Ok(ServerCertVerified::assertion()),
            Verdict::Failed { detail, .. } => {
                Err(rustls::Error::General(format!("DANE: {detail}")))
            }
        };
        *self.verdict.lock().expect("verdict") = Some(verdict);
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
