//! The envelope's stored form: a compact binary record.
//!
//! Decoding every envelope is most of a restart's work with a million
//! queued messages, and each delivery pass decodes and re-encodes one, so
//! the record is read field by field without a parser: a format byte,
//! then the fields in a fixed order (integers as LEB128 varints, strings as
//! a length and UTF-8 octets, options as a presence byte), then optional
//! tagged fields that an older relayq skips. Envelopes written as JSON by
//! earlier versions (first octet `{`) are still read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Envelope, EnvelopeError, Lane, Meta, Notify, Recipient, RecipientStatus, Ret};
use crate::bounce::BounceClass;

/// First octet of a binary record. A JSON document never starts with it.
const BINARY: u8 = 0xB1;

/// Tags of the optional fields after the fixed part. A reader skips tags it
/// does not know, so adding one needs no format change.
const END: u8 = 0;
/// The authenticated submitter (RFC 4954), a string.
const AUTH_USER: u8 = 1;
/// The message's metadata: a length, then a count and as many key and value
/// strings (the length lets an older relayq skip it).
const META: u8 = 2;
/// The message's `Message-ID` without its angle brackets, a string (length-
/// prefixed, so an older relayq skips it).
const MESSAGE_ID: u8 = 4;
/// The recipients' bounce classes: a length, then one octet per recipient
/// in order ([`class_code`]; 0 for none). Written only when some recipient
/// has a class, so records of pending mail stay as they were.
const RECIPIENT_CLASSES: u8 = 3;
/// Present (with an empty value) on relayq's own TLS-RPT reports.
const TLS_REPORT: u8 = 5;

pub(super) fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 48 * envelope.recipients.len());
    out.push(BINARY);
    varint(&mut out, u64::from(envelope.version));
    string(&mut out, &envelope.reverse_path);
    out.push(match envelope.lane {
        Lane::High => 0,
        Lane::Low => 1,
    });
    varint(&mut out, envelope.arrival_ms);
    varint(&mut out, envelope.size);
    match envelope.client_address {
        None => out.push(0),
        Some(IpAddr::V4(address)) => {
            out.push(4);
            out.extend_from_slice(&address.octets());
        }
        Some(IpAddr::V6(address)) => {
            out.push(6);
            out.extend_from_slice(&address.octets());
        }
    }
    optional_string(&mut out, envelope.helo.as_deref());
    let flags = u8::from(envelope.eight_bit_mime)
        | u8::from(envelope.smtputf8) << 1
        | u8::from(envelope.held) << 2
        | u8::from(envelope.delay_warned) << 3;
    out.push(flags);
    out.push(match envelope.ret {
        None => 0,
        Some(Ret::Full) => 1,
        Some(Ret::Headers) => 2,
    });
    optional_string(&mut out, envelope.envid.as_deref());
    match envelope.mt_priority {
        None => out.push(0),
        Some(priority) => {
            out.push(1);
            out.push(priority as u8);
        }
    }
    optional_varint(&mut out, envelope.held_since_ms);
    varint(&mut out, envelope.held_ms);
    varint(&mut out, u64::from(envelope.attempts));
    optional_varint(&mut out, envelope.next_attempt_ms);
    varint(&mut out, envelope.recipients.len() as u64);
    for recipient in &envelope.recipients {
        string(&mut out, &recipient.address);
        optional_string(&mut out, recipient.orcpt.as_deref());
        let notify = &recipient.notify;
        out.push(
            u8::from(notify.success)
                | u8::from(notify.failure) << 1
                | u8::from(notify.delay) << 2
                | u8::from(notify.never) << 3,
        );
        out.push(match recipient.status {
            RecipientStatus::Pending => 0,
            RecipientStatus::Delivered => 1,
            RecipientStatus::Deferred => 2,
            RecipientStatus::Bounced => 3,
        });
        optional_string(&mut out, recipient.last_reply.as_deref());
    }
    if let Some(user) = &envelope.auth_user {
        out.push(AUTH_USER);
        string(&mut out, user);
    }
    if !envelope.meta.is_empty() {
        let mut fields = Vec::with_capacity(64);
        varint(&mut fields, envelope.meta.len() as u64);
        for (key, value) in envelope.meta.iter() {
            string(&mut fields, key);
            string(&mut fields, value);
        }
        out.push(META);
        varint(&mut out, fields.len() as u64);
        out.extend_from_slice(&fields);
    }
    if let Some(message_id) = &envelope.message_id {
        let mut field = Vec::with_capacity(message_id.len() + 2);
        string(&mut field, message_id);
        out.push(MESSAGE_ID);
        varint(&mut out, field.len() as u64);
        out.extend_from_slice(&field);
    }
    if envelope
        .recipients
        .iter()
        .any(|recipient| recipient.class.is_some())
    {
        out.push(RECIPIENT_CLASSES);
        varint(&mut out, envelope.recipients.len() as u64);
        out.extend(
            envelope
                .recipients
                .iter()
                .map(|recipient| recipient.class.map_or(0, class_code)),
        );
    }
    if envelope.tls_report {
        out.push(TLS_REPORT);
        varint(&mut out, 0);
    }
    out.push(END);
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    match bytes.first() {
        Some(&BINARY) => Reader { rest: &bytes[1..] }.envelope(),
        // Earlier versions stored JSON (and it may have leading whitespace).
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn envelope(&mut self) -> Result<Envelope, EnvelopeError> {
        let version = u32::try_from(self.varint()?).map_err(|_| malformed("version"))?;
        let reverse_path = self.string()?;
        let lane = match self.byte()? {
            0 => Lane::High,
            1 => Lane::Low,
            _ => return Err(malformed("lane")),
        };
        let arrival_ms = self.varint()?;
        let size = self.varint()?;
        let client_address = match self.byte()? {
            0 => None,
            4 => Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            _ => return Err(malformed("client address")),
        };
        let helo = self.optional_string()?;
        let flags = self.byte()?;
        if flags > 0b1111 {
            return Err(malformed("flags"));
        }
        let ret = match self.byte()? {
            0 => None,
            1 => Some(Ret::Full),
            2 => Some(Ret::Headers),
            _ => return Err(malformed("RET")),
        };
        let envid = self.optional_string()?;
        let mt_priority = match self.byte()? {
            0 => None,
            1 => Some(self.byte()? as i8),
            _ => return Err(malformed("MT-PRIORITY")),
        };
        let held_since_ms = self.optional_varint()?;
        let held_ms = self.varint()?;
        let attempts = u32::try_from(self.varint()?).map_err(|_| malformed("attempts"))?;
        let next_attempt_ms = self.optional_varint()?;
        let count = self.varint()?;
        // Every recipient takes at least five octets: a count larger than
        // what is left is damage, not a reason to allocate.
        if count > (self.rest.len() / 5) as u64 {
            return Err(malformed("recipient count"));
        }
        let mut recipients = Vec::with_capacity(count as usize);
        for _ in 0..count {
            recipients.push(self.recipient()?);
        }
        let mut auth_user = None;
        let mut meta = Meta::default();
        let mut message_id = None;
        let mut tls_report = false;
        loop {
            match self.byte()? {
                END => break,
                AUTH_USER => auth_user = Some(self.string()?),
                META => {
                    let length = self.length()?;
                    meta = Reader {
                        rest: self.take(length)?,
                    }
                    .meta()?;
                }
                MESSAGE_ID => {
                    let length = self.length()?;
                    message_id = Some(
                        Reader {
                            rest: self.take(length)?,
                        }
                        .string()?,
                    );
                }
                RECIPIENT_CLASSES => {
                    let length = self.length()?;
                    if length != recipients.len() {
                        return Err(malformed("recipient classes"));
                    }
                    let codes = self.take(length)?;
                    for (recipient, &code) in recipients.iter_mut().zip(codes) {
                        recipient.class = class_of_code(code);
                    }
                }
                TLS_REPORT => {
                    let length = self.length()?;
                    self.take(length)?;
                    tls_report = true;
                }
                // A field a newer relayq added: skip it.
                _ => {
                    let length = self.length()?;
                    self.take(length)?;
                }
            }
        }
        if !self.rest.is_empty() {
            return Err(malformed("trailing octets"));
        }
        Ok(Envelope {
            version,
            reverse_path,
            recipients,
            lane,
            arrival_ms,
            size,
            client_address,
            helo,
            eight_bit_mime: flags & 1 != 0,
            smtputf8: flags & 2 != 0,
            ret,
            envid,
            mt_priority,
            held: flags & 4 != 0,
            held_since_ms,
            held_ms,
            attempts,
            next_attempt_ms,
            delay_warned: flags & 8 != 0,
            auth_user,
            meta,
            message_id,
            tls_report,
        })
    }

    /// The payload of a `META` field, all of it.
    fn meta(&mut self) -> Result<Meta, EnvelopeError> {
        let count = self.varint()?;
        // Every field takes at least two octets.
        if count > (self.rest.len() / 2) as u64 {
            return Err(malformed("metadata count"));
        }
        let mut fields = Vec::with_capacity(count as usize);
        for _ in 0..count {
            fields.push((self.string()?, self.string()?));
        }
        if !self.rest.is_empty() {
            return Err(malformed("metadata"));
        }
        Ok(Meta::new(fields))
    }

    fn recipient(&mut self) -> Result<Recipient, EnvelopeError> {
        let address = self.string()?;
        let orcpt = self.optional_string()?;
        let bits = self.byte()?;
        if bits > 0b1111 {
            return Err(malformed("NOTIFY"));
        }
        let notify = Notify {
            success: bits & 1 != 0,
            failure: bits & 2 != 0,
            delay: bits & 4 != 0,
            never: bits & 8 != 0,
        };
        let status = match self.byte()? {
            0 => RecipientStatus::Pending,
            1 => RecipientStatus::Delivered,
            2 => RecipientStatus::Deferred,
            3 => RecipientStatus::Bounced,
            _ => return Err(malformed("recipient status")),
        };
        let last_reply = self.optional_string()?;
        Ok(Recipient {
            address,
            orcpt,
            notify,
            status,
            last_reply,
            class: None,
        })
    }

    fn byte(&mut self) -> Result<u8, EnvelopeError> {
        let (&first, rest) = self.rest.split_first().ok_or(malformed("truncated"))?;
        self.rest = rest;
        Ok(first)
    }

    fn take(&mut self, length: usize) -> Result<&[u8], EnvelopeError> {
        if length > self.rest.len() {
            return Err(malformed("truncated"));
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn varint(&mut self) -> Result<u64, EnvelopeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(malformed("integer too large"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("integer too long"))
    }

    fn optional_varint(&mut self) -> Result<Option<u64>, EnvelopeError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.varint().map(Some),
            _ => Err(malformed("option")),
        }
    }

    fn length(&mut self) -> Result<usize, EnvelopeError> {
        usize::try_from(self.varint()?).map_err(|_| malformed("length"))
    }

    fn string(&mut self) -> Result<String, EnvelopeError> {
        let length = self.length()?;
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| malformed("text is not UTF-8"))
    }

    fn optional_string(&mut self) -> Result<Option<String>, EnvelopeError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(malformed("option")),
        }
    }
}

/// A class's stored octet: stable, whatever the order of the enum.
fn class_code(class: BounceClass) -> u8 {
    match class {
        BounceClass::InvalidRecipient => 1,
        BounceClass::InactiveMailbox => 2,
        BounceClass::BadDomain => 3,
        BounceClass::MailboxFull => 4,
        BounceClass::MessageTooLarge => 5,
        BounceClass::SpamBlock => 6,
        BounceClass::SpamContent => 7,
        BounceClass::Policy => 8,
        BounceClass::TlsFailure => 9,
        BounceClass::DnsFailure => 10,
        BounceClass::ConnectionFailure => 11,
        BounceClass::ProtocolError => 12,
        BounceClass::RateLimited => 13,
        BounceClass::Expired => 14,
        BounceClass::Admin => 15,
        BounceClass::Unclassified => 16,
    }
}

/// The class of a stored octet: 0 is none; an octet a newer relayq wrote
/// for a class this one does not know reads as `unclassified`.
fn class_of_code(code: u8) -> Option<BounceClass> {
    match code {
        0 => None,
        code => Some(
            BounceClass::ALL
                .into_iter()
                .find(|&class| class_code(class) == code)
                .unwrap_or(BounceClass::Unclassified),
        ),
    }
}

fn malformed(what: &'static str) -> EnvelopeError {
    EnvelopeError::Malformed(what)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn optional_varint(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            varint(out, value);
        }
    }
}

fn string(out: &mut Vec<u8>, text: &str) {
    varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn optional_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            string(out, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let mut envelope = Envelope::new(
            "app@example.com".into(),
            vec![
                Recipient::new("a@example.org".into()),
                Recipient {
                    address: "\"john doe\"@example.org".into(),
                    orcpt: Some("john doe@example.org".into()),
                    notify: Notify {
                        failure: true,
                        delay: true,
                        ..Notify::default()
                    },
                    status: RecipientStatus::Deferred,
                    last_reply: Some("451 4.3.0 try later".into()),
                    class: Some(BounceClass::RateLimited),
                },
            ],
            Lane::Low,
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_790_000_000_123),
            2048,
        );
        envelope.client_address = Some("2001:db8::1".parse().unwrap());
        envelope.helo = Some("client".into());
        envelope.smtputf8 = true;
        envelope.ret = Some(Ret::Full);
        envelope.envid = Some("x+y".into());
        envelope.mt_priority = Some(-9);
        envelope.held = true;
        envelope.held_since_ms = Some(u64::MAX);
        envelope.attempts = 7;
        envelope.next_attempt_ms = Some(0);
        envelope.delay_warned = true;
        envelope.auth_user = Some("alice".into());
        envelope.meta = Meta::new(vec![
            ("order_id".into(), "A-42".into()),
            ("tenant".into(), "café".into()),
        ]);
        envelope.tls_report = true;
        envelope
    }

    #[test]
    fn every_field_survives_a_round_trip() {
        let envelope = sample();
        let encoded = encode(&envelope);
        assert_eq!(encoded[0], BINARY);
        assert_eq!(decode(&encoded).unwrap(), envelope);
        let mut plain = Envelope::new(String::new(), vec![], Lane::High, std::time::UNIX_EPOCH, 0);
        plain.client_address = Some("192.0.2.7".parse().unwrap());
        assert_eq!(decode(&encode(&plain)).unwrap(), plain);
    }

    #[test]
    fn json_written_by_earlier_versions_is_read() {
        let envelope = sample();
        let json = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(decode(&json).unwrap(), envelope);
    }

    #[test]
    fn the_binary_form_is_much_smaller_than_json() {
        let envelope = sample();
        let json = serde_json::to_vec(&envelope).unwrap();
        assert!(encode(&envelope).len() * 3 < json.len());
    }

    #[test]
    fn metadata_is_a_tagged_field_that_older_readers_skip() {
        // Only the metadata among the optional fields after it.
        let mut with_meta = sample();
        with_meta.message_id = None;
        with_meta.tls_report = false;
        for recipient in &mut with_meta.recipients {
            recipient.class = None;
        }
        let mut plain = with_meta.clone();
        plain.meta = Meta::default();
        plain.tls_report = false;
        let without = encode(&plain);
        assert_eq!(decode(&without).unwrap().meta, Meta::default());
        // With metadata, the record is the same up to the end marker, then
        // the META field.
        let with = encode(&with_meta);
        let at = without.len() - 1;
        assert_eq!(with[..at], without[..at]);
        assert_eq!(with[at], META);
        // A reader that does not know the tag skips it by its length.
        let mut unknown = with.clone();
        unknown[at] = 9;
        assert_eq!(decode(&unknown).unwrap(), plain);
    }

    #[test]
    fn fields_added_later_are_skipped() {
        let envelope = sample();
        let mut encoded = encode(&envelope);
        assert_eq!(encoded.pop(), Some(END));
        encoded.extend_from_slice(&[9, 3, b'a', b'b', b'c', END]);
        assert_eq!(decode(&encoded).unwrap(), envelope);
    }

    #[test]
    fn recipient_classes_are_stored_only_when_there_is_one() {
        let mut envelope = sample();
        let with_class = encode(&envelope);
        assert_eq!(
            decode(&with_class).unwrap().recipients[1].class,
            Some(BounceClass::RateLimited)
        );
        envelope.recipients[1].class = None;
        let without = encode(&envelope);
        // Two octets of tag and length, and one per recipient.
        assert_eq!(with_class.len(), without.len() + 2 + 2);
        assert_eq!(decode(&without).unwrap(), envelope);
        for class in BounceClass::ALL {
            envelope.recipients[0].class = Some(class);
            assert_eq!(decode(&encode(&envelope)).unwrap(), envelope);
        }
    }

    #[test]
    fn records_without_classes_and_unknown_class_codes_still_read() {
        // The classes as the last field.
        let envelope = Envelope {
            tls_report: false,
            ..sample()
        };
        let mut encoded = encode(&envelope);
        // The record as a relayq without classes would have written it.
        let tag = encoded.len() - 5;
        assert_eq!(encoded[tag..], [RECIPIENT_CLASSES, 2, 0, 13, END]);
        let mut older = encoded[..tag].to_vec();
        older.push(END);
        let mut expected = envelope.clone();
        expected.recipients[1].class = None;
        assert_eq!(decode(&older).unwrap(), expected);
        // A class added by a newer relayq.
        encoded[tag + 3] = 200;
        assert_eq!(
            decode(&encoded).unwrap().recipients[1].class,
            Some(BounceClass::Unclassified)
        );
        // A count that is not the recipients' is damage.
        encoded[tag + 1] = 3;
        assert!(decode(&encoded).is_err());
    }

    #[test]
    fn every_truncation_and_damage_is_an_error_not_a_panic() {
        let encoded = encode(&sample());
        for end in 0..encoded.len() {
            assert!(decode(&encoded[..end]).is_err(), "truncated at {end}");
        }
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        for index in 1..encoded.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut damaged = encoded.clone();
                damaged[index] = value;
                let _ = decode(&damaged);
            }
        }
        let mut huge_count = vec![BINARY, 1];
        huge_count.extend_from_slice(&[0; 14]);
        huge_count.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode(&huge_count),
            Err(EnvelopeError::Malformed("recipient count"))
        ));
        let overlong = [
            BINARY, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(decode(&overlong).is_err());
    }
}
