//! Any command line parses to a command or an error reply, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::smtp::command::{ParseContext, parse};

fuzz_target!(|data: &[u8]| {
    for (extended, smtputf8) in [(true, false), (true, true), (false, false)] {
        let _ = parse(data, ParseContext { extended, smtputf8 });
    }
});
