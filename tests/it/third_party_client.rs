//! A third-party client (lettre) submits through the real listener: its
//! ESMTP handling (EHLO parsing, PIPELINING, dot-stuffing) must agree with ours.

use crate::common::TestRelay;
use lettre::message::Mailbox;
use lettre::{Message, SmtpTransport, Transport};

#[test]
fn lettre_submission_is_queued() {
    let mut relay = TestRelay::start("");
    let transport = SmtpTransport::builder_dangerous(relay.address.ip().to_string())
        .port(relay.address.port())
        .build();
    let message = Message::builder()
        .from("App <app@example.com>".parse::<Mailbox>().unwrap())
        .to("User <user@example.org>".parse::<Mailbox>().unwrap())
        .cc("cc@example.net".parse::<Mailbox>().unwrap())
        .subject("Password reset")
        .body("Click the link.\r\n.\r\n..and a line starting with dots\r\n".to_owned())
        .unwrap();
    let response = transport.send(&message).expect("lettre sends");
    let text = response.message().collect::<Vec<_>>().join(" ");
    assert!(text.starts_with("2.0.0 Ok: queued as "), "{text}");
    relay.stop();
    let messages = relay.spooled_messages();
    assert_eq!(messages.len(), 1);
    let body = String::from_utf8(messages[0].body.clone()).unwrap();
    assert!(body.contains("Subject: Password reset\r\n"), "{body}");
    assert!(
        body.contains("\r\n.\r\n..and a line starting with dots\r\n"),
        "unstuffed exactly once: {body}"
    );
    let recipients: Vec<_> = messages[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    assert_eq!(recipients, ["user@example.org", "cc@example.net"]);
}
