//! Fleet-wide rates: two relays naming the same Redis and destination share
//! its rate; when Redis stops, or hangs, mail still flows at each relay's
//! local rate, `relayq_cluster_redis_up` shows 0, and sharing resumes when
//! it returns; a Redis whose clock stepped back holds starts back by one
//! interval at most.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::Script;
use crate::common::shaping::{
    RedisServer, metrics_address, rate_violation, sample, scrape, wait_until,
};
use crate::common::silent::SilentServer;

const WITHIN: Duration = Duration::from_secs(40);

fn zone() -> Zone {
    zone_with_sender_mx("127.0.27.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.27.1")
}

fn relay_config(dns: &TestDns, port: u16, redis: &RedisServer) -> String {
    config_with_redis(dns, port, &redis.url(), "4/s")
}

fn config_with_redis(dns: &TestDns, port: u16, redis_url: &str, rate: &str) -> String {
    config(
        dns,
        port,
        "",
        &format!(
            "[[destination]]\nname = \"shared\"\nmatch = [\"dest.test\"]\nrate = \"{rate}\"\n\
             [cluster]\nredis_url = \"{redis_url}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
}

fn submit_many(relay: &TestRelay, prefix: &str, count: usize) {
    for n in 0..count {
        submit(
            relay,
            "app@sender.test",
            &[&format!("{prefix}{n}@dest.test")],
            &format!("Subject: {prefix}{n}\r\n\r\n"),
        );
    }
}

#[test]
fn two_relays_on_one_redis_share_a_destination_rate() {
    let redis = RedisServer::start();
    let (port, servers) = start_mx(vec![("127.0.27.1", Script::default())]);
    let dns = TestDns::start(zone());
    let first = TestRelay::start(&relay_config(&dns, port, &redis));
    let second = TestRelay::start(&relay_config(&dns, port, &redis));
    let per_relay = 8;
    for n in 0..per_relay {
        for (relay, name) in [(&first, "a"), (&second, "b")] {
            submit(
                relay,
                "app@sender.test",
                &[&format!("{name}{n}@dest.test")],
                &format!("Subject: {name}{n}\r\n\r\n"),
            );
        }
    }
    expect_messages(&first, &servers[0], 2 * per_relay, WITHIN);
    let mut starts = servers[0].mail_times();
    starts.sort();
    // Measured where the MAIL commands arrive, from two relay processes on
    // a machine that may be busy: 100 ms of slack for scheduling. Two
    // independent buckets would show pairs of starts at almost no distance.
    if let Some((count, seconds)) = rate_violation(&starts, 4.0, Duration::from_millis(100)) {
        panic!("{count} transactions started within {seconds:.3}s at a shared rate of 4/s");
    }
    // 16 starts at 4/s together: at least 15 intervals, where each relay
    // alone would have taken 7.
    let span = *starts.last().unwrap() - starts[0];
    assert!(span >= Duration::from_millis(3500), "{span:?}");
    for relay in [&first, &second] {
        let metrics = scrape(metrics_address(relay));
        assert_eq!(
            sample(&metrics, "relayq_cluster_redis_up"),
            Some(1.0),
            "{metrics}"
        );
    }
}

#[test]
fn without_redis_mail_flows_at_the_local_rate_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let (port, servers) = start_mx(vec![("127.0.27.1", Script::default())]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&relay_config(&dns, port, &redis));
    let metrics = metrics_address(&relay);
    submit(
        &relay,
        "app@sender.test",
        &["first@dest.test"],
        "Subject: 0\r\n\r\n",
    );
    expect_messages(&relay, &servers[0], 1, WITHIN);
    assert_eq!(
        sample(&scrape(metrics), "relayq_cluster_redis_up"),
        Some(1.0)
    );

    redis.stop();
    for n in 0..6 {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("u{n}@dest.test")],
            &format!("Subject: {n}\r\n\r\n"),
        );
    }
    expect_messages(&relay, &servers[0], 7, WITHIN);
    let mut starts = servers[0].mail_times();
    starts.sort();
    if let Some((count, seconds)) = rate_violation(&starts[1..], 4.0, Duration::from_millis(50)) {
        panic!("{count} transactions started within {seconds:.3}s at a local rate of 4/s");
    }
    let scraped = scrape(metrics);
    assert_eq!(
        sample(&scraped, "relayq_cluster_redis_up"),
        Some(0.0),
        "{scraped}"
    );
    let warnings = relay.log_lines("Redis unreachable");
    assert_eq!(
        warnings.len(),
        1,
        "one warning a minute at most: {warnings:?}"
    );

    let _redis = RedisServer::start_on(redis.port);
    let mut n = 0;
    wait_until("rates are shared again", WITHIN, || {
        n += 1;
        submit(
            &relay,
            "app@sender.test",
            &[&format!("back{n}@dest.test")],
            "Subject: back\r\n\r\n",
        );
        std::thread::sleep(Duration::from_millis(300));
        sample(&scrape(metrics), "relayq_cluster_redis_up") == Some(1.0)
    });
}

/// A Redis that accepts connections and never answers (a hung server, a
/// black hole behind a load balancer): mail flows at the local rate, no
/// delivery waits on it, and the relay tries one connection at a time.
#[test]
fn a_redis_that_never_answers_leaves_mail_at_the_local_rate() {
    let hung = SilentServer::start("127.0.0.1:0");
    let (port, servers) = start_mx(vec![("127.0.27.2", Script::default())]);
    let zone = zone_with_sender_mx("127.0.27.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.27.2");
    let dns = TestDns::start(zone);
    let url = format!("redis://127.0.0.1:{}/0", hung.port());
    let relay = TestRelay::start(&config_with_redis(&dns, port, &url, "10/s"));
    let count = 12;
    submit_many(&relay, "u", count);
    expect_messages(&relay, &servers[0], count, WITHIN);

    let mut starts = servers[0].mail_times();
    starts.sort();
    if let Some((starts, seconds)) = rate_violation(&starts, 10.0, Duration::from_millis(50)) {
        panic!("{starts} transactions started within {seconds:.3}s at a local rate of 10/s");
    }
    let span = *starts.last().unwrap() - starts[0];
    eprintln!("{count} starts at a local rate of 10/s took {span:?} with Redis hung");
    let scraped = scrape(metrics_address(&relay));
    assert_eq!(
        sample(&scraped, "relayq_cluster_redis_up"),
        Some(0.0),
        "{scraped}"
    );
    assert!(hung.accepted() >= 1, "the relay tried the hung Redis");
    // One for the destination rates and one for the suppression list's
    // stream (which shares `[cluster] redis_url`), not one per delivery.
    assert!(
        hung.most_open() <= 2,
        "one connection attempt at a time per user of Redis, not one per delivery: {}",
        hung.most_open()
    );
    let warnings = relay.log_lines("Redis unreachable");
    assert_eq!(warnings.len(), 1, "one warning a minute: {warnings:?}");
}

/// The fleet's next start is kept in the Redis server's clock. When that
/// clock steps back (an NTP correction), the stored start lies far ahead:
/// it counts as one interval from now, not as an hour's wait.
#[test]
fn a_redis_clock_that_stepped_back_holds_starts_one_interval_at_most() {
    let redis = RedisServer::start();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let an_hour_ahead = (now_us + 3_600_000_000).to_string();
    assert_eq!(
        redis.command(&["SET", "relayq:rate:shared", &an_hour_ahead, "PX", "3600000"]),
        "+OK"
    );
    let (port, servers) = start_mx(vec![("127.0.27.3", Script::default())]);
    let zone = zone_with_sender_mx("127.0.27.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.27.3");
    let dns = TestDns::start(zone);
    let relay = TestRelay::start(&relay_config(&dns, port, &redis));
    let count = 4;
    submit_many(&relay, "u", count);
    expect_messages(&relay, &servers[0], count, WITHIN);
    let mut starts = servers[0].mail_times();
    starts.sort();
    if let Some((starts, seconds)) = rate_violation(&starts, 4.0, Duration::from_millis(50)) {
        panic!("{starts} transactions started within {seconds:.3}s at a rate of 4/s");
    }
    let scraped = scrape(metrics_address(&relay));
    assert_eq!(
        sample(&scraped, "relayq_cluster_redis_up"),
        Some(1.0),
        "{scraped}"
    );
}

/// A Redis that answered and then hangs (frozen: its connections stay
/// open, nothing is answered): the starts asking at that moment give up
/// after a short timeout, the others go by the local rate at once, and
/// mail keeps the local rate.
#[test]
fn a_redis_that_stops_answering_leaves_mail_at_the_local_rate() {
    let redis = RedisServer::start();
    let (port, servers) = start_mx(vec![("127.0.27.4", Script::default())]);
    let zone = zone_with_sender_mx("127.0.27.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.27.4");
    let dns = TestDns::start(zone);
    let relay = TestRelay::start(&config_with_redis(&dns, port, &redis.url(), "10/s"));
    let metrics = metrics_address(&relay);
    submit_many(&relay, "first", 1);
    expect_messages(&relay, &servers[0], 1, WITHIN);
    assert_eq!(
        sample(&scrape(metrics), "relayq_cluster_redis_up"),
        Some(1.0)
    );

    redis.freeze();
    let count = 12;
    submit_many(&relay, "u", count);
    expect_messages(&relay, &servers[0], count + 1, WITHIN);
    let mut starts = servers[0].mail_times();
    starts.sort();
    if let Some((starts, seconds)) = rate_violation(&starts[1..], 10.0, Duration::from_millis(50)) {
        panic!("{starts} transactions started within {seconds:.3}s at a local rate of 10/s");
    }
    let span = *starts.last().unwrap() - starts[1];
    eprintln!("{count} starts at a local rate of 10/s took {span:?} with Redis frozen");
    let scraped = scrape(metrics);
    assert_eq!(
        sample(&scraped, "relayq_cluster_redis_up"),
        Some(0.0),
        "{scraped}"
    );
    let warnings = relay.log_lines("Redis unreachable");
    assert_eq!(warnings.len(), 1, "one warning a minute: {warnings:?}");
}
