//! SMTP AUTH input: any AUTH initial response and response lines (SASL
//! PLAIN and LOGIN), and any users file, give a value or an error, never a
//! panic. The first byte picks PLAIN or LOGIN, with or without an initial
//! response, or the users file parser; the rest is split at newlines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{Mechanism, Progress, Users, start_sasl};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 3 == 2 {
        if let Ok(text) = std::str::from_utf8(rest) {
            let _ = Users::parse(text);
        }
        return;
    }
    let mechanism = if selector & 4 == 0 {
        Mechanism::Plain
    } else {
        Mechanism::Login
    };
    let mut lines = rest.split(|&byte| byte == b'\n');
    let initial = match selector % 3 {
        0 => lines.next().and_then(|line| std::str::from_utf8(line).ok()),
        _ => None,
    };
    let mut step = start_sasl(mechanism, initial);
    for line in lines {
        match step {
            Ok(Progress::Challenge(exchange, _)) => step = exchange.step(line),
            _ => return,
        }
    }
});
