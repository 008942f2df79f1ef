//! The header fields intake consumes (`Idempotency-Key`, `X-Relayq-Meta-*`):
//! scanning any header section never panics; what it accepts keeps the
//! limits (at most 16 metadata fields, keys of 1–40 allowed characters,
//! values of at most 256 octets, a key of 1–255 visible ASCII octets); the
//! stored section holds none of the consumed fields, and the fingerprinted
//! parts hold no `Idempotency-Key`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{
    MAX_IDEMPOTENCY_KEY, MAX_META_FIELDS, MAX_META_KEY, MAX_META_VALUE, scan_consumed_headers,
};

fuzz_target!(|data: &[u8]| {
    let scan = scan_consumed_headers(data);
    let consumed = &scan.consumed;
    if consumed.refusal.is_none() {
        assert!(consumed.meta.len() <= MAX_META_FIELDS);
        for (key, value) in &consumed.meta {
            assert!((1..=MAX_META_KEY).contains(&key.len()));
            assert!(key.bytes().all(|octet| octet.is_ascii_lowercase()
                || octet.is_ascii_digit()
                || octet == b'_'
                || octet == b'-'));
            assert!(value.len() <= MAX_META_VALUE);
        }
    }
    for key in [&consumed.idempotency_key, &consumed.message_id].into_iter().flatten() {
        assert!((1..=MAX_IDEMPOTENCY_KEY).contains(&key.len()));
        assert!(key.bytes().all(|octet| (0x21..=0x7e).contains(&octet)));
    }

    let stored = scan.stored(data);
    let again = scan_consumed_headers(&stored);
    assert_eq!(again.consumed.idempotency_key, None);
    assert!(again.consumed.meta.is_empty());
    assert_eq!(again.consumed.refusal, None);
    assert!(stored.len() <= data.len());

    let fingerprinted = scan.fingerprinted(data).concat();
    assert_eq!(
        scan_consumed_headers(&fingerprinted).consumed.idempotency_key,
        None
    );
});
