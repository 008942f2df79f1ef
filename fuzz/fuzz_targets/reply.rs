//! Outbound replies, the bytes a remote server sends: framing and parsing
//! never panic; framing consumes monotonically (a complete reply is never
//! empty, never longer than the input, ends at an LF, and is framed the same
//! when the input is cut right after it; an incomplete reply stays
//! incomplete when cut shorter); replies are read one after another until
//! the input runs out; a parsed reply's code is its first line's three
//! digits, its status an RFC 3463 code of class 2, 4 or 5, its text one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{MAX_REPLY_LENGTH, parse_reply, reply_length};

fn assert_status(status: &str) {
    let numbers: Vec<&str> = status.split('.').collect();
    assert_eq!(numbers.len(), 3, "{status:?}");
    assert!(matches!(numbers[0], "2" | "4" | "5"), "{status:?}");
    for number in &numbers[1..] {
        assert!((1..=3).contains(&number.len()), "{status:?}");
        assert!(
            number.bytes().all(|byte| byte.is_ascii_digit()),
            "{status:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match reply_length(rest) {
            Ok(Some(length)) => {
                assert!(length > 0 && length <= rest.len());
                assert_eq!(rest[length - 1], b'\n');
                assert_eq!(reply_length(&rest[..length]), Ok(Some(length)));
                let reply = parse_reply(&rest[..length]);
                let code = rest[..3]
                    .iter()
                    .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
                assert_eq!(reply.code, code);
                assert_status(&reply.status);
                assert!(
                    !reply.text.chars().any(char::is_control),
                    "{:?}",
                    reply.text
                );
                assert_eq!(reply.text.trim_matches(' '), reply.text);
                rest = &rest[length..];
            }
            Ok(None) => {
                assert!(rest.len() <= MAX_REPLY_LENGTH);
                assert_eq!(reply_length(&rest[..rest.len() / 2]), Ok(None));
                break;
            }
            Err(error) => {
                assert!(!error.is_empty());
                break;
            }
        }
    }
});
