//! `relayq queue …` against a running relay whose destination defers every
//! recipient (451): the setup and helpers its submodules share, one
//! submodule per command or behaviour.

mod delete_and_bounce;
mod hold;
mod list;
mod operations_in_flight;
mod retry;
mod show;
mod stats;
mod tail;
mod usage_and_no_daemon;

use std::collections::HashMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::delivery::{start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{FakeMx, Script, Stage};
use crate::common::{TestRelay, WAIT};
use crate::common::{queue, queue_json as json, queue_ok as ok, spawn_tail};

/// A relay whose destination `dest.test` defers every RCPT, and whose
/// senders' domain `sender.test` has an accepting MX (for bounces).
struct Setup {
    relay: TestRelay,
    /// RCPT commands the deferring MX has seen (one per delivery attempt),
    /// per recipient address: a test can tell the attempts of one message
    /// from those of a later one.
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    sender_mx: FakeMx,
    _deferring_mx: FakeMx,
    _dns: TestDns,
}

impl Setup {
    /// Delivery attempts seen for all recipients together.
    fn attempts(&self) -> usize {
        self.attempts.lock().unwrap().values().sum()
    }

    /// Delivery attempts seen for `address`.
    fn attempts_for(&self, address: &str) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(0)
    }
}

fn setup(retry_initial: &str) -> Setup {
    setup_with(retry_initial, "1d", Duration::ZERO)
}

/// `rcpt_delay`: how long the MX waits before its reply to RCPT, so that
/// a delivery pass stays in flight that long.
fn setup_with(retry_initial: &str, max_age: &str, rcpt_delay: Duration) -> Setup {
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let counter = attempts.clone();
    let deferring = Script {
        rcpt_reply: Arc::new(move |address: &str| {
            *counter
                .lock()
                .unwrap()
                .entry(address.to_owned())
                .or_insert(0) += 1;
            "451 4.7.1 try again later".to_owned()
        }),
        delay_before: vec![(Stage::Rcpt, rcpt_delay)],
        ..Script::default()
    };
    let (port, mut servers) = start_mx(vec![
        ("127.0.21.1", deferring),
        ("127.0.21.9", Script::default()),
    ]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.21.9")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.21.1"),
    );
    let relay = TestRelay::start(&format!(
        "[delivery]\nport = {port}\nconnect_timeout = \"2s\"\n\
         [dns]\nnameservers = [\"{}\"]\n\
         [retry]\ninitial = \"{retry_initial}\"\nfactor = 1.0\nmax = \"{retry_initial}\"\nmax_age = \"{max_age}\"\n",
        dns.address
    ));
    let sender_mx = servers.pop().unwrap();
    let deferring_mx = servers.pop().unwrap();
    Setup {
        relay,
        attempts,
        sender_mx,
        _deferring_mx: deferring_mx,
        _dns: dns,
    }
}

fn state_of(relay: &TestRelay, id: &str) -> Option<String> {
    json(relay, &["list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["id"] == id)
        .map(|message| message["state"].as_str().unwrap().to_owned())
}

/// Submits messages from `from` to `to` until `tail` prints a line with the
/// queue id of one of them and `needle`; returns that id. The tail shows
/// only events after its subscription, and nothing announces when that
/// subscription (or, after a restart, the new one) is in place: the first
/// messages may go unseen.
fn submit_until_tail_shows(
    relay: &TestRelay,
    tail: &mut Child,
    lines: &Mutex<Vec<String>>,
    (from, to): (&str, &str),
    needle: &str,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let id = submit(relay, from, &[to], "Subject: probe\r\n\r\n");
        std::thread::sleep(Duration::from_millis(300));
        if lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&id) && line.contains(needle))
        {
            return id;
        }
        assert!(tail.try_wait().unwrap().is_none(), "tail exited");
        assert!(
            Instant::now() < deadline,
            "`relayq queue tail` showed none of the messages submitted within {WAIT:?} \
             (the last was {id}); its output:\n{}",
            lines.lock().unwrap().join("\n")
        );
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

/// Submits a message to `user@dest.test` and waits until its first attempt
/// was deferred.
fn submit_deferred(setup: &Setup) -> String {
    submit_deferred_to(setup, "app@sender.test", "user@dest.test")
}

/// Submits a message from `from` to `to` (a `dest.test` address) and waits
/// until its first attempt was deferred.
fn submit_deferred_to(setup: &Setup, from: &str, to: &str) -> String {
    let before = setup.attempts_for(to);
    let id = submit(
        &setup.relay,
        from,
        &[to],
        "Subject: queued\r\n\r\nhello\r\n",
    );
    wait_until("the first attempt is deferred", || {
        setup.attempts_for(to) > before
            && state_of(&setup.relay, &id).as_deref() == Some("deferred")
    });
    id
}

/// Asserts, once the relay logged that the administrator deleted `id`,
/// that no delivery status notification about it was queued. The line is
/// logged once the deletion is committed; a report the message's last
/// delivery pass queued is logged before it, and none can follow.
fn assert_deleted_without_report(relay: &TestRelay, id: &str) {
    relay.wait_for_log(&format!("{id}: deleted by administrator (no bounce)"));
    let reports = relay.log_lines(&format!("delivery status notification for {id} queued"));
    assert!(reports.is_empty(), "no DSN for {id}: {reports:?}");
}
