//! Assembles an incoming message into a spool body: lines over 998 octets
//! broken (`super::long_lines`), trace headers first, the client's header
//! section checked for Message-ID/Date/Precedence, then the rest streamed
//! through (to a file once it is large), with the size limit enforced as
//! bytes arrive. With DKIM keys, a message whose From: domain has one is
//! signed over the header section as stored and the body hashed as it
//! passes ([`crate::dkim`]); the signatures go in front at the end. Such a
//! message that cannot be signed is refused, never stored unsigned.
//!
//! The fields intake consumes (`Idempotency-Key`, `X-Relayq-Meta-*`:
//! [`super::consumed_headers`]) are taken out of the header section before
//! it is stored or signed. A message with an idempotency key (or every
//! message, for the maildrop importer) has its content hashed as it
//! streams, for the fingerprint that tells a repeat from a different
//! message ([`super::idempotency`]).

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use mail_parser::MessageParser;
use relayq_spool::{Body, BodyWriter};

use super::consumed_headers::{self, ConsumedHeaders, Scan};
use super::idempotency::ContentHasher;
use super::long_lines::LineBreaker;
use crate::dkim::{PendingSignature, Signed, Signers, SigningError};

/// The header section is held in memory until its end is seen, up to this
/// size; a longer one is passed through unexamined, and so cannot be
/// signed.
const MAX_HEADER_SECTION: usize = 64 * 1024;

/// What the header section said, for lane selection, the log and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// `Precedence: bulk | list | junk` (such mail takes the low lane).
    pub bulk_precedence: bool,
    /// The `Message-ID` without `<>`: the client's, or the one added here.
    pub message_id: Option<String>,
}

/// A finished message.
#[derive(Debug)]
pub struct AssembledMessage {
    pub body: Body,
    /// Size as stored, trace headers included.
    pub size: u64,
    pub facts: HeaderFacts,
    /// Line breaks inserted into lines longer than 998 octets.
    pub line_breaks: u64,
    /// The DKIM signatures made (none when no key covers the From: domain).
    pub dkim: Signed,
    /// The fields intake consumed from the header section.
    pub consumed: ConsumedHeaders,
    /// The hash of the content as the client sent it, without its
    /// `Idempotency-Key` field; `None` when it was not asked for.
    pub content_hash: Option<u128>,
}

/// Which messages have their content hashed for an idempotency fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fingerprinting {
    /// Those with a key: an `Idempotency-Key`, or, when `message_id`
    /// (`smtp.dedupe_message_id`), a `Message-ID`.
    Keyed { message_id: bool },
    /// Every message (the maildrop importer claims each file it imports).
    Always,
}

/// What [`MessageBuilder::finish`] made of the content.
#[derive(Debug)]
pub enum Assembly {
    /// Boxed: the other variants are small, and this one is moved once.
    Message(Box<AssembledMessage>),
    /// Over `spool.max_message_size`.
    TooBig,
    /// A DKIM key covers the From: domain and the message could not be
    /// signed: it is not stored (invariant: never sent unsigned).
    NotSigned(SigningError),
}

/// Headers relayq adds to the message it stores.
pub struct TraceHeaders {
    /// The complete `Received:` field, CRLF-terminated.
    pub received: String,
    /// Used when the client sent no Message-ID: `<ID@hostname>`.
    pub message_id: String,
    /// RFC 5322 date-time, used when the client sent no Date.
    pub date: String,
}

pub struct MessageBuilder {
    writer: Option<BodyWriter>,
    trace: TraceHeaders,
    /// `Some` while the end of the header section has not been seen.
    header_section: Option<Vec<u8>>,
    received_bytes: u64,
    limit: u64,
    facts: HeaderFacts,
    lines: LineBreaker,
    /// The content with long lines broken, reused from push to push.
    broken: Vec<u8>,
    /// The DKIM keys in force when the message started; `None` when there are none.
    signers: Option<Arc<Signers>>,
    /// Set at the end of the header section when a key covers the From: domain.
    signing: Option<PendingSignature>,
    fingerprinting: Fingerprinting,
    /// Set at the end of the header section when the content is hashed.
    content_hash: Option<ContentHasher>,
    consumed: ConsumedHeaders,
    /// Set, and the writer dropped, when a message that must be signed
    /// cannot be.
    not_signed: Option<SigningError>,
}

impl MessageBuilder {
    /// `limit` is `spool.max_message_size`, applied to the client's content.
    pub fn new(writer: BodyWriter, trace: TraceHeaders, limit: u64) -> MessageBuilder {
        MessageBuilder {
            writer: Some(writer),
            trace,
            header_section: Some(Vec::new()),
            received_bytes: 0,
            limit,
            facts: HeaderFacts::default(),
            lines: LineBreaker::new(),
            broken: Vec::new(),
            signers: None,
            signing: None,
            fingerprinting: Fingerprinting::Keyed { message_id: false },
            content_hash: None,
            consumed: ConsumedHeaders::default(),
            not_signed: None,
        }
    }

    /// Which messages get a content hash (default: those with an
    /// `Idempotency-Key`).
    pub fn with_fingerprinting(mut self, fingerprinting: Fingerprinting) -> MessageBuilder {
        self.fingerprinting = fingerprinting;
        self
    }

    /// Signs the message with the keys of its From: domain, if any has keys.
    pub fn with_signers(mut self, signers: Option<Arc<Signers>>) -> MessageBuilder {
        self.signers = signers;
        self
    }

    /// Whether [`MessageBuilder::finish`] will compute DKIM signatures (known
    /// once the header section ended): CPU work for a blocking thread.
    pub fn signs(&self) -> bool {
        self.signing.is_some()
    }

    /// Appends content (already unstuffed and CRLF-normalised). The limit
    /// applies to the content as the client sent it.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        self.received_bytes += data.len() as u64;
        if self.received_bytes > self.limit {
            // Dropping the writer deletes any file it created.
            self.writer = None;
            self.header_section = None;
            return Ok(());
        }
        let mut broken = std::mem::take(&mut self.broken);
        broken.clear();
        self.lines.push(data, &mut broken);
        let result = self.store(&broken);
        self.broken = broken;
        result
    }

    /// Content octets received so far, as the limit counts them.
    pub fn received(&self) -> u64 {
        self.received_bytes
    }

    /// Whether the content went over the limit: nothing more is kept, and
    /// [`MessageBuilder::finish`] will return `None`.
    pub fn over_limit(&self) -> bool {
        self.received_bytes > self.limit
    }

    /// Takes content whose lines are within the limit.
    fn store(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(section) = self.header_section.as_mut() else {
            return self.write_body(data);
        };
        let search_from = section.len().saturating_sub(3);
        section.extend_from_slice(data);
        let end = header_section_end(section, search_from);
        if let Some(end) = end.filter(|&end| end <= MAX_HEADER_SECTION) {
            let mut section = self.header_section.take().unwrap_or_default();
            let rest = section.split_off(end);
            self.write_header_section(&section, true)?;
            self.write_body(&rest)?;
        } else if section.len() > MAX_HEADER_SECTION {
            // Too long, whether its end arrived in this chunk or not: which
            // header sections are examined does not depend on chunking.
            let section = self.header_section.take().unwrap_or_default();
            self.write_header_section(&section, false)?;
        }
        Ok(())
    }

    /// Completes the message. When [`MessageBuilder::signs`], this signs
    /// (CPU-bound) and, for a large message, copies the body file once: call
    /// it off the async workers.
    pub fn finish(mut self) -> io::Result<Assembly> {
        if self.writer.is_some() {
            let mut rest = Vec::new();
            self.lines.finish(&mut rest);
            self.store(&rest)?;
        }
        if let Some(section) = self.header_section.take() {
            // The content ended inside the header section: it is all header.
            self.write_header_section(&section, true)?;
        }
        if let Some(error) = self.not_signed.take() {
            return Ok(Assembly::NotSigned(error));
        }
        let Some(writer) = self.writer.take() else {
            return Ok(Assembly::TooBig);
        };
        let dkim = match self
            .signing
            .take()
            .map(|pending| pending.finish(SystemTime::now()))
        {
            Some(Ok(signed)) => signed,
            // Dropping the writer deletes any file it created.
            Some(Err(error)) => return Ok(Assembly::NotSigned(error)),
            None => Signed::default(),
        };
        let size = writer.len() + dkim.fields.len() as u64;
        let body = if dkim.fields.is_empty() {
            writer.finish()?
        } else {
            writer.finish_with_prefix(dkim.fields.as_bytes())?
        };
        Ok(Assembly::Message(Box::new(AssembledMessage {
            body,
            size,
            facts: self.facts,
            line_breaks: self.lines.breaks(),
            dkim,
            consumed: self.consumed,
            content_hash: self.content_hash.map(|hasher| hasher.finish()),
        })))
    }

    /// Writes content that follows the header section.
    fn write_body(&mut self, data: &[u8]) -> io::Result<()> {
        if self.writer.is_some() {
            if let Some(signing) = self.signing.as_mut() {
                signing.update(data);
            }
            if let Some(hasher) = self.content_hash.as_mut() {
                hasher.update(data);
            }
        }
        self.write(data)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(writer) => writer.write_all(data),
            None => Ok(()),
        }
    }

    /// Writes the trace headers, any missing Message-ID/Date, then the
    /// client's header section as received without the consumed fields;
    /// when `complete` (the whole header section), takes those fields and
    /// starts signing if a key covers the From: domain (and the consumed
    /// fields do not refuse the message).
    /// When not, a message a key may cover is refused (`not_signed`): a
    /// From: beyond what was held cannot be ruled out.
    fn write_header_section(&mut self, section: &[u8], complete: bool) -> io::Result<()> {
        if !complete && let Some(signers) = &self.signers {
            // Only the fields within the first MAX_HEADER_SECTION octets
            // count, however much more this chunk brought.
            let held = &section[..section.len().min(MAX_HEADER_SECTION)];
            let author_domain = MessageParser::new()
                .parse_headers(complete_fields(held))
                .and_then(|parsed| crate::dkim::author_domain(parsed.from()));
            if author_domain.is_none_or(|domain| signers.covers(&domain)) {
                self.not_signed = Some(SigningError::HeaderSectionTooLarge(MAX_HEADER_SECTION));
                // Dropping the writer deletes any file it created; the rest
                // of the content is read and discarded.
                self.writer = None;
                return Ok(());
            }
        }
        let scan = if complete {
            consumed_headers::scan(section)
        } else {
            Scan::default()
        };
        let hashed = match self.fingerprinting {
            Fingerprinting::Always => true,
            Fingerprinting::Keyed { message_id } => scan.consumed.key(message_id).is_some(),
        };
        if hashed {
            let mut hasher = ContentHasher::new();
            for part in scan.fingerprinted(section) {
                hasher.update(part);
            }
            self.content_hash = Some(hasher);
        }
        let mut has_message_id = false;
        let mut has_date = false;
        let mut author_domain = None;
        if let Some(parsed) = MessageParser::new().parse_headers(section) {
            if complete && self.signers.is_some() {
                author_domain = crate::dkim::author_domain(parsed.from());
            }
            for header in parsed.headers() {
                let name = header.name();
                has_message_id |= name.eq_ignore_ascii_case("Message-ID");
                has_date |= name.eq_ignore_ascii_case("Date");
            }
            if let Some(message_id) = parsed.message_id() {
                self.facts.message_id = Some(message_id.to_owned());
            }
            if let Some(precedence) = parsed.header_raw("Precedence") {
                let value = precedence.trim().to_ascii_lowercase();
                self.facts.bulk_precedence = matches!(value.as_str(), "bulk" | "list" | "junk");
            }
        }
        let mut prefix = self.trace.received.clone();
        if !has_message_id {
            prefix.push_str(&format!("Message-ID: {}\r\n", self.trace.message_id));
            let added = self.trace.message_id.trim_matches(['<', '>']);
            self.facts.message_id = Some(added.to_owned());
        }
        if !has_date {
            prefix.push_str(&format!("Date: {}\r\n", self.trace.date));
        }
        let stored = scan.stored(section);
        self.write(prefix.as_bytes())?;
        self.write(&stored)?;
        if let (Some(signers), Some(domain)) = (&self.signers, author_domain)
            && scan.consumed.refusal.is_none()
        {
            self.signing = signers.start(&domain, &[prefix.as_bytes(), &stored]);
        }
        self.consumed = scan.consumed;
        Ok(())
    }
}

/// The complete fields at the start of an unfinished header section: up to
/// the last line break that another field's first line follows (the last
/// line held may be continued, or cut short).
fn complete_fields(section: &[u8]) -> &[u8] {
    let mut end = 0;
    for newline in memchr::memchr_iter(b'\n', section) {
        if !matches!(section.get(newline + 1), Some(b' ' | b'\t') | None) {
            end = newline + 1;
        }
    }
    &section[..end]
}

/// Index just past the blank line ending the header section, searching from
/// `from`; an empty header section (content starts with CRLF) ends at 0.
fn header_section_end(section: &[u8], from: usize) -> Option<usize> {
    if section.starts_with(b"\r\n") {
        return Some(0);
    }
    memchr::memmem::find(&section[from..], b"\r\n\r\n").map(|index| from + index + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relayq_spool::{Spool, SpoolOptions};

    fn trace() -> TraceHeaders {
        TraceHeaders {
            received: "Received: from client by relay; date\r\n".into(),
            message_id: "<ID@relay>".into(),
            date: "Mon, 23 Nov 2026 09:00:00 +0000".into(),
        }
    }

    fn build(spool: &Spool, chunks: &[&[u8]], limit: u64) -> Option<(Vec<u8>, HeaderFacts)> {
        let mut builder = MessageBuilder::new(spool.body_writer(), trace(), limit);
        for chunk in chunks {
            builder.push(chunk).unwrap();
        }
        let message = match builder.finish().unwrap() {
            Assembly::Message(message) => message,
            Assembly::TooBig => return None,
            Assembly::NotSigned(error) => panic!("not signed: {error}"),
        };
        let id = spool.allocate_id();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(spool.store(id, Vec::new(), message.body))
            .unwrap();
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut spool.read_body(id).unwrap(), &mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, message.size);
        Some((bytes, message.facts))
    }

    #[test]
    fn adds_missing_headers_before_the_clients() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let (bytes, facts) = build(
            &spool,
            &[b"Subject: hi\r\nPrece", b"dence: bulk\r\n\r\nbody\r\n"],
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "Received: from client by relay; date\r\nMessage-ID: <ID@relay>\r\n\
             Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nSubject: hi\r\nPrecedence: bulk\r\n\r\nbody\r\n"
        );
        assert!(facts.bulk_precedence);
    }

    #[test]
    fn keeps_existing_message_id_and_date() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let content = b"Message-ID: <a@b>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nx\r\n";
        let (bytes, facts) = build(&spool, &[content], 1 << 20).unwrap();
        let mut expected = trace().received.into_bytes();
        expected.extend_from_slice(content);
        assert_eq!(bytes, expected);
        assert!(!facts.bulk_precedence);
    }

    #[test]
    fn long_lines_are_broken_before_storage() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let mut content = b"Precedence: bulk\r\nSubject:".to_vec();
        for _ in 0..300 {
            content.extend_from_slice(b" word");
        }
        content.extend_from_slice(b"\r\n\r\n");
        content.extend_from_slice(&[b'x'; 5000]);
        content.extend_from_slice(b"\r\n");
        let chunks: Vec<&[u8]> = content.chunks(333).collect();
        let (bytes, facts) = build(&spool, &chunks, 1 << 20).unwrap();
        assert!(facts.bulk_precedence);
        for line in bytes.split(|&octet| octet == b'\n') {
            assert!(line.len() <= 999, "line of {}", line.len());
        }
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\r\nSubject: word"));
        assert!(text.contains("word\r\n word"), "folded before a space");
        assert_eq!(text.matches('x').count(), 5000);
    }

    /// The stored bytes, the consumed fields and the content hash of a
    /// message assembled with `trace`.
    fn assemble(
        spool: &Spool,
        trace: TraceHeaders,
        chunks: &[&[u8]],
        fingerprinting: Fingerprinting,
    ) -> (String, ConsumedHeaders, Option<u128>) {
        let mut builder = MessageBuilder::new(spool.body_writer(), trace, 1 << 20)
            .with_fingerprinting(fingerprinting);
        for chunk in chunks {
            builder.push(chunk).unwrap();
        }
        let Assembly::Message(message) = builder.finish().unwrap() else {
            panic!("not assembled");
        };
        let stored = message.body.inline_bytes().unwrap().to_vec();
        assert_eq!(stored.len() as u64, message.size);
        (
            String::from_utf8(stored).unwrap(),
            message.consumed,
            message.content_hash,
        )
    }

    const KEYED: Fingerprinting = Fingerprinting::Keyed { message_id: false };

    #[test]
    fn consumed_fields_are_not_stored_and_the_metadata_is_kept_aside() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let content: &[u8] = b"Subject: s\r\nIdempotency-Key: order-7\r\n\
X-Relayq-Meta-Tenant: acme\r\n\r\nbody\r\n";
        let (stored, consumed, hash) = assemble(&spool, trace(), &[content], KEYED);
        assert!(
            stored.ends_with("\r\nSubject: s\r\n\r\nbody\r\n"),
            "{stored}"
        );
        assert!(!stored.contains("Idempotency-Key") && !stored.contains("X-Relayq-Meta"));
        assert_eq!(consumed.idempotency_key.as_deref(), Some("order-7"));
        assert_eq!(consumed.meta, [("tenant".to_owned(), "acme".to_owned())]);
        assert!(hash.is_some());
    }

    #[test]
    fn the_content_hash_counts_what_the_client_sent_and_nothing_relayq_adds() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let hash = |trace: TraceHeaders, chunks: &[&[u8]]| {
            assemble(&spool, trace, chunks, KEYED).2.expect("keyed")
        };
        let original: &[u8] =
            b"From: a@example.com\r\nIdempotency-Key: k1\r\nX-Relayq-Meta-a: 1\r\n\r\nbody\r\n";
        let first = hash(trace(), &[original]);
        // Another Received:, Message-ID and Date (relayq's), another split
        // of the same content, another key value: the same content.
        let other_trace = TraceHeaders {
            received: "Received: from elsewhere by relay; later\r\n".into(),
            message_id: "<OTHER@relay>".into(),
            date: "Tue, 24 Nov 2026 10:00:00 +0000".into(),
        };
        assert_eq!(
            hash(other_trace, &[&original[..20], &original[20..]]),
            first
        );
        assert_eq!(
            hash(
                trace(),
                &[b"From: a@example.com\r\nIdempotency-Key: k2\r\nX-Relayq-Meta-a: 1\r\n\r\nbody\r\n"]
            ),
            first
        );
        // The client's own fields, metadata included, and the body count.
        for changed in [
            &b"From: b@example.com\r\nIdempotency-Key: k1\r\nX-Relayq-Meta-a: 1\r\n\r\nbody\r\n"[..],
            b"From: a@example.com\r\nIdempotency-Key: k1\r\nX-Relayq-Meta-a: 2\r\n\r\nbody\r\n",
            b"From: a@example.com\r\nIdempotency-Key: k1\r\nX-Relayq-Meta-a: 1\r\n\r\nbody!\r\n",
            b"From: a@example.com\r\nIdempotency-Key: k1\r\nX-Relayq-Meta-a: 1\r\nDate: x\r\n\r\nbody\r\n",
        ] {
            assert_ne!(hash(trace(), &[changed]), first, "{}", String::from_utf8_lossy(changed));
        }
    }

    #[test]
    fn only_keyed_messages_are_hashed_unless_every_one_must_be() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let plain: &[u8] = b"Message-ID: <m@example.com>\r\n\r\nbody\r\n";
        assert_eq!(assemble(&spool, trace(), &[plain], KEYED).2, None);
        let by_message_id = Fingerprinting::Keyed { message_id: true };
        let (_, consumed, hash) = assemble(&spool, trace(), &[plain], by_message_id);
        assert!(hash.is_some());
        assert_eq!(consumed.key(true), Some("<m@example.com>"));
        assert!(
            assemble(
                &spool,
                trace(),
                &[b"\r\nno header\r\n"],
                Fingerprinting::Always
            )
            .2
            .is_some()
        );
    }

    #[test]
    fn oversized_content_is_dropped() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        assert!(build(&spool, &[&[b'x'; 70_000], &[b'y'; 70_000]], 100_000).is_none());
    }

    #[test]
    fn complete_fields_stop_before_a_line_that_may_go_on() {
        let section = b"From: a@example.com\r\nSubject: x\r\n y\r\nTo: b@exa";
        assert_eq!(
            complete_fields(section),
            b"From: a@example.com\r\nSubject: x\r\n y\r\n"
        );
        assert_eq!(complete_fields(b"From: a@example.com\r\n"), b"");
        assert_eq!(complete_fields(b"From: a@example.com\r\n\tmore"), b"");
    }

    /// Signers for example.com with an Ed25519 key made by openssl.
    fn example_signers(directory: &std::path::Path) -> Arc<Signers> {
        let key = directory.join("ed.pem");
        let output = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .output()
            .expect("the openssl command line tool runs");
        assert!(output.status.success(), "{output:?}");
        let settings = crate::config::DkimSettings {
            domain: "example.com".into(),
            selector: "s".into(),
            private_key: key,
            headers: None,
        };
        Arc::new(Signers::load(&[settings]).unwrap())
    }

    /// A header section longer than intake holds, its From: field `before`
    /// or after that much filler.
    fn long_header_section(from: &str, before: bool) -> Vec<u8> {
        let mut content = Vec::new();
        if before {
            content.extend_from_slice(format!("From: {from}\r\n").as_bytes());
        }
        for index in 0..1000 {
            content
                .extend_from_slice(format!("X-Filler-{index}: {}\r\n", "f".repeat(80)).as_bytes());
        }
        if !before {
            content.extend_from_slice(format!("From: {from}\r\n").as_bytes());
        }
        content.extend_from_slice(b"\r\nbody\r\n");
        assert!(content.len() > MAX_HEADER_SECTION);
        content
    }

    fn assemble_signed(
        spool: &Spool,
        signers: &Arc<Signers>,
        content: &[u8],
        chunk_size: usize,
    ) -> Assembly {
        let mut builder = MessageBuilder::new(spool.body_writer(), trace(), 1 << 20)
            .with_signers(Some(signers.clone()));
        for chunk in content.chunks(chunk_size) {
            builder.push(chunk).unwrap();
        }
        builder.finish().unwrap()
    }

    #[test]
    fn a_header_section_too_large_to_sign_is_not_stored_unsigned() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path().join("spool"))).unwrap();
        let signers = example_signers(directory.path());
        // What each message becomes, in small chunks and in one: refused,
        // unsigned, or signed by these keys.
        let outcome = |from: &str, from_first: bool, chunk_size: usize| {
            let content = long_header_section(from, from_first);
            match assemble_signed(&spool, &signers, &content, chunk_size) {
                Assembly::NotSigned(SigningError::HeaderSectionTooLarge(_)) => "refused".to_owned(),
                Assembly::Message(message) if message.dkim.signatures.is_empty() => {
                    "unsigned".to_owned()
                }
                Assembly::Message(message) => message.dkim.signatures.join(","),
                other => format!("{other:?}"),
            }
        };
        for chunk_size in [4096, 1 << 20] {
            // From: a covered domain; or none among the fields held (the
            // first 64 KiB), so that none can be ruled out.
            assert_eq!(outcome("app@example.com", true, chunk_size), "refused");
            assert_eq!(outcome("app@example.com", false, chunk_size), "refused");
            assert_eq!(outcome("app@other.org", false, chunk_size), "refused");
            // From: a domain no key covers, among the fields held: unsigned
            // as before.
            assert_eq!(outcome("app@other.org", true, chunk_size), "unsigned");
        }
        // A short header section from the same domain is signed.
        let short = b"From: app@example.com\r\n\r\nbody\r\n";
        let Assembly::Message(message) = assemble_signed(&spool, &signers, short, 4096) else {
            panic!("not assembled");
        };
        assert_eq!(message.dkim.signatures, ["example.com/s"]);
    }
}
