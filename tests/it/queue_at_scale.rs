//! Operating a large queue: `queue list` streams (limit, filters in the
//! daemon, a reader that goes away stops the daemon's work), `queue stats`
//! agrees with the list, and bulk operations run in chunks that a shutdown
//! stops cleanly, with one DSN per bounced message. A few thousand messages
//! and a small `control.bulk_chunk` stand in for a million.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{TestRelay, WAIT, queue, queue_json as json, queue_ok as ok, queued_id};

/// The relay's mail is deferred (the test DNS answers SERVFAIL) and waits a
/// day before its next attempt; bulk operations commit `chunk` per commit.
fn relay(chunk: usize) -> TestRelay {
    TestRelay::start(&format!(
        "[retry]\ninitial = \"1d\"\nmax = \"1d\"\n[control]\nbulk_chunk = {chunk}\n"
    ))
}

/// Submits `count` messages over four connections: message `i` goes to
/// `domain(i)`, in the low lane (MT-PRIORITY=-1) when `low(i)`.
fn fill(
    relay: &TestRelay,
    count: usize,
    domain: fn(usize) -> &'static str,
    low: fn(usize) -> bool,
) {
    let sessions = 4;
    std::thread::scope(|scope| {
        for session in 0..sessions {
            scope.spawn(move || {
                let mut client = relay.client();
                client.greet();
                for i in (session..count).step_by(sessions) {
                    let priority = if low(i) { " MT-PRIORITY=-1" } else { "" };
                    let reply = client.command(&format!("MAIL FROM:<app@sender.test>{priority}"));
                    assert_eq!(reply.code, 250, "{reply:?}");
                    let reply = client.command(&format!("RCPT TO:<user{i}@{}>", domain(i)));
                    assert_eq!(reply.code, 250, "{reply:?}");
                    assert_eq!(client.command("DATA").code, 354);
                    client.send_raw(format!("Subject: {i}\r\n\r\nmessage {i}\r\n.\r\n").as_bytes());
                    queued_id(&client.read());
                }
            });
        }
    });
}

fn listed(relay: &TestRelay, filters: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["list"];
    args.extend_from_slice(filters);
    json(relay, &args).as_array().expect("an array").clone()
}

/// Waits until every one of `count` messages had its first (deferred)
/// attempt, so states no longer change under the test.
fn wait_deferred(relay: &TestRelay, count: u64) {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let stats = json(relay, &["stats"]);
        let deferred: u64 = stats["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|lane| lane["deferred"].as_u64().unwrap())
            .sum();
        if deferred == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {deferred} of {count} deferred: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn domain_ab(i: usize) -> &'static str {
    if i.is_multiple_of(3) {
        "b.test"
    } else {
        "a.test"
    }
}

fn every_fourth_low(i: usize) -> bool {
    i.is_multiple_of(4)
}

#[test]
fn list_streams_filters_in_the_daemon_and_agrees_with_stats() {
    let relay = relay(2000);
    let total = 1500;
    fill(&relay, total, domain_ab, every_fourth_low);
    wait_deferred(&relay, total as u64);

    let all = listed(&relay, &[]);
    assert_eq!(all.len(), total);
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "in queue id order"
    );

    let first_ten = listed(&relay, &["--limit", "10"]);
    assert_eq!(first_ten.len(), 10);
    assert_eq!(first_ten[..], all[..10]);

    let at_b = listed(&relay, &["--domain", "B.test"]);
    assert_eq!(at_b.len(), total / 3);
    assert!(at_b.iter().all(|m| {
        m["recipients"][0]["address"]
            .as_str()
            .unwrap()
            .ends_with("@b.test")
    }));
    let low = listed(&relay, &["--lane", "low", "--state", "deferred"]);
    assert_eq!(low.len(), total / 4);
    assert!(low.iter().all(|m| m["lane"] == "low"));
    assert!(listed(&relay, &["--older-than", "1h"]).is_empty());
    assert!(listed(&relay, &["--state", "held"]).is_empty());

    // The text form streams too, and ends with mailq's summary line.
    let text = ok(&relay, &["list", "--domain", "b.test"]);
    assert!(text.starts_with("-Queue ID-"), "{text}");
    assert!(
        text.trim_end()
            .ends_with(&format!("in {} Requests.", total / 3)),
        "{text}"
    );

    // Stats count what the list shows.
    let stats = json(&relay, &["stats"]);
    assert_eq!(stats["total"], total);
    let mut by_lane = BTreeMap::new();
    for message in &all {
        *by_lane
            .entry(message["lane"].as_str().unwrap().to_owned())
            .or_insert(0u64) += 1;
    }
    for lane in stats["lanes"].as_array().unwrap() {
        let name = lane["lane"].as_str().unwrap();
        assert_eq!(
            lane["deferred"].as_u64().unwrap(),
            by_lane.get(name).copied().unwrap_or(0),
            "{name}"
        );
    }
    let destinations: BTreeMap<String, u64> = stats["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["domain"].as_str().unwrap().to_owned(),
                d["total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(destinations["a.test"], (total - total / 3) as u64);
    assert_eq!(destinations["b.test"], (total / 3) as u64);

    // Bad filters are refused with a usage error, not a panic.
    let output = queue(&relay, &["list", "--lane", "middle"]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
}

#[test]
fn a_reader_that_goes_away_stops_the_list() {
    let relay = relay(2000);
    let total = 2000;
    fill(&relay, total, domain_ab, |_| false);
    wait_deferred(&relay, total as u64);

    let mut list = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(["queue", "list", "--json", "--config"])
        .arg(&relay.config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn list");
    // Like `relayq queue list | head -1`: one line, then the pipe closes.
    let mut stdout = BufReader::new(list.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("[{\"id\""), "{first}");
    drop(stdout);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = list.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "list did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "a closed stdout is not an error: {status}"
    );
    let line = relay.wait_for_log("queue list: the client went away after");
    let sent: usize = line
        .split("went away after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count in the log line");
    assert!(
        sent < total,
        "the daemon stopped early ({sent} of {total}): {line}"
    );
}

/// Sends a bulk operation straight to the control socket and returns the
/// lines of its answer as they arrive.
fn bulk_lines(
    relay: &TestRelay,
    operation: &str,
    body: &str,
) -> impl Iterator<Item = serde_json::Value> {
    let socket = relay.spool_path().join("control.sock");
    let mut stream = UnixStream::connect(&socket).expect("control socket");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "POST /queue/{operation}?progress=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("chunked"), "{head}");
    // Chunked framing: size line, data, CRLF. Lines of JSON inside.
    let mut pending = Vec::new();
    std::iter::from_fn(move || {
        loop {
            if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            let mut size = String::new();
            if reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut data = vec![0; size + 2];
            reader.read_exact(&mut data).ok()?;
            data.truncate(size);
            pending.extend_from_slice(&data);
        }
    })
}

#[test]
fn bulk_operations_run_in_chunks_and_stop_cleanly_at_shutdown() {
    let mut relay = relay(20);
    let total = 3000;
    fill(&relay, total, domain_ab, every_fourth_low);
    wait_deferred(&relay, total as u64);

    // Several chunks, counted.
    let report = json(&relay, &["hold", "--domain", "b.test"]);
    assert_eq!(report["counts"]["done"], total / 3);
    assert_eq!(report["done"], serde_json::json!([]), "ids only when asked");
    let report = json(
        &relay,
        &["release", "--all", "--lane", "low", "--ids-in-report"],
    );
    let released = report["done"].as_array().unwrap().len();
    assert_eq!(report["counts"]["done"], released);
    assert!(released > 0 && released < total / 3);
    let held = listed(&relay, &["--state", "held"]);
    assert_eq!(held.len(), total / 3 - released);
    assert!(held.iter().all(|m| m["lane"] == "high"));

    // A delete stopped by SIGTERM after its first chunk.
    let mut lines = bulk_lines(&relay, "delete", r#"{"all": true}"#);
    let first = lines.next().expect("a progress line");
    assert!(first["progress"]["done"].as_u64().unwrap() >= 20, "{first}");
    let pid = relay.pid();
    let stopping = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let report = lines
        .find(|line| line.get("progress").is_none())
        .expect("the report");
    assert_eq!(report["interrupted"], true, "{report}");
    drop(lines);
    let deleted = report["counts"]["done"].as_u64().unwrap() as usize;
    assert!(deleted < total, "stopped before the end: {report}");
    assert_eq!(deleted % 20, 0, "whole chunks only: {report}");
    relay.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        stopping.elapsed()
    );
    let logs = relay.logs_text();
    assert!(logs.contains("bulk Delete stopped by shutdown"), "{logs}");
    assert!(
        !logs.contains("ERROR"),
        "no error per untouched message:\n{logs}"
    );

    // Exactly the committed chunks are gone; the rest is there as it was.
    let spooled = relay.spooled_messages();
    assert_eq!(spooled.len(), total - deleted);
    relay.launch();
    let remaining = listed(&relay, &[]);
    assert_eq!(remaining.len(), total - deleted);
    let still_held = remaining.iter().filter(|m| m["state"] == "held").count();
    assert!(still_held <= total / 3 - released);
}

#[test]
fn a_bulk_bounce_sends_one_dsn_per_message_even_when_interrupted() {
    let mut relay = relay(25);
    let total = 1200;
    fill(&relay, total, domain_ab, |_| false);
    wait_deferred(&relay, total as u64);

    // Interrupted after its first chunk.
    let mut lines = bulk_lines(&relay, "bounce", r#"{"domain": "a.test"}"#);
    lines.next().expect("a progress line");
    Command::new("kill")
        .arg("-TERM")
        .arg(relay.pid().to_string())
        .status()
        .unwrap();
    let report = lines
        .find(|line| line.get("progress").is_none())
        .expect("the report");
    drop(lines);
    let first_run = report["counts"]["done"].as_u64().unwrap() as usize;
    relay.stop();
    relay.launch();

    // Then to the end: the DSNs queued by the first run are not bounced again.
    let report = json(&relay, &["bounce", "--domain", "a.test"]);
    let second_run = report["counts"]["done"].as_u64().unwrap() as usize;
    assert_eq!(first_run + second_run, total - total / 3, "{report}");

    let messages = listed(&relay, &[]);
    let reports: Vec<&serde_json::Value> = messages.iter().filter(|m| m["sender"] == "").collect();
    let originals: Vec<&serde_json::Value> =
        messages.iter().filter(|m| m["sender"] != "").collect();
    assert_eq!(
        reports.len(),
        total - total / 3,
        "one DSN per bounced message"
    );
    assert_eq!(originals.len(), total / 3);
    assert!(originals.iter().all(|m| {
        m["recipients"][0]["address"]
            .as_str()
            .unwrap()
            .ends_with("@b.test")
    }));
    assert!(
        reports
            .iter()
            .all(|m| m["recipients"][0]["address"] == "app@sender.test")
    );
}
