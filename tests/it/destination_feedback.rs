//! Output control: overload feedback. A remote that serves two sessions and
//! answers 421 to more gets all the mail, sees refused connections for a
//! small fraction of it, and no message's attempt count grows for it.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{Script, Stage};
use crate::common::shaping::{metrics_address, queue_json, sample, scrape, wait_until};

const WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_remote_that_serves_two_sessions_gets_everything_with_few_refusals() {
    let narrow = Script {
        max_sessions: Some(2),
        delay_before: vec![(Stage::FinalDot, Duration::from_millis(20))],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.25.1", narrow)]);
    let zone = zone_with_sender_mx("127.0.25.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.25.1");
    let dns = TestDns::start(zone);
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "destination_concurrency = 10",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let count = 120;
    let ids: Vec<String> = (0..count)
        .map(|n| {
            submit(
                &relay,
                "app@sender.test",
                &[&format!("u{n}@dest.test")],
                &format!("Subject: {n}\r\n\r\n"),
            )
        })
        .collect();
    expect_messages(&relay, &servers[0], count, WITHIN);

    let refused = servers[0].refused_sessions();
    assert!(refused >= 1, "the limit was probed above two sessions");
    assert!(
        refused * 10 <= count,
        "{refused} refused connections for {count} messages; relay log:\n{}",
        relay.logs_text()
    );
    assert!(servers[0].max_concurrent_sessions() <= 2);

    // The limit went down, and is visible while it is below the default.
    let metrics = scrape(metrics_address(&relay));
    let feedback = sample(
        &metrics,
        "relayq_destination_throttled_total{destination=\"dest.test\",reason=\"feedback\"}",
    );
    assert!(feedback.unwrap_or(0.0) >= 1.0, "{metrics}");

    // No message was charged an attempt for the refusals: every message
    // that is still queued (a DSN would be) has none, and delivered ones
    // left the queue at their first attempt.
    // (The remote has every message; the relay commits each delivery just
    // after the remote's reply, so the last ones may still be leaving.)
    let still_queued = || {
        queue_json(&relay, &["list"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|message| ids.iter().any(|id| message["id"] == id.as_str()))
            .count()
    };
    wait_until("every delivered message leaves the queue", WITHIN, || {
        still_queued() == 0
    });
    wait_until("a delivery line per message", WITHIN, || {
        relay.log_lines("status=sent").len() >= count
    });
    let delivered_once = relay.log_lines("status=sent").len();
    assert_eq!(
        delivered_once, count,
        "each message delivered in one attempt"
    );
    assert!(
        relay.log_lines("status=deferred").is_empty(),
        "no deferral was counted: {:?}",
        relay.log_lines("status=deferred")
    );
}
