//! Spool record framing: decoding arbitrary stored octets never panics;
//! whatever decodes re-encodes to the very same octets (the framing is
//! canonical); any payload encodes and decodes back to itself; a single
//! flipped bit in a framed value is always detected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq_spool::fuzzing::{
    BodyRecord, decode_body, decode_envelope, decode_quarantine, encode_envelope, encode_file_body,
    encode_inline_body, encode_quarantine,
};

/// The longest reason a quarantine record keeps.
const MAX_REASON: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // Stored octets → value → the same octets.
    if let Ok(payload) = decode_envelope(data) {
        assert_eq!(encode_envelope(payload), data);
    }
    match decode_body(data) {
        Ok(BodyRecord::Inline(body)) => assert_eq!(encode_inline_body(body), data),
        Ok(BodyRecord::File { len, crc }) => assert_eq!(encode_file_body(len, crc), data),
        Err(error) => drop(error.to_string()),
    }
    if let Ok(found) = decode_quarantine(data)
        && let Ok(reason) = std::str::from_utf8(found.reason)
        && reason.len() <= MAX_REASON
    {
        let again = encode_quarantine(reason, found.envelope_value, Some(found.body_value));
        assert_eq!(again, data);
    }

    // Value → octets → the same value.
    let framed = encode_envelope(data);
    assert_eq!(decode_envelope(&framed), Ok(data));
    assert_eq!(
        decode_body(&encode_inline_body(data)),
        Ok(BodyRecord::Inline(data))
    );
    if let Some(first) = data.first_chunk::<12>() {
        let len = u64::from_le_bytes(first[..8].try_into().unwrap());
        let crc = u32::from_le_bytes(first[8..].try_into().unwrap());
        assert_eq!(
            decode_body(&encode_file_body(len, crc)),
            Ok(BodyRecord::File { len, crc })
        );
    }
    let thirds = data.len() / 3;
    let (reason, rest) = data.split_at(thirds);
    let (envelope, body) = rest.split_at(thirds);
    let reason = String::from_utf8_lossy(reason);
    let reason = reason.get(..MAX_REASON).unwrap_or(&reason);
    for envelope in [Some(envelope), None] {
        let value = encode_quarantine(reason, envelope, Some(body));
        let found = decode_quarantine(&value).expect("an encoded quarantine value decodes");
        assert_eq!(found.reason, reason.as_bytes());
        assert_eq!(found.envelope_value, envelope);
        assert_eq!(found.body_value, body);
    }

    // Damage: any single flipped bit is caught by the version or the CRC.
    let bit = data
        .iter()
        .fold(0usize, |sum, &byte| sum.wrapping_add(byte as usize));
    let bit = bit % (framed.len() * 8);
    let mut damaged = framed.clone();
    damaged[bit / 8] ^= 1 << (bit % 8);
    assert!(
        decode_envelope(&damaged).is_err(),
        "flipped bit {bit} not detected"
    );
});
