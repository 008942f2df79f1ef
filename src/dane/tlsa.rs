//! TLSA records (RFC 6698) as DANE for SMTP reads them (RFC 7672 §3.1):
//! which records are usable, and whether a certificate matches one. Pure:
//! no I/O, no clock.

use std::fmt;

use rustls::pki_types::CertificateDer;
use sha2::{Digest as _, Sha256, Sha512};

/// One TLSA record: `USAGE SELECTOR MATCHING DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// The certificate usages SMTP can use (RFC 7672 §3.1.1, §3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// DANE-TA(2): the record names a trust anchor the server's chain must
    /// lead to; the certificate must also carry a reference identifier.
    TrustAnchor,
    /// DANE-EE(3): the record names the server's own certificate or key;
    /// names and validity dates are not checked (RFC 7671 §5.1).
    EndEntity,
}

impl Usage {
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::TrustAnchor => "DANE-TA",
            Usage::EndEntity => "DANE-EE",
        }
    }
}

const SELECTOR_CERTIFICATE: u8 = 0;
const SELECTOR_PUBLIC_KEY: u8 = 1;
const MATCHING_FULL: u8 = 0;
const MATCHING_SHA256: u8 = 1;
const MATCHING_SHA512: u8 = 2;

impl Tlsa {
    /// The usage of a record SMTP can use, or `None` for an unusable one:
    /// PKIX-TA(0) and PKIX-EE(1) (RFC 7672 §3.1.3), unknown usages,
    /// selectors or matching types, and digests of the wrong length
    /// (RFC 6698 §4.1: such records are skipped).
    pub fn usable(&self) -> Option<Usage> {
        let usage = match self.usage {
            2 => Usage::TrustAnchor,
            3 => Usage::EndEntity,
            _ => return None,
        };
        if !matches!(self.selector, SELECTOR_CERTIFICATE | SELECTOR_PUBLIC_KEY) {
            return None;
        }
        let length_fits = match self.matching {
            MATCHING_FULL => !self.data.is_empty(),
            MATCHING_SHA256 => self.data.len() == 32,
            MATCHING_SHA512 => self.data.len() == 64,
            _ => false,
        };
        length_fits.then_some(usage)
    }

    /// Whether `certificate` (DER) is what this record names, by its
    /// selector (the whole certificate, or its SubjectPublicKeyInfo) and
    /// matching type (exact, SHA-256, SHA-512). A certificate whose public
    /// key cannot be read matches no selector-1 record.
    pub fn matches(&self, certificate: &CertificateDer<'_>) -> bool {
        let selected = match self.selector {
            SELECTOR_CERTIFICATE => certificate.as_ref().to_vec(),
            SELECTOR_PUBLIC_KEY => match public_key_info(certificate) {
                Some(spki) => spki,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            MATCHING_FULL => selected == self.data,
            MATCHING_SHA256 => Sha256::digest(&selected).as_slice() == self.data,
            MATCHING_SHA512 => Sha512::digest(&selected).as_slice() == self.data,
            _ => false,
        }
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (what selector 1 names).
/// The certificate is read as a trust anchor is, leniently: validity,
/// extensions and signature do not matter for a DANE-EE match.
pub fn public_key_info(certificate: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let anchor = webpki::anchor_from_trusted_cert(certificate).ok()?;
    Some(webpki::spki_for_anchor(&anchor).as_ref().to_vec())
}

impl fmt::Display for Tlsa {
    /// Presentation form, the data in hex; a full certificate or key is
    /// cut short, so log lines stay readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        const SHOWN: usize = 32;
        for byte in self.data.iter().take(SHOWN) {
            write!(f, "{byte:02x}")?;
        }
        if self.data.len() > SHOWN {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_certificate() -> (CertificateDer<'static>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let params = rcgen::CertificateParams::new(vec!["mx.example".to_owned()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        (certificate.der().clone(), spki)
    }

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn usable_records() {
        let digest = vec![0; 32];
        assert_eq!(
            record(3, 1, 1, digest.clone()).usable(),
            Some(Usage::EndEntity)
        );
        assert_eq!(
            record(2, 0, 2, vec![0; 64]).usable(),
            Some(Usage::TrustAnchor)
        );
        assert_eq!(record(3, 0, 0, vec![1]).usable(), Some(Usage::EndEntity));
        for unusable in [
            record(0, 1, 1, digest.clone()),
            record(1, 1, 1, digest.clone()),
            record(4, 1, 1, digest.clone()),
            record(3, 2, 1, digest.clone()),
            record(3, 1, 3, digest.clone()),
            record(3, 1, 1, vec![0; 31]),
            record(3, 1, 2, digest),
            record(3, 1, 0, Vec::new()),
        ] {
            assert_eq!(unusable.usable(), None, "{unusable}");
        }
    }

    #[test]
    fn matching_by_selector_and_matching_type() {
        let (certificate, spki) = new_certificate();
        let (other, _) = new_certificate();
        assert_eq!(public_key_info(&certificate).as_deref(), Some(&spki[..]));
        let cases = [
            record(3, 0, 0, certificate.as_ref().to_vec()),
            record(3, 0, 1, Sha256::digest(certificate.as_ref()).to_vec()),
            record(3, 0, 2, Sha512::digest(certificate.as_ref()).to_vec()),
            record(3, 1, 0, spki.clone()),
            record(3, 1, 1, Sha256::digest(&spki).to_vec()),
            record(3, 1, 2, Sha512::digest(&spki).to_vec()),
        ];
        for tlsa in &cases {
            assert!(tlsa.matches(&certificate), "{tlsa} matches");
            assert!(!tlsa.matches(&other), "{tlsa} does not match another key");
        }
        let mut wrong = cases[4].clone();
        wrong.data[0] ^= 1;
        assert!(!wrong.matches(&certificate));
        assert!(
            !record(3, 1, 1, spki).matches(&certificate),
            "data is a digest"
        );
    }

    #[test]
    fn garbage_is_no_certificate() {
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert_eq!(public_key_info(&garbage), None);
        assert!(!record(3, 1, 1, vec![0; 32]).matches(&garbage));
    }

    #[test]
    fn presentation_form() {
        let tlsa = record(3, 1, 1, vec![0xab; 32]);
        assert_eq!(tlsa.to_string(), format!("3 1 1 {}", "ab".repeat(32)));
        let long = record(3, 0, 0, vec![0x01; 40]);
        assert!(long.to_string().ends_with('…'));
    }
}
