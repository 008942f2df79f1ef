//! Writing the `DKIM-Signature:` header field (RFC 6376 §3.5) so that every
//! verifier recovers the same octets when it empties `b=` (§3.7).
//!
//! Verifiers differ in what they remove with the `b=` value: OpenDKIM,
//! Mail::DKIM and mail-auth drop everything up to the next `;`, dkimpy only
//! the base64 characters and the folding white space before each of them,
//! keeping any white space after the last one. A fold between the value and
//! a following `;` therefore hashes as `b=;` for some and `b= ;` for others,
//! and the signature fails where the fold happens to land. Here `b=` is the
//! last tag, with no `;` after it, and a fold only ever comes between two of
//! its characters, so all of them hash the field as written up to `b=`.
//!
//! Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::Algorithm;
use mail_auth::common::headers::Writer;
use mail_auth::dkim::Canonicalization;

/// RFC 5322 §2.1.1: a line SHOULD be at most 78 characters, CRLF excluded.
const LINE_WIDTH: usize = 78;

/// Folding white space: CRLF and one tab, which starts the next line.
const FOLD: &str = "\r\n\t";

const NAME: &str = "DKIM-Signature";

/// The tags of one signature, all but `b=`.
pub(crate) struct Tags<'a> {
    pub algorithm: Algorithm,
    /// `d=`.
    pub domain: &'a str,
    /// `s=`.
    pub selector: &'a str,
    /// `t=`: seconds since the Unix epoch.
    pub timestamp: u64,
    /// `h=`, in order, repetitions included.
    pub signed_names: &'a [String],
    /// `bh=`: the body hash.
    pub body_hash: &'a [u8],
}

/// The field written up to and including `b=`, whose value is still empty.
pub(crate) struct UnsignedField {
    text: String,
    /// Characters on the last line of `text` (a fold's tab counts as one).
    column: usize,
}

impl UnsignedField {
    /// Writes every tag but the signature: `v`, `a`, `s`, `d`, `c` and `t`,
    /// then `h`, `bh` and, last, the empty `b`.
    pub(crate) fn new(tags: &Tags<'_>) -> UnsignedField {
        let mut field = UnsignedField {
            text: String::with_capacity(512),
            column: 0,
        };
        field.push(NAME);
        field.push(":");
        let algorithm = match tags.algorithm {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        };
        field.tag("v", "1", true);
        field.tag("a", algorithm, false);
        field.tag("s", tags.selector, false);
        field.tag("d", tags.domain, false);
        field.tag("c", "relaxed/relaxed", false);
        field.tag("t", &tags.timestamp.to_string(), false);
        field.header_names(tags.signed_names);
        field.base64("bh", &BASE64.encode(tags.body_hash));
        field.base64("b", "");
        field
    }

    /// RFC 6376 §3.7: what the signature covers of its own field, the field
    /// with an empty `b=` in relaxed canonical form (§3.4.2), without a
    /// final CRLF.
    pub(crate) fn canonical(&self, writer: &mut impl Writer) {
        let value = &self.text.as_bytes()[NAME.len() + 1..];
        Canonicalization::Relaxed
            .canonicalize_headers(std::iter::once((NAME.as_bytes(), value)), writer);
    }

    /// The complete field, CRLF-terminated: `signature` is the `b=` value.
    pub(crate) fn complete(mut self, signature: &[u8]) -> String {
        let encoded = BASE64.encode(signature);
        self.base64_value(&encoded);
        self.text.push_str("\r\n");
        self.text
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
        self.column += text.len();
    }

    fn fold(&mut self) {
        self.text.push_str(FOLD);
        self.column = 1;
    }

    /// Ends the previous tag with `;` (unless this is the first) and starts
    /// `name=` after a space, or on a new line when `name=` and the first
    /// `keep` characters of the value would not fit on this one.
    fn start_tag(&mut self, name: &str, keep: usize, first: bool) {
        if !first {
            self.push(";");
        }
        if self.column + 1 + name.len() + 1 + keep > LINE_WIDTH {
            self.fold();
        } else {
            self.push(" ");
        }
        self.push(name);
        self.push("=");
    }

    /// A tag whose value is never split.
    fn tag(&mut self, name: &str, value: &str, first: bool) {
        self.start_tag(name, value.len(), first);
        self.push(value);
    }

    /// `h=`: the names separated by `:`, a fold only after a `:` (RFC 6376
    /// §3.5 allows FWS around it), never inside a name.
    fn header_names(&mut self, names: &[String]) {
        let mut names = names.iter();
        let first = names.next().map_or("", String::as_str);
        self.start_tag("h", first.len(), false);
        self.push(first);
        for name in names {
            self.push(":");
            if self.column + name.len() > LINE_WIDTH {
                self.fold();
            }
            self.push(name);
        }
    }

    /// A base64 tag (`bh=`, `b=`): room is kept for its first character on
    /// the line of `name=`, so that no fold follows the `=`.
    fn base64(&mut self, name: &str, value: &str) {
        self.start_tag(name, 1, false);
        self.base64_value(value);
    }

    /// Base64 characters filling each line; a fold only between two of
    /// them (RFC 6376 §2.4 allows FWS there), never after the last.
    fn base64_value(&mut self, mut value: &str) {
        while !value.is_empty() {
            if self.column >= LINE_WIDTH {
                self.fold();
            }
            let take = (LINE_WIDTH - self.column).min(value.len());
            let (line, rest) = value.split_at(take);
            self.push(line);
            value = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags<'a>(names: &'a [String], selector: &'a str) -> Tags<'a> {
        Tags {
            algorithm: Algorithm::RsaSha256,
            domain: "example.com",
            selector,
            timestamp: 1_790_000_000,
            signed_names: names,
            body_hash: &[0xab; 32],
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    fn canonical(field: &UnsignedField) -> String {
        let mut bytes = Vec::new();
        field.canonical(&mut bytes);
        String::from_utf8(bytes).unwrap()
    }

    /// The field as dkimpy empties `b=` (its `RE_BTAG`): the value's
    /// characters go, each with the folding white space before it, and the
    /// field's final CRLF if it follows them; white space after the value
    /// stays.
    fn emptied_the_dkimpy_way(field: &str) -> String {
        let (head, mut rest) = field.split_at(b_value_start(field));
        loop {
            let after_space = rest.trim_start_matches([' ', '\t', '\r', '\n']);
            match after_space.chars().next() {
                Some(c) if c.is_ascii_alphanumeric() || "+/=".contains(c) => {
                    rest = &after_space[1..];
                }
                _ => break,
            }
        }
        format!("{head}{}", rest.strip_prefix("\r\n").unwrap_or(rest))
    }

    /// Where the value of the last tag, `b=`, starts.
    fn b_value_start(field: &str) -> usize {
        let last_tag = field.rfind(';').unwrap() + 1;
        last_tag + field[last_tag..].find("b=").unwrap() + "b=".len()
    }

    /// Relaxed header canonicalisation of a whole field (RFC 6376 §3.4.2),
    /// written independently of mail-auth's for the check.
    fn relaxed(field: &str) -> String {
        let (name, value) = field.split_once(':').unwrap();
        let unfolded = value.replace("\r\n", "");
        let collapsed = unfolded.split([' ', '\t']).filter(|word| !word.is_empty());
        format!(
            "{}:{}",
            name.trim().to_ascii_lowercase(),
            collapsed.collect::<Vec<_>>().join(" ")
        )
    }

    #[test]
    fn writes_every_tag_with_b_last_and_nothing_after_its_value() {
        let list = names(&["From", "From", "Subject", "Subject", "To"]);
        let field = UnsignedField::new(&tags(&list, "sel"));
        assert_eq!(
            field.text.replace("\r\n\t", ""),
            "DKIM-Signature: v=1; a=rsa-sha256; s=sel; d=example.com; c=relaxed/relaxed;\
             t=1790000000; h=From:From:Subject:Subject:To; \
             bh=q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=; b="
        );
        assert_eq!(canonical(&field), relaxed(&field.text));
        let complete = field.complete(&[0xff; 256]);
        assert!(complete.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=sel; d=example.com;"));
        assert!(complete.ends_with("/w==\r\n"), "{complete}");
        for line in complete.split("\r\n") {
            assert!(line.len() <= LINE_WIDTH, "{line:?} in {complete}");
        }
    }

    /// The reported failure: whatever the field's length, the last base64
    /// character ends the field, so the octets every verifier hashes (the
    /// field with the `b=` value removed, dkimpy's way or up to the next
    /// `;`) are the octets signed. The `h=` list grows by one character at
    /// a time (names `A`, two characters each with the colon, and one
    /// `BB`), over two lines, moving the start of the value, and so its
    /// folds, through the columns the layout allows.
    #[test]
    fn every_fold_position_hashes_the_same_for_every_verifier() {
        for (algorithm, signature_length) in
            [(Algorithm::RsaSha256, 256), (Algorithm::Ed25519Sha256, 64)]
        {
            let mut ends_at_full_line = false;
            for growth in 0..2 * LINE_WIDTH {
                let mut list = names(&["From", "From", "Subject"]);
                list.extend(std::iter::repeat_n("A".to_string(), growth / 2));
                if growth % 2 == 1 {
                    list.push("BB".to_string());
                }
                let mut tags = tags(&list, "s");
                tags.algorithm = algorithm;
                let field = UnsignedField::new(&tags);
                let signed = canonical(&field);
                let complete = field.complete(&vec![0x5a; signature_length]);
                let last_line = complete
                    .trim_end_matches("\r\n")
                    .rsplit("\r\n")
                    .next()
                    .unwrap();
                ends_at_full_line |= last_line.len() == LINE_WIDTH;
                assert!(!complete.contains("\r\n\t;") && !complete.trim_end().ends_with(';'));
                assert!(!complete.contains(" \r\n"), "{complete}");
                assert!(!complete.contains("b=\r\n") && !complete.contains("bh=\r\n"));
                // dkimpy: keeps white space after the value (there is none).
                assert_eq!(
                    relaxed(&emptied_the_dkimpy_way(&complete)),
                    signed,
                    "{complete}"
                );
                // OpenDKIM, Mail::DKIM, mail-auth: remove up to the next `;`.
                assert_eq!(relaxed(&complete[..b_value_start(&complete)]), signed);
            }
            assert!(
                ends_at_full_line,
                "{algorithm:?}: the case a fold used to follow"
            );
        }
    }

    #[test]
    fn a_base64_value_folds_only_between_its_characters() {
        for column in 1..=LINE_WIDTH {
            for length in 1..=2 * LINE_WIDTH {
                let mut field = UnsignedField {
                    text: "x".repeat(column),
                    column,
                };
                let value: String = (0..length)
                    .map(|index| if index % 2 == 0 { 'A' } else { '/' })
                    .collect();
                field.base64_value(&value);
                let text = &field.text[column..];
                assert_eq!(text.replace(FOLD, ""), value, "from column {column}");
                assert!(!text.starts_with(FOLD) || column == LINE_WIDTH);
                assert!(!text.ends_with(FOLD) && !text.ends_with('\t'));
                for line in field.text.split("\r\n") {
                    assert!(line.len() <= LINE_WIDTH, "from column {column}: {line:?}");
                }
            }
        }
    }

    #[test]
    fn folds_the_header_list_between_names_only() {
        let long: Vec<String> = (0..30).map(|index| format!("X-Field-{index}")).collect();
        let field = UnsignedField::new(&tags(&long, "a-rather-long-selector-name"));
        let complete = field.complete(&[1; 64]);
        for line in complete.split("\r\n") {
            assert!(line.len() <= LINE_WIDTH, "{line:?}");
            assert!(!line.starts_with("\t:"), "a fold before a colon: {line:?}");
        }
        let unfolded = complete.replace("\r\n\t", "");
        assert!(
            unfolded.contains(&format!("h={};", long.join(":"))),
            "{unfolded}"
        );
    }
}
