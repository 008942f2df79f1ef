//! SIGKILL in the middle of deliveries: after a restart every message is
//! delivered (a duplicate is allowed for what was in flight, a loss is not)
//! and the spool ends empty.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestRelay;
use crate::common::delivery::{config, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{Script, Stage};

const MESSAGES: usize = 30;

#[test]
fn sigkill_during_delivery_loses_nothing() {
    let slow = Script {
        delay_before: vec![(Stage::FinalDot, Duration::from_millis(100))],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.24.1", slow)]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.24.9")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.24.1"),
    );
    let mut relay = TestRelay::start(&config(&dns, port, "destination_concurrency = 2", ""));
    for n in 0..MESSAGES {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("u{n}@dest.test")],
            &format!("Subject: crash {n}\r\nX-Seq: {n}\r\n\r\n"),
        );
    }
    servers[0].wait_for_messages(5, Duration::from_secs(20));
    relay.kill();
    let before = servers[0].messages().len();
    assert!(
        before < MESSAGES,
        "the kill came mid-stream ({before} delivered)"
    );

    relay.launch();
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let seen: BTreeSet<String> = servers[0]
            .messages()
            .iter()
            .filter_map(|m| {
                let text = String::from_utf8_lossy(&m.data).into_owned();
                text.split("X-Seq: ")
                    .nth(1)
                    .and_then(|rest| rest.split("\r\n").next())
                    .map(str::to_owned)
            })
            .collect();
        if seen.len() == MESSAGES || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        delivered.len(),
        MESSAGES,
        "every message delivered after restart; log:\n{}",
        relay.logs_text()
    );
    let total = servers[0].messages().len();
    eprintln!(
        "{before} delivered before SIGKILL; {total} deliveries for {MESSAGES} messages ({} duplicates)",
        total - MESSAGES
    );
    assert!(
        total - MESSAGES <= 2,
        "duplicates only for what was in flight (cap 2)"
    );
    // A message leaves the queue only once its removal is committed to the
    // spool, so an empty queue means an empty spool.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let queued = queued_messages(&relay);
        if queued.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still queued 10 s after the last delivery: {queued:?}; log:\n{}",
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.stop();
    assert!(
        relay.spooled_messages().is_empty(),
        "the spool is empty at the end"
    );
}

/// The ids `relayq queue list` shows for the running relay.
fn queued_messages(relay: &TestRelay) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(["queue", "list", "--json", "--config"])
        .arg(&relay.config_path)
        .stdin(Stdio::null())
        .output()
        .expect("run relayq queue list");
    assert!(
        output.status.success(),
        "relayq queue list: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|message| message["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}
