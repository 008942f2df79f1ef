//! Idempotent submission (docs/idempotency.md): a message with an
//! `Idempotency-Key` is accepted at most once per key and scope; a repeat is
//! answered with the original's id and `(duplicate)`, a different message
//! under the same key with `554 5.6.0`; the key survives a SIGKILL right
//! after the `250`, concurrent repeats store one message, the key is
//! forgotten after the window; `smtp.dedupe_message_id`, `sendmail` and the
//! maildrop go the same way; the field never reaches the stored, signed or
//! delivered message.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::delivery::{config, expect_messages, start_mx, zone_with_sender_mx};
use crate::common::dkim::{dkim_block, make_key, passes, verify};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::tls_client::{ListenerFiles, TlsClient};
use crate::common::{Response, SmtpClient, TestRelay, WAIT, maildrop_files, queue_json, queued_id};
use crate::sendmail;

const FROM: &str = "app@example.com";
const TO: &str = "user@example.org";
const WITHIN: Duration = Duration::from_secs(15);

/// A message with `key` (none when empty) and `body`; no Message-ID and no
/// Date, so relayq adds its own, different each time.
fn message(key: &str, body: &str) -> String {
    let key_field = if key.is_empty() {
        String::new()
    } else {
        format!("Idempotency-Key: {key}\r\n")
    };
    format!("From: {FROM}\r\nTo: {TO}\r\nSubject: order\r\n{key_field}\r\n{body}\r\n")
}

/// One transaction on a new connection; the reply to the final dot.
fn send_to(address: SocketAddr, recipients: &[&str], content: &str) -> Response {
    let mut client = SmtpClient::connect(address);
    client.greet();
    let reply = client.send_message(FROM, recipients, content.as_bytes());
    client.command("QUIT");
    reply
}

fn send(relay: &TestRelay, content: &str) -> Response {
    send_to(relay.address, &[TO], content)
}

/// Asserts `250 2.0.0 Ok: queued as ORIGINAL (duplicate)`.
fn assert_duplicate(reply: &Response, original: &str) {
    assert_eq!(
        (reply.code, reply.text()),
        (250, format!("2.0.0 Ok: queued as {original} (duplicate)")),
    );
}

fn queued_ids(relay: &TestRelay) -> Vec<String> {
    let list = queue_json(relay, &["list"]);
    list.as_array()
        .expect("queue list --json is an array")
        .iter()
        .map(|message| message["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The metrics endpoint's address, from the "metrics on ADDR" log line.
fn metrics_address(relay: &TestRelay) -> SocketAddr {
    let line = relay.wait_for_log("metrics on ");
    let rest = line.split("metrics on ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The value of one series in a scrape of `/metrics`.
fn metric(address: SocketAddr, series: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a counter"))
}

#[test]
fn a_repeat_gets_the_original_id_and_is_delivered_once() {
    let (port, mx) = start_mx(vec![("127.0.71.1", Script::default())]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.71.9")
            .mx("example.org", 10, "mx.example.org")
            .a("mx.example.org", "127.0.71.1"),
    );
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let content = message("order-1001", "Your order has shipped.");
    let original = queued_id(&send(&relay, &content)).to_string();
    assert_duplicate(&send(&relay, &content), &original);
    // The recipients are a set: another order of the same ones is the same
    // message.
    let two = [TO, "other@example.org"];
    let pair = queued_id(&send_to(relay.address, &two, &message("order-1002", "x"))).to_string();
    assert_duplicate(
        &send_to(
            relay.address,
            &[two[1], two[0]],
            &message("order-1002", "x"),
        ),
        &pair,
    );

    expect_messages(&relay, &mx[0], 2, WITHIN);
    let deadline = Instant::now() + WITHIN;
    while !queued_ids(&relay).is_empty() {
        assert!(Instant::now() < deadline, "{}", relay.logs_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first message once, the second once to its two recipients; the
    // repeats added nothing.
    let delivered = mx[0].messages();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let recipients: usize = delivered.iter().map(|message| message.rcpt_to.len()).sum();
    assert_eq!(recipients, 3, "{delivered:?}");
    // The two messages go out in parallel: find the first by its single
    // recipient, not by arrival order.
    let first = delivered
        .iter()
        .find(|message| message.rcpt_to.len() == 1)
        .expect("the single-recipient message");
    let text = String::from_utf8_lossy(&first.data);
    assert!(text.contains("Your order has shipped."), "{text}");
    assert!(!text.contains("Idempotency-Key"), "{text}");
    let metrics = metrics_address(&relay);
    assert_eq!(
        metric(metrics, "relayq_duplicate_submissions_total"),
        Some(2)
    );
}

#[test]
fn another_message_under_a_used_key_is_refused_with_554() {
    let relay = TestRelay::start("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let original = queued_id(&send(&relay, &message("invoice-7", "Total: 10 EUR"))).to_string();
    let refused =
        format!("5.6.0 Idempotency-Key already used for a different message ({original})");
    let other_body = send(&relay, &message("invoice-7", "Total: 12 EUR"));
    assert_eq!((other_body.code, other_body.text()), (554, refused.clone()));
    let other_recipient = send_to(
        relay.address,
        &["else@example.org"],
        &message("invoice-7", "Total: 10 EUR"),
    );
    assert_eq!(
        (other_recipient.code, other_recipient.text()),
        (554, refused)
    );
    // The same message is still a duplicate, and the session goes on.
    let mut client = SmtpClient::connect(relay.address);
    client.greet();
    let again = client.send_message(
        FROM,
        &[TO],
        message("invoice-7", "Total: 10 EUR").as_bytes(),
    );
    assert_duplicate(&again, &original);
    let new = client.send_message(
        FROM,
        &[TO],
        message("invoice-8", "Total: 10 EUR").as_bytes(),
    );
    let new = queued_id(&new).to_string();

    let mut ids = queued_ids(&relay);
    ids.sort();
    assert_eq!(ids, [original, new]);
    let metrics = metrics_address(&relay);
    assert_eq!(
        metric(
            metrics,
            "relayq_messages_refused_total{lane=\"high\",reason=\"idempotency_conflict\"}"
        ),
        Some(2)
    );
    assert_eq!(
        metric(metrics, "relayq_duplicate_submissions_total"),
        Some(1)
    );
}

#[test]
fn a_repeat_is_a_duplicate_even_when_its_lane_is_full() {
    let relay = TestRelay::start("[lanes.high]\nmax_queued = 1\n");
    let content = message("alert-9", "Disk full.");
    let original = queued_id(&send(&relay, &content)).to_string();
    assert_duplicate(&send(&relay, &content), &original);
    let new = send(&relay, &message("alert-10", "Disk still full."));
    assert_eq!(
        (new.code, new.text()),
        (452, "4.3.1 high lane full, try again later".into())
    );
    assert_eq!(queued_ids(&relay), [original]);
}

#[test]
fn a_repeat_after_sigkill_right_after_the_250_is_still_a_duplicate() {
    let mut relay = TestRelay::start("");
    let content = message("reset-password-31", "Your code is 123456.");
    let original = queued_id(&send(&relay, &content)).to_string();
    relay.kill();
    relay.launch();
    assert_duplicate(&send(&relay, &content), &original);
    assert_eq!(queued_ids(&relay), [original]);
}

#[test]
fn concurrent_repeats_store_exactly_one_message() {
    const SESSIONS: usize = 10;
    let relay = TestRelay::start("");
    let content = message("welcome-42", "Welcome!");
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let address = relay.address;
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let barrier = barrier.clone();
            let content = content.clone();
            std::thread::spawn(move || {
                let mut client = SmtpClient::connect(address);
                client.greet();
                assert_eq!(client.command(&format!("MAIL FROM:<{FROM}>")).code, 250);
                assert_eq!(client.command(&format!("RCPT TO:<{TO}>")).code, 250);
                assert_eq!(client.command("DATA").code, 354);
                client.send_raw(content.as_bytes());
                // Every session ends its message at once.
                barrier.wait();
                client.send_raw(b".\r\n");
                client.read()
            })
        })
        .collect();
    let replies: Vec<Response> = sessions
        .into_iter()
        .map(|session| session.join().unwrap())
        .collect();
    let ids = queued_ids(&relay);
    assert_eq!(ids.len(), 1, "{replies:?}");
    let original = &ids[0];
    let mut new = 0;
    for reply in &replies {
        let text = reply.text();
        if text == format!("2.0.0 Ok: queued as {original}") {
            new += 1;
        } else {
            assert_duplicate(reply, original);
        }
    }
    assert_eq!(new, 1, "{replies:?}");
}

#[test]
fn a_repeat_after_the_window_is_a_new_message() {
    let mut relay = TestRelay::start("");
    let content = message("daily-report", "Report.");
    let first = queued_id(&send(&relay, &content)).to_string();
    assert_duplicate(&send(&relay, &content), &first);
    // A reload shortens the window to a second: once it has passed and the
    // sweep has forgotten the key, the repeat is a message of its own.
    relay.rewrite_config("[smtp]\nidempotency_window = \"1s\"\n");
    assert!(relay.reload().status.success(), "{}", relay.logs_text());
    let deadline = Instant::now() + WAIT;
    let second = loop {
        let reply = send(&relay, &content);
        if !reply.text().ends_with("(duplicate)") {
            break queued_id(&reply).to_string();
        }
        assert_duplicate(&reply, &first);
        assert!(Instant::now() < deadline, "the key was never forgotten");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(first, second);
    let mut ids = queued_ids(&relay);
    ids.sort();
    assert_eq!(ids, [first, second]);
    relay.stop();
}

/// `openssl passwd -6 -salt saltsalt secret`.
const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

fn authenticated(relay: &TestRelay, user: &str) -> TlsClient {
    let mut client = TlsClient::connect(relay.address);
    client.greet();
    client.starttls();
    client.ehlo();
    assert_eq!(client.auth_plain(user, "secret").code, 235);
    client
}

#[test]
fn keys_are_scoped_per_authenticated_user_else_per_host() {
    let files = ListenerFiles::new(&format!("alice:{SHA512_SECRET}\nbob:{SHA512_SECRET}\n"));
    let relay = TestRelay::start(&format!(
        "{}[smtp]\n{}",
        files.listener("starttls", "optional"),
        files.users_file()
    ));
    let content = message("shared-key", "Same message.");
    let send_as =
        |user: &str| authenticated(&relay, user).send_message(FROM, &[TO], content.as_bytes());
    let alice = queued_id(&send_as("alice")).to_string();
    let bob = queued_id(&send_as("bob")).to_string();
    assert_ne!(alice, bob);
    assert_duplicate(&send_as("alice"), &alice);
    assert_duplicate(&send_as("bob"), &bob);
    // Unauthenticated, from the loopback: the local host's own key space.
    let local = queued_id(&send(&relay, &content)).to_string();
    assert!(local != alice && local != bob);
    assert_duplicate(&send(&relay, &content), &local);
    assert_eq!(queued_ids(&relay).len(), 3);
}

#[test]
fn the_key_and_metadata_are_not_delivered_and_dkim_signs_without_them() {
    let directory = tempfile::tempdir().unwrap();
    let key = make_key(directory.path(), "example.com", "idem", None);
    let (port, mx) = start_mx(vec![("127.0.72.1", Script::default())]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.72.9")
            .mx("example.org", 10, "mx.example.org")
            .a("mx.example.org", "127.0.72.1"),
    );
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        &dkim_block("example.com", "idem", &key),
    ));
    let content = "From: app@example.com\r\nTo: user@example.org\r\nSubject: signed\r\n\
Idempotency-Key: signed-1\r\nX-Relayq-Meta-Order: 77\r\n\r\nSigned body.\r\n";
    queued_id(&send(&relay, content));
    let delivered = expect_messages(&relay, &mx[0], 1, WITHIN);
    let data = &delivered[0].data;
    let text = String::from_utf8_lossy(data);
    assert!(!text.contains("Idempotency-Key"), "{text}");
    assert!(!text.contains("X-Relayq-Meta"), "{text}");
    assert!(text.contains("DKIM-Signature:"), "{text}");
    assert_eq!(verify(data, &[&key]), [passes("example.com", "idem")]);
}

#[test]
fn dedupe_message_id_makes_the_message_id_the_key() {
    let content = format!(
        "From: {FROM}\r\nTo: {TO}\r\nMessage-ID: <n-77@app.example.com>\r\nSubject: s\r\n\r\nx\r\n"
    );
    let relay = TestRelay::start("[smtp]\ndedupe_message_id = true\n");
    let original = queued_id(&send(&relay, &content)).to_string();
    assert_duplicate(&send(&relay, &content), &original);
    // An Idempotency-Key, where there is one, is the key instead.
    let keyed = content.replace("Subject: s\r\n", "Subject: s\r\nIdempotency-Key: other\r\n");
    let other = queued_id(&send(&relay, &keyed)).to_string();
    assert_ne!(other, original);
    assert_eq!(queued_ids(&relay).len(), 2);
    drop(relay);

    // By default the Message-ID is not a key.
    let relay = TestRelay::start("");
    let first = queued_id(&send(&relay, &content)).to_string();
    let second = queued_id(&send(&relay, &content)).to_string();
    assert_ne!(first, second);
}

#[test]
fn sendmail_submissions_are_deduplicated() {
    let mut relay = sendmail::start_relay("");
    let input = b"From: app@example.com\nTo: user@example.org\nSubject: cron\n\
Idempotency-Key: cron-2026-11-23\n\nnightly job done\n";
    for _ in 0..2 {
        let run = sendmail::sendmail(&relay, &["-t", "-i"], input);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    relay.stop();
    let messages = relay.spooled_messages();
    assert_eq!(messages.len(), 1, "{}", relay.logs_text());
    let body = String::from_utf8_lossy(&messages[0].body);
    assert!(body.contains("nightly job done"), "{body}");
    assert!(!body.contains("Idempotency-Key"), "{body}");
}

/// Leaves a maildrop file as `sendmail` would (written aside, then renamed).
fn drop_file(maildrop: &std::path::Path, name: &str, message: &str) {
    let text = format!("relayq-maildrop 1\nsender {FROM}\nrecipient {TO}\n\n{message}");
    let temporary = maildrop.join(format!(".tmp-{name}"));
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, maildrop.join(name)).unwrap();
}

#[test]
fn the_maildrop_deduplicates_and_never_imports_a_file_twice() {
    let mut relay = sendmail::start_relay("");
    let maildrop = relay.spool_path().join("maildrop");
    // A message submitted over SMTP, then the same one left in the maildrop
    // (a `sendmail` whose reply was lost and that fell back to it).
    let keyed = message("import-1", "Imported once.");
    let original = queued_id(&send(&relay, &keyed)).to_string();
    drop_file(&maildrop, "1.keyed", &keyed);
    relay.wait_for_log(&format!(
        "{original}: was already queued (duplicate) from maildrop file 1.keyed"
    ));
    // A file without a key, imported; then the same file again, as a crash
    // between the import's commit and the file's removal leaves it.
    let plain = message("", "No key.");
    drop_file(&maildrop, "2.plain", &plain);
    let imported = relay.wait_for_log("imported from maildrop file 2.plain");
    let id = imported.split(": imported").next().unwrap();
    let id = id.rsplit(' ').next().unwrap().to_owned();
    relay.stop();
    drop_file(&maildrop, "2.plain", &plain);
    relay.launch();
    relay.wait_for_log(&format!(
        "{id}: was already queued (duplicate) from maildrop file 2.plain"
    ));
    let deadline = Instant::now() + WAIT;
    while !maildrop_files(&maildrop).is_empty() {
        assert!(Instant::now() < deadline, "{}", relay.logs_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.stop();
    let mut stored: Vec<String> = relay
        .spooled_messages()
        .iter()
        .map(|message| message.id.to_string())
        .collect();
    stored.sort();
    let mut expected = vec![original, id];
    expected.sort();
    assert_eq!(stored, expected, "{}", relay.logs_text());
}
