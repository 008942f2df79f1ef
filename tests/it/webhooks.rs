//! Delivery events posted to webhooks: signed, with the contract's fields,
//! in commit order, at least once across a receiver outage and a kill -9,
//! dropped past max_backlog; `relayq webhook status|test`; config errors.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relayq::webhook::signature;

use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::Script;
use crate::common::shaping::wait_until;
use crate::common::webhook_receiver::{Receiver, distinct};
use crate::common::{self, TestRelay, WAIT};

const SECRET: &str = "s3cret-for-tests";

fn zone() -> Zone {
    zone_with_sender_mx("127.0.61.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.61.1")
}

/// `[[webhook]]` posting `events` to `receiver`, with the secret in a file
/// next to the config.
fn webhook(relay_dir: &std::path::Path, receiver: &Receiver, events: &str, extra: &str) -> String {
    let secret = relay_dir.join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    format!(
        "[[webhook]]\nname = \"app\"\nurl = \"{}\"\nsecret_file = \"{}\"\nevents = [{events}]\n\
         batch_wait = \"100ms\"\n{extra}\n",
        receiver.url(),
        secret.display()
    )
}

fn secret_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// MX answers: `bad@` refused with 550 5.1.1, each `grey…@` greylisted once.
fn picky_mx() -> Script {
    let greylisted = Arc::new(Mutex::new(HashSet::new()));
    Script {
        rcpt_reply: Arc::new(move |address: &str| match address.split('@').next() {
            Some("bad") => "550 5.1.1 <bad@dest.test>: no such user".to_owned(),
            Some(user) if user.starts_with("grey") => {
                if greylisted.lock().unwrap().insert(address.to_owned()) {
                    "451 4.7.1 greylisted, try again".to_owned()
                } else {
                    "250 2.1.5 Ok".to_owned()
                }
            }
            _ => "250 2.1.5 Ok".to_owned(),
        }),
        ..Script::default()
    }
}

#[test]
fn delivered_and_bounced_events_are_posted_signed_with_their_fields() {
    let receiver = Receiver::start();
    let (port, servers) = start_mx(vec![
        ("127.0.61.1", picky_mx()),
        ("127.0.61.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"delivered\", \"bounced\"", "");
    let relay = TestRelay::start(&config(&dns, port, "", &hooks));
    let id = submit(
        &relay,
        "app@sender.test",
        &["good@dest.test", "bad@dest.test"],
        "Subject: events\r\nMessage-ID: <m1@sender.test>\r\n\r\nhello\r\n",
    );
    expect_messages(&relay, &servers[0], 1, WAIT);
    let events = receiver.wait_for_events(2, WAIT);

    for post in receiver.posts() {
        assert_eq!(post.method, "POST");
        assert_eq!(post.path, "/events");
        assert_eq!(post.headers["content-type"], "application/json");
        assert!(post.headers["user-agent"].starts_with("relayq/"));
        assert!(!post.headers["relayq-batch"].is_empty());
        let header = &post.headers["relayq-signature"];
        assert!(
            signature::verify(SECRET.as_bytes(), header, &post.body),
            "signature {header} of {}",
            String::from_utf8_lossy(&post.body)
        );
        assert!(!signature::verify(b"wrong", header, &post.body));
    }
    let delivered = events
        .iter()
        .find(|event| event["type"] == "delivered")
        .unwrap();
    assert_eq!(delivered["queue_id"], id.as_str());
    assert_eq!(delivered["recipient"], "good@dest.test");
    assert_eq!(delivered["sender"], "app@sender.test");
    assert_eq!(delivered["lane"], "high");
    assert_eq!(delivered["attempt"], 1);
    assert_eq!(delivered["remote"]["code"], 250);
    assert_eq!(delivered["remote"]["host"], "mx.dest.test");
    assert_eq!(delivered["remote"]["ip"], "127.0.61.1");
    assert_eq!(delivered["tls"], "none");
    assert_eq!(delivered["policy"], "none");
    let time = delivered["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "RFC 3339 UTC with milliseconds: {time}"
    );
    assert_eq!(delivered["id"].as_str().unwrap().len(), 32);
    let bounced = events
        .iter()
        .find(|event| event["type"] == "bounced")
        .unwrap();
    assert_eq!(bounced["recipient"], "bad@dest.test");
    assert_eq!(bounced["remote"]["code"], 550);
    assert_eq!(bounced["remote"]["enhanced"], "5.1.1");
    assert_eq!(bounced["class"], "invalid_recipient");
    assert!(delivered.get("class").is_none(), "{delivered}");
    for event in &events {
        for (field, value) in event.as_object().unwrap() {
            assert!(!value.is_null(), "{field} is null in {event}");
        }
    }
    // The bounce (DSN) relayq sent to the sender is relayq's own message:
    // its delivery is no event of the application's.
    expect_messages(&relay, &servers[1], 1, WAIT);
    relay.wait_for_log("status=sent");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        distinct(&receiver.events()).len(),
        2,
        "{:#?}",
        receiver.events()
    );
}

#[test]
fn an_outage_delays_events_without_losing_or_reordering_them() {
    let receiver = Receiver::start();
    receiver.answer(503);
    let (port, servers) = start_mx(vec![
        ("127.0.61.1", picky_mx()),
        ("127.0.61.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let dir = secret_dir();
    let hooks = webhook(
        dir.path(),
        &receiver,
        "\"deferred\", \"delivered\"",
        "batch_max = 3\n",
    );
    let relay = TestRelay::start(&config(&dns, port, "", &hooks));
    let ids: Vec<String> = (0..6)
        .map(|n| {
            submit(
                &relay,
                "app@sender.test",
                &[&format!("grey{n}@dest.test")],
                "Subject: outage\r\n\r\nbody\r\n",
            )
        })
        .collect();
    // Every message is deferred once, then delivered, while the receiver
    // refuses every post.
    expect_messages(&relay, &servers[0], 6, WAIT);
    receiver.wait_for_refusals(2, WAIT);
    assert!(receiver.posts().is_empty());
    // The backlog shows every event waiting (six deferred, six delivered),
    // though the sender is busy retrying its first batch.
    let status_now = || {
        let status = common::output_text(&webhook_cli(&relay, &["status", "--json"]));
        serde_json::from_str::<serde_json::Value>(&status).unwrap()
    };
    let deadline = std::time::Instant::now() + WAIT;
    let mut status = status_now();
    while status[0]["backlog"] != 12 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        status = status_now();
    }
    assert_eq!(status[0]["name"], "app");
    assert_eq!(status[0]["backlog"], 12, "{status}");
    assert!(status[0]["failures"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        status[0]["last_error"].as_str().unwrap().contains("503"),
        "{status}"
    );

    receiver.answer(200);
    let events = receiver.wait_for_events(12, Duration::from_secs(30));
    for id in &ids {
        let of_message: Vec<&str> = events
            .iter()
            .filter(|event| event["queue_id"] == id.as_str())
            .map(|event| event["type"].as_str().unwrap())
            .collect();
        assert_eq!(of_message, ["deferred", "delivered"], "events of {id}");
    }
    for post in receiver.posts() {
        assert!(post.events().len() <= 3, "batch_max 3");
    }
    let deferred = events
        .iter()
        .find(|event| event["type"] == "deferred")
        .unwrap();
    assert!(deferred["next_attempt"].as_str().is_some(), "{deferred}");
    assert_eq!(deferred["remote"]["code"], 451);
    assert_eq!(deferred["class"], "policy", "greylisting: {deferred}");
}

#[test]
fn events_survive_a_kill_of_the_relay() {
    let receiver = Receiver::start();
    receiver.answer(500);
    let (port, servers) = start_mx(vec![
        ("127.0.61.1", Script::default()),
        ("127.0.61.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"delivered\"", "");
    let mut relay = TestRelay::start(&config(&dns, port, "", &hooks));
    for n in 0..5 {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("user{n}@dest.test")],
            "Subject: kill\r\n\r\nbody\r\n",
        );
    }
    expect_messages(&relay, &servers[0], 5, WAIT);
    receiver.wait_for_refusals(1, WAIT);
    relay.kill();
    receiver.answer(200);
    relay.launch();
    let events = receiver.wait_for_events(5, WAIT);
    let recipients: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|event| event["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(recipients.len(), 5, "{events:#?}");
    relay.wait_for_log("events waiting from before the start");
}

#[test]
fn beyond_max_backlog_the_oldest_events_are_dropped() {
    let receiver = Receiver::start();
    receiver.answer(500);
    let (port, servers) = start_mx(vec![
        ("127.0.61.1", Script::default()),
        ("127.0.61.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"delivered\"", "max_backlog = 2\n");
    let relay = TestRelay::start(&config(&dns, port, "", &hooks));
    for n in 0..5 {
        submit(
            &relay,
            "app@sender.test",
            &[&format!("user{n}@dest.test")],
            "Subject: backlog\r\n\r\nbody\r\n",
        );
        // One at a time, so the order of the deliveries is the order here.
        expect_messages(&relay, &servers[0], n + 1, WAIT);
    }
    relay.wait_for_log("oldest events dropped: backlog over max_backlog");
    // Every delivery (and its event) committed, then the sender down to
    // the two newest: a batch it formed before the last drop, if it were
    // still being retried, would carry an older event.
    wait_until("five deliveries logged", WAIT, || {
        relay.log_lines("status=sent").len() == 5
    });
    wait_until("the backlog is cut to max_backlog", WAIT * 2, || {
        let status = common::output_text(&webhook_cli(&relay, &["status", "--json"]));
        serde_json::from_str::<serde_json::Value>(&status).unwrap()[0]["backlog"] == 2
    });
    receiver.answer(200);
    let events = receiver.wait_for_events(2, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let events = distinct(&receiver.events())
        .into_iter()
        .chain(events)
        .collect::<Vec<_>>();
    let recipients: std::collections::BTreeSet<String> = events
        .iter()
        .map(|event| event["recipient"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        recipients,
        ["user3@dest.test", "user4@dest.test"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
    );
    let metrics = relay.wait_for_log("dropped");
    assert!(metrics.contains("webhook app"), "{metrics}");
}

fn webhook_cli(relay: &TestRelay, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("webhook")
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .output()
        .expect("run relayq webhook")
}

#[test]
fn webhook_test_posts_one_test_event_and_reports_the_answer() {
    let receiver = Receiver::start();
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"bounced\"", "");
    let relay = TestRelay::start(&hooks);

    let taken = webhook_cli(&relay, &["test", "app"]);
    assert_eq!(
        taken.status.code(),
        Some(0),
        "{}",
        common::output_text(&taken)
    );
    assert!(common::output_text(&taken).contains("HTTP 200"));
    let events = receiver.wait_for_events(1, WAIT);
    assert_eq!(events[0]["type"], "test");
    let post = &receiver.posts()[0];
    assert!(signature::verify(
        SECRET.as_bytes(),
        &post.headers["relayq-signature"],
        &post.body
    ));

    receiver.answer(500);
    let refused = webhook_cli(&relay, &["test", "app"]);
    assert_eq!(
        refused.status.code(),
        Some(69),
        "{}",
        common::output_text(&refused)
    );
    assert!(common::output_text(&refused).contains("HTTP 500"));

    let unknown = webhook_cli(&relay, &["test", "nobody"]);
    assert_eq!(
        unknown.status.code(),
        Some(64),
        "{}",
        common::output_text(&unknown)
    );

    let status = webhook_cli(&relay, &["status"]);
    let text = common::output_text(&status);
    assert_eq!(status.status.code(), Some(0), "{text}");
    assert!(
        text.contains("app →") && text.contains("backlog:     0"),
        "{text}"
    );
}

#[test]
fn check_config_names_bad_webhook_keys() {
    let dir = secret_dir();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "x\n").unwrap();
    let cases = [
        (
            format!(
                "[[webhook]]\nname = \"app\"\nurl = \"http://hooks.example.com/\"\nsecret_file = \"{}\"\n",
                secret.display()
            ),
            "webhook[0].url",
        ),
        (
            "[[webhook]]\nname = \"app\"\nurl = \"https://hooks.example.com/\"\nsecret_file = \"/nonexistent/secret\"\n".to_owned(),
            "webhook[0].secret_file",
        ),
        (
            format!(
                "[[webhook]]\nname = \"app\"\nurl = \"https://h.example/\"\nsecret_file = \"{}\"\nevents = [\"opened\"]\n",
                secret.display()
            ),
            "webhook[0].events[0]",
        ),
    ];
    for (text, key) in cases {
        let file = dir.path().join("relayq.toml");
        std::fs::write(&file, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64));
        let message = common::output_text(&output);
        assert!(message.contains(key), "{key} in {message}");
    }
}

#[test]
fn operator_deletes_and_bounces_are_announced_per_open_recipient() {
    let receiver = Receiver::start();
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"deleted\", \"bounced\"", "");
    // Without a [dns] section the harness's resolver answers SERVFAIL: the
    // mail stays queued.
    let relay = TestRelay::start(&hooks);
    let submit_to = |to: &[&str]| {
        let mut client = relay.client();
        client.greet();
        let reply = client.send_message("app@sender.test", to, b"Subject: op\r\n\r\nx\r\n");
        common::queued_id(&reply).to_string()
    };
    let one = submit_to(&["a@dest.test", "b@dest.test"]);
    let two = submit_to(&["c@dest.test"]);
    let three = submit_to(&["d@dest.test"]);
    common::queue_ok(&relay, &["delete", &one]);
    common::queue_ok(&relay, &["bounce", &two]);
    common::queue_ok(&relay, &["delete", "--all"]);
    let events = receiver.wait_for_events(4, WAIT);
    let mut seen: Vec<(String, String, String)> = events
        .iter()
        .map(|event| {
            (
                event["queue_id"].as_str().unwrap().to_owned(),
                event["type"].as_str().unwrap().to_owned(),
                event["recipient"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (one.clone(), "deleted".to_owned(), "a@dest.test".to_owned()),
        (one, "deleted".to_owned(), "b@dest.test".to_owned()),
        (two, "bounced".to_owned(), "c@dest.test".to_owned()),
        (three, "deleted".to_owned(), "d@dest.test".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn accepted_events_carry_the_message_id_and_metadata_of_every_event() {
    let receiver = Receiver::start();
    let (port, servers) = start_mx(vec![
        ("127.0.61.1", Script::default()),
        ("127.0.61.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"accepted\", \"delivered\"", "");
    let relay = TestRelay::start(&config(&dns, port, "", &hooks));
    let id = submit(
        &relay,
        "app@sender.test",
        &["one@dest.test", "two@dest.test"],
        "Subject: meta\r\nMessage-ID: <order-42@app.test>\r\nX-Relayq-Meta-Order: 42\r\n\
         X-Relayq-Meta-Customer: c-7\r\n\r\nhello\r\n",
    );
    let plain = submit(
        &relay,
        "app@sender.test",
        &["three@dest.test"],
        "Subject: plain\r\n\r\nx\r\n",
    );
    expect_messages(&relay, &servers[0], 2, WAIT);
    let events = receiver.wait_for_events(6, WAIT);
    let of = |queue_id: &str, event_type: &str| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|event| event["queue_id"] == queue_id && event["type"] == event_type)
            .cloned()
            .collect()
    };
    let accepted = of(&id, "accepted");
    assert_eq!(accepted.len(), 2, "{events:#?}");
    for event in accepted.iter().chain(&of(&id, "delivered")) {
        assert_eq!(event["message_id"], "order-42@app.test");
        assert_eq!(
            event["meta"],
            serde_json::json!({"order": "42", "customer": "c-7"})
        );
        assert_eq!(event["sender"], "app@sender.test");
    }
    assert_eq!(accepted[0]["attempt"], 0);
    let recipients: HashSet<&str> = accepted
        .iter()
        .map(|event| event["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(
        recipients,
        HashSet::from(["one@dest.test", "two@dest.test"])
    );
    // Without a Message-ID, the one relayq added; without metadata, no "meta".
    let added = &of(&plain, "accepted")[0];
    assert_eq!(
        added["message_id"],
        format!("{plain}@{}", relay_hostname(&relay))
    );
    assert!(added.get("meta").is_none(), "{added}");
}

/// The host name the test relay runs with (its Received: and Message-ID).
fn relay_hostname(relay: &TestRelay) -> String {
    let line = relay.wait_for_log("relayq ready: hostname ");
    line.split("relayq ready: hostname ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned()
}

#[test]
fn a_recipient_refused_as_suppressed_is_announced_without_a_queue_id() {
    let receiver = Receiver::start();
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"suppressed\"", "");
    let relay = TestRelay::start(&hooks);
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(["suppression", "add", "Gone@Dest.test", "--config"])
        .arg(&relay.config_path)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", common::output_text(&added));
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<app@sender.test>");
    let refused = client.command("RCPT TO:<gone@dest.test>");
    assert_eq!(refused.code, 550, "{}", refused.text());
    let events = receiver.wait_for_events(1, WAIT);
    let event = &events[0];
    assert_eq!(event["type"], "suppressed");
    assert_eq!(event["recipient"], "gone@dest.test");
    assert_eq!(event["sender"], "app@sender.test");
    assert_eq!(event["class"], "admin");
    for absent in ["queue_id", "lane", "attempt", "message_id", "meta"] {
        assert!(event.get(absent).is_none(), "{absent} in {event}");
    }
}

#[test]
fn passing_the_delay_warning_is_announced_for_every_open_recipient() {
    let receiver = Receiver::start();
    let always_later = Script {
        rcpt_reply: Arc::new(|_| "451 4.3.0 try again later".to_owned()),
        ..Script::default()
    };
    let (port, _servers) = start_mx(vec![
        ("127.0.61.1", always_later),
        ("127.0.61.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let dir = secret_dir();
    let hooks = webhook(dir.path(), &receiver, "\"delayed\"", "");
    // `delay_warning` lands in the [retry] section the delivery config ends with.
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        &format!("delay_warning = \"2s\"\n{hooks}"),
    ));
    let id = submit(
        &relay,
        "app@sender.test",
        &["slow@dest.test", "later@dest.test"],
        "Subject: slow\r\n\r\nx\r\n",
    );
    let events = receiver.wait_for_events(2, WAIT);
    for event in &events {
        assert_eq!(event["type"], "delayed");
        assert_eq!(event["queue_id"], id.as_str());
        assert!(event["next_attempt"].as_str().is_some(), "{event}");
        assert!(
            event["remote"]["text"]
                .as_str()
                .unwrap()
                .contains("try again later"),
            "{event}"
        );
    }
    let recipients: HashSet<&str> = events
        .iter()
        .map(|event| event["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(
        recipients,
        HashSet::from(["slow@dest.test", "later@dest.test"])
    );
    // Once per message.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(distinct(&receiver.events()).len(), 2);
}
