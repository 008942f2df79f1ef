//! Output control: a reply containing a `suspend_on` string suspends the
//! destination for `suspend_for`: no connection meanwhile, mail waits
//! without an attempt, then goes; the suspension is an event, a log line,
//! a `queue stats` row and a metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::shaping::{metrics_address, queue_json, queue_text, sample, scrape, wait_until};
use crate::common::{TestRelay, spawn_tail};

const WITHIN: Duration = Duration::from_secs(30);
const SUSPEND_FOR: Duration = Duration::from_secs(4);

#[test]
fn a_suspending_reply_stops_the_destination_for_its_time() {
    let first = Arc::new(AtomicBool::new(true));
    let script = Script {
        rcpt_reply: Arc::new(move |_| {
            if first.swap(false, Ordering::SeqCst) {
                "421 4.7.28 Our system has detected an unusual rate of mail".to_owned()
            } else {
                "250 2.1.5 Ok".to_owned()
            }
        }),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.26.1", script)]);
    let zone = zone_with_sender_mx("127.0.26.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.26.1");
    let dns = TestDns::start(zone);
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        "[[destination]]\nname = \"picky\"\nmatch = [\"dest.test\"]\n\
         suspend_on = [\"4.7.28\"]\nsuspend_for = \"4s\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let metrics = metrics_address(&relay);

    // Returns once `queue tail` follows the events.
    let (mut tail, lines) = spawn_tail(&relay, &[]);
    submit(
        &relay,
        "app@sender.test",
        &["u0@dest.test"],
        "Subject: 0\r\n\r\n",
    );
    wait_until("the suspension is announced", WITHIN, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("destination picky suspended until"))
    });
    let suspended_at = Instant::now();
    let sessions_then = servers[0].sessions();
    let line = lines
        .lock()
        .unwrap()
        .iter()
        .find(|line| line.contains("destination picky suspended until"))
        .cloned()
        .unwrap();
    assert!(line.contains(": 421 4.7.28 Our system"), "{line}");
    relay.wait_for_log("destination picky suspended until");

    // Mail arriving meanwhile waits, without an attempt.
    submit(
        &relay,
        "app@sender.test",
        &["u1@dest.test"],
        "Subject: 1\r\n\r\n",
    );
    wait_until("both messages wait for the suspension", WITHIN, || {
        let list = queue_json(&relay, &["list"]);
        let waiting = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|message| {
                message["state"] == "deferred"
                    && message["recipients"][0]["last_reply"]
                        .as_str()
                        .is_some_and(|reply| reply.contains("destination picky suspended until"))
            })
            .inspect(|message| assert_eq!(message["attempts"], 0, "{message}"))
            .count();
        waiting == 2
    });
    let stats = queue_json(&relay, &["stats"]);
    let row = stats["shaping"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["destination"] == "picky")
        .cloned()
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(row["suspended_until"].is_string(), "{stats}");
    assert!(queue_text(&relay, &["stats"]).contains("picky"));
    let scraped = scrape(metrics);
    assert_eq!(
        sample(
            &scraped,
            "relayq_destination_suspended{destination=\"picky\"}"
        ),
        Some(1.0),
        "{scraped}"
    );

    // No connection is made during the suspension (it began before
    // `suspended_at`, so 3 s later it still lasts)...
    let still_suspended = suspended_at + SUSPEND_FOR - Duration::from_secs(1);
    std::thread::sleep(still_suspended.saturating_duration_since(Instant::now()));
    assert_eq!(
        servers[0].sessions(),
        sessions_then,
        "no connection while suspended"
    );
    assert!(servers[0].messages().is_empty());

    // ...then both messages go.
    let received = expect_messages(&relay, &servers[0], 2, WITHIN);
    assert_eq!(received.len(), 2);
    assert!(servers[0].sessions() > sessions_then);
    wait_until("the resumption is announced", WITHIN, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("destination picky resumed"))
    });
    let _ = tail.kill();
    let _ = tail.wait();
}
