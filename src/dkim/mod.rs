//! DKIM signing (RFC 6376, RFC 8463) of mail as it is accepted (docs/mail-authentication.md).
//!
//! [`Signers::load`] turns the validated `[[dkim]]` settings into keys ready
//! to sign; [`SigningKeys`] holds the current set for intake, replaceable as
//! a whole. At the end of the header section intake asks for the signers of
//! the From: address's domain ([`Signers::start`]); the returned
//! [`PendingSignature`] hashes the body as it streams to the spool, and
//! [`PendingSignature::finish`] (RSA: run it off the async worker threads)
//! yields the `DKIM-Signature:` fields to put in front of the stored message,
//! or a [`SigningError`]: then the message is refused, never stored unsigned.
//!
//! Invariant: a message is signed once, at acceptance; the stored message is
//! what every delivery sends.

mod field;
mod key;
mod sign;

use std::collections::HashMap;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, DkimSettings};

pub(crate) use self::key::KeyError;
use self::key::PrivateKey;
use self::sign::BodyHash;

/// One key for one domain.
pub(crate) struct Signer {
    /// `d=`: lowercase, without a trailing dot.
    domain: String,
    /// `s=`.
    selector: String,
    /// The names to sign when present; `From` among them.
    headers: Vec<String>,
    key: PrivateKey,
}

impl Signer {
    pub(crate) fn header_names(&self) -> &[String] {
        &self.headers
    }
}

/// The loaded keys of every `[[dkim]]` block, by domain.
#[derive(Default)]
pub struct Signers {
    /// Each domain's signers in file order; no empty lists.
    by_domain: HashMap<String, Vec<Signer>>,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.display())]
pub struct LoadError {
    /// The `[[dkim]]` block, counted from 0.
    pub index: usize,
    pub path: PathBuf,
    source: KeyError,
}

impl Signers {
    /// Reads every block's key file. The first that is missing, unreadable,
    /// not a key, or an RSA key under 1024 bits is the error.
    pub fn load(settings: &[DkimSettings]) -> Result<Signers, LoadError> {
        let mut by_domain: HashMap<String, Vec<Signer>> = HashMap::new();
        for (index, block) in settings.iter().enumerate() {
            let key = key::read(&block.private_key).map_err(|source| LoadError {
                index,
                path: block.private_key.clone(),
                source,
            })?;
            let headers = match &block.headers {
                Some(names) => names.clone(),
                None => sign::DEFAULT_HEADERS.map(str::to_owned).to_vec(),
            };
            by_domain
                .entry(block.domain.clone())
                .or_default()
                .push(Signer {
                    domain: block.domain.clone(),
                    selector: block.selector.clone(),
                    headers,
                    key,
                });
        }
        Ok(Signers { by_domain })
    }

    /// [`Signers::load`] for a configuration, failing with a
    /// [`ConfigError`] that names the configuration file, the block's
    /// `private_key` key and the key file.
    pub fn load_for(config: &Config) -> Result<Signers, ConfigError> {
        Signers::load(&config.dkim).map_err(|error| ConfigError {
            file: config
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from("(built-in configuration)")),
            key: format!("dkim[{}].private_key", error.index),
            reason: error.to_string(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The configured domain that signs mail from `author_domain`
    /// (lowercase): the domain itself or its closest parent with signers.
    fn signing_domain<'a>(&self, author_domain: &'a str) -> Option<&'a str> {
        closest_domain(author_domain, |domain| self.by_domain.contains_key(domain))
    }

    /// Whether a key signs mail whose From: address is in `author_domain`
    /// (lowercase, ASCII).
    pub(crate) fn covers(&self, author_domain: &str) -> bool {
        let author_domain = author_domain.trim_end_matches('.').to_ascii_lowercase();
        self.signing_domain(&author_domain).is_some()
    }

    /// Starts signing a message whose stored header section is the
    /// concatenation of `header_section` (complete fields, without the blank
    /// line) and whose From: address is in `author_domain`; `None` when no
    /// `[[dkim]]` domain covers it.
    pub(crate) fn start(
        self: &Arc<Self>,
        author_domain: &str,
        header_section: &[&[u8]],
    ) -> Option<PendingSignature> {
        let author_domain = author_domain.trim_end_matches('.').to_ascii_lowercase();
        let domain = self.signing_domain(&author_domain)?.to_owned();
        Some(PendingSignature {
            signers: self.clone(),
            domain,
            header_section: header_section.concat(),
            body: BodyHash::new(),
            separator: 2,
            also_sign: &[],
        })
    }
}

impl Signers {
    /// Signs a whole message relayq wrote itself (a TLS-RPT report) the
    /// way intake signs what it accepts, with the fields of `also_sign`
    /// signed besides the configured ones: the `DKIM-Signature:` fields to
    /// put in front of it, or `None` when no key covers its From: domain
    /// (or it has no header section). CPU-bound, like
    /// [`PendingSignature::finish`].
    pub(crate) fn sign_message(
        self: &Arc<Self>,
        message: &[u8],
        also_sign: &'static [&'static str],
        now: SystemTime,
    ) -> Option<Result<Signed, SigningError>> {
        let end = memchr::memmem::find(message, b"\r\n\r\n")? + 2;
        let (section, body) = message.split_at(end);
        let parsed = mail_parser::MessageParser::new().parse_headers(section)?;
        let domain = author_domain(parsed.from())?;
        let mut pending = self.start(&domain, &[section])?;
        pending.also_sign = also_sign;
        pending.update(body);
        Some(pending.finish(now))
    }
}

/// A message being signed: the header section as stored, and the body hash
/// so far.
pub(crate) struct PendingSignature {
    signers: Arc<Signers>,
    /// The key of `signers.by_domain` that signs.
    domain: String,
    header_section: Vec<u8>,
    body: BodyHash,
    /// Octets of the blank line after the header section not seen yet: they
    /// separate header and body, and are part of neither.
    separator: usize,
    /// Field names signed besides the signer's own (for the messages relayq
    /// writes itself).
    also_sign: &'static [&'static str],
}

/// The signatures of one message.
#[derive(Debug, Default)]
pub(crate) struct Signed {
    /// `DKIM-Signature:` fields, CRLF-terminated, in `[[dkim]]` order.
    pub fields: String,
    /// `domain/selector` of each signature made.
    pub signatures: Vec<String>,
}

/// Why a message that a key covers could not be signed. The message is
/// refused with a temporary error rather than sent unsigned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SigningError {
    /// The header section was longer than intake examines, and the From:
    /// field among what it held names a domain a key covers, or there was
    /// no From: among it (so none can be ruled out).
    #[error("the header section is over {0} octets, too large to sign")]
    HeaderSectionTooLarge(usize),
    /// A key failed to sign (every key of the domain signs, or none).
    #[error("{key}: {reason}")]
    Key { key: String, reason: String },
}

impl PendingSignature {
    /// Takes the content that follows the header section, in order.
    pub(crate) fn update(&mut self, mut content: &[u8]) {
        if self.separator > 0 {
            let skip = self.separator.min(content.len());
            self.separator -= skip;
            content = &content[skip..];
        }
        self.body.update(content);
    }

    /// Signs with every key of the domain; the first key that fails is the
    /// error. CPU-bound (an RSA signature takes milliseconds): not for an
    /// async worker thread.
    pub(crate) fn finish(self, now: SystemTime) -> Result<Signed, SigningError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let body_hash = self.body.finish();
        let fields = sign::fields(&self.header_section);
        let mut signed = Signed::default();
        let signers = self.signers.by_domain.get(&self.domain);
        for signer in signers.map(Vec::as_slice).unwrap_or_default() {
            let name = format!("{}/{}", signer.domain, signer.selector);
            match sign::signature_field(signer, self.also_sign, &fields, &body_hash, now) {
                Ok(field) => {
                    signed.fields.push_str(&field);
                    signed.signatures.push(name);
                }
                Err(error) => {
                    return Err(SigningError::Key {
                        key: name,
                        reason: error.to_string(),
                    });
                }
            }
        }
        Ok(signed)
    }
}

/// The signers intake uses: one shared, replaceable set (a reload builds a
/// new one with [`Signers::load`] and swaps it in; messages already being
/// signed finish with the keys they started with).
#[derive(Default)]
pub struct SigningKeys {
    current: RwLock<Option<Arc<Signers>>>,
}

impl SigningKeys {
    pub fn new(signers: Signers) -> SigningKeys {
        let keys = SigningKeys::default();
        keys.replace(signers);
        keys
    }

    /// The current signers; `None` when there are none, so that unsigned
    /// intake does no signing work at all.
    pub(crate) fn current(&self) -> Option<Arc<Signers>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn replace(&self, signers: Signers) {
        let signers = (!signers.is_empty()).then(|| Arc::new(signers));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = signers;
    }
}

/// The domain of a `From:` value's first address, lowercase and in ASCII
/// (an internationalized name in its xn-- form, as `[[dkim]]` domains are
/// written).
pub(crate) fn author_domain(from: Option<&mail_parser::Address<'_>>) -> Option<String> {
    let address = from?.first()?.address()?;
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim();
    if domain.is_empty() {
        None
    } else if domain.is_ascii() {
        Some(domain.to_ascii_lowercase())
    } else {
        idna::domain_to_ascii(domain).ok()
    }
}

/// `domain` or its closest parent for which `configured` holds.
fn closest_domain(domain: &str, configured: impl Fn(&str) -> bool) -> Option<&str> {
    let mut candidate = domain;
    loop {
        if configured(candidate) {
            return Some(candidate);
        }
        candidate = candidate.split_once('.')?.1;
    }
}

/// For tests of the key rules without the daemon.
#[cfg(test)]
fn load_one(path: &Path, domain: &str, selector: &str) -> Result<Signers, LoadError> {
    Signers::load(&[DkimSettings {
        domain: domain.into(),
        selector: selector.into(),
        private_key: path.to_path_buf(),
        headers: None,
    }])
}

#[cfg(test)]
mod tests;
