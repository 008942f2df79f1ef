//! Computing DKIM-Signature fields (RFC 6376 §5): which header fields are
//! signed (and oversigned), relaxed/relaxed canonicalisation, and the
//! signature over a header section and a body hash computed while the body
//! streamed past. The field itself is written by `super::field`.
//!
//! Pure: no I/O, and the signing time is passed in.

use mail_auth::common::crypto::{HashContext, HashImpl, Sha256, SigningKey};
use mail_auth::common::headers::{Writable, Writer};
use mail_auth::dkim::Canonicalization;
use mail_auth::dkim::canonicalize::BodyHasher;

use super::Signer;
use super::field::{Tags, UnsignedField};

/// The header fields signed when present, unless a `[[dkim]]` block lists
/// its own: the RFC 6376 §5.4.1 set, then the fields that say what the
/// message is (identity and MIME structure), and `List-Unsubscribe-Post`,
/// which RFC 8058 §4 requires to be signed with `List-Unsubscribe` for
/// one-click unsubscription.
pub(crate) const DEFAULT_HEADERS: [&str; 24] = [
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
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe-Post",
];

/// Fields a message has at most once (RFC 5322 §3.6, RFC 2045, RFC 8058),
/// oversigned whenever they are signed: a second instance can only be a
/// replay's addition, and a verifier checks the bottom-most one (RFC 6376
/// §5.4.2), which a reader may not see.
const SINGLETONS: [&str; 11] = [
    "From",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Reply-To",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
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

/// The `h=` list: each of `names` once per instance present, and each
/// singleton once more than present (none present: listed once), so that
/// no such field can be added without breaking the signature (RFC 6376
/// §8.15, "oversigning"). A name repeated in `names` counts once.
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
        let singleton = SINGLETONS
            .iter()
            .any(|singleton| singleton.eq_ignore_ascii_case(name));
        let count = present + usize::from(singleton);
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
    also_sign: &[&str],
    fields: &[Field<'_>],
    body_hash: &[u8],
    now: u64,
) -> mail_auth::Result<String> {
    let names = if also_sign.is_empty() {
        signed_names(signer.header_names(), fields)
    } else {
        let mut wanted = signer.header_names().to_vec();
        wanted.extend(also_sign.iter().map(|name| (*name).to_owned()));
        signed_names(&wanted, fields)
    };
    let field = UnsignedField::new(&Tags {
        algorithm: signer.key.algorithm(),
        domain: &signer.domain,
        selector: &signer.selector,
        timestamp: now,
        signed_names: &names,
        body_hash,
    });
    let signature = signer.key.sign(SignedData {
        headers: selected(&names, fields),
        field: &field,
    })?;
    Ok(field.complete(&signature))
}

/// RFC 6376 §3.7: the signed header fields in `h=` order, then the
/// DKIM-Signature field itself with an empty `b=`, all canonicalised
/// (relaxed), without a final CRLF.
struct SignedData<'a> {
    headers: Vec<Field<'a>>,
    field: &'a UnsignedField,
}

impl Writable for SignedData<'_> {
    fn write(self, writer: &mut impl Writer) {
        Canonicalization::Relaxed.canonicalize_headers(self.headers.into_iter(), writer);
        self.field.canonical(writer);
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
    fn signs_present_default_fields_and_oversigns_singletons() {
        let fields = fields(SECTION);
        let wanted: Vec<String> = names(&DEFAULT_HEADERS);
        assert_eq!(
            signed_names(&wanted, &fields),
            names(&[
                "From",
                "From",
                "Reply-To",
                "Subject",
                "Subject",
                "Date",
                "To",
                "To",
                "To",
                "Cc",
                "List-Unsubscribe",
                "Message-ID",
                "MIME-Version",
                "Content-Type",
                "List-Unsubscribe-Post",
            ])
        );
        let section = b"From: a@example.com\r\nList-Unsubscribe: <https://u>\r\n\
            List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nList-Id: <l>\r\n\
            Content-Transfer-Encoding: 7bit\r\nReferences: <r>\r\n";
        let signed = signed_names(&wanted, &super::fields(section));
        for (name, times) in [
            ("List-Unsubscribe", 2),
            ("List-Unsubscribe-Post", 2),
            ("List-Id", 1),
            ("Content-Transfer-Encoding", 1),
            ("References", 1),
            ("Resent-To", 0),
        ] {
            let count = signed.iter().filter(|signed| *signed == name).count();
            assert_eq!(count, times, "{name} in {signed:?}");
        }
    }

    #[test]
    fn a_configured_list_oversigns_its_singletons_in_its_spelling() {
        let fields = fields(SECTION);
        let configured = names(&["from", "X-Mailer", "Cc", "FROM", "subject", "Received"]);
        assert_eq!(
            signed_names(&configured, &fields),
            names(&[
                "from", "from", "X-Mailer", "Cc", "subject", "subject", "Received"
            ])
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
