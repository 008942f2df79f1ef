//! The stored value formats (envelope, body, quarantine) and their verification. Pure: no I/O.
//!
//! Every value is framed as `[format version u8 = 1][crc32 of payload, u32 LE][payload]`, so
//! that a record damaged on disk, or written by a future incompatible version, is detected
//! when read instead of being misinterpreted.
//!
//! Payloads:
//! - envelope: the caller's opaque bytes;
//! - body: `[kind u8]` then, for kind 0 (inline), the body bytes; for kind 1 (file), the
//!   body length (u64 LE) and the crc32 of the file's contents (u32 LE). The file is
//!   `bodies/<queue id>`, named after the record's key;
//! - quarantine: `[reason length u32 LE][reason][envelope value length u32 LE][envelope
//!   value][body value]`, where the two values are copied as they were found, framing
//!   included, verified or not (a length of `u32::MAX` means the value was missing).

use std::fmt;

pub(crate) const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 5;
const BODY_INLINE: u8 = 0;
const BODY_FILE: u8 = 1;
const MISSING: u32 = u32::MAX;

/// Why a stored value does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    Truncated,
    UnknownVersion(u8),
    Checksum { stored: u32, computed: u32 },
    Malformed(&'static str),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated => write!(f, "record shorter than its header"),
            RecordError::UnknownVersion(version) => write!(f, "unknown format version {version}"),
            RecordError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            RecordError::Malformed(what) => write!(f, "malformed record: {what}"),
        }
    }
}

/// A body record, decoded and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRecord<'a> {
    Inline(&'a [u8]),
    /// The body is in `bodies/<queue id>`; `crc` is the crc32 of its `len` bytes.
    File {
        len: u64,
        crc: u32,
    },
}

/// Frames a payload given in parts (so a body need not be copied twice).
fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = crc32fast::Hasher::new();
    let payload_len: usize = parts.iter().map(|part| part.len()).sum();
    for part in parts {
        hasher.update(part);
    }
    let mut value = Vec::with_capacity(HEADER_LEN + payload_len);
    value.push(FORMAT_VERSION);
    value.extend_from_slice(&hasher.finalize().to_le_bytes());
    for part in parts {
        value.extend_from_slice(part);
    }
    value
}

/// Checks the version and checksum of a framed value and returns its payload.
fn unframe(value: &[u8]) -> Result<&[u8], RecordError> {
    let (header, payload) = value
        .split_at_checked(HEADER_LEN)
        .ok_or(RecordError::Truncated)?;
    if header[0] != FORMAT_VERSION {
        return Err(RecordError::UnknownVersion(header[0]));
    }
    let stored = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(payload)
}

pub fn encode_envelope(envelope: &[u8]) -> Vec<u8> {
    frame(&[envelope])
}

pub fn decode_envelope(value: &[u8]) -> Result<&[u8], RecordError> {
    unframe(value)
}

pub fn encode_inline_body(body: &[u8]) -> Vec<u8> {
    frame(&[&[BODY_INLINE], body])
}

pub fn encode_file_body(len: u64, crc: u32) -> Vec<u8> {
    frame(&[&[BODY_FILE], &len.to_le_bytes(), &crc.to_le_bytes()])
}

pub fn decode_body(value: &[u8]) -> Result<BodyRecord<'_>, RecordError> {
    let payload = unframe(value)?;
    match payload.split_first() {
        Some((&BODY_INLINE, body)) => Ok(BodyRecord::Inline(body)),
        Some((&BODY_FILE, reference)) => {
            let reference: &[u8; 12] = reference
                .try_into()
                .map_err(|_| RecordError::Malformed("file reference is not 12 bytes"))?;
            let (len, crc) = reference.split_at(8);
            Ok(BodyRecord::File {
                len: u64::from_le_bytes(len.try_into().expect("split at 8 of 12")),
                crc: u32::from_le_bytes(crc.try_into().expect("split at 8 of 12")),
            })
        }
        Some(_) => Err(RecordError::Malformed("unknown body kind")),
        None => Err(RecordError::Malformed("empty body record")),
    }
}

/// The value of a quarantined message: why it was set aside and its records as found.
pub fn encode_quarantine(
    reason: &str,
    envelope_value: Option<&[u8]>,
    body_value: Option<&[u8]>,
) -> Vec<u8> {
    let length = |part: &[u8]| u32::try_from(part.len()).unwrap_or(MISSING - 1);
    let reason = &reason.as_bytes()[..reason.len().min(4096)];
    let envelope_len = envelope_value.map_or(MISSING, length);
    frame(&[
        &length(reason).to_le_bytes(),
        reason,
        &envelope_len.to_le_bytes(),
        envelope_value.unwrap_or_default(),
        body_value.unwrap_or_default(),
    ])
}

/// A quarantine value, decoded (kept for tools, tests and the fuzz targets that inspect what
/// was set aside).
#[derive(Debug, PartialEq, Eq)]
pub struct Quarantined<'a> {
    pub reason: &'a [u8],
    pub envelope_value: Option<&'a [u8]>,
    pub body_value: &'a [u8],
}

pub fn decode_quarantine(value: &[u8]) -> Result<Quarantined<'_>, RecordError> {
    fn take_len(rest: &[u8]) -> Result<(u32, &[u8]), RecordError> {
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(RecordError::Malformed("quarantine length"))?;
        Ok((u32::from_le_bytes(*len), rest))
    }
    let payload = unframe(value)?;
    let (reason_len, rest) = take_len(payload)?;
    let (reason, rest) = rest
        .split_at_checked(reason_len as usize)
        .ok_or(RecordError::Malformed("quarantine reason"))?;
    let (envelope_len, rest) = take_len(rest)?;
    let (envelope_value, body_value) = if envelope_len == MISSING {
        (None, rest)
    } else {
        let (envelope, body) = rest
            .split_at_checked(envelope_len as usize)
            .ok_or(RecordError::Malformed("quarantine envelope"))?;
        (Some(envelope), body)
    };
    Ok(Quarantined {
        reason,
        envelope_value,
        body_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip() {
        let value = encode_envelope(b"sender and recipients");
        assert_eq!(value[0], FORMAT_VERSION);
        assert_eq!(decode_envelope(&value), Ok(&b"sender and recipients"[..]));
        assert_eq!(decode_envelope(&encode_envelope(b"")), Ok(&b""[..]));
    }

    #[test]
    fn damage_is_detected() {
        let mut value = encode_envelope(b"payload");
        let last = value.len() - 1;
        value[last] ^= 1;
        assert!(matches!(
            decode_envelope(&value),
            Err(RecordError::Checksum { .. })
        ));

        let mut value = encode_envelope(b"payload");
        value[0] = 2;
        assert_eq!(decode_envelope(&value), Err(RecordError::UnknownVersion(2)));

        assert_eq!(decode_envelope(&[1, 0, 0]), Err(RecordError::Truncated));
        assert_eq!(decode_envelope(b""), Err(RecordError::Truncated));
    }

    #[test]
    fn body_records_roundtrip() {
        let inline = encode_inline_body(b"Subject: hi\r\n\r\nhello\r\n");
        assert_eq!(
            decode_body(&inline),
            Ok(BodyRecord::Inline(&b"Subject: hi\r\n\r\nhello\r\n"[..]))
        );
        let file = encode_file_body(1 << 33, 0xDEAD_BEEF);
        assert_eq!(
            decode_body(&file),
            Ok(BodyRecord::File {
                len: 1 << 33,
                crc: 0xDEAD_BEEF
            })
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(
            decode_body(&frame(&[])),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            decode_body(&frame(&[&[7]])),
            Err(RecordError::Malformed(_))
        ));
        assert!(matches!(
            decode_body(&frame(&[&[BODY_FILE], &[0; 11]])),
            Err(RecordError::Malformed(_))
        ));
    }

    #[test]
    fn quarantine_keeps_what_it_found() {
        let value = encode_quarantine("bad envelope", Some(b"\x09garbage"), Some(b"body"));
        let found = decode_quarantine(&value).unwrap();
        assert_eq!(found.reason, b"bad envelope");
        assert_eq!(found.envelope_value, Some(&b"\x09garbage"[..]));
        assert_eq!(found.body_value, b"body");

        let value = encode_quarantine("no envelope", None, None);
        let found = decode_quarantine(&value).unwrap();
        assert_eq!(found.envelope_value, None);
        assert_eq!(found.body_value, b"");
    }
}
