//! The header fields relayq consumes when it accepts a message
//! (docs/idempotency.md): `Idempotency-Key` and `X-Relayq-Meta-KEY` are
//! found in the client's header section, checked, and removed from the
//! message before it is stored and DKIM-signed; the `Message-ID` value is
//! kept as the key `smtp.dedupe_message_id` may use. Pure: bytes in, facts
//! and field ranges out.
//!
//! A field is a line that does not begin with white space, with the
//! continuation lines that follow it (RFC 5322 §2.2.3); its name ends at the
//! first colon. Values are unfolded (the CRLF before each continuation line
//! removed) and trimmed of surrounding white space.

use std::borrow::Cow;
use std::ops::Range;

/// The longest `Idempotency-Key` value, in octets.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The most `X-Relayq-Meta-*` fields one message may carry.
pub const MAX_META_FIELDS: usize = 16;
/// The longest metadata key (the part of the field name after the prefix).
pub const MAX_META_KEY: usize = 40;
/// The longest metadata value, in octets, after unfolding.
pub const MAX_META_VALUE: usize = 256;

const IDEMPOTENCY_KEY: &[u8] = b"idempotency-key";
const META_PREFIX: &[u8] = b"x-relayq-meta-";
const MESSAGE_ID: &[u8] = b"message-id";

/// Why a message's consumed fields make it unacceptable: answered
/// `550 5.6.0` after the data, and nothing is stored. The text is the
/// reply's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRefusal {
    #[error("Idempotency-Key must be 1-255 visible ASCII characters")]
    BadIdempotencyKey,
    #[error("More than one Idempotency-Key field")]
    RepeatedIdempotencyKey,
    #[error("More than 16 X-Relayq-Meta fields")]
    TooManyMeta,
    #[error(
        "Malformed field name {0}: the key after X-Relayq-Meta- must be 1-40 of A-Z a-z 0-9 _ -"
    )]
    BadMetaKey(String),
    #[error("X-Relayq-Meta-{0} value longer than 256 octets")]
    MetaValueTooLong(String),
    #[error("X-Relayq-Meta-{0} value is not UTF-8")]
    MetaValueNotUtf8(String),
    #[error("X-Relayq-Meta-{0} given more than once")]
    RepeatedMetaKey(String),
}

/// What the header section said, for intake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumedHeaders {
    /// The `Idempotency-Key` value (1–255 visible ASCII octets).
    pub idempotency_key: Option<String>,
    /// The first `Message-ID` value, when it could serve as a key (the same
    /// rule as an `Idempotency-Key`); otherwise `None`.
    pub message_id: Option<String>,
    /// `X-Relayq-Meta-KEY: VALUE` fields in header order, keys lower-cased.
    pub meta: Vec<(String, String)>,
    /// The first problem found, in field order: the message is refused.
    pub refusal: Option<HeaderRefusal>,
}

impl ConsumedHeaders {
    /// The key that makes this submission idempotent: the `Idempotency-Key`,
    /// else, when `dedupe_message_id`, the `Message-ID`.
    pub fn key(&self, dedupe_message_id: bool) -> Option<&str> {
        match &self.idempotency_key {
            Some(key) => Some(key),
            None if dedupe_message_id => self.message_id.as_deref(),
            None => None,
        }
    }
}

/// The consumed fields of one header section and where they are.
#[derive(Debug, Default)]
pub struct Scan {
    pub consumed: ConsumedHeaders,
    /// Ranges of the fields removed from the stored message, in order.
    removed: Vec<Removed>,
}

#[derive(Debug)]
struct Removed {
    range: Range<usize>,
    /// An `Idempotency-Key` field (not part of the message's fingerprint);
    /// otherwise a metadata field (part of it).
    idempotency_key: bool,
}

impl Scan {
    /// The header section as stored: without the consumed fields.
    pub fn stored<'a>(&self, section: &'a [u8]) -> Cow<'a, [u8]> {
        if self.removed.is_empty() {
            return Cow::Borrowed(section);
        }
        Cow::Owned(self.kept(section, |_| true).concat())
    }

    /// The parts of the header section that count in the message's
    /// fingerprint: all of it but the `Idempotency-Key` field.
    pub fn fingerprinted<'a>(&self, section: &'a [u8]) -> Vec<&'a [u8]> {
        self.kept(section, |removed| removed.idempotency_key)
    }

    /// `section` without the removed fields `drop` selects, as slices.
    fn kept<'a>(&self, section: &'a [u8], drop: impl Fn(&Removed) -> bool) -> Vec<&'a [u8]> {
        let mut parts = Vec::with_capacity(self.removed.len() + 1);
        let mut from = 0;
        for removed in self.removed.iter().filter(|removed| drop(removed)) {
            parts.push(&section[from..removed.range.start]);
            from = removed.range.end;
        }
        parts.push(&section[from..]);
        parts.retain(|part| !part.is_empty());
        parts
    }
}

/// Finds the consumed fields of a complete header section (CRLF lines,
/// without the empty line that ends it).
pub fn scan(section: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut meta_fields = 0;
    let mut start = 0;
    while start < section.len() {
        let end = field_end(section, start);
        let field = &section[start..end];
        let range = start..end;
        start = end;
        let Some(colon) = memchr::memchr(b':', field) else {
            continue;
        };
        let name = trim(&field[..colon]);
        let value = &field[colon + 1..];
        let consumed = &mut scan.consumed;
        let refusal = if name.eq_ignore_ascii_case(IDEMPOTENCY_KEY) {
            scan.removed.push(Removed {
                range,
                idempotency_key: true,
            });
            if consumed.idempotency_key.is_some() {
                Some(HeaderRefusal::RepeatedIdempotencyKey)
            } else {
                match key_value(value) {
                    Some(key) => {
                        consumed.idempotency_key = Some(key);
                        None
                    }
                    None => Some(HeaderRefusal::BadIdempotencyKey),
                }
            }
        } else if name.len() >= META_PREFIX.len()
            && name[..META_PREFIX.len()].eq_ignore_ascii_case(META_PREFIX)
        {
            scan.removed.push(Removed {
                range,
                idempotency_key: false,
            });
            meta_fields += 1;
            if meta_fields > MAX_META_FIELDS {
                Some(HeaderRefusal::TooManyMeta)
            } else {
                meta(&name[META_PREFIX.len()..], name, value, &mut consumed.meta).err()
            }
        } else {
            if name.eq_ignore_ascii_case(MESSAGE_ID) && consumed.message_id.is_none() {
                consumed.message_id = key_value(value);
            }
            None
        };
        if consumed.refusal.is_none() {
            consumed.refusal = refusal;
        }
    }
    scan
}

/// One metadata field: its key checked and lower-cased, its value checked.
fn meta(
    key: &[u8],
    name: &[u8],
    value: &[u8],
    meta: &mut Vec<(String, String)>,
) -> Result<(), HeaderRefusal> {
    let valid_key = (1..=MAX_META_KEY).contains(&key.len())
        && key
            .iter()
            .all(|&octet| octet.is_ascii_alphanumeric() || octet == b'_' || octet == b'-');
    if !valid_key {
        return Err(HeaderRefusal::BadMetaKey(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    let key = String::from_utf8_lossy(key).to_ascii_lowercase();
    let value = unfold(value);
    if value.len() > MAX_META_VALUE {
        return Err(HeaderRefusal::MetaValueTooLong(key));
    }
    let Ok(value) = String::from_utf8(value) else {
        return Err(HeaderRefusal::MetaValueNotUtf8(key));
    };
    if meta.iter().any(|(known, _)| *known == key) {
        return Err(HeaderRefusal::RepeatedMetaKey(key));
    }
    meta.push((key, value));
    Ok(())
}

/// A value usable as a key: 1–255 visible ASCII octets once unfolded and
/// trimmed.
fn key_value(value: &[u8]) -> Option<String> {
    let value = unfold(value);
    let valid = (1..=MAX_IDEMPOTENCY_KEY).contains(&value.len())
        && value.iter().all(|&octet| (0x21..=0x7e).contains(&octet));
    valid.then(|| String::from_utf8(value).ok()).flatten()
}

/// Where the field starting at `start` ends: after the CRLF of its last
/// line (or at the end of the section).
fn field_end(section: &[u8], start: usize) -> usize {
    let mut end = start;
    loop {
        match memchr::memchr(b'\n', &section[end..]) {
            None => return section.len(),
            Some(newline) => {
                end += newline + 1;
                if !matches!(section.get(end), Some(b' ' | b'\t')) {
                    return end;
                }
            }
        }
    }
}

/// The value with line breaks removed and surrounding white space trimmed.
fn unfold(value: &[u8]) -> Vec<u8> {
    let value = trim(value);
    let mut unfolded = Vec::with_capacity(value.len());
    for &octet in value {
        if octet != b'\r' && octet != b'\n' {
            unfolded.push(octet);
        }
    }
    unfolded
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |octet: &u8| matches!(octet, b' ' | b'\t' | b'\r' | b'\n');
    let start = bytes.iter().position(|octet| !is_space(octet));
    let Some(start) = start else { return &[] };
    let end = bytes
        .iter()
        .rposition(|octet| !is_space(octet))
        .unwrap_or(start);
    &bytes[start..=end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(section: &[u8]) -> String {
        String::from_utf8(scan(section).stored(section).into_owned()).unwrap()
    }

    fn fingerprinted(section: &[u8]) -> String {
        let scan = scan(section);
        String::from_utf8(scan.fingerprinted(section).concat()).unwrap()
    }

    #[test]
    fn a_section_without_consumed_fields_is_kept_as_it_is() {
        let section = b"From: a@example.com\r\nSubject: x\r\n";
        let found = scan(section);
        assert_eq!(found.consumed, ConsumedHeaders::default());
        assert!(matches!(found.stored(section), Cow::Borrowed(_)));
        assert_eq!(fingerprinted(section), String::from_utf8_lossy(section));
        assert!(scan(b"").stored(b"").is_empty());
    }

    #[test]
    fn the_idempotency_key_is_read_and_removed_from_message_and_fingerprint() {
        let section = b"Subject: x\r\nidempotency-KEY :  order-42/a \r\nTo: b@example.org\r\n";
        let found = scan(section);
        assert_eq!(
            found.consumed.idempotency_key.as_deref(),
            Some("order-42/a")
        );
        assert_eq!(found.consumed.refusal, None);
        assert_eq!(stored(section), "Subject: x\r\nTo: b@example.org\r\n");
        assert_eq!(
            fingerprinted(section),
            "Subject: x\r\nTo: b@example.org\r\n"
        );
        // First, last, and a folded value.
        let folded = b"Idempotency-Key:\r\n abc\r\n";
        assert_eq!(
            scan(folded).consumed.idempotency_key.as_deref(),
            Some("abc")
        );
        assert_eq!(stored(folded), "");
        let last = b"A: 1\r\nIdempotency-Key: k";
        assert_eq!(stored(last), "A: 1\r\n");
    }

    #[test]
    fn a_bad_or_repeated_idempotency_key_is_refused() {
        for section in [
            &b"Idempotency-Key:\r\n"[..],
            b"Idempotency-Key: two words\r\n",
            "Idempotency-Key: caf\u{e9}\r\n".as_bytes(),
            b"Idempotency-Key: a\x01b\r\n",
        ] {
            assert_eq!(
                scan(section).consumed.refusal,
                Some(HeaderRefusal::BadIdempotencyKey),
                "{}",
                String::from_utf8_lossy(section)
            );
        }
        let longest = format!("Idempotency-Key: {}\r\n", "k".repeat(255));
        assert_eq!(scan(longest.as_bytes()).consumed.refusal, None);
        let too_long = format!("Idempotency-Key: {}\r\n", "k".repeat(256));
        assert_eq!(
            scan(too_long.as_bytes()).consumed.refusal,
            Some(HeaderRefusal::BadIdempotencyKey)
        );
        assert_eq!(
            scan(b"Idempotency-Key: a\r\nIdempotency-Key: a\r\n")
                .consumed
                .refusal,
            Some(HeaderRefusal::RepeatedIdempotencyKey)
        );
    }

    #[test]
    fn metadata_is_read_lower_cased_unfolded_and_removed_but_fingerprinted() {
        let section = b"X-Relayq-Meta-Order_ID: 42\r\nSubject: s\r\n\
x-relayq-meta-tenant:  acme\r\n  corp \r\nX-Relayq-Meta-empty:\r\n";
        let found = scan(section);
        assert_eq!(
            found.consumed.meta,
            [
                ("order_id".to_owned(), "42".to_owned()),
                ("tenant".to_owned(), "acme  corp".to_owned()),
                ("empty".to_owned(), String::new()),
            ]
        );
        assert_eq!(found.consumed.refusal, None);
        assert_eq!(stored(section), "Subject: s\r\n");
        assert_eq!(fingerprinted(section), String::from_utf8_lossy(section));
    }

    #[test]
    fn metadata_limits_and_malformed_keys_are_refused() {
        let fields = |count: usize| -> String {
            (0..count)
                .map(|n| format!("X-Relayq-Meta-k{n}: v\r\n"))
                .collect()
        };
        assert_eq!(scan(fields(16).as_bytes()).consumed.meta.len(), 16);
        assert_eq!(scan(fields(16).as_bytes()).consumed.refusal, None);
        assert_eq!(
            scan(fields(17).as_bytes()).consumed.refusal,
            Some(HeaderRefusal::TooManyMeta)
        );
        let longest = format!("X-Relayq-Meta-a: {}\r\n", "v".repeat(256));
        assert_eq!(scan(longest.as_bytes()).consumed.refusal, None);
        let too_long = format!("X-Relayq-Meta-a: {}\r\n", "v".repeat(257));
        assert_eq!(
            scan(too_long.as_bytes()).consumed.refusal,
            Some(HeaderRefusal::MetaValueTooLong("a".into()))
        );
        let key_40 = format!("X-Relayq-Meta-{}: v\r\n", "k".repeat(40));
        assert_eq!(scan(key_40.as_bytes()).consumed.refusal, None);
        for name in [
            "X-Relayq-Meta-".to_owned(),
            "X-Relayq-Meta-a.b".to_owned(),
            format!("X-Relayq-Meta-{}", "k".repeat(41)),
        ] {
            let section = format!("{name}: v\r\n");
            assert_eq!(
                scan(section.as_bytes()).consumed.refusal,
                Some(HeaderRefusal::BadMetaKey(name.clone())),
                "{name}"
            );
        }
        assert_eq!(
            scan(b"X-Relayq-Meta-A: 1\r\nX-Relayq-Meta-a: 2\r\n")
                .consumed
                .refusal,
            Some(HeaderRefusal::RepeatedMetaKey("a".into()))
        );
        assert_eq!(
            scan(b"X-Relayq-Meta-a: \xff\r\n").consumed.refusal,
            Some(HeaderRefusal::MetaValueNotUtf8("a".into()))
        );
        // A similar name is not metadata.
        let similar = b"X-Relayq-Metadata: x\r\n";
        assert_eq!(scan(similar).consumed, ConsumedHeaders::default());
        assert_eq!(stored(similar), "X-Relayq-Metadata: x\r\n");
    }

    #[test]
    fn the_message_id_is_a_key_only_when_it_could_be_one() {
        let found = scan(b"Message-ID: <a@b>\r\nMessage-ID: <c@d>\r\n");
        assert_eq!(found.consumed.message_id.as_deref(), Some("<a@b>"));
        assert_eq!(found.consumed.key(false), None);
        assert_eq!(found.consumed.key(true), Some("<a@b>"));
        assert_eq!(scan(b"Message-ID: <a b>\r\n").consumed.message_id, None);
        let both = scan(b"Message-ID: <a@b>\r\nIdempotency-Key: k\r\n");
        assert_eq!(both.consumed.key(true), Some("k"));
        // The Message-ID stays in the message.
        assert_eq!(stored(b"Message-ID: <a@b>\r\n"), "Message-ID: <a@b>\r\n");
    }

    #[test]
    fn lines_that_are_not_fields_are_left_alone() {
        let section = b" continuation first\r\nno colon here\r\nIdempotency-Key: k\r\n";
        let found = scan(section);
        assert_eq!(found.consumed.idempotency_key.as_deref(), Some("k"));
        assert_eq!(stored(section), " continuation first\r\nno colon here\r\n");
    }
}
