//! Computing DKIM-Signature fields (RFC 6376 §5): which header fields are
//! signed, relaxed/relaxed canonicalisation, and the signature over a header
//! section and a body hash computed while the body streamed past.
//!
//! Pure: no I/O, and the signing time is passed in.

use mail_auth::common::crypto::{HashContext, HashImpl, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable, Writer};
use mail_auth::dkim::canonicalize::{BodyHasher, CanonicalHeaders};
use mail_auth::dkim::{Canonicalization, Signature};

use super::Signer;

/// RFC 6376 §5.4.1: the header fields a signer should sign when present.
pub(crate) const RECOMMENDED_HEADERS: [&str; 19] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
];

/// One header field: the name, and the value from after the colon through
/// the CRLF that ends the field (continuation lines included), as
/// `mail_auth`'s canonicalisation takes them.
pub(crate) type Field<'a> = (&'a [u8], &'a [u8]);

/// Splits a header section (complete fields, each ending in CRLF) into
/// fields. A line without a colon counts as a field with an empty value.
pub(crate) fn fields(section: &[u8]) -> Vec<Field<'_>> {
    let mut fields = Vec::new();
    let mut start = 0;
    while start < section.len() {
        let mut end = start;
        loop {
            end = match memchr::memchr(b'\n', &section[end..]) {
                Some(newline) => end + newline + 1,
                None => section.len(),
            };
            if !matches!(section.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        let field = &section[start..end];
        match memchr::memchr(b':', field) {
            Some(colon) => fields.push((&field[..colon], &field[colon + 1..])),
            None => fields.push((field, &b""[..])),
        }
        start = end;
    }
    fields
}

/// The `h=` list: each of `names` once per instance present, and `From`
/// once more than present, so that no From field can be added without
/// breaking the signature (RFC 6376 §8.15, "oversigning").
pub(crate) fn signed_names(names: &[String], fields: &[Field<'_>]) -> Vec<String> {
    let mut signed = Vec::new();
    for (position, name) in names.iter().enumerate() {
        let repeated = names[..position]
            .iter()
            .any(|earlier| earlier.eq_ignore_ascii_case(name));
        if repeated {
            continue;
        }
        let present = fields
            .iter()
            .filter(|(field, _)| name_matches(field, name))
            .count();
        let count = if name.eq_ignore_ascii_case("From") {
            present + 1
        } else {
            present
        };
        signed.extend(std::iter::repeat_n(name.clone(), count));
    }
    signed
}

/// The fields an `h=` list selects, in `h=` order: for each name, the last
/// instance not selected yet; a name with no instance left selects nothing
/// (RFC 6376 §5.4.2).
pub(crate) fn selected<'a>(names: &[String], fields: &[Field<'a>]) -> Vec<Field<'a>> {
    let mut used = vec![false; fields.len()];
    let mut chosen = Vec::with_capacity(names.len());
    for name in names {
        let instance = (0..fields.len())
            .rev()
            .find(|&index| !used[index] && name_matches(fields[index].0, name));
        if let Some(index) = instance {
            used[index] = true;
            chosen.push(fields[index]);
        }
    }
    chosen
}

fn name_matches(field: &[u8], name: &str) -> bool {
    field.trim_ascii_end().eq_ignore_ascii_case(name.as_bytes())
}

/// The body hash state: relaxed body canonicalisation (RFC 6376 §3.4.4)
/// fed with SHA-256 as the body streams past.
pub(crate) struct BodyHash(BodyHasher<<Sha256 as HashImpl>::Context>);

impl BodyHash {
    pub(crate) fn new() -> BodyHash {
        BodyHash(BodyHasher::new(
            Sha256::hasher(),
            Canonicalization::Relaxed,
            0,
        ))
    }

    pub(crate) fn update(&mut self, body: &[u8]) {
        self.0.write(body);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let (hasher, _) = self.0.finish();
        hasher.complete().as_ref().to_vec()
    }
}

/// The `DKIM-Signature:` field (folded, CRLF-terminated) of `signer` over
/// the header section's `fields` and a body with hash `body_hash`, signed
/// at `now` (seconds since the Unix epoch, the `t=` tag).
pub(crate) fn signature_field(
    signer: &Signer,
    fields: &[Field<'_>],
    body_hash: &[u8],
    now: u64,
) -> mail_auth::Result<String> {
    let names = signer.header_names();
    let mut signature = Signature {
        v: 1,
        a: signer.key.algorithm(),
        d: signer.domain.clone(),
        s: signer.selector.clone(),
        bh: body_hash.to_vec(),
        h: signed_names(names, fields),
        t: now,
        ch: Canonicalization::Relaxed,
        cb: Canonicalization::Relaxed,
        ..Signature::default()
    };
    // `CanonicalHeaders` writes its list last to first (it is built from a
    // top-down scan of the message), so it takes the selection reversed.
    let mut headers = selected(&signature.h, fields);
    headers.reverse();
    let headers = Canonicalization::Relaxed.canonical_headers(headers);
    signature.b = signer.key.sign(SignedData {
        headers,
        signature: &signature,
    })?;
    Ok(signature.to_header())
}

/// RFC 6376 §3.7: the signed headers, then the DKIM-Signature field itself
/// with an empty `b=`, both canonicalised, without a final CRLF.
struct SignedData<'a> {
    headers: CanonicalHeaders<'a>,
    signature: &'a Signature,
}

impl Writable for SignedData<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    const SECTION: &[u8] = b"Received: from a\r\n\tby b; date\r\nFrom: x@example.com\r\n\
        To: y@example.org\r\nTo: z@example.org\r\nSubject: hi\r\nX-Mailer: m\r\n";

    #[test]
    fn splits_fields_with_continuations() {
        let fields = fields(SECTION);
        assert_eq!(fields.len(), 6);
        assert_eq!(
            fields[0],
            (&b"Received"[..], &b" from a\r\n\tby b; date\r\n"[..])
        );
        assert_eq!(fields[1], (&b"From"[..], &b" x@example.com\r\n"[..]));
        assert_eq!(fields[5].0, b"X-Mailer");
    }

    #[test]
    fn signs_present_recommended_fields_and_oversigns_from() {
        let fields = fields(SECTION);
        let wanted: Vec<String> = names(&RECOMMENDED_HEADERS);
        assert_eq!(
            signed_names(&wanted, &fields),
            names(&["From", "From", "Subject", "To", "To"])
        );
        let configured = names(&["from", "X-Mailer", "Cc", "FROM"]);
        assert_eq!(
            signed_names(&configured, &fields),
            names(&["from", "from", "X-Mailer"])
        );
    }

    #[test]
    fn selects_instances_from_the_bottom() {
        let fields = fields(SECTION);
        let chosen = selected(&names(&["To", "From", "From", "To"]), &fields);
        let values: Vec<&[u8]> = chosen.iter().map(|(_, value)| *value).collect();
        assert_eq!(
            values,
            vec![
                &b" z@example.org\r\n"[..],
                b" x@example.com\r\n",
                b" y@example.org\r\n"
            ]
        );
    }

    #[test]
    fn relaxed_body_hash_streams_and_an_empty_body_hashes_nothing() {
        // RFC 6376 §3.4.4: the relaxed canonical form of an empty body is
        // empty (simple, §3.4.3, would be one CRLF); SHA-256 of nothing.
        let hash = BodyHash::new().finish();
        assert_eq!(
            hash,
            [
                0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
                0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
                0x78, 0x52, 0xb8, 0x55
            ]
        );
        let mut streamed = BodyHash::new();
        for chunk in [&b"a  b \r"[..], b"\n\r\n", b"\r\n"] {
            streamed.update(chunk);
        }
        let mut whole = BodyHash::new();
        whole.update(b"a b\r\n");
        assert_eq!(streamed.finish(), whole.finish());
    }
}
