//! The suppression list as an operator and an application meet it: an
//! address on the list is refused at RCPT with `550 5.1.1` (the other
//! recipients go on), `relayq suppression` manages the list, it survives a
//! restart, entries lapse after `expire_after`, and `sendmail` exits 67
//! when every recipient is refused.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::shaping::{metrics_address, sample, scrape, wait_until};
use crate::common::{TestRelay, output_text, read_spool, spawn_tail};

const WITHIN: Duration = Duration::from_secs(20);

/// `relayq suppression ARGS --config`, with `stdin` as its input.
pub fn suppression_with_input(relay: &TestRelay, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("suppression")
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run relayq suppression");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("relayq suppression output")
}

pub fn suppression(relay: &TestRelay, args: &[&str]) -> Output {
    suppression_with_input(relay, args, b"")
}

/// A `suppression` command that must succeed; returns its stdout.
pub fn suppression_ok(relay: &TestRelay, args: &[&str]) -> String {
    let output = suppression(relay, args);
    assert!(
        output.status.success(),
        "relayq suppression {args:?}: {}\n{}",
        output.status,
        output_text(&output)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

pub fn suppression_json(relay: &TestRelay, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&suppression_ok(relay, &args)).expect("JSON output")
}

/// The reply to `RCPT TO:<recipient>` in a fresh transaction.
fn rcpt(relay: &TestRelay, recipient: &str) -> (u16, String) {
    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<app@sender.test>").code, 250);
    let reply = client.command(&format!("RCPT TO:<{recipient}>"));
    client.command("QUIT");
    (reply.code, reply.text())
}

#[test]
fn a_suppressed_recipient_is_refused_at_rcpt_and_the_others_go_on() {
    let mut relay = TestRelay::start("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let metrics = metrics_address(&relay);
    let added = suppression_ok(
        &relay,
        &["add", "Gone@Example.ORG", "--reason", "asked to stop"],
    );
    assert!(added.contains("suppressed"), "{added}");
    let (mut tail, events) = spawn_tail(&relay, &["--json"]);
    // Refused RCPTs until the tail shows one: that proves its subscription.
    let mut refusals = 0;
    wait_until("queue tail shows a suppressed event", WITHIN, || {
        assert_eq!(rcpt(&relay, "gone@example.org").0, 550);
        refusals += 1;
        std::thread::sleep(Duration::from_millis(200));
        events
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("\"suppressed\""))
    });

    let mut client = relay.client();
    client.greet();
    assert_eq!(client.command("MAIL FROM:<app@sender.test>").code, 250);
    // Compared case-insensitively: the entry is gone@example.org.
    let refused = client.command("RCPT TO:<gone@example.org>");
    assert_eq!(refused.code, 550, "{refused:?}");
    let text = refused.text();
    assert!(
        text.starts_with("5.1.1 <gone@example.org>: recipient is suppressed (admin since "),
        "{text}"
    );
    assert!(text.ends_with("); see relayq suppression"), "{text}");
    let accepted = client.command("RCPT TO:<kept@example.org>");
    assert_eq!(accepted.code, 250, "{accepted:?}");
    assert_eq!(client.command("DATA").code, 354);
    client.send_raw(b"Subject: hi\r\n\r\nhello\r\n.\r\n");
    let queued = client.read();
    assert_eq!(queued.code, 250, "{queued:?}");
    client.command("QUIT");

    let event: serde_json::Value = events
        .lock()
        .unwrap()
        .iter()
        .find(|line| line.contains("\"suppressed\""))
        .map(|line| serde_json::from_str(line).unwrap())
        .unwrap();
    assert_eq!(event["event"], "suppressed");
    assert_eq!(event["sender"], "app@sender.test");
    assert_eq!(event["recipient"], "gone@example.org");
    assert_eq!(event["class"], "admin");
    assert!(event.get("id").is_none(), "nothing was queued: {event}");
    let _ = tail.kill();
    let _ = tail.wait();

    let scraped = scrape(metrics);
    assert_eq!(sample(&scraped, "relayq_suppressed_addresses"), Some(1.0));
    assert_eq!(
        sample(&scraped, "relayq_suppressed_rcpts_total"),
        Some(f64::from(refusals + 1))
    );

    relay.stop();
    let spooled = read_spool(&relay.spool_path());
    assert_eq!(spooled.len(), 1);
    let recipients: Vec<&str> = spooled[0]
        .envelope
        .recipients
        .iter()
        .map(|recipient| recipient.address.as_str())
        .collect();
    assert_eq!(recipients, ["kept@example.org"]);
}

#[test]
fn the_cli_lists_shows_and_removes_entries() {
    let relay = TestRelay::start("");
    suppression_ok(&relay, &["add", "b@example.org"]);
    suppression_ok(&relay, &["add", "A@example.org", "--reason", "complained"]);
    let imported = suppression_with_input(
        &relay,
        &["import", "-"],
        b"c@example.net,bad_domain,NXDOMAIN\n",
    );
    assert!(imported.status.success(), "{}", output_text(&imported));

    let list = suppression_json(&relay, &["list"]);
    let addresses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        ["a@example.org", "b@example.org", "c@example.net"]
    );
    let first = &list[0];
    assert_eq!(first["class"], "admin");
    assert_eq!(first["source"], "admin");
    assert_eq!(first["reply"], "complained");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert_eq!(list[2]["source"], "import");
    assert_eq!(list[2]["class"], "bad_domain");

    let only = suppression_json(&relay, &["list", "--class", "bad_domain"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["address"], "c@example.net");
    assert_eq!(
        suppression_json(&relay, &["list", "--limit", "2"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let text = suppression_ok(&relay, &["list"]);
    assert!(text.contains("a@example.org"), "{text}");
    assert!(text.contains("-- 3 suppressed addresses"), "{text}");

    let shown = suppression_json(&relay, &["show", "A@EXAMPLE.org"]);
    assert_eq!(shown["address"], "a@example.org");
    let page = suppression_ok(&relay, &["show", "c@example.net"]);
    assert!(page.contains("Class:   bad_domain"), "{page}");

    let unknown = suppression(&relay, &["show", "nobody@example.org"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        output_text(&unknown).contains("nobody@example.org is not suppressed"),
        "{}",
        output_text(&unknown)
    );
    let bad = suppression(&relay, &["add", "not an address"]);
    assert_eq!(bad.status.code(), Some(64), "{}", output_text(&bad));
    let bad_class = suppression(&relay, &["list", "--class", "bounced"]);
    assert_eq!(bad_class.status.code(), Some(64));
    assert!(output_text(&bad_class).contains("unknown bounce class"));

    assert_eq!(rcpt(&relay, "a@example.org").0, 550);
    suppression_ok(&relay, &["remove", "a@example.org"]);
    assert_eq!(rcpt(&relay, "a@example.org").0, 250);
    let again = suppression(&relay, &["remove", "a@example.org"]);
    assert_eq!(again.status.code(), Some(64));
    assert!(output_text(&again).contains("a@example.org is not suppressed"));
}

#[test]
fn without_a_daemon_the_commands_exit_69() {
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
    for args in [&["list"][..], &["add", "a@example.org"], &["export"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("suppression")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(69), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("not available"));
    }
}

#[test]
fn import_reads_addresses_and_csv_and_export_writes_what_import_reads() {
    let relay = TestRelay::start("");
    let file = relay.directory.path().join("list.csv");
    std::fs::write(
        &file,
        "# from the old system\naddress,class,reason\nPlain@Example.org\n\
         csv@example.org,invalid_recipient,\"550 5.1.1 no such user, really\"\n\
         not an address\nx@example.org,no_such_class,why\nlast@example.org,,\n",
    )
    .unwrap();
    let output = suppression(&relay, &["import", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(65), "{}", output_text(&output));
    let said = output_text(&output);
    assert!(said.contains("3 addresses imported"), "{said}");
    assert!(
        said.contains("list.csv:5: "),
        "line number of the bad address: {said}"
    );
    assert!(
        said.contains("list.csv:6: unknown bounce class \"no_such_class\""),
        "{said}"
    );

    let entry = suppression_json(&relay, &["show", "csv@example.org"]);
    assert_eq!(entry["class"], "invalid_recipient");
    assert_eq!(entry["reply"], "550 5.1.1 no such user, really");
    assert_eq!(entry["source"], "import");
    let plain = suppression_json(&relay, &["show", "plain@example.org"]);
    assert_eq!(plain["class"], "admin");

    let exported = suppression_ok(&relay, &["export"]);
    assert_eq!(
        exported,
        "address,class,reason\ncsv@example.org,invalid_recipient,\"550 5.1.1 no such user, really\"\n\
         last@example.org,admin,\nplain@example.org,admin,\n"
    );

    // The export is a valid import: another relay ends up with the same list.
    let other = TestRelay::start("");
    let copied = suppression_with_input(&other, &["import", "-"], exported.as_bytes());
    assert!(copied.status.success(), "{}", output_text(&copied));
    assert_eq!(suppression_ok(&other, &["export"]), exported);
    let missing = suppression(&relay, &["import", "/nonexistent/list.csv"]);
    assert_eq!(missing.status.code(), Some(66));
}

#[test]
fn the_list_survives_a_restart() {
    let mut relay = TestRelay::start("");
    suppression_ok(&relay, &["add", "kept@example.org"]);
    relay.stop();
    relay.launch();
    let line = relay.wait_for_log("suppression list: ");
    assert!(line.contains("1 addresses loaded"), "{line}");
    let (code, text) = rcpt(&relay, "kept@example.org");
    assert_eq!(code, 550, "{text}");
    relay.kill();
    relay.launch();
    assert_eq!(rcpt(&relay, "kept@example.org").0, 550);
}

#[test]
fn an_entry_lapses_after_expire_after() {
    let relay = TestRelay::start("[suppression]\nexpire_after = \"1s\"\n");
    suppression_ok(&relay, &["add", "brief@example.org"]);
    wait_until("the entry no longer applies at RCPT", WITHIN, || {
        rcpt(&relay, "brief@example.org").0 == 250
    });
    wait_until("the lapsed entry is swept", WITHIN, || {
        suppression_json(&relay, &["list"])
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[test]
fn a_disabled_list_refuses_nobody() {
    let relay = TestRelay::start("[suppression]\nenabled = false\n");
    suppression_ok(&relay, &["add", "listed@example.org"]);
    assert_eq!(rcpt(&relay, "listed@example.org").0, 250);
}

#[test]
fn sendmail_exits_67_when_every_recipient_is_suppressed() {
    // A fixed port, so that `sendmail` finds the listener in the config.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = TestRelay::start(&format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\n"));
    suppression_ok(&relay, &["add", "gone@example.org"]);
    suppression_ok(&relay, &["add", "left@example.org"]);
    let sendmail = |recipients: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("sendmail")
            .arg("-C")
            .arg(&relay.config_path)
            .args(recipients)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"Subject: hi\n\nhello\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let all = sendmail(&["gone@example.org", "left@example.org"]);
    assert_eq!(all.status.code(), Some(67), "{}", output_text(&all));
    let said = String::from_utf8_lossy(&all.stderr);
    assert!(
        said.contains("<gone@example.org>: recipient is suppressed"),
        "{said}"
    );
    assert!(
        said.contains("<left@example.org>: recipient is suppressed"),
        "{said}"
    );
    // Not every recipient: a refusal as any other (all or nothing).
    let some = sendmail(&["gone@example.org", "fine@example.org"]);
    assert_eq!(some.status.code(), Some(65), "{}", output_text(&some));
    let fine = sendmail(&["fine@example.org"]);
    assert_eq!(fine.status.code(), Some(0), "{}", output_text(&fine));
}
