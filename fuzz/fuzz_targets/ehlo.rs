//! EHLO replies a remote server sends: reading the capabilities never
//! panics, and what is offered does not depend on the letter case of the
//! reply (EHLO keywords are case-insensitive, RFC 5321 §2.4).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::ehlo_capabilities;

fuzz_target!(|data: &[u8]| {
    let Ok(capabilities) = ehlo_capabilities(data) else {
        return;
    };
    for other_case in [data.to_ascii_uppercase(), data.to_ascii_lowercase()] {
        assert_eq!(ehlo_capabilities(&other_case), Ok(capabilities));
    }
});
