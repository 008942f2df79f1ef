//! Output control: a destination's rate is respected at the remote end (in
//! any window of T seconds at most rate × T + 1 transactions start), and
//! mail waiting for its turn is visible as deferred without an attempt.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::shaping::{queue_json, rate_violation, wait_until};

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
