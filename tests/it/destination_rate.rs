//! Output control: a destination's rate is respected at the remote end (in
//! any window of T seconds at most rate × T + 1 transactions start), and
//! mail waiting for its turn is visible as deferred without an attempt.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::shaping::{queue_json, queue_text, rate_violation, wait_until};

const WITHIN: Duration = Duration::from_secs(30);

fn zone() -> crate::common::dns_server::Zone {
    zone_with_sender_mx("127.0.23.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.23.1")
}

#[test]
fn starts_keep_to_the_rate_and_waiting_mail_is_deferred_without_an_attempt() {
    let (port, servers) = start_mx(vec![("127.0.23.1", Script::default())]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        "[[destination]]\nname = \"slow\"\nmatch = [\"dest.test\"]\nrate = \"4/s\"\n",
    ));
    let count = 12;
    for n in 0..count {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("u{n}@dest.test")],
            &format!("Subject: {n}\r\n\r\n"),
        );
    }

    // While the queue drains, some message waits for its turn: deferred,
    // its next attempt set, its last reply saying why, no attempt counted.
    let mut seen_waiting = false;
    wait_until("a message waits for a rate token", WITHIN, || {
        let list = queue_json(&relay, &["list"]);
        for message in list.as_array().unwrap() {
            let reply = message["recipients"][0]["last_reply"]
                .as_str()
                .unwrap_or("");
            if message["state"] == "deferred" && reply.contains("destination slow rate limit") {
                assert_eq!(message["attempts"], 0, "{message}");
                assert!(message["next_attempt"].is_string(), "{message}");
                seen_waiting = true;
                return true;
            }
        }
        servers[0].messages().len() >= count
    });
    assert!(seen_waiting, "no message was seen waiting for the rate");

    expect_messages(&relay, &servers[0], count, WITHIN);
    let mut starts = servers[0].mail_times();
    starts.sort();
    // Measured where the MAIL commands arrive: 50 ms of slack for
    // scheduling on a busy machine (an unlimited relay starts them all
    // within a few milliseconds).
    assert_eq!(starts.len(), count, "one transaction per message");
    if let Some((starts, seconds)) = rate_violation(&starts, 4.0, Duration::from_millis(50)) {
        panic!("{starts} transactions started within {seconds:.3}s at a rate of 4/s");
    }
    // 12 starts at 4/s cannot take less than 11 intervals.
    let span = *starts.last().unwrap() - starts[0];
    assert!(span >= Duration::from_millis(2700), "{span:?}");
}

/// Mail waiting for its slot gives the slot back when it leaves the queue:
/// after a bulk delete of hundreds of messages promised slots minutes
/// ahead, a new message to the destination goes out at once, not after
/// the slots the deleted mail held.
#[test]
fn deleted_mail_gives_its_rate_slots_back() {
    let (port, servers) = start_mx(vec![("127.0.23.2", Script::default())]);
    let zone = zone_with_sender_mx("127.0.23.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.23.2");
    let dns = TestDns::start(zone);
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        "[[destination]]\nname = \"slow\"\nmatch = [\"dest.test\"]\nrate = \"1/s\"\n",
    ));
    // One session, one transaction per message: 1 goes now, the rest are
    // promised a slot each, up to five minutes ahead.
    let count = 300;
    let mut client = relay.client();
    client.greet();
    for n in 0..count {
        let reply = client.send_message(
            "app@sender.test",
            &[&format!("u{n}@dest.test")],
            format!("Subject: waiting {n}\r\n\r\n").as_bytes(),
        );
        assert_eq!(reply.code, 250, "{reply:?}");
    }
    client.command("QUIT");
    wait_until(
        "every message is delivered or waits for its slot",
        WITHIN,
        || {
            let list = queue_json(&relay, &["list"]);
            let waiting = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|message| {
                    message["state"] == "deferred"
                        && message["recipients"][0]["last_reply"]
                            .as_str()
                            .is_some_and(|reply| reply.contains("rate limit"))
                })
                .count();
            waiting + servers[0].messages().len() == count
        },
    );
    let delivered_before = servers[0].messages().len();
    assert!(
        delivered_before < count / 2,
        "most mail waits: {delivered_before} of {count} delivered"
    );

    queue_text(&relay, &["delete", "--all"]);
    wait_until("the queue is empty", WITHIN, || {
        queue_json(&relay, &["list"]).as_array().unwrap().is_empty()
    });
    submit(
        &relay,
        "app@sender.test",
        &["after@dest.test"],
        "Subject: after the delete\r\n\r\n",
    );
    // Without its slots given back it would wait some five minutes.
    wait_until("the new message is delivered", WITHIN, || {
        servers[0].messages().iter().any(|message| {
            String::from_utf8_lossy(&message.data).contains("Subject: after the delete\r\n")
        })
    });
}
