//! Tests for the DSN builder: every report is parsed back with mail-parser.

use std::time::{Duration, UNIX_EPOCH};

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};

use super::*;

const ORIGINAL: &[u8] = b"From: App <app@example.com>\r\n\
    To: bob@example.org\r\n\
    Subject: Quarterly numbers\r\n\
    Message-ID: <orig-1@example.com>\r\n\
    \r\n\
    This body line must stay private.\r\n";

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn bounced(address: &str) -> ReportedRecipient {
    ReportedRecipient {
        final_recipient: address.to_owned(),
        original_recipient: None,
        action: Action::Failed,
        status: "5.1.1".to_owned(),
        remote_mta: Some("mx.example.org".to_owned()),
        diagnostic: Some("550 5.1.1 user unknown".to_owned()),
        last_attempt: Some(at(1_795_424_516)),
        will_retry_until: None,
        class: Some(BounceClass::InvalidRecipient),
    }
}

fn delayed(address: &str) -> ReportedRecipient {
    ReportedRecipient {
        action: Action::Delayed,
        status: "4.4.7".to_owned(),
        diagnostic: Some("421 4.7.0 try again later".to_owned()),
        will_retry_until: Some(at(1_795_800_000)),
        ..bounced(address)
    }
}

fn report<'a>(recipients: &'a [ReportedRecipient], original: &'a [u8]) -> Report<'a> {
    Report {
        reporting_mta: "relay.example.com",
        queue_id: "0A1B2C3D",
        sender: "app@example.com",
        envid: None,
        arrival: at(1_795_420_000),
        ret: None,
        recipients,
        original,
        now: at(1_795_424_600),
        message_id: "<20261123090956.0A1B2C3D@relay.example.com>".to_owned(),
    }
}

/// Every line ends in CRLF and is at most 998 octets.
fn assert_lines(bytes: &[u8]) {
    assert!(bytes.ends_with(b"\r\n"), "the message ends with CRLF");
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "lone CR at {i}"),
            b'\n' => assert!(i > 0 && bytes[i - 1] == b'\r', "lone LF at {i}"),
            _ => {}
        }
    }
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let length = line.strip_suffix(b"\r").unwrap_or(line).len();
        assert!(length <= MAX_LINE, "line {number} has {length} octets");
    }
}

fn parse(bytes: &[u8]) -> Message<'_> {
    assert_lines(bytes);
    MessageParser::default()
        .parse(bytes)
        .expect("the report parses")
}

fn parts<'m>(message: &'m Message<'m>) -> Vec<&'m MessagePart<'m>> {
    let ids = message.parts[0].sub_parts().expect("a multipart message");
    ids.iter().map(|&id| &message.parts[id as usize]).collect()
}

fn mime_type(part: &MessagePart) -> String {
    let content_type = part.content_type().expect("every part has a Content-Type");
    format!(
        "{}/{}",
        content_type.ctype(),
        content_type.subtype().unwrap_or("")
    )
}

fn human_text(message: &Message) -> String {
    parts(message)[0].text_contents().unwrap().to_owned()
}

/// The delivery-status part, unfolded: the per-message block, then one
/// block per recipient, each a list of (field name, value).
fn status_blocks(message: &Message) -> Vec<Vec<(String, String)>> {
    let part = parts(message)[1];
    assert_eq!(mime_type(part), "message/delivery-status");
    assert!(
        part.contents().is_ascii(),
        "the delivery-status part is 7-bit"
    );
    let text = std::str::from_utf8(part.contents())
        .unwrap()
        .replace("\r\n ", " ");
    text.split("\r\n\r\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .split("\r\n")
                .filter(|line| !line.is_empty())
                .map(|line| {
                    let (name, value) = line.split_once(':').expect("a field");
                    (name.to_owned(), value.trim().to_owned())
                })
                .collect()
        })
        .collect()
}

fn field<'b>(block: &'b [(String, String)], name: &str) -> Option<&'b str> {
    block
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn failure_report_is_a_multipart_report_with_three_parts() {
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&report(&recipients, ORIGINAL));
    let message = parse(&bytes);

    let content_type = message.content_type().unwrap();
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("report"))
    );
    assert_eq!(
        content_type.attribute("report-type"),
        Some("delivery-status")
    );
    let types: Vec<String> = parts(&message).into_iter().map(mime_type).collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );

    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@relay.example.com"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("app@example.com")
    );
    assert_eq!(
        message.message_id(),
        Some("20261123090956.0A1B2C3D@relay.example.com")
    );
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(message.date().unwrap().to_timestamp(), 1_795_424_600);

    let human = human_text(&message);
    assert!(
        human.contains("<bob@example.org>: could not be delivered."),
        "{human}"
    );
    assert!(
        human.contains("mx.example.org replied:\r\n    550 5.1.1 user unknown\r\n"),
        "{human}"
    );
}

#[test]
fn delivery_status_fields_per_message_and_per_recipient() {
    let mut recipient = bounced("bob@example.org");
    recipient.original_recipient = Some("Bob@Example.org".to_owned());
    let recipients = [recipient];
    let message_bytes = build(&report(&recipients, ORIGINAL));
    let blocks = status_blocks(&parse(&message_bytes));
    assert_eq!(blocks.len(), 2);

    let per_message = &blocks[0];
    assert_eq!(
        field(per_message, "Reporting-MTA"),
        Some("dns; relay.example.com")
    );
    assert_eq!(field(per_message, "X-Relayq-Queue-ID"), Some("0A1B2C3D"));
    assert_eq!(
        field(per_message, "Arrival-Date"),
        Some(rfc5322(at(1_795_420_000)).as_str())
    );
    assert_eq!(field(per_message, "Original-Envelope-Id"), None);

    let block = &blocks[1];
    assert_eq!(
        field(block, "Original-Recipient"),
        Some("rfc822; Bob@Example.org")
    );
    assert_eq!(
        field(block, "Final-Recipient"),
        Some("rfc822; bob@example.org")
    );
    assert_eq!(field(block, "Action"), Some("failed"));
    assert_eq!(field(block, "Status"), Some("5.1.1"));
    assert_eq!(field(block, "Remote-MTA"), Some("dns; mx.example.org"));
    assert_eq!(
        field(block, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 user unknown")
    );
    assert_eq!(
        field(block, "Last-Attempt-Date"),
        Some(rfc5322(at(1_795_424_516)).as_str())
    );
    assert_eq!(field(block, "Will-Retry-Until"), None);
    assert_eq!(field(block, "X-Relayq-Class"), Some("invalid_recipient"));
}

#[test]
fn ret_hdrs_and_no_ret_return_the_headers_without_the_body() {
    let recipients = [bounced("bob@example.org")];
    for ret in [None, Some(Ret::Headers)] {
        let bytes = build(&Report {
            ret,
            ..report(&recipients, ORIGINAL)
        });
        let message = parse(&bytes);
        let returned = parts(&message)[2];
        assert_eq!(mime_type(returned), "text/rfc822-headers");
        let headers = returned.text_contents().unwrap();
        assert!(
            headers.starts_with("From: App <app@example.com>\r\n"),
            "{headers}"
        );
        assert!(
            headers.contains("Subject: Quarterly numbers\r\n"),
            "{headers}"
        );
        assert!(memmem::find(&bytes, b"must stay private").is_none());
        assert!(human_text(&message).contains("The headers of your message are attached."));
    }
}

#[test]
fn ret_full_returns_the_whole_message_unencoded() {
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&Report {
        ret: Some(Ret::Full),
        ..report(&recipients, ORIGINAL)
    });
    let message = parse(&bytes);
    let returned = parts(&message)[2];
    assert_eq!(mime_type(returned), "message/rfc822");
    assert_eq!(returned.content_transfer_encoding(), Some("7bit"));
    let nested = returned.message().expect("a nested message");
    assert_eq!(nested.subject(), Some("Quarterly numbers"));
    assert!(
        nested
            .body_text(0)
            .unwrap()
            .contains("This body line must stay private.")
    );
    assert!(
        memmem::find(&bytes, ORIGINAL).is_some(),
        "returned octet for octet"
    );
    assert!(human_text(&message).contains("Your message is attached."));
}

#[test]
fn eight_bit_originals_go_8bit_never_encoded() {
    let original = "From: app@example.com\r\nSubject: Grüße aus Köln\r\n\r\nHallo\r\n";
    let recipients = [bounced("bob@example.org")];
    for (ret, expected) in [
        (Some(Ret::Full), "message/rfc822"),
        (None, "text/rfc822-headers"),
    ] {
        let bytes = build(&Report {
            ret,
            ..report(&recipients, original.as_bytes())
        });
        let message = parse(&bytes);
        let returned = parts(&message)[2];
        assert_eq!(mime_type(returned), expected);
        assert_eq!(returned.content_transfer_encoding(), Some("8bit"));
        assert_eq!(message.content_transfer_encoding(), Some("8bit"));
        assert!(memmem::find(&bytes, "Subject: Grüße aus Köln\r\n".as_bytes()).is_some());
        for encoding in [&b"quoted-printable"[..], b"base64"] {
            assert!(memmem::find(&bytes, encoding).is_none());
        }
    }
}

#[test]
fn a_message_too_large_for_ret_full_returns_its_headers() {
    let mut original = ORIGINAL.to_vec();
    let line = [b'a'; 98];
    while original.len() <= MAX_RETURNED_MESSAGE {
        original.extend_from_slice(&line);
        original.extend_from_slice(b"\r\n");
    }
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&Report {
        ret: Some(Ret::Full),
        ..report(&recipients, &original)
    });
    assert!(bytes.len() < 8 * 1024, "{} octets", bytes.len());
    let message = parse(&bytes);
    let returned = parts(&message)[2];
    assert_eq!(mime_type(returned), "text/rfc822-headers");
    assert!(
        returned
            .text_contents()
            .unwrap()
            .contains("Subject: Quarterly numbers")
    );
    let human = human_text(&message);
    assert!(human.contains("too large to return in full"), "{human}");
}

#[test]
fn the_boundary_never_occurs_in_the_original() {
    let message_id = "<20261123090956.0A1B2C3D@relay.example.com>";
    let first_choice = first_boundary(message_id);
    let original = format!(
        "Subject: trap\r\n\r\n--{first_choice}\r\nContent-Type: text/plain\r\n\r\nfake\r\n\
         --{first_choice}_1--\r\n"
    );
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&Report {
        ret: Some(Ret::Full),
        message_id: message_id.to_owned(),
        ..report(&recipients, original.as_bytes())
    });
    let message = parse(&bytes);
    let boundary = message
        .content_type()
        .unwrap()
        .attribute("boundary")
        .unwrap()
        .to_owned();
    assert_ne!(boundary, first_choice);
    assert!(!original.contains(&boundary));
    let parts = parts(&message);
    assert_eq!(parts.len(), 3);
    let nested = parts[2].message().expect("the original, whole");
    assert_eq!(nested.subject(), Some("trap"));
    assert!(
        nested
            .body_text(0)
            .unwrap()
            .contains(&format!("--{first_choice}\r\n"))
    );
}

#[test]
fn envid_is_reported_as_original_envelope_id() {
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&Report {
        envid: Some("QQ314159"),
        ..report(&recipients, ORIGINAL)
    });
    let blocks = status_blocks(&parse(&bytes));
    assert_eq!(field(&blocks[0], "Original-Envelope-Id"), Some("QQ314159"));
}

#[test]
fn delayed_report_says_until_when() {
    let recipients = [delayed("bob@example.org")];
    let bytes = build(&report(&recipients, ORIGINAL));
    let message = parse(&bytes);
    assert_eq!(
        message.subject(),
        Some("Delayed Mail (still being retried)")
    );
    let blocks = status_blocks(&message);
    assert_eq!(field(&blocks[1], "Action"), Some("delayed"));
    assert_eq!(field(&blocks[1], "Status"), Some("4.4.7"));
    let until = rfc5322(at(1_795_800_000));
    assert_eq!(field(&blocks[1], "Will-Retry-Until"), Some(until.as_str()));
    let human = human_text(&message);
    assert!(
        human.contains(&format!("Retrying until {until}.")),
        "{human}"
    );
    assert!(human.contains("no need to send it again"), "{human}");
}

#[test]
fn two_recipients_make_two_blocks_and_failure_wins_the_subject() {
    let mut other = delayed("carol@example.net");
    other.original_recipient = Some("carol@example.net".to_owned());
    let recipients = [bounced("bob@example.org"), other];
    let bytes = build(&report(&recipients, ORIGINAL));
    let message = parse(&bytes);
    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    let blocks = status_blocks(&message);
    assert_eq!(blocks.len(), 3);
    assert_eq!(
        field(&blocks[1], "Final-Recipient"),
        Some("rfc822; bob@example.org")
    );
    assert_eq!(field(&blocks[1], "Action"), Some("failed"));
    assert_eq!(
        field(&blocks[2], "Final-Recipient"),
        Some("rfc822; carol@example.net")
    );
    assert_eq!(field(&blocks[2], "Action"), Some("delayed"));
    assert_eq!(
        field(&blocks[2], "Original-Recipient"),
        Some("rfc822; carol@example.net")
    );
    assert!(field(&blocks[2], "Will-Retry-Until").is_some());
}

#[test]
fn long_diagnostics_are_folded_within_the_line_limit() {
    let spaced = format!(
        "550 5.7.1 {}",
        "rejected because of policy ".repeat(80).trim_end()
    );
    let unbroken = format!("550 {}", "x".repeat(2500));
    let mut first = bounced("bob@example.org");
    first.diagnostic = Some(spaced.clone());
    let mut second = bounced("carol@example.net");
    second.diagnostic = Some(unbroken);
    let recipients = [first, second];
    // `parse` checks that no line passes 998 octets.
    let bytes = build(&report(&recipients, ORIGINAL));
    let blocks = status_blocks(&parse(&bytes));
    assert_eq!(
        field(&blocks[1], "Diagnostic-Code"),
        Some(format!("smtp; {spaced}").as_str())
    );
    let cut = field(&blocks[2], "Diagnostic-Code").unwrap();
    assert_eq!(
        cut.bytes().filter(|&b| b == b'x').count(),
        2500,
        "nothing is lost"
    );
}

#[test]
fn overlong_original_header_lines_are_cut_for_the_headers_part() {
    let original = format!("Subject: {}\r\n\r\nbody\r\n", "y".repeat(3000));
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&Report {
        ret: Some(Ret::Full),
        ..report(&recipients, original.as_bytes())
    });
    let message = parse(&bytes);
    assert_eq!(mime_type(parts(&message)[2]), "text/rfc822-headers");
    assert!(human_text(&message).contains("lines too long"));
}

#[test]
fn non_ascii_addresses_use_the_utf8_address_type() {
    let mut recipient = bounced("jörg@example.org");
    recipient.original_recipient = Some("jörg+news=1@example.org".to_owned());
    let recipients = [recipient];
    let bytes = build(&Report {
        sender: "änne@example.com",
        ..report(&recipients, ORIGINAL)
    });
    let message = parse(&bytes);
    let blocks = status_blocks(&message);
    assert_eq!(
        field(&blocks[1], "Final-Recipient"),
        Some("utf-8; j\\x{F6}rg@example.org")
    );
    assert_eq!(
        field(&blocks[1], "Original-Recipient"),
        Some("utf-8; j\\x{F6}rg\\x{2B}news\\x{3D}1@example.org")
    );
    assert_eq!(parts(&message)[0].content_transfer_encoding(), Some("8bit"));
    assert!(human_text(&message).contains("<jörg@example.org>"));
    assert!(memmem::find(&bytes, "To: <änne@example.com>\r\n".as_bytes()).is_some());
}

#[test]
fn outside_text_cannot_start_fields_or_parts() {
    let message_id = "<x@relay.example.com>";
    let mut recipient = bounced("bob@example.org");
    recipient.diagnostic = Some(format!(
        "550-5.1.1 no such user\r\n550 5.1.1 X-Injected: yes\r\n\r\n--{}",
        first_boundary(message_id)
    ));
    let recipients = [recipient];
    let bytes = build(&Report {
        message_id: message_id.to_owned(),
        ..report(&recipients, ORIGINAL)
    });
    let message = parse(&bytes);
    assert_eq!(parts(&message).len(), 3);
    let blocks = status_blocks(&message);
    assert_eq!(blocks.len(), 2);
    assert_eq!(field(&blocks[1], "X-Injected"), None);
    let diagnostic = field(&blocks[1], "Diagnostic-Code").unwrap();
    assert!(diagnostic.starts_with("smtp; 550-5.1.1 no such user 550 5.1.1 X-Injected: yes"));
}

#[test]
fn success_reports_and_local_reasons() {
    let relayed = ReportedRecipient {
        action: Action::Relayed,
        status: "2.0.0".to_owned(),
        diagnostic: Some("250 2.0.0 Ok: queued as 4F2".to_owned()),
        class: None,
        ..bounced("bob@example.org")
    };
    let recipients = [relayed];
    let bytes = build(&report(&recipients, ORIGINAL));
    let message = parse(&bytes);
    assert_eq!(message.subject(), Some("Successful Mail Delivery Report"));
    assert_eq!(
        field(&status_blocks(&message)[1], "Action"),
        Some("relayed")
    );
    assert_eq!(field(&status_blocks(&message)[1], "X-Relayq-Class"), None);

    let nxdomain = ReportedRecipient {
        status: "5.1.2".to_owned(),
        remote_mta: None,
        diagnostic: Some("Host or domain name not found (NXDOMAIN)".to_owned()),
        ..bounced("bob@nowhere.invalid")
    };
    let recipients = [nxdomain];
    let bytes = build(&report(&recipients, ORIGINAL));
    let block = &status_blocks(&parse(&bytes))[1];
    assert_eq!(field(block, "Remote-MTA"), None);
    assert_eq!(
        field(block, "Diagnostic-Code"),
        Some("X-Relayq; Host or domain name not found (NXDOMAIN)")
    );
}

#[test]
fn bare_line_feeds_in_the_original_become_crlf() {
    let original = b"Subject: unix\nFrom: a@example.com\n\nbody\rmore\n";
    let recipients = [bounced("bob@example.org")];
    let bytes = build(&Report {
        ret: Some(Ret::Full),
        ..report(&recipients, original)
    });
    let message = parse(&bytes);
    assert_eq!(
        parts(&message)[2].message().unwrap().subject(),
        Some("unix")
    );
}

#[test]
fn invalid_status_falls_back_to_the_action_class() {
    let recipient = ReportedRecipient {
        status: "user unknown".to_owned(),
        ..bounced("b@example.org")
    };
    let recipients = [recipient];
    let bytes = build(&report(&recipients, ORIGINAL));
    assert_eq!(
        field(&status_blocks(&parse(&bytes))[1], "Status"),
        Some("5.0.0")
    );
}
