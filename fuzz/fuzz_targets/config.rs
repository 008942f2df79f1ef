//! Configuration files: any text either validates to a configuration or is
//! refused with an error that names what is wrong; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::parse_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_config(text) {
        Ok(config) => drop(format!("{config:?}")),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
