//! A suppression entry and its stored form (pure): the record in the
//! spool's `suppression` table, keyed by the normalised address.
//!
//! Value (version 1): `1`, the time (ms since the Unix epoch, u64 BE), the
//! source (one byte), the class name (u8 length, bytes), the reply (u16 BE
//! length, bytes). The class is stored by name, so the order of the class
//! list can never change what a stored entry means; a name this version
//! does not know (written by a newer one) reads as `unclassified`, which
//! still suppresses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bounce::BounceClass;

/// The longest reply or reason kept with an entry; longer ones are cut at a
/// character boundary.
pub const MAX_REPLY: usize = 1000;
const VERSION: u8 = 1;

/// How an entry came to be (a contract: JSON, the CLI, the cluster stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A recipient bounced with a class in `suppression.classes`.
    Bounce,
    /// `relayq suppression add` or `PUT /suppression/ADDR`.
    Admin,
    /// `relayq suppression import`.
    Import,
    /// Another relay's entry, from the Redis stream.
    Cluster,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Bounce => "bounce",
            Source::Admin => "admin",
            Source::Import => "import",
            Source::Cluster => "cluster",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Source> {
        [
            Source::Bounce,
            Source::Admin,
            Source::Import,
            Source::Cluster,
        ]
        .get(usize::from(code))
        .copied()
    }
}

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised ([`normalize`]): the table's key.
    pub address: String,
    pub class: BounceClass,
    /// The remote reply that caused it, or the operator's reason; may be
    /// empty.
    pub reply: String,
    pub time: SystemTime,
    pub source: Source,
}

/// The form addresses are compared in: lower case (ASCII, else Unicode),
/// so `User@Example.org` and `user@example.org` are one entry.
pub fn normalize(address: &str) -> String {
    if address.is_ascii() {
        address.to_ascii_lowercase()
    } else {
        address.to_lowercase()
    }
}

/// `text` cut to at most [`MAX_REPLY`] octets, on a character boundary,
/// with line breaks made spaces (a reply is one line).
pub fn one_line(text: &str) -> String {
    let mut end = text.len().min(MAX_REPLY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace(['\r', '\n'], " ")
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Why a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown suppression record version {0}")]
    Version(u8),
    #[error("suppression record truncated")]
    Truncated,
    #[error("suppression record has an unknown source {0}")]
    Source(u8),
    #[error("suppression record is not UTF-8")]
    Utf8,
}

impl Entry {
    /// The table's value for this entry (the address is the key).
    pub fn encode(&self) -> Vec<u8> {
        let class = self.class.as_str().as_bytes();
        let reply = one_line(&self.reply);
        let mut out = Vec::with_capacity(13 + class.len() + reply.len());
        out.push(VERSION);
        out.extend_from_slice(&unix_ms(self.time).to_be_bytes());
        out.push(self.source.code());
        out.push(class.len() as u8);
        out.extend_from_slice(class);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(reply.as_bytes());
        out
    }

    /// The time and class of a stored value, without copying anything out
    /// (the load at start reads a million of them).
    pub fn decode_mark(value: &[u8]) -> Result<(SystemTime, BounceClass), DecodeError> {
        let mut reader = Reader(value);
        let version = reader.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let time = from_unix_ms(u64::from_be_bytes(reader.array()?));
        reader.u8()?;
        let class_len = usize::from(reader.u8()?);
        let class = class_named(reader.take(class_len)?)?;
        Ok((time, class))
    }

    /// The entry stored under `key` as `value`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Entry, DecodeError> {
        let mut reader = Reader(value);
        let version = reader.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let time = from_unix_ms(u64::from_be_bytes(reader.array()?));
        let source_code = reader.u8()?;
        let source = Source::from_code(source_code).ok_or(DecodeError::Source(source_code))?;
        let class_len = usize::from(reader.u8()?);
        let class = class_named(reader.take(class_len)?)?;
        let reply_len = usize::from(u16::from_be_bytes(reader.array()?));
        let reply = reader.text(reply_len)?;
        let address = std::str::from_utf8(key)
            .map_err(|_| DecodeError::Utf8)?
            .to_owned();
        Ok(Entry {
            address,
            class,
            reply,
            time,
            source,
        })
    }
}

/// A stored class name; unknown names read as `unclassified`.
fn class_named(name: &[u8]) -> Result<BounceClass, DecodeError> {
    let name = std::str::from_utf8(name).map_err(|_| DecodeError::Utf8)?;
    Ok(name.parse().unwrap_or(BounceClass::Unclassified))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < count {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn text(&mut self, count: usize) -> Result<String, DecodeError> {
        let bytes = self.take(count)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            address: "user@example.org".into(),
            class: BounceClass::InvalidRecipient,
            reply: "550 5.1.1 <user@example.org>: no such user".into(),
            time: from_unix_ms(1_795_424_516_123),
            source: Source::Bounce,
        }
    }

    #[test]
    fn round_trip() {
        let entry = entry();
        let value = entry.encode();
        assert_eq!(Entry::decode(b"user@example.org", &value), Ok(entry));
        for source in [Source::Admin, Source::Import, Source::Cluster] {
            let other = Entry {
                source,
                ..self::entry()
            };
            assert_eq!(
                Entry::decode(b"user@example.org", &other.encode())
                    .unwrap()
                    .source,
                source
            );
        }
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let value = entry().encode();
        for cut in 0..value.len() {
            assert!(Entry::decode(b"k", &value[..cut]).is_err(), "{cut}");
        }
        let mut other = value.clone();
        other[0] = 9;
        assert_eq!(Entry::decode(b"k", &other), Err(DecodeError::Version(9)));
        let mut other = value;
        other[9] = 77;
        assert_eq!(Entry::decode(b"k", &other), Err(DecodeError::Source(77)));
    }

    #[test]
    fn replies_are_one_line_and_bounded() {
        let long = format!("550 {}\r\nmore", "é".repeat(800));
        let kept = one_line(&long);
        assert!(kept.len() <= MAX_REPLY && !kept.contains('\n'));
        let entry = Entry {
            reply: long,
            ..entry()
        };
        let decoded = Entry::decode(b"a@b", &entry.encode()).unwrap();
        assert_eq!(decoded.reply, kept);
    }

    #[test]
    fn normalised_addresses_are_lower_case() {
        assert_eq!(normalize("User@Example.ORG"), "user@example.org");
        assert_eq!(normalize("Ölaf@Bücher.example"), "ölaf@bücher.example");
    }
}
