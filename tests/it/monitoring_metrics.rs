//! The shipped monitoring (conf/prometheus/relayq-alerts.yml,
//! conf/grafana/relayq.json) names only metrics that relayq's `/metrics`
//! serves: after some traffic (a fake MX that takes one recipient and
//! refuses another), every `relayq_*` name in the two files has a sample.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::TestRelay;
use crate::common::delivery::{config, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::webhook_receiver::Receiver;

const ALERT_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/conf/prometheus/relayq-alerts.yml"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/grafana/relayq.json");

const WITHIN: Duration = Duration::from_secs(20);

/// Every `relayq_…` metric name in `text` (PromQL, JSON strings, comments).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("relayq_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let preceded_by_word = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !preceded_by_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The names that have at least one sample in a scrape.
fn sampled_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("sample value"))
}

#[test]
fn the_files_name_metrics_with_their_labels_that_a_scrape_serves() {
    let rules = std::fs::read_to_string(ALERT_RULES).unwrap();
    let dashboard = std::fs::read_to_string(DASHBOARD).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let mut used = metric_names(&rules);
    used.extend(metric_names(&dashboard));
    assert!(used.len() >= 20, "names found: {used:?}");

    // One recipient delivered, one refused with 550 (a bounce to the
    // sender, whose MX takes it), for a destination with a rule so its
    // shaping gauges are served.
    let recipients = Script {
        rcpt_reply: Arc::new(|address| {
            if address.starts_with("gone@") {
                "550 5.1.1 no such user".to_owned()
            } else {
                "250 2.1.5 ok".to_owned()
            }
        }),
        ..Script::default()
    };
    let (port, _servers) = start_mx(vec![
        ("127.0.43.1", recipients),
        ("127.0.43.9", Script::default()),
    ]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.43.9")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.43.1"),
    );
    // A webhook, so its series are served too.
    let receiver = Receiver::start();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "monitoring\n").unwrap();
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [[destination]]\nname = \"dest\"\nmatch = [\"dest.test\"]\nconcurrency = 4\n\
             [[webhook]]\nname = \"app\"\nurl = \"{}\"\nsecret_file = \"{}\"\n",
            receiver.url(),
            secret.path().display()
        ),
    ));
    let line = relay.wait_for_log("metrics on ");
    let address: SocketAddr = line
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .expect("metrics address in the log");
    const MESSAGES: usize = 3;
    for n in 0..MESSAGES {
        submit(
            &relay,
            "app@sender.test",
            &["ok@dest.test", "gone@dest.test"],
            &format!("Subject: monitoring {n}\r\n\r\nhello\r\n"),
        );
    }
    let bounced = "relayq_recipients_total{lane=\"high\",outcome=\"bounced\"}";
    let delivered = "relayq_recipients_total{lane=\"high\",outcome=\"delivered\"}";
    let deadline = Instant::now() + WITHIN;
    let text = loop {
        let text = scrape(address);
        if value(&text, bounced) == Some(MESSAGES as f64)
            && value(&text, delivered).is_some_and(|count| count >= MESSAGES as f64)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no deliveries and bounces yet; last scrape:\n{text}\nrelay log:\n{}",
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let served = sampled_names(&text);
    let missing: Vec<&String> = used
        .iter()
        .filter(|name| !served.contains(*name))
        // A histogram's family name (in a description) is served as its
        // _bucket/_sum/_count samples.
        .filter(|name| !served.contains(&format!("{name}_count")))
        .collect();
    assert!(
        missing.is_empty(),
        "named in the rules or dashboard, not in /metrics: {missing:?}\nscrape:\n{text}"
    );
    // The label values the rules select on exist.
    assert_eq!(value(&text, "relayq_spool_healthy"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "relayq_config_last_reload_successful"),
        Some(1.0),
        "{text}"
    );
    assert!(value(&text, "relayq_spool_free_bytes").is_some_and(|free| free > 0.0));
    assert!(value(&text, "relayq_spool_min_free_bytes").is_some());
    assert!(
        value(&text, "relayq_destination_suspended{destination=\"dest\"}") == Some(0.0),
        "{text}"
    );
}

#[test]
fn metric_names_are_read_as_whole_words() {
    let names = metric_names(
        "expr: rate(relayq_recipients_total{outcome=\"x\"}[5m]) > 0 # relayq's RelayqDown \
         \"expr\": \"relayq_spool_healthy == 0\" not-relayq_thing",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["relayq_recipients_total", "relayq_spool_healthy"]
    );
}
