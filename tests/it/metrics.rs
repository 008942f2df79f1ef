//! The metrics endpoint as a scraper sees it: queue gauges that match the
//! queue exactly, counters for accepted mail and recipient outcomes, the
//! active-connection gauge, histograms, `/healthz` and 404s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{config, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{FakeMx, Script};

const WITHIN: Duration = Duration::from_secs(15);
const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

fn zone() -> common::dns_server::Zone {
    zone_with_sender_mx("127.0.21.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.21.1")
}

/// The endpoint's address, from the "metrics on ADDR" log line.
fn metrics_address(relay: &TestRelay) -> SocketAddr {
    let line = relay.wait_for_log("metrics on ");
    let rest = line.split("metrics on ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

fn get(address: SocketAddr, path: &str) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn scrape(address: SocketAddr) -> String {
    let response = get(address, "/metrics");
    assert_eq!(response.status, 200, "{}", response.head);
    response.body
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("sample value"))
}

/// Scrapes until `series` has `expected`, failing with the last scrape.
fn wait_for_value(address: SocketAddr, series: &str, expected: f64) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = scrape(address);
        if value(&text, series) == Some(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {expected}; last scrape:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A relay whose MX answers 451 to every RCPT, retrying an hour apart (so
/// every message stays deferred while scraped), with its metrics address.
/// The MX and DNS servers run as long as the returned pair is kept.
fn deferring_relay() -> (TestRelay, SocketAddr, (Vec<FakeMx>, TestDns)) {
    let deferring = Script {
        rcpt_reply: Arc::new(|_| "451 4.7.1 try again later".to_owned()),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.21.1", deferring)]);
    let dns = TestDns::start(zone());
    let relay_config = config(&dns, port, "", METRICS)
        .replace("initial = \"1s\"", "initial = \"1h\"")
        .replace("max = \"1s\"", "max = \"1h\"");
    let relay = TestRelay::start(&relay_config);
    let address = metrics_address(&relay);
    (relay, address, (servers, dns))
}

#[test]
fn deferred_messages_are_counted_exactly() {
    let (relay, address, _servers) = deferring_relay();
    const N: usize = 3;
    for n in 0..N {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("user{n}@dest.test")],
            "Subject: later\r\n\r\n",
        );
    }
    let text = wait_for_value(
        address,
        "relayq_queue_messages{lane=\"high\",state=\"deferred\"}",
        N as f64,
    );
    for state in ["ready", "active", "held"] {
        let series = format!("relayq_queue_messages{{lane=\"high\",state=\"{state}\"}}");
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
    for state in ["ready", "active", "deferred", "held"] {
        let series = format!("relayq_queue_messages{{lane=\"low\",state=\"{state}\"}}");
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
    let accepted = "relayq_messages_accepted_total{lane=\"high\"}";
    assert_eq!(value(&text, accepted), Some(N as f64));
    let deferred = "relayq_recipients_total{lane=\"high\",outcome=\"deferred\"}";
    assert_eq!(value(&text, deferred), Some(N as f64));
    let age = value(&text, "relayq_queue_oldest_age_seconds{lane=\"high\"}").unwrap();
    assert!(age > 0.0 && age < 60.0, "oldest age {age}");
    let low_age = "relayq_queue_oldest_age_seconds{lane=\"low\"}";
    assert_eq!(value(&text, low_age), Some(0.0));
    // Not final: no delivery time yet.
    let delivery_count = "relayq_delivery_seconds_count{lane=\"high\"}";
    assert_eq!(value(&text, delivery_count), Some(0.0));
}

#[test]
fn delivered_and_bounced_recipients_are_counted() {
    let picky = Script {
        rcpt_reply: Arc::new(|address: &str| match address.split('@').next() {
            Some("bad") => "550 5.1.1 no such user".to_owned(),
            _ => "250 2.1.5 Ok".to_owned(),
        }),
        ..Script::default()
    };
    let (port, _servers) = start_mx(vec![("127.0.21.1", picky)]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", METRICS));
    let address = metrics_address(&relay);
    // From <>: no bounce message, so the counts are exactly these recipients.
    let id = submit(
        &relay,
        "",
        &["one@dest.test", "two@dest.test", "bad@dest.test"],
        "Subject: mixed\r\n\r\n",
    );
    relay.wait_for_log(&format!("{id}: removed"));
    let text = wait_for_value(
        address,
        "relayq_recipients_total{lane=\"high\",outcome=\"delivered\"}",
        2.0,
    );
    let bounced = "relayq_recipients_total{lane=\"high\",outcome=\"bounced\"}";
    assert_eq!(value(&text, bounced), Some(1.0));
    let deferred = "relayq_recipients_total{lane=\"high\",outcome=\"deferred\"}";
    assert_eq!(value(&text, deferred), Some(0.0));
    let queued: f64 = text
        .lines()
        .filter(|line| line.starts_with("relayq_queue_messages{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(queued, 0.0, "the message left the queue");

    // Every final recipient observed its time from acceptance.
    let count = "relayq_delivery_seconds_count{lane=\"high\"}";
    assert_eq!(value(&text, count), Some(3.0));
    let inf = "relayq_delivery_seconds_bucket{lane=\"high\",le=\"+Inf\"}";
    assert_eq!(value(&text, inf), Some(3.0));
    let sum = value(&text, "relayq_delivery_seconds_sum{lane=\"high\"}").unwrap();
    assert!(sum > 0.0 && sum < 60.0, "sum {sum}");
}

#[test]
fn connections_commits_and_endpoints() {
    let relay = TestRelay::start(METRICS);
    let address = metrics_address(&relay);

    let health = get(address, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(address, "/nope").status, 404);
    let metrics = get(address, "/metrics");
    assert!(
        metrics
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        metrics.head
    );
    assert_eq!(
        value(&metrics.body, "relayq_smtp_connections_active"),
        Some(0.0)
    );
    assert!(metrics.body.contains("relayq_build_info{version=\""));

    let mut client = relay.client();
    client.greet();
    wait_for_value(address, "relayq_smtp_connections_active", 1.0);
    let reply = client.send_message(
        "app@example.com",
        &["someone@example.net"],
        b"Subject: one\r\n\r\n",
    );
    common::queued_id(&reply);
    client.command("QUIT");
    drop(client);
    let text = wait_for_value(address, "relayq_smtp_connections_active", 0.0);

    let accepted = "relayq_messages_accepted_total{lane=\"high\"}";
    assert_eq!(value(&text, accepted), Some(1.0));
    for histogram in [
        "relayq_spool_commit_seconds",
        "relayq_spool_commit_batch_size",
    ] {
        assert_eq!(value(&text, &format!("{histogram}_count")), Some(1.0));
        let inf = format!("{histogram}_bucket{{le=\"+Inf\"}}");
        assert_eq!(value(&text, &inf), Some(1.0), "{inf}");
        assert!(value(&text, &format!("{histogram}_sum")).unwrap() > 0.0);
    }
    let one_per_commit = "relayq_spool_commit_batch_size_bucket{le=\"1\"}";
    assert_eq!(value(&text, one_per_commit), Some(1.0));
}

#[test]
fn metrics_bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("relayq.toml");
    std::fs::write(
        &config_path,
        format!(
            "[spool]\npath = \"{}\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
             [dns]\nnameservers = [\"127.0.0.1:9\"]\n[metrics]\nlisten = \"{address}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run relayq");
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("relayq kept running with its metrics address taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("metrics on {address}")),
        "{stderr}"
    );
}

#[test]
fn an_operators_bounce_is_counted_as_a_bounced_recipient() {
    let (relay, address, _servers) = deferring_relay();
    let id = submit(
        &relay,
        "app@sender.test",
        &["one@dest.test", "two@dest.test"],
        "Subject: given up\r\n\r\n",
    );
    wait_for_value(
        address,
        "relayq_recipients_total{lane=\"high\",outcome=\"deferred\"}",
        2.0,
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(["queue", "bounce", &id, "--config"])
        .arg(&relay.config_path)
        .output()
        .expect("run relayq queue bounce");
    assert!(output.status.success(), "{output:?}");
    let text = wait_for_value(
        address,
        "relayq_recipients_total{lane=\"high\",outcome=\"bounced\"}",
        2.0,
    );
    let finished = "relayq_delivery_seconds_count{lane=\"high\"}";
    assert_eq!(
        value(&text, finished),
        Some(2.0),
        "bounced recipients are final"
    );
}
