//! Lane isolation: bulk mail stuck at a server that never
//! answers cannot delay transactional mail, and within one lane a slow
//! domain at its cap does not hold the slots other domains need.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;

/// "Promptly": far below the 60 s the stuck deliveries wait.
const PROMPTLY: Duration = Duration::from_secs(10);

fn setup(delivery: &str, lanes: &str) -> (TestRelay, Vec<common::fake_mx::FakeMx>, TestDns) {
    let stuck = Script {
        never_answer_data: true,
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.23.1", stuck),
        ("127.0.23.2", Script::default()),
    ]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.23.9")
            .mx("slow.test", 10, "mx.slow.test")
            .a("mx.slow.test", "127.0.23.1")
            .mx("fast.test", 10, "mx.fast.test")
            .a("mx.fast.test", "127.0.23.2"),
    );
    let settings = config(&dns, port, delivery, lanes)
        .replace("data_timeout = \"5s\"", "data_timeout = \"60s\"")
        .replace("final_timeout = \"5s\"", "final_timeout = \"60s\"");
    (TestRelay::start(&settings), servers, dns)
}

fn wait_for_sessions(server: &common::fake_mx::FakeMx, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.active_sessions() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.active_sessions() >= n,
        "only {} stuck sessions",
        server.active_sessions()
    );
}

#[test]
fn a_saturated_low_lane_does_not_delay_the_high_lane() {
    let (relay, servers, _dns) = setup(
        "",
        "[lanes.low]\nconcurrency = 2\n[lanes.high]\nconcurrency = 4\n",
    );
    for n in 0..3 {
        submit(
            &relay,
            "news@sender.test",
            &[&format!("reader{n}@slow.test")],
            "Precedence: bulk\r\nSubject: newsletter\r\n\r\n",
        );
    }
    wait_for_sessions(&servers[0], 2);
    let started = Instant::now();
    submit(
        &relay,
        "app@sender.test",
        &["user@fast.test"],
        "Subject: password reset\r\n\r\n",
    );
    let received = expect_messages(&relay, &servers[1], 1, PROMPTLY);
    assert!(String::from_utf8_lossy(&received[0].data).contains("password reset"));
    eprintln!(
        "high-lane message delivered {:?} after submission",
        started.elapsed()
    );
    assert_eq!(
        servers[0].max_concurrent_sessions(),
        2,
        "the low lane's two slots are all it used"
    );
}

#[test]
fn a_slow_domain_at_its_cap_does_not_delay_a_fast_domain_in_the_same_lane() {
    let (relay, servers, _dns) = setup(
        "destination_concurrency = 2",
        "[lanes.high]\nconcurrency = 4\n",
    );
    for n in 0..6 {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("user{n}@slow.test")],
            "Subject: to the slow domain\r\n\r\n",
        );
    }
    wait_for_sessions(&servers[0], 2);
    submit(
        &relay,
        "app@sender.test",
        &["user@fast.test"],
        "Subject: to the fast domain\r\n\r\n",
    );
    expect_messages(&relay, &servers[1], 1, PROMPTLY);
    assert!(
        servers[0].max_concurrent_sessions() <= 2,
        "slow domain kept at its cap"
    );
}
