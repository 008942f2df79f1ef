//! TLS-RPT input: the `_smtp._tls` TXT record from the network (RFC 8460
//! §3), and the counts read back from the spool (a record's key and its
//! JSON value). Parsing never panics; an accepted record names at least one
//! and at most `MAX_DESTINATIONS` usable destinations, and stored counts
//! merge within their bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{
    CountKey, MAX_DESTINATIONS, MAX_FAILURE_DETAILS, MAX_POLICIES, decode_tls_rpt_counts,
    merge_tls_rpt_counts, parse_tls_rpt_record,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(rua) = parse_tls_rpt_record(&[text.as_ref()]) {
        let destinations = rua.mail.len() + rua.https.len();
        assert!((1..=MAX_DESTINATIONS).contains(&destinations));
        assert!(rua.mail.iter().all(|address| address.contains('@')));
        assert!(rua.https.iter().all(|url| url.starts_with("https:")));
    }
    if let Some(key) = CountKey::decode(data) {
        assert_eq!(CountKey::decode(&key.encode()), Some(key));
    }
    if let Ok(policies) = decode_tls_rpt_counts(data) {
        let mut merged = Vec::new();
        merge_tls_rpt_counts(&mut merged, policies.clone());
        merge_tls_rpt_counts(&mut merged, policies);
        assert!(merged.len() <= MAX_POLICIES);
        assert!(
            merged
                .iter()
                .all(|policy| policy.failure_details.len() <= MAX_FAILURE_DETAILS)
        );
    }
});
