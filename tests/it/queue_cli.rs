//! `relayq queue …` against a running relay whose destination defers every
//! recipient (451): list, show, stats, tail, and the operations retry,
//! hold, release, delete and bounce; exit 69 when no daemon runs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::delivery::{start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{FakeMx, Script, Stage};
use crate::common::{TestRelay, WAIT};

/// A relay whose destination `dest.test` defers every RCPT, and whose
/// senders' domain `sender.test` has an accepting MX (for bounces).
struct Setup {
    relay: TestRelay,
    /// RCPT commands the deferring MX has seen (one per delivery attempt).
    attempts: Arc<AtomicUsize>,
    sender_mx: FakeMx,
    _deferring_mx: FakeMx,
    _dns: TestDns,
}

fn setup(retry_initial: &str) -> Setup {
    setup_with(retry_initial, "1d", Duration::ZERO)
}

/// `rcpt_delay`: how long the MX waits before its reply to RCPT, so that
/// a delivery pass stays in flight that long.
fn setup_with(retry_initial: &str, max_age: &str, rcpt_delay: Duration) -> Setup {
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    let deferring = Script {
        rcpt_reply: Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
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

fn queue(relay: &TestRelay, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .stdin(Stdio::null())
        .output()
        .expect("run relayq queue")
}

/// Runs a queue command that must succeed; returns its stdout.
fn ok(relay: &TestRelay, args: &[&str]) -> String {
    let output = queue(relay, args);
    assert!(
        output.status.success(),
        "relayq queue {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn json(relay: &TestRelay, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(relay, &args)).expect("JSON output")
}

fn state_of(relay: &TestRelay, id: &str) -> Option<String> {
    json(relay, &["list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["id"] == id)
        .map(|message| message["state"].as_str().unwrap().to_owned())
}

/// `relayq queue tail ARGS`, its output lines collected as they come.
fn spawn_tail(relay: &TestRelay, args: &[&str]) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut tail = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(["queue", "tail"])
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let collected = lines.clone();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    (tail, lines)
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

fn submit_deferred(setup: &Setup) -> String {
    let before = setup.attempts.load(Ordering::SeqCst);
    let id = submit(
        &setup.relay,
        "app@sender.test",
        &["user@dest.test"],
        "Subject: queued\r\n\r\nhello\r\n",
    );
    wait_until("the first attempt is deferred", || {
        setup.attempts.load(Ordering::SeqCst) > before
            && state_of(&setup.relay, &id).as_deref() == Some("deferred")
    });
    id
}

#[test]
fn list_show_stats_and_tail() {
    let setup = setup("1h");
    let relay = &setup.relay;
    assert_eq!(ok(relay, &["list"]), "Mail queue is empty\n");

    let (mut tail, lines) = spawn_tail(relay, &["--json"]);
    // The tail is subscribed once it has seen an event; wait for the
    // subscription with a probe message that is deleted again.
    let probe = loop {
        let probe = submit(
            relay,
            "probe@sender.test",
            &["probe@dest.test"],
            "Subject: probe\r\n\r\n",
        );
        std::thread::sleep(Duration::from_millis(200));
        if lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&probe))
        {
            break probe;
        }
        assert!(tail.try_wait().unwrap().is_none(), "tail exited");
    };

    let id = submit_deferred(&setup);
    wait_until("tail saw the deferral", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&id) && line.contains("\"deferred\""))
    });
    let _ = tail.kill();
    let _ = tail.wait();
    let events: Vec<serde_json::Value> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .filter(|event: &serde_json::Value| event["id"] == id.as_str())
        .collect();
    assert_eq!(events[0]["event"], "accepted", "{events:?}");
    assert_eq!(events[1]["event"], "deferred", "{events:?}");
    assert_eq!(events[1]["recipient"], "user@dest.test");

    let text = ok(
        relay,
        &["list", "--domain", "dest.test", "--state", "deferred"],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    );
    assert!(text.contains(&format!("\n{id} ")), "{text}");
    assert!(text.contains("app@sender.test"), "{text}");
    assert!(text.contains("(451 4.7.1 try again later)"), "{text}");
    assert!(text.contains("user@dest.test"), "{text}");
    assert!(text.ends_with("Requests.\n"), "{text}");

    let listed = json(relay, &["list"]);
    let message = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["id"] == id.as_str())
        .expect("listed");
    assert_eq!(message["lane"], "high");
    assert_eq!(message["state"], "deferred");
    assert_eq!(message["sender"], "app@sender.test");
    assert!(message["arrival"].as_str().unwrap().contains('T'));
    assert!(message["size"].as_u64().unwrap() > 0);
    assert_eq!(message["attempts"], 1);
    assert!(message["next_attempt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(message["recipients"][0]["address"], "user@dest.test");
    assert_eq!(message["recipients"][0]["status"], "deferred");
    assert_eq!(
        message["recipients"][0]["last_reply"],
        "451 4.7.1 try again later"
    );
    assert_eq!(
        json(relay, &["list", "--lane", "low"]),
        serde_json::json!([])
    );
    assert_eq!(
        json(relay, &["list", "--older-than", "1h"]),
        serde_json::json!([])
    );

    let shown = ok(relay, &["show", &id, "--body"]);
    assert!(
        shown.contains("deferred (451 4.7.1 try again later)"),
        "{shown}"
    );
    assert!(shown.contains("Subject: queued"), "{shown}");
    assert!(shown.contains("hello"), "{shown}");
    let detail = json(relay, &["show", &id]);
    assert!(
        detail["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: queued")
    );

    let stats = json(relay, &["stats"]);
    assert_eq!(stats["lanes"][0]["lane"], "high");
    assert!(stats["lanes"][0]["deferred"].as_u64().unwrap() >= 1);
    let destination = &stats["destinations"][0];
    assert_eq!(destination["domain"], "dest.test");
    assert_eq!(destination["buckets"][0], destination["total"]);
    let text = ok(relay, &["stats"]);
    assert!(
        text.contains("deferred") && text.contains("dest.test") && text.contains("1280+"),
        "{text}"
    );

    ok(relay, &["delete", &probe]);
}

#[test]
fn hold_stops_attempts_until_release() {
    let setup = setup("1s");
    let relay = &setup.relay;
    let id = submit_deferred(&setup);
    // With retry.initial = 1s a pass may be in flight: then the hold is
    // left with it and applied when it ends.
    let report = ok(relay, &["hold", &id]);
    assert!(
        report == format!("{id}: held\n")
            || report == format!("{id}: delivery in progress; held when it ends\n"),
        "{report}"
    );
    wait_until("the message is held", || {
        state_of(relay, &id).as_deref() == Some("held")
    });
    assert_eq!(state_of(relay, &id).as_deref(), Some("held"));
    assert!(ok(relay, &["list"]).contains(&format!("{id}!")));
    let held_at = setup.attempts.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        setup.attempts.load(Ordering::SeqCst),
        held_at,
        "no attempt while held (retry.initial = 1s)"
    );
    let skipped = json(relay, &["retry", &id]);
    assert_eq!(skipped["skipped"][0]["id"], id.as_str());

    assert_eq!(ok(relay, &["release", &id]), format!("{id}: released\n"));
    wait_until("the released message is attempted", || {
        setup.attempts.load(Ordering::SeqCst) > held_at
    });
}

#[test]
fn time_on_hold_does_not_count_toward_expiry() {
    let setup = setup_with("1h", "3s", Duration::ZERO);
    let relay = &setup.relay;
    let id = submit_deferred(&setup);
    assert_eq!(ok(relay, &["hold", &id]), format!("{id}: held\n"));
    let held_at = setup.attempts.load(Ordering::SeqCst);
    // Longer than max_age: a message that was not held would expire at its
    // next deferral.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(ok(relay, &["release", &id]), format!("{id}: released\n"));
    wait_until(
        "the released message is attempted and deferred again",
        || {
            setup.attempts.load(Ordering::SeqCst) > held_at
                && state_of(relay, &id).as_deref() == Some("deferred")
        },
    );
    let shown = json(relay, &["show", &id]);
    assert_eq!(shown["recipients"][0]["status"], "deferred", "{shown}");
    assert!(
        setup.sender_mx.messages().is_empty(),
        "no expiry DSN for a message that spent its age on hold"
    );
}

#[test]
fn retry_makes_deferred_mail_go_now() {
    let setup = setup("1h");
    let relay = &setup.relay;
    let id = submit_deferred(&setup);
    let after_first = setup.attempts.load(Ordering::SeqCst);
    let report = json(relay, &["retry", &id]);
    assert_eq!(report["done"], serde_json::json!([id]));
    wait_until("the retried message is attempted", || {
        setup.attempts.load(Ordering::SeqCst) > after_first
    });
    wait_until("deferred again", || {
        state_of(relay, &id).as_deref() == Some("deferred")
    });
    let after_second = setup.attempts.load(Ordering::SeqCst);
    assert!(
        ok(relay, &["retry", "--domain", "dest.test"]).contains(&format!("{id}: retry requested"))
    );
    wait_until("retried by domain", || {
        setup.attempts.load(Ordering::SeqCst) > after_second
    });
    // Unknown ids are reported, not an error.
    let report = json(relay, &["retry", "00000000000001"]);
    assert_eq!(report["not_found"], serde_json::json!(["00000000000001"]));
}

#[test]
fn delete_removes_without_bounce_and_bounce_sends_a_dsn() {
    let setup = setup("1h");
    let relay = &setup.relay;
    let deleted = submit_deferred(&setup);
    let bounced = submit_deferred(&setup);

    assert_eq!(
        ok(relay, &["delete", &deleted]),
        format!("{deleted}: deleted\n")
    );
    assert_eq!(state_of(relay, &deleted), None);
    let missing = queue(relay, &["show", &deleted]);
    assert_eq!(missing.status.code(), Some(64));

    assert_eq!(
        ok(relay, &["bounce", &bounced]),
        format!("{bounced}: bounced\n")
    );
    let dsns = setup.sender_mx.wait_for_messages(1, WAIT);
    assert_eq!(dsns.len(), 1, "one DSN; relay log:\n{}", relay.logs_text());
    let dsn = String::from_utf8_lossy(&dsns[0].data);
    assert!(dsn.contains(&bounced), "{dsn}");
    assert!(dsn.contains("Status: 5.0.0"), "{dsn}");
    assert!(!dsn.contains(&deleted), "{dsn}");
    assert!(dsns[0].mail_from.contains("<>"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        setup.sender_mx.messages().len(),
        1,
        "no DSN for the deleted message"
    );
    assert_eq!(state_of(relay, &bounced), None);
}

#[test]
fn hold_delete_and_bounce_wait_for_the_delivery_in_progress() {
    let setup = setup_with("1h", "1d", Duration::from_secs(3));
    let relay = &setup.relay;
    let submit_active = || {
        let id = submit(
            relay,
            "app@sender.test",
            &["user@dest.test"],
            "Subject: slow\r\n\r\nhello\r\n",
        );
        wait_until("its delivery pass is in flight", || {
            state_of(relay, &id).as_deref() == Some("active")
        });
        id
    };
    let held = submit_active();
    let deleted = submit_active();
    let bounced = submit_active();

    assert_eq!(
        ok(relay, &["hold", &held]),
        format!("{held}: delivery in progress; held when it ends\n")
    );
    let report = json(relay, &["delete", &deleted]);
    assert_eq!(report["pending"][0]["id"], deleted.as_str(), "{report}");
    assert_eq!(report["done"], serde_json::json!([]), "{report}");
    assert_eq!(
        ok(relay, &["bounce", &bounced]),
        format!("{bounced}: delivery in progress; bounced when it ends\n")
    );

    wait_until("the passes ended and the operations were applied", || {
        state_of(relay, &held).as_deref() == Some("held")
            && state_of(relay, &deleted).is_none()
            && state_of(relay, &bounced).is_none()
    });
    let dsns = setup.sender_mx.wait_for_messages(1, WAIT);
    let dsn = String::from_utf8_lossy(&dsns[0].data);
    assert!(dsn.contains(&bounced), "{dsn}");
    assert!(dsn.contains("Status: 5.0.0"), "{dsn}");
    let attempts = setup.attempts.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        setup.sender_mx.messages().len(),
        1,
        "no DSN for the deleted message"
    );
    assert_eq!(
        setup.attempts.load(Ordering::SeqCst),
        attempts,
        "held: no attempt"
    );
    let logs = relay.logs_text();
    assert!(
        logs.contains(&format!("{held}: held by administrator")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("{deleted}: deleted by administrator (no bounce)")),
        "{logs}"
    );
    assert_eq!(
        ok(relay, &["release", &held]),
        format!("{held}: released\n")
    );
}

#[test]
fn usage_errors_and_no_daemon() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("relayq.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\npath = \"{}\"\n",
            directory.path().join("spool").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let output = run(&["list"]);
    assert_eq!(output.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not available"), "{stderr}");
    assert_eq!(
        run(&["delete"]).status.code(),
        Some(64),
        "--all is never implied"
    );
    assert_eq!(run(&["hold", "not-an-id"]).status.code(), Some(64));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(64));
}

#[test]
fn tail_reconnects_when_the_daemon_restarts() {
    let mut relay = TestRelay::start("");
    let (mut tail, lines) = spawn_tail(&relay, &[]);
    let seen = |relay: &TestRelay| {
        let deadline = Instant::now() + WAIT;
        loop {
            let id = submit(
                relay,
                "app@sender.test",
                &["user@dest.test"],
                "Subject: t\r\n\r\n",
            );
            std::thread::sleep(Duration::from_millis(300));
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(&id) && line.contains("accepted"));
            if found {
                return;
            }
            assert!(Instant::now() < deadline, "tail never showed {id}");
        }
    };
    seen(&relay);
    relay.stop();
    relay.launch();
    seen(&relay);
    assert!(tail.try_wait().unwrap().is_none(), "tail kept running");
    let _ = tail.kill();
    let _ = tail.wait();
}
