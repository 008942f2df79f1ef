//! The fleet's suppression list: relays naming the same Redis share their
//! entries through the stream `relayq:suppression`. An add or remove on one
//! appears on the others (source `cluster`); a relay that was down, or cut
//! off from Redis, catches up.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, start_mx, submit};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::shaping::{RedisServer, wait_until};
use crate::suppression::{suppression, suppression_json, suppression_ok};
use crate::suppression_bounces::{refusing_mx, zone};

const WITHIN: Duration = Duration::from_secs(30);

fn relay(redis: &RedisServer) -> TestRelay {
    TestRelay::start(&format!("[cluster]\nredis_url = \"{}\"\n", redis.url()))
}

/// The entry of `address` on `relay`, once it is there.
fn wait_for_entry(relay: &TestRelay, address: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(&format!("{address} is suppressed"), WITHIN, || {
        let output = suppression(relay, &["show", address, "--json"]);
        if output.status.success() {
            found = serde_json::from_slice(&output.stdout).ok();
        }
        found.is_some()
    });
    found.unwrap()
}

fn is_listed(relay: &TestRelay, address: &str) -> bool {
    suppression(relay, &["show", address]).status.success()
}

#[test]
fn an_add_and_a_remove_on_one_relay_reach_the_other() {
    let redis = RedisServer::start();
    let first = relay(&redis);
    let second = relay(&redis);
    suppression_ok(&first, &["add", "Shared@Example.org", "--reason", "asked"]);
    let entry = wait_for_entry(&second, "shared@example.org");
    assert_eq!(entry["source"], "cluster");
    assert_eq!(entry["class"], "admin");
    assert_eq!(entry["reply"], "asked");
    // The time it was suppressed, not the time it travelled.
    let original = suppression_json(&first, &["show", "shared@example.org"]);
    assert_eq!(entry["time"], original["time"]);
    // The first relay's own entry stays its own.
    assert_eq!(original["source"], "admin");

    let mut client = second.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<app@sender.test>").code, 250);
    let refused = client.command("RCPT TO:<shared@example.org>");
    assert_eq!(refused.code, 550, "{refused:?}");

    suppression_ok(&second, &["remove", "shared@example.org"]);
    wait_until("the removal reached the first relay", WITHIN, || {
        !is_listed(&first, "shared@example.org")
    });
}

#[test]
fn a_relay_that_was_down_or_cut_off_catches_up() {
    let mut redis = RedisServer::start();
    let first = relay(&redis);
    let mut second = relay(&redis);
    suppression_ok(&first, &["add", "before@example.org"]);
    wait_for_entry(&second, "before@example.org");

    // The second relay is down while the first adds and imports.
    second.stop();
    suppression_ok(&first, &["add", "while-down@example.org"]);
    let imported = crate::suppression::suppression_with_input(
        &first,
        &["import", "-"],
        b"one@example.net\ntwo@example.net,bad_domain,NXDOMAIN\n",
    );
    assert!(imported.status.success());
    second.launch();
    wait_for_entry(&second, "while-down@example.org");
    let two = wait_for_entry(&second, "two@example.net");
    assert_eq!(two["class"], "bad_domain");
    assert!(is_listed(&second, "one@example.net"));

    // Redis goes away: each relay keeps its own list and takes changes;
    // what was changed meanwhile reaches the other once Redis is back
    // (a new, empty Redis: nothing was persisted).
    redis.stop();
    suppression_ok(&first, &["add", "cut-off@example.org"]);
    suppression_ok(&second, &["remove", "before@example.org"]);
    assert!(is_listed(&first, "cut-off@example.org"));
    assert!(is_listed(&first, "before@example.org"));
    let _redis = RedisServer::start_on(redis.port);
    wait_for_entry(&second, "cut-off@example.org");
    wait_until("the removal reached the first relay", WITHIN, || {
        !is_listed(&first, "before@example.org")
    });
}

#[test]
fn a_bounce_on_one_relay_suppresses_on_the_other() {
    let redis = RedisServer::start();
    let (port, _servers) = start_mx(vec![
        ("127.0.41.1", refusing_mx()),
        ("127.0.41.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let cluster = format!("[cluster]\nredis_url = \"{}\"\n", redis.url());
    let first = TestRelay::start(&config(&dns, port, "", &cluster));
    let second = TestRelay::start(&config(&dns, port, "", &cluster));
    submit(
        &first,
        "app@sender.test",
        &["gone@dest.test"],
        "Subject: x\r\n\r\n",
    );
    let entry = wait_for_entry(&second, "gone@dest.test");
    assert_eq!(entry["class"], "invalid_recipient");
    assert_eq!(entry["source"], "cluster");
    let mut client = second.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<app@sender.test>").code, 250);
    assert_eq!(client.command("RCPT TO:<gone@dest.test>").code, 550);
}
