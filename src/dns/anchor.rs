//! DNSSEC trust anchors: `[dns] trust_anchor`, a file of DS or DNSKEY
//! records in zone-file form, one per line (pure parsing); the built-in
//! root anchor when the key is not set; and the keys a DS anchor stands for,
//! once the owner's DNSKEY RRset has been fetched ("priming").
//!
//! A DNSKEY anchor is trusted as it is. A DS anchor is turned into the
//! owner's zone keys whose digest it matches (RFC 4034 §5); only those keys
//! are trusted, and the rest of the owner's DNSKEY RRset then has to be
//! signed by one of them, as for any zone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use hickory_resolver::proto::dnssec::rdata::{DNSKEY, DS};
use hickory_resolver::proto::dnssec::{
    Algorithm, DigestType, PublicKeyBuf, TrustAnchors, Verifier as _,
};
use hickory_resolver::proto::rr::{LowerName, Name};

/// Flags of a DNSKEY: bit 7, the zone key flag (RFC 4034 §2.1.1).
const ZONE_KEY: u16 = 0x0100;
/// Bit 8: the key was revoked (RFC 5011 §2.1).
const REVOKED: u16 = 0x0080;

/// One trust anchor record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    Dnskey { owner: Name, key: DNSKEY },
    Ds { owner: Name, ds: DS },
}

/// The trust anchors relayq validates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAnchorSource {
    /// The root zone's key-signing keys built into hickory (KSK-2017 and
    /// KSK-2024).
    Root,
    /// `[dns] trust_anchor`: replaces the root anchor.
    File { path: PathBuf, anchors: Vec<Anchor> },
}

impl TrustAnchorSource {
    /// Reads and checks a trust anchor file. The error names the file and
    /// the line, and reads as a config error's reason.
    pub fn read(path: &Path) -> Result<TrustAnchorSource, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        TrustAnchorSource::from_text(path, &text)
    }

    /// The trust anchors of `text`, read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<TrustAnchorSource, String> {
        let anchors = parse(text).map_err(|error| format!("{}: {error}", path.display()))?;
        Ok(TrustAnchorSource::File {
            path: path.to_owned(),
            anchors,
        })
    }

    /// The names the anchors are for (the root for the built-in anchor):
    /// where a check of the validation path starts.
    pub fn owners(&self) -> Vec<Name> {
        match self {
            TrustAnchorSource::Root => vec![Name::root()],
            TrustAnchorSource::File { anchors, .. } => {
                let mut owners: Vec<Name> = Vec::new();
                for anchor in anchors {
                    let owner = anchor.owner();
                    if !owners.contains(owner) {
                        owners.push(owner.clone());
                    }
                }
                owners
            }
        }
    }

    /// Whether some anchors are DS records, which need the owner's DNSKEY
    /// RRset before they can be used.
    pub fn needs_priming(&self) -> bool {
        match self {
            TrustAnchorSource::Root => false,
            TrustAnchorSource::File { anchors, .. } => anchors
                .iter()
                .any(|anchor| matches!(anchor, Anchor::Ds { .. })),
        }
    }

    /// The trusted keys: the DNSKEY anchors, plus the keys among
    /// `fetched` (owner, that owner's DNSKEY RRset) that a DS anchor
    /// matches. `Err` names a DS anchor that matched none of them.
    pub fn trusted_keys(
        &self,
        fetched: &[(Name, Vec<DNSKEY>)],
    ) -> Result<Arc<TrustAnchors>, String> {
        let TrustAnchorSource::File { anchors, .. } = self else {
            return Ok(Arc::new(TrustAnchors::default()));
        };
        let mut trusted = TrustAnchors::empty();
        for anchor in anchors {
            match anchor {
                Anchor::Dnskey { owner, key } => {
                    trusted.insert_with_name(key.public_key(), LowerName::new(owner));
                }
                Anchor::Ds { owner, ds } => {
                    let keys = fetched
                        .iter()
                        .filter(|(name, _)| name == owner)
                        .flat_map(|(_, keys)| keys);
                    let mut matched = false;
                    for key in keys {
                        if key.flags() & REVOKED == 0 && ds.covers(owner, key).unwrap_or(false) {
                            trusted.insert_with_name(key.public_key(), LowerName::new(owner));
                            matched = true;
                        }
                    }
                    if !matched {
                        return Err(format!(
                            "no DNSKEY of {owner} matches the trust anchor DS {}",
                            ds.key_tag()
                        ));
                    }
                }
            }
        }
        Ok(Arc::new(trusted))
    }
}

impl fmt::Display for TrustAnchorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustAnchorSource::Root => f.write_str("the built-in root trust anchor"),
            TrustAnchorSource::File { path, .. } => {
                write!(f, "the trust anchors of {}", path.display())
            }
        }
    }
}

impl Anchor {
    pub fn owner(&self) -> &Name {
        match self {
            Anchor::Dnskey { owner, .. } | Anchor::Ds { owner, .. } => owner,
        }
    }
}

/// The records of a trust anchor file: one per line, `OWNER [TTL] [IN]
/// DS|DNSKEY RDATA`, the owner absolute; `;` starts a comment, blank lines
/// are skipped. At least one record.
pub fn parse(text: &str) -> Result<Vec<Anchor>, String> {
    let mut anchors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split(';').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let anchor =
            parse_line(content).map_err(|reason| format!("line {}: {reason}", index + 1))?;
        anchors.push(anchor);
    }
    if anchors.is_empty() {
        return Err("no DS or DNSKEY record found".to_owned());
    }
    Ok(anchors)
}

fn parse_line(line: &str) -> Result<Anchor, String> {
    if line.contains('(') || line.contains(')') {
        return Err("a record must be on one line (no parentheses)".to_owned());
    }
    let mut tokens = line.split_whitespace().peekable();
    let owner_text = tokens.next().ok_or("empty line")?;
    if !owner_text.ends_with('.') {
        return Err(format!(
            "owner name {owner_text:?} must be absolute (end with a dot)"
        ));
    }
    let owner = Name::from_ascii(owner_text)
        .map_err(|error| format!("owner name {owner_text:?}: {error}"))?;
    // `example\.` ends with an escaped dot, a label's character.
    if !owner.is_fqdn() {
        return Err(format!(
            "owner name {owner_text:?} must be absolute (end with a dot)"
        ));
    }
    if tokens
        .peek()
        .is_some_and(|token| token.bytes().all(|b| b.is_ascii_digit()))
    {
        tokens.next();
    }
    if tokens
        .peek()
        .is_some_and(|token| token.eq_ignore_ascii_case("IN"))
    {
        tokens.next();
    }
    let record_type = tokens.next().ok_or("record type missing (DS or DNSKEY)")?;
    let fields: Vec<&str> = tokens.collect();
    if record_type.eq_ignore_ascii_case("DNSKEY") {
        Ok(Anchor::Dnskey {
            key: dnskey(&fields)?,
            owner,
        })
    } else if record_type.eq_ignore_ascii_case("DS") {
        Ok(Anchor::Ds {
            ds: ds(&fields)?,
            owner,
        })
    } else {
        Err(format!(
            "record type {record_type:?} is not a trust anchor (DS or DNSKEY)"
        ))
    }
}

/// `FLAGS PROTOCOL ALGORITHM BASE64...` (RFC 4034 §2.2).
fn dnskey(fields: &[&str]) -> Result<DNSKEY, String> {
    let [flags, protocol, algorithm, key @ ..] = fields else {
        return Err("DNSKEY needs flags, protocol, algorithm and the public key".to_owned());
    };
    let flags: u16 = flags
        .parse()
        .map_err(|_| format!("DNSKEY flags {flags:?} is not a number"))?;
    if flags & ZONE_KEY == 0 {
        return Err(format!("DNSKEY flags {flags} lack the zone key bit (256)"));
    }
    if flags & REVOKED != 0 {
        return Err(format!("DNSKEY flags {flags} mark a revoked key"));
    }
    if *protocol != "3" {
        return Err(format!("DNSKEY protocol must be 3, not {protocol:?}"));
    }
    let algorithm = algorithm_of(algorithm)?;
    let encoded: String = key.concat();
    if encoded.is_empty() {
        return Err("DNSKEY public key missing".to_owned());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|error| format!("DNSKEY public key is not base64: {error}"))?;
    let key = DNSKEY::with_flags(flags, PublicKeyBuf::new(bytes, algorithm));
    key.key()
        .map_err(|error| format!("DNSKEY public key is not a valid {algorithm} key: {error}"))?;
    Ok(key)
}

/// `KEY_TAG ALGORITHM DIGEST_TYPE HEX...` (RFC 4034 §5.3).
fn ds(fields: &[&str]) -> Result<DS, String> {
    let [key_tag, algorithm, digest_type, digest @ ..] = fields else {
        return Err("DS needs key tag, algorithm, digest type and digest".to_owned());
    };
    let key_tag: u16 = key_tag
        .parse()
        .map_err(|_| format!("DS key tag {key_tag:?} is not a number"))?;
    let algorithm = algorithm_of(algorithm)?;
    let digest_type = match digest_type.parse::<u8>().map(DigestType::from) {
        Ok(DigestType::SHA256) => DigestType::SHA256,
        Ok(DigestType::SHA384) => DigestType::SHA384,
        _ => {
            return Err(format!(
                "DS digest type {digest_type:?} is not supported (2: SHA-256, 4: SHA-384)"
            ));
        }
    };
    let digest = hex(&digest.concat()).ok_or("DS digest is not hexadecimal")?;
    let expected = if digest_type == DigestType::SHA256 {
        32
    } else {
        48
    };
    if digest.len() != expected {
        return Err(format!(
            "DS digest has {} octets; digest type {} needs {expected}",
            digest.len(),
            u8::from(digest_type)
        ));
    }
    Ok(DS::new(key_tag, algorithm, digest_type, digest))
}

fn algorithm_of(text: &str) -> Result<Algorithm, String> {
    let number: u8 = text
        .parse()
        .map_err(|_| format!("algorithm {text:?} is not a number"))?;
    let algorithm = Algorithm::from_u8(number);
    if !algorithm.is_supported() {
        return Err(format!(
            "algorithm {number} is not supported for validation"
        ));
    }
    Ok(algorithm)
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::dnssec::crypto::EcdsaSigningKey;
    use hickory_resolver::proto::dnssec::{PublicKey as _, SigningKey as _};

    /// A fresh P-256 zone key: its DNSKEY line and a DS line matching it.
    fn key_lines(owner: &str) -> (String, String, DNSKEY) {
        let pkcs8 = EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256).unwrap();
        let signing = EcdsaSigningKey::from_pkcs8(&pkcs8, Algorithm::ECDSAP256SHA256).unwrap();
        let public = signing.to_public_key().unwrap();
        let key = DNSKEY::new(true, true, false, public.clone());
        let encoded = base64::engine::general_purpose::STANDARD.encode(public.public_bytes());
        let name = Name::from_ascii(owner).unwrap();
        let ds = DS::from_key(&public, &name, DigestType::SHA256).unwrap();
        let digest: String = ds.digest().iter().map(|b| format!("{b:02X}")).collect();
        (
            format!("{owner} 3600 IN DNSKEY 257 3 13 {encoded} ; a comment"),
            format!("{owner} IN DS {} 13 2 {digest}", ds.key_tag()),
            key,
        )
    }

    #[test]
    fn reads_dnskey_and_ds_lines() {
        let (dnskey_line, ds_line, generated) = key_lines("example.");
        let anchors = parse(&format!("; anchors\n\n{dnskey_line}\n{ds_line}\n")).unwrap();
        assert_eq!(anchors.len(), 2);
        let Anchor::Dnskey { owner, key } = &anchors[0] else {
            panic!("first is a DNSKEY");
        };
        assert_eq!(owner.to_ascii(), "example.");
        assert_eq!(key, &generated);
        let Anchor::Ds { ds, .. } = &anchors[1] else {
            panic!("second is a DS");
        };
        assert!(ds.covers(owner, key).unwrap(), "the DS matches the key");
    }

    #[test]
    fn a_ds_anchor_trusts_only_the_key_it_matches() {
        let (_, ds_line, key) = key_lines(".");
        let (_, _, other) = key_lines(".");
        let source = TrustAnchorSource::File {
            path: PathBuf::from("anchors"),
            anchors: parse(&ds_line).unwrap(),
        };
        assert!(source.needs_priming());
        let trusted = source
            .trusted_keys(&[(Name::root(), vec![other.clone(), key.clone()])])
            .unwrap();
        assert!(trusted.contains(key.public_key()));
        assert!(!trusted.contains(other.public_key()));
        let Err(error) = source.trusted_keys(&[(Name::root(), vec![other])]) else {
            panic!("a DS without its key is an error");
        };
        assert!(error.contains("no DNSKEY of . matches"), "{error}");
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("", "no DS or DNSKEY record"),
            ("example. IN A 192.0.2.1", "not a trust anchor"),
            ("example IN DS 1 8 2 00", "absolute"),
            ("example\\. IN DS 1 8 2 00", "absolute"),
            (". IN DNSKEY 256 3 8", "public key"),
            (". IN DNSKEY 1 3 8 AwEAAQ==", "zone key bit"),
            (". IN DNSKEY 385 3 8 AwEAAQ==", "revoked"),
            (". IN DNSKEY 257 2 8 AwEAAQ==", "protocol must be 3"),
            (". IN DNSKEY 257 3 99 AwEAAQ==", "algorithm 99"),
            (". IN DNSKEY 257 3 13 !!!", "base64"),
            (". IN DNSKEY 257 3 13 AAAA", "not a valid"),
            (". IN DS 20326 8 1 00", "digest type"),
            (". IN DS 20326 8 2 E06D", "needs 32"),
            (". IN DS 20326 8 2 XYZ0", "hexadecimal"),
            (". IN DS x 8 2 00", "key tag"),
            (". IN DNSKEY ( 257 3 8", "one line"),
        ];
        for (text, expected) in cases {
            let error = parse(&format!("; header\n{text}\n")).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            if !text.is_empty() {
                assert!(error.starts_with("line 2: "), "{text:?}: {error}");
            }
        }
    }

    #[test]
    fn owners_and_the_builtin_root() {
        assert_eq!(TrustAnchorSource::Root.owners(), vec![Name::root()]);
        assert!(!TrustAnchorSource::Root.needs_priming());
        let (dnskey_line, ds_line, _) = key_lines(".");
        let source = TrustAnchorSource::File {
            path: PathBuf::from("anchors"),
            anchors: parse(&format!("{dnskey_line}\n{ds_line}")).unwrap(),
        };
        assert_eq!(source.owners(), vec![Name::root()]);
    }
}
