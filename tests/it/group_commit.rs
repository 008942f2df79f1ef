//! Group commit: concurrent sessions share commits (fewer commits than
//! messages), and a lone session is committed at once, alone.

use crate::common;
use crate::common::{SmtpClient, TestRelay, queued_id};

const SESSIONS: usize = 20;
const MESSAGES_PER_SESSION: usize = 25;

fn batch_of(line: &str) -> usize {
    line.split("batch=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no batch in {line}"))
}

#[test]
fn a_lone_message_is_committed_alone() {
    let relay = TestRelay::start("");
    let mut client = relay.client();
    client.greet();
    let id = queued_id(&client.send_message(
        "a@example.com",
        &["b@example.org"],
        b"Subject: alone\r\n\r\n",
    ));
    let line = relay.wait_for_log(&format!("{id}: accepted"));
    assert_eq!(batch_of(&line), 1, "{line}");
}

#[test]
fn concurrent_sessions_share_commits() {
    let relay = TestRelay::start("");
    let address = relay.address;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(SESSIONS));
    let workers: Vec<_> = (0..SESSIONS)
        .map(|session| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut client = SmtpClient::connect(address);
                client.greet();
                barrier.wait();
                (0..MESSAGES_PER_SESSION)
                    .map(|n| {
                        queued_id(&client.send_message(
                            "a@example.com",
                            &["b@example.org"],
                            format!("Subject: {session}/{n}\r\n\r\n").as_bytes(),
                        ))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<_> = workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap())
        .collect();
    assert_eq!(ids.len(), SESSIONS * MESSAGES_PER_SESSION);
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "queue ids are unique");

    // Every accepted message has its log line; wait for all of them (the
    // log reaches the test through a pipe, after the 250s).
    let deadline = std::time::Instant::now() + common::WAIT;
    while relay.log_lines(": accepted from=").len() < ids.len()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let batches: Vec<usize> = relay
        .log_lines(": accepted from=")
        .iter()
        .map(|line| batch_of(line))
        .collect();
    assert_eq!(batches.len(), ids.len());
    // A batch of n messages shows up in n log lines; so commits = Σ 1/n.
    let commits: f64 = batches.iter().map(|&n| 1.0 / n as f64).sum();
    let largest = batches.iter().max().copied().unwrap_or(0);
    eprintln!(
        "{} messages in {commits:.0} commits, largest batch {largest}",
        ids.len()
    );
    assert!(largest > 1, "no commit was shared");
    assert!(commits < ids.len() as f64, "fewer commits than messages");
}
