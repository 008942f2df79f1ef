//! Lane admission (`lanes.*.max_queued`): a full lane answers `452 4.3.1`
//! — at MAIL when the lane is certain then, else to the end of the data,
//! storing nothing — while the other lane keeps accepting; room frees when
//! mail leaves; refusals are counted; `sendmail` leaves refused mail in the
//! maildrop and the daemon imports it once there is room.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::delivery::{config, start_mx, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::{Response, SmtpClient, TestRelay, WAIT, maildrop_files, queued_id};

/// A high listener (first) and a low listener, a cap of 2 on the low lane,
/// and the metrics endpoint.
const TWO_LISTENERS: &str = "[[listener]]\naddress = \"127.0.0.1:0\"\nlane = \"high\"\n\
     [[listener]]\naddress = \"127.0.0.1:0\"\nlane = \"low\"\n\
     [lanes.low]\nmax_queued = 2\n\
     [metrics]\nlisten = \"127.0.0.1:0\"\n";

const LOW_FULL: &str = "4.3.1 low lane full, try again later";

fn connect(address: SocketAddr) -> SmtpClient {
    let mut client = SmtpClient::connect(address);
    client.greet();
    client
}

/// Sends a whole transaction; `mail` is the MAIL command line.
fn transaction(client: &mut SmtpClient, mail: &str, content: &str) -> Response {
    let reply = client.command(mail);
    assert_eq!(reply.code, 250, "{mail}: {reply:?}");
    let reply = client.command("RCPT TO:<user@example.org>");
    assert_eq!(reply.code, 250, "RCPT: {reply:?}");
    let reply = client.command("DATA");
    assert_eq!(reply.code, 354, "DATA: {reply:?}");
    client.send_raw(content.as_bytes());
    client.send_raw(b".\r\n");
    client.read()
}

fn assert_lane_full(reply: &Response, text: &str) {
    assert_eq!(
        (reply.code, reply.text()),
        (452, text.to_owned()),
        "{reply:?}"
    );
}

/// `relayq queue ARGS --config` of `relay`.
fn queue(relay: &TestRelay, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .stdin(Stdio::null())
        .output()
        .expect("run relayq queue");
    assert!(
        output.status.success(),
        "relayq queue {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The lanes of the queued messages, as `queue list --json` shows them.
fn queued_lanes(relay: &TestRelay) -> Vec<String> {
    let output = queue(relay, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON list");
    let mut lanes: Vec<String> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|entry| entry["lane"].as_str().expect("lane").to_owned())
        .collect();
    lanes.sort();
    lanes
}

fn metrics_address(relay: &TestRelay) -> SocketAddr {
    let line = relay.wait_for_log("metrics on ");
    let rest = line.split("metrics on ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The value of one series (name and labels exactly as written).
fn metric(address: SocketAddr, series: &str) -> Option<u64> {
    let mut stream = TcpStream::connect_timeout(&address, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("counter value"))
}

fn refused(lane: &str, reason: &str) -> String {
    format!("relayq_messages_refused_total{{lane=\"{lane}\",reason=\"{reason}\"}}")
}

#[test]
fn a_full_lane_refuses_at_mail_when_the_lane_is_known_and_the_other_lane_accepts() {
    let relay = TestRelay::start(TWO_LISTENERS);
    let (high, low) = (relay.addresses[0], relay.addresses[1]);
    let mut producer = connect(low);
    for n in 0..2 {
        let reply = transaction(
            &mut producer,
            "MAIL FROM:<news@example.com>",
            &format!("Subject: newsletter {n}\r\n\r\nbody\r\n"),
        );
        queued_id(&reply);
    }

    // The low listener's mail can only go low: refused at MAIL, and the
    // session stays usable.
    assert_lane_full(&producer.command("MAIL FROM:<news@example.com>"), LOW_FULL);
    assert_lane_full(
        &producer.command("MAIL FROM:<news@example.com> MT-PRIORITY=-3"),
        LOW_FULL,
    );
    // MT-PRIORITY > 0 decides high whatever the listener: accepted.
    let reply = transaction(
        &mut producer,
        "MAIL FROM:<news@example.com> MT-PRIORITY=3",
        "Subject: urgent\r\n\r\nbody\r\n",
    );
    queued_id(&reply);

    // On the high listener MT-PRIORITY < 0 decides low: refused at MAIL.
    let mut app = connect(high);
    assert_lane_full(
        &app.command("MAIL FROM:<a@example.com> MT-PRIORITY=-3"),
        LOW_FULL,
    );
    // A password reset on the high listener is taken at once.
    let reply = transaction(
        &mut app,
        "MAIL FROM:<app@example.com>",
        "Subject: password reset\r\n\r\nyour code\r\n",
    );
    queued_id(&reply);
    app.command("QUIT");
    producer.command("QUIT");

    assert_eq!(queued_lanes(&relay), ["high", "high", "low", "low"]);
    let address = metrics_address(&relay);
    assert_eq!(metric(address, &refused("low", "lane_full")), Some(3));
    assert_eq!(metric(address, &refused("high", "lane_full")), Some(0));
    assert_eq!(metric(address, &refused("low", "disk")), Some(0));
    // Three refusals, one log line: it is rate-limited per lane.
    let lines = relay.log_lines("low lane full (lanes.low.max_queued = 2)");
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[test]
fn bulk_precedence_is_refused_after_the_data_and_nothing_is_stored() {
    let mut relay = TestRelay::start(TWO_LISTENERS);
    let (high, low) = (relay.addresses[0], relay.addresses[1]);
    let mut producer = connect(low);
    for _ in 0..2 {
        queued_id(&transaction(
            &mut producer,
            "MAIL FROM:<news@example.com>",
            "Subject: newsletter\r\n\r\nbody\r\n",
        ));
    }
    producer.command("QUIT");

    // On the high listener the header section still decides, so MAIL is
    // accepted and the refusal comes with the reply to the final dot. The
    // body is large enough to have gone to a file of its own.
    let mut bulk = connect(high);
    let large_body = "x".repeat(998) + "\r\n";
    let content = format!(
        "Precedence: bulk\r\nSubject: newsletter\r\n\r\n{}",
        large_body.repeat(300)
    );
    let reply = transaction(&mut bulk, "MAIL FROM:<news@example.com>", &content);
    assert_lane_full(&reply, LOW_FULL);

    // The same with BDAT: the last chunk gets the refusal.
    assert_eq!(bulk.command("MAIL FROM:<news@example.com>").code, 250);
    assert_eq!(bulk.command("RCPT TO:<user@example.org>").code, 250);
    let chunk = "Precedence: list\r\nSubject: list mail\r\n\r\nbody\r\n";
    bulk.send_raw(format!("BDAT {} LAST\r\n{chunk}", chunk.len()).as_bytes());
    assert_lane_full(&bulk.read(), LOW_FULL);

    // The session goes on, and mail that stays high is accepted.
    queued_id(&transaction(
        &mut bulk,
        "MAIL FROM:<app@example.com>",
        "Subject: receipt\r\n\r\nthanks\r\n",
    ));
    bulk.command("QUIT");
    assert_eq!(queued_lanes(&relay), ["high", "low", "low"]);
    let address = metrics_address(&relay);
    assert_eq!(metric(address, &refused("low", "lane_full")), Some(2));

    relay.stop();
    assert_eq!(relay.spooled_messages().len(), 3);
    let bodies: Vec<_> = std::fs::read_dir(relay.spool_path().join("bodies"))
        .expect("bodies directory")
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(bodies.is_empty(), "refused bodies left behind: {bodies:?}");
}

/// Retries MAIL on `address` until it is accepted, then sends the message.
fn submit_when_there_is_room(address: SocketAddr, subject: &str) -> Response {
    let deadline = Instant::now() + WAIT;
    let mut client = connect(address);
    loop {
        let reply = client.command("MAIL FROM:<news@sender.test>");
        if reply.code == 250 {
            break;
        }
        assert_lane_full(&reply, LOW_FULL);
        assert!(Instant::now() < deadline, "the low lane never had room");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.command("RCPT TO:<later@dest.test>").code, 250);
    assert_eq!(client.command("DATA").code, 354);
    client.send_raw(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes());
    let reply = client.read();
    client.command("QUIT");
    reply
}

#[test]
fn room_frees_when_mail_is_delivered_or_deleted() {
    // The MX defers everything until the gate opens; then it takes the
    // mail for `first@dest.test`.
    let gate = Arc::new(AtomicBool::new(false));
    let open = gate.clone();
    let gated = Script {
        rcpt_reply: Arc::new(move |address| {
            if open.load(Ordering::SeqCst) && address.contains("first") {
                "250 2.1.5 Ok".to_owned()
            } else {
                "451 4.7.1 try again later".to_owned()
            }
        }),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.27.1", gated),
        ("127.0.27.9", Script::default()),
    ]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.27.9")
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", "127.0.27.1"),
    );
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nlane = \"low\"\n[lanes.low]\nmax_queued = 2\n",
    ));
    let mut client = connect(relay.address);
    queued_id(&client.send_message(
        "news@sender.test",
        &["first@dest.test"],
        b"Subject: first\r\n\r\nbody\r\n",
    ));
    let second = queued_id(&client.send_message(
        "news@sender.test",
        &["second@dest.test"],
        b"Subject: second\r\n\r\nbody\r\n",
    ));
    assert_lane_full(&client.command("MAIL FROM:<news@sender.test>"), LOW_FULL);
    client.command("QUIT");

    // Delivered mail leaves the lane.
    gate.store(true, Ordering::SeqCst);
    let delivered = servers[0].wait_for_messages(1, WAIT);
    assert!(
        delivered[0].rcpt_to[0].contains("<first@dest.test>"),
        "{:?}",
        delivered[0].rcpt_to
    );
    queued_id(&submit_when_there_is_room(relay.address, "third"));
    let mut client = connect(relay.address);
    assert_lane_full(&client.command("MAIL FROM:<news@sender.test>"), LOW_FULL);
    client.command("QUIT");

    // So does deleted mail.
    queue(&relay, &["delete", &second.to_string()]);
    queued_id(&submit_when_there_is_room(relay.address, "fourth"));
    assert_eq!(queued_lanes(&relay), ["low", "low"]);
}

#[test]
fn refusals_for_lack_of_disk_space_are_counted() {
    let relay = TestRelay::start(
        "[spool]\nmin_free_space = 1000000000000000000\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut client = SmtpClient::connect(relay.address);
    assert_eq!(client.read().code, 421);
    let address = metrics_address(&relay);
    assert_eq!(metric(address, &refused("high", "disk")), Some(1));
    assert_eq!(metric(address, &refused("high", "lane_full")), Some(0));
}

/// Runs `relayq sendmail ARGS` with `input` on stdin, within WAIT.
fn sendmail(config: &Path, args: &[&str], input: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("sendmail")
        .args(args)
        .env("RELAYQ_CONFIG", config)
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code().expect("exit code"), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sendmail did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sendmail_leaves_refused_mail_in_the_maildrop_until_the_lane_has_room() {
    // `sendmail` finds the listener through the configuration, so it needs
    // a fixed port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = TestRelay::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\nlane = \"low\"\n[lanes.low]\nmax_queued = 1\n"
    ));
    let mut client = connect(relay.address);
    let first = queued_id(&client.send_message(
        "cron@example.com",
        &["root@example.org"],
        b"Subject: first\r\n\r\nbody\r\n",
    ));
    client.command("QUIT");

    let (code, stderr) = sendmail(
        &relay.config_path,
        &["-v", "-f", "app@example.com", "user@example.org"],
        b"Subject: from sendmail\n\nhello\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("left in the maildrop"), "{stderr}");
    assert!(stderr.contains(LOW_FULL), "{stderr}");
    let maildrop = relay.spool_path().join("maildrop");
    assert_eq!(maildrop_files(&maildrop).len(), 1);

    // The importer respects the cap: it leaves the file for later.
    let line = relay.wait_for_log("not imported, will retry");
    assert!(line.contains(LOW_FULL), "{line}");
    assert_eq!(maildrop_files(&maildrop).len(), 1);
    assert_eq!(queued_lanes(&relay), ["low"]);

    queue(&relay, &["delete", &first.to_string()]);
    relay.wait_for_log("imported from maildrop file");
    assert!(maildrop_files(&maildrop).is_empty());
    assert_eq!(queued_lanes(&relay), ["low"]);
}
