//! Reading a DKIM private key file: PEM, PKCS#8 or PKCS#1, RSA of at least
//! 1024 bits (RFC 8301 §3.2) or Ed25519 (RFC 8463).

use std::fs;
use std::io;
use std::path::Path;

use mail_auth::common::crypto::{Algorithm, CryptoError, Ed25519Key, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use ring::rand::SystemRandom;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, pkcs1::DecodeRsaPrivateKey, pkcs8::DecodePrivateKey};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

/// RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits.
pub(crate) const MIN_RSA_BITS: usize = 1024;

/// The DER DigestInfo prefix of a SHA-256 hash in an RSASSA-PKCS1-v1_5
/// signature (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// RSA modulus sizes `ring` signs with; it is about three times faster than
/// the `rsa` crate, which takes the sizes outside this range.
const RING_RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// A private key ready to sign.
pub(crate) enum PrivateKey {
    /// RSA of 2048 to 4096 bits, signed by `ring` (constant-time).
    RingRsa(ring::rsa::KeyPair),
    /// Other RSA sizes. Signed here rather than by `mail_auth`'s RSA key,
    /// whose signing skips blinding: with a random blinding factor per
    /// signature, its timing says nothing about the key.
    Rsa(RsaPrivateKey),
    Ed25519(Ed25519Key),
}

impl SigningKey for PrivateKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            PrivateKey::RingRsa(key) => {
                // ring hashes the signed data itself.
                let mut data = Vec::with_capacity(1024);
                input.write(&mut data);
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    &data,
                    &mut signature,
                )
                .map_err(|error| {
                    mail_auth::Error::Crypto(CryptoError::Library(error.to_string()))
                })?;
                Ok(signature)
            }
            PrivateKey::Rsa(key) => {
                let digest = self.hash(input);
                let padding = Pkcs1v15Sign {
                    hash_len: Some(32),
                    prefix: SHA256_DIGEST_INFO.into(),
                };
                key.sign_with_rng(&mut OsRng, padding, digest.as_ref())
                    .map_err(|error| {
                        mail_auth::Error::Crypto(CryptoError::Library(error.to_string()))
                    })
            }
            PrivateKey::Ed25519(key) => key.sign(input),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::RingRsa(_) | PrivateKey::Rsa(_) => Algorithm::RsaSha256,
            PrivateKey::Ed25519(key) => key.algorithm(),
        }
    }
}

/// Why a key file cannot be used; displayed after the file name.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read: {}", without_os_code(.0))]
    Unreadable(io::Error),
    #[error(
        "not a PEM private key (expected \"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\"; encrypted keys are not supported)"
    )]
    NotPem,
    #[error("an EC (SEC1) key: DKIM signs with RSA or Ed25519")]
    Ec,
    #[error("not an RSA or Ed25519 private key")]
    UnknownAlgorithm,
    #[error("not a valid RSA private key: {0}")]
    InvalidRsa(String),
    #[error("RSA key of {0} bits is too short: RFC 8301 requires at least 1024 (2048 recommended)")]
    RsaTooShort(usize),
}

/// `io::Error`'s message without the `(os error N)` suffix.
fn without_os_code(error: &io::Error) -> String {
    let message = error.to_string();
    match message.rfind(" (os error ") {
        Some(cut) if message.ends_with(')') => message[..cut].to_string(),
        _ => message,
    }
}

/// Reads and parses the key file at `path`.
pub(crate) fn read(path: &Path) -> Result<PrivateKey, KeyError> {
    let text = fs::read(path).map_err(KeyError::Unreadable)?;
    parse_pem(&text)
}

/// Parses a PEM private key (the first private key block in `text`).
pub(crate) fn parse_pem(text: &[u8]) -> Result<PrivateKey, KeyError> {
    let der = match PrivateKeyDer::from_pem_slice(text) {
        Ok(der) => der,
        Err(pem::Error::NoItemsFound) | Err(_) => return Err(KeyError::NotPem),
    };
    match der {
        PrivateKeyDer::Pkcs1(der) => rsa_from_pkcs1(der),
        PrivateKeyDer::Pkcs8(der) => from_pkcs8(der),
        PrivateKeyDer::Sec1(_) => Err(KeyError::Ec),
        _ => Err(KeyError::UnknownAlgorithm),
    }
}

fn rsa_from_pkcs1(der: PrivatePkcs1KeyDer<'_>) -> Result<PrivateKey, KeyError> {
    let key = RsaPrivateKey::from_pkcs1_der(der.secret_pkcs1_der())
        .map_err(|error| KeyError::InvalidRsa(error.to_string()))?;
    rsa_key(key, || ring::rsa::KeyPair::from_der(der.secret_pkcs1_der()))
}

fn from_pkcs8(der: PrivatePkcs8KeyDer<'_>) -> Result<PrivateKey, KeyError> {
    if let Ok(key) = Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()) {
        return Ok(PrivateKey::Ed25519(key));
    }
    let key = match RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der()) {
        Ok(key) => key,
        // An algorithm identifier other than rsaEncryption (EC, Ed448, ...).
        Err(rsa::pkcs8::Error::PublicKey(_)) | Err(rsa::pkcs8::Error::KeyMalformed) => {
            return Err(KeyError::UnknownAlgorithm);
        }
        Err(error) => return Err(KeyError::InvalidRsa(error.to_string())),
    };
    rsa_key(key, || {
        ring::rsa::KeyPair::from_pkcs8(der.secret_pkcs8_der())
    })
}

/// Checks the size; takes `ring`'s form of the key (`ring_key`) for the
/// sizes it signs, else precomputes the CRT values for the `rsa` crate.
fn rsa_key(
    mut key: RsaPrivateKey,
    ring_key: impl FnOnce() -> Result<ring::rsa::KeyPair, ring::error::KeyRejected>,
) -> Result<PrivateKey, KeyError> {
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooShort(bits));
    }
    if RING_RSA_BITS.contains(&bits) {
        return ring_key()
            .map(PrivateKey::RingRsa)
            .map_err(|error| KeyError::InvalidRsa(error.to_string()));
    }
    key.validate()
        .and_then(|()| key.precompute())
        .map_err(|error| KeyError::InvalidRsa(error.to_string()))?;
    Ok(PrivateKey::Rsa(key))
}
