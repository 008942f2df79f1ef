//! MTA-STS input from the network (RFC 8461): the `_mta-sts` TXT record,
//! the policy file and the HTTP response carrying it. Parsing never panics;
//! an accepted policy's `max_age` is within the RFC's limit and every exact
//! `mx` pattern matches its own host name; a response's body is never
//! larger than the limit, and a response complete before the close is the
//! same one when the close follows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{
    MAX_POLICY_BODY, PolicyResponse, parse_policy_response, parse_sts_policy, sts_policy_id,
};

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
    let open = parse_policy_response(data, false);
    if let Ok(PolicyResponse::Complete(response)) = &open {
        assert!(response.body.len() <= MAX_POLICY_BODY);
        assert_eq!(parse_policy_response(data, true), open);
    }
    if let Ok(PolicyResponse::Complete(response)) = parse_policy_response(data, true) {
        assert!(response.body.len() <= MAX_POLICY_BODY);
    }
});
