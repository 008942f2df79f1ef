//! sendmail's message preparation: reading arbitrary stdin never panics and
//! stays within its limit; what comes out (read, then prepared) has CRLF
//! lines only, never a bare LF; the prepared message has exactly one way to
//! be read: it has a From field, no Bcc field, and preparing it again
//! changes nothing; extracted recipients are non-empty, without spaces or
//! control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;
use relayq::fuzzing::{ReadError, prepare, read_message};

/// Every LF is preceded by CR and every CR is followed by LF... except
/// that a CR inside a line is content: only a bare LF breaks the wire.
fn assert_no_bare_lf(bytes: &[u8]) {
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'\n' {
            assert!(index > 0 && bytes[index - 1] == b'\r', "bare LF at {index}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let ignore_dots = flags & 1 != 0;
    let extract_recipients = flags & 2 != 0;
    let limit = if flags & 4 != 0 { 64 } else { 1 << 20 };
    let full_name = match flags >> 6 {
        0 => None,
        1 => Some("Cron Daemon"),
        2 => Some("J\u{f6}rg \"the admin\""),
        _ => Some("  "),
    };

    let message = match read_message(input, ignore_dots, limit) {
        Ok(message) => message,
        Err(ReadError::TooBig) => return,
        Err(ReadError::Io(error)) => panic!("reading from memory failed: {error}"),
    };
    assert!(message.len() as u64 <= limit);
    assert!(message.is_empty() || message.ends_with(b"\r\n"));
    assert_no_bare_lf(&message);

    let Ok(prepared) = prepare(&message, extract_recipients, full_name, "app@example.com") else {
        return;
    };
    assert_no_bare_lf(&prepared.message);
    assert!(prepared.message.ends_with(b"\r\n"));
    if !extract_recipients {
        assert!(prepared.header_recipients.is_empty());
    }
    for recipient in &prepared.header_recipients {
        assert!(!recipient.is_empty());
        assert!(
            !recipient
                .chars()
                .any(|c| c.is_control() || c.is_whitespace()),
            "{recipient:?}"
        );
    }

    let again = prepare(&prepared.message, false, None, "other@example.com")
        .expect("a prepared message prepares again");
    assert_eq!(
        again.message, prepared.message,
        "preparing twice changes it"
    );

    let parsed = MessageParser::new()
        .parse_headers(&prepared.message[..])
        .expect("a prepared message has a header section");
    assert!(parsed.from().is_some() || parsed.header("From").is_some());
    assert!(parsed.header("Bcc").is_none(), "Bcc left in");
});
