//! How relayq uses connections: PIPELINING, reuse for the next message, and
//! the per-destination concurrency cap.

use std::time::Duration;

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{Script, Stage};

const WITHIN: Duration = Duration::from_secs(20);

fn zone() -> common::dns_server::Zone {
    zone_with_sender_mx("127.0.22.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.22.1")
}

#[test]
fn pipelining_is_used_when_offered() {
    let (port, servers) = start_mx(vec![("127.0.22.1", Script::default())]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    submit(
        &relay,
        "app@sender.test",
        &["a@dest.test", "b@dest.test"],
        "Subject: piped\r\n\r\n",
    );
    expect_messages(&relay, &servers[0], 1, WITHIN);
    let commands = servers[0].commands();
    let transaction = commands
        .iter()
        .filter(|c| c.starts_with("MAIL") || c.starts_with("RCPT") || c == &"DATA")
        .count();
    assert_eq!(transaction, 4, "{commands:?}");
    // EHLO, then MAIL+RCPT+RCPT+DATA in one round trip, then at most RSET:
    // without pipelining the transaction alone would take four.
    assert!(
        servers[0].command_batches() <= 3,
        "{} batches for {commands:?}",
        servers[0].command_batches()
    );
}

#[test]
fn a_connection_is_reused_for_the_next_message() {
    let (port, servers) = start_mx(vec![("127.0.22.1", Script::default())]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    submit(
        &relay,
        "app@sender.test",
        &["a@dest.test"],
        "Subject: first\r\n\r\n",
    );
    expect_messages(&relay, &servers[0], 1, WITHIN);
    submit(
        &relay,
        "app@sender.test",
        &["b@dest.test"],
        "Subject: second\r\n\r\n",
    );
    let received = expect_messages(&relay, &servers[0], 2, WITHIN);
    assert_eq!(
        servers[0].sessions(),
        1,
        "both messages over one connection"
    );
    assert_eq!(received[0].session, received[1].session);
    assert!(
        servers[0].commands().iter().any(|c| c == "RSET"),
        "RSET between transactions"
    );
}

#[test]
fn destination_concurrency_cap_is_never_exceeded() {
    let slow = Script {
        delay_before: vec![(Stage::FinalDot, Duration::from_millis(300))],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.22.1", slow)]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "destination_concurrency = 2", ""));
    for n in 0..8 {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("u{n}@dest.test")],
            &format!("Subject: {n}\r\n\r\n"),
        );
    }
    expect_messages(&relay, &servers[0], 8, WITHIN);
    assert!(
        servers[0].max_concurrent_sessions() <= 2,
        "cap 2, saw {}",
        servers[0].max_concurrent_sessions()
    );
    assert!(servers[0].max_concurrent_sessions() >= 1);
}
