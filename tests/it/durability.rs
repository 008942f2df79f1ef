//! Invariant 1 and 2 under SIGKILL: every message that got a 250 survives a
//! crash at any moment, and nothing half-written is visible after restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{SmtpClient, TestRelay};
use relayq_spool::QueueId;

const SESSIONS: usize = 12;
/// Bounds: the test kills the relay after this many acknowledgements or
/// this long, whichever comes first.
const KILL_AFTER_ACKS: usize = 600;
const KILL_AFTER: Duration = Duration::from_secs(8);

/// Message `seq` of session `session`; every 25th is large enough to be
/// spooled in its own file.
fn content(session: usize, seq: usize) -> Vec<u8> {
    let filler_lines = if seq % 25 == 7 { 3000 } else { 20 };
    let mut text = format!("Subject: s{session} m{seq}\r\nX-Test: {session}-{seq}\r\n\r\n");
    for line in 0..filler_lines {
        text.push_str(&format!(
            "line {line} of message {session}-{seq} ........................\r\n"
        ));
    }
    text.push_str(&format!("END {session}-{seq}\r\n"));
    text.into_bytes()
}

#[test]
fn acknowledged_mail_survives_sigkill() {
    let mut relay = TestRelay::start("");
    let acknowledged: Arc<Mutex<Vec<(QueueId, usize, usize)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let address = relay.address;
    let workers: Vec<_> = (0..SESSIONS)
        .map(|session| {
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = SmtpClient::connect(address);
                client.greet();
                for seq in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(id) = try_send(&mut client, &content(session, seq)) else {
                        return; // The relay was killed under us.
                    };
                    acknowledged.lock().unwrap().push((id, session, seq));
                }
            })
        })
        .collect();

    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < KILL_AFTER_ACKS && started.elapsed() < KILL_AFTER {
        std::thread::sleep(Duration::from_millis(5));
    }
    relay.kill();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 50,
        "too few messages before the kill: {}",
        acknowledged.len()
    );

    // Restart: recovery must see every acknowledged message.
    relay.launch();
    let recovered = relay.wait_for_log("messages queued");
    relay.stop();
    let messages = relay.spooled_messages();
    assert!(
        recovered.contains(&format!("{} messages queued", messages.len())),
        "{recovered}"
    );

    let stored: BTreeSet<QueueId> = messages.iter().map(|m| m.id).collect();
    for (id, session, seq) in &acknowledged {
        assert!(
            stored.contains(id),
            "acknowledged {id} (session {session} message {seq}) was lost"
        );
    }
    for message in &messages {
        let body = &message.body;
        assert_eq!(
            body.len() as u64,
            message.envelope.size,
            "{}: size mismatch",
            message.id
        );
        assert!(
            body.starts_with(b"Received: "),
            "{}: trace header missing",
            message.id
        );
        let text = String::from_utf8_lossy(body);
        let marker = text
            .split("X-Test: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .unwrap();
        assert!(
            text.ends_with(&format!("END {marker}\r\n")),
            "{}: body truncated",
            message.id
        );
    }
    eprintln!(
        "{} acknowledged, {} in spool after SIGKILL and restart",
        acknowledged.len(),
        messages.len()
    );
}

/// One transaction; `None` if the connection broke (the relay died).
fn try_send(client: &mut SmtpClient, content: &[u8]) -> Option<QueueId> {
    for command in [
        "MAIL FROM:<app@example.com>",
        "RCPT TO:<user@example.org>",
        "DATA",
    ] {
        client.send_raw(format!("{command}\r\n").as_bytes());
        let reply = client.try_read()?;
        assert!(
            reply.code == 250 || reply.code == 354,
            "{command}: {reply:?}"
        );
    }
    let mut wire = common::dot_stuff(content);
    wire.extend_from_slice(b".\r\n");
    if std::io::Write::write_all(client.writer(), &wire).is_err() {
        return None;
    }
    let reply = client.try_read()?;
    assert_eq!(reply.code, 250, "{reply:?}");
    Some(common::queued_id(&reply))
}

/// A spool that has been idle for a moment has recorded redb's allocator
/// state: killed then, it opens without the full repair (which walks the
/// whole file, seconds for a large queue, before the first `250`).
#[test]
fn an_idle_spool_killed_opens_without_a_repair() {
    let mut relay = TestRelay::start_with_env("", &[("RUST_LOG", "info,relayq_spool=debug")]);
    let mut client = SmtpClient::connect(relay.address);
    client.greet();
    let reply = client.send_message(
        "app@example.com",
        &["user@example.org"],
        b"Subject: idle\r\n\r\nthen killed\r\n",
    );
    let id = common::queued_id(&reply);
    assert_eq!(client.command("QUIT").code, 221);
    relay.wait_for_log("spool checkpoint written");

    relay.kill();
    relay.launch();
    relay.stop();
    let logs = relay.logs_text();
    assert!(!logs.contains("not closed cleanly"), "{logs}");
    let stored: Vec<QueueId> = relay.spooled_messages().iter().map(|m| m.id).collect();
    assert!(stored.contains(&id), "the deferred message is kept: {logs}");
}
