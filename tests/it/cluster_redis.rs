//! Fleet-wide rates: two relays naming the same Redis and destination share
//! its rate; when Redis stops, mail still flows at each relay's local rate,
//! `relayq_cluster_redis_up` shows 0, and sharing resumes when it returns.

use std::time::Duration;

use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::Script;
use crate::common::shaping::{
    RedisServer, metrics_address, rate_violation, sample, scrape, wait_until,
};

const WITHIN: Duration = Duration::from_secs(40);

fn zone() -> Zone {
    zone_with_sender_mx("127.0.27.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.27.1")
}

fn relay_config(dns: &TestDns, port: u16, redis: &RedisServer) -> String {
    config(
        dns,
        port,
        "",
        &format!(
            "[[destination]]\nname = \"shared\"\nmatch = [\"dest.test\"]\nrate = \"4/s\"\n\
             [cluster]\nredis_url = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            redis.url()
        ),
    )
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
