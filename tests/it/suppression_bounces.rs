//! Bounces put their recipients on the suppression list: a hard bounce of a
//! listed class (`invalid_recipient` by default) in the bounce's own commit,
//! other classes not; an operator's bounce (class `admin`) only when
//! `admin` is listed.

use std::sync::Arc;
use std::time::Duration;

use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::Script;
use crate::common::{TestRelay, queue_ok};
use crate::suppression::{suppression, suppression_json};

const WITHIN: Duration = Duration::from_secs(20);

pub fn zone() -> Zone {
    zone_with_sender_mx("127.0.41.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.41.1")
}

/// `gone@` does not exist, `full@` is over quota, the rest are taken.
pub fn refusing_mx() -> Script {
    Script {
        rcpt_reply: Arc::new(|rcpt| {
            let rcpt = rcpt.to_ascii_lowercase();
            if rcpt.contains("gone@") {
                "550 5.1.1 <gone@dest.test>: Recipient address rejected: User unknown".to_owned()
            } else if rcpt.contains("full@") {
                "552 5.2.2 <full@dest.test>: Mailbox full".to_owned()
            } else {
                "250 2.1.5 Ok".to_owned()
            }
        }),
        ..Script::default()
    }
}

#[test]
fn a_recipient_that_does_not_exist_is_suppressed_when_it_bounces() {
    let (port, servers) = start_mx(vec![
        ("127.0.41.1", refusing_mx()),
        ("127.0.41.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &["Gone@dest.test", "full@dest.test", "here@dest.test"],
        "Subject: three\r\n\r\n",
    );
    let line = relay.wait_for_log(&format!(
        "{id}: <gone@dest.test> added to the suppression list"
    ));
    assert!(line.contains("class invalid_recipient"), "{line}");
    // The bounce still goes to the sender.
    expect_messages(&relay, &servers[1], 1, WITHIN);

    let entry = suppression_json(&relay, &["show", "gone@dest.test"]);
    assert_eq!(entry["class"], "invalid_recipient");
    assert_eq!(entry["source"], "bounce");
    assert!(
        entry["reply"]
            .as_str()
            .unwrap()
            .starts_with("550 5.1.1 <gone@dest.test>"),
        "{entry}"
    );
    // A full mailbox is not a reason to stop mailing an address.
    assert_eq!(
        suppression(&relay, &["show", "full@dest.test"])
            .status
            .code(),
        Some(64)
    );

    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<app@sender.test>").code, 250);
    let refused = client.command("RCPT TO:<gone@dest.test>");
    assert_eq!(refused.code, 550, "{refused:?}");
    assert!(
        refused
            .text()
            .contains("recipient is suppressed (invalid_recipient since "),
        "{refused:?}"
    );
    assert_eq!(client.command("RCPT TO:<full@dest.test>").code, 250);
}

/// Submits to a destination that only defers, bounces the message as an
/// operator, and says whether its recipient ended up suppressed.
fn operator_bounce_suppresses(extra: &str) -> Option<serde_json::Value> {
    let deferring = Script {
        rcpt_reply: Arc::new(|_| "451 4.3.0 try again later".to_owned()),
        ..Script::default()
    };
    let (port, _servers) = start_mx(vec![
        ("127.0.41.1", deferring),
        ("127.0.41.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", extra));
    let id = submit(
        &relay,
        "app@sender.test",
        &["stuck@dest.test"],
        "Subject: stuck\r\n\r\n",
    );
    relay.wait_for_log(&format!("{id}: to=<stuck@dest.test>"));
    queue_ok(&relay, &["bounce", &id]);
    relay.wait_for_log(&format!("{id}: removed"));
    let shown = suppression(&relay, &["show", "stuck@dest.test", "--json"]);
    shown
        .status
        .success()
        .then(|| serde_json::from_slice(&shown.stdout).unwrap())
}

#[test]
fn an_operators_bounce_suppresses_only_when_admin_is_listed() {
    assert_eq!(operator_bounce_suppresses(""), None);
    let entry =
        operator_bounce_suppresses("[suppression]\nclasses = [\"invalid_recipient\", \"admin\"]\n")
            .expect("suppressed with admin listed");
    assert_eq!(entry["class"], "admin");
    assert_eq!(entry["source"], "bounce");
}
