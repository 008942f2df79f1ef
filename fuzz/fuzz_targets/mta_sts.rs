//! MTA-STS input from the network (RFC 8461): the `_mta-sts` TXT record and
//! the policy file (the HTTP response carrying it is read by reqwest).
//! Parsing never panics; an accepted policy's `max_age` is within the RFC's
//! limit and every exact `mx` pattern matches its own host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{parse_sts_policy, sts_policy_id};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = sts_policy_id(&[text.as_ref()]) {
        assert!((1..=32).contains(&id.len()));
        assert!(id.bytes().all(|byte| byte.is_ascii_alphanumeric()));
    }
    if let Ok(policy) = parse_sts_policy(&text) {
        assert!(policy.max_age.as_secs() <= 31_557_600);
        for pattern in &policy.mx {
            if !pattern.starts_with("*.") {
                assert!(policy.allows(pattern), "{pattern:?}");
            }
        }
    }
});
