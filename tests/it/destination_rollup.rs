//! Output control: an `mx:` pattern groups every domain whose most
//! preferred MX host matches into one destination with one limit, and
//! `queue stats` shows it.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{Script, Stage};
use crate::common::shaping::queue_json;

const WITHIN: Duration = Duration::from_secs(30);

#[test]
fn domains_sharing_an_mx_host_share_one_connection_limit() {
    let slow = Script {
        delay_before: vec![(Stage::FinalDot, Duration::from_millis(150))],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.24.1", slow)]);
    let zone = zone_with_sender_mx("127.0.24.9")
        .mx("a.test", 10, "mx1.provider.test")
        .mx("b.test", 10, "mx1.provider.test")
        .mx("c.test", 10, "mx1.provider.test")
        .a("mx1.provider.test", "127.0.24.1");
    let dns = TestDns::start(zone);
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "destination_concurrency = 5",
        "[[destination]]\nname = \"provider\"\nmatch = [\"mx:*.provider.test\"]\nconcurrency = 1\n",
    ));
    for n in 0..9 {
        let domain = ["a.test", "b.test", "c.test"][n % 3];
        submit(
            &relay,
            "app@sender.test",
            &[&format!("u{n}@{domain}")],
            &format!("Subject: {n}\r\n\r\n"),
        );
    }
    // While mail is queued for it, `queue stats` shows the destination.
    let stats = queue_json(&relay, &["stats"]);
    let shaping = stats["shaping"].as_array().expect("shaping rows");
    let provider = shaping
        .iter()
        .find(|row| row["destination"] == "provider")
        .unwrap_or_else(|| panic!("no provider row in {stats}"));
    assert_eq!(provider["concurrency_limit"], 1, "{stats}");
    assert!(provider["suspended_until"].is_null(), "{stats}");

    expect_messages(&relay, &servers[0], 9, WITHIN);
    assert_eq!(
        servers[0].max_concurrent_sessions(),
        1,
        "three domains, one MX host, concurrency 1"
    );
}
