//! A message that a DKIM key covers but that cannot be signed (here: a
//! header section longer than intake examines) is refused with `451 4.3.0`
//! and not stored: over SMTP the client keeps it, and through `sendmail`
//! it stays in the maildrop, where the importer tries it again. It is
//! never sent unsigned.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::dkim::{dkim_block, make_key};
use crate::common::{TestRelay, WAIT, maildrop_files, queued_id};

/// A message from `from` whose header section (over 64 KiB) is longer
/// than intake holds to find the From: field and sign; `line_end` is CRLF
/// for SMTP, LF for `sendmail`.
fn long_header_message(from: &str, subject: &str, line_end: &str) -> String {
    let mut content =
        format!("From: {from}{line_end}To: rcpt@dest.test{line_end}Subject: {subject}{line_end}");
    for index in 0..800 {
        content.push_str(&format!("X-Trace-{index}: {}{line_end}", "t".repeat(80)));
    }
    content.push_str(&format!("{line_end}body{line_end}"));
    assert!(content.len() > 64 * 1024);
    content
}

/// Runs `relayq sendmail ARGS` with `input` on stdin against `relay`'s
/// config; returns the exit code and standard error.
fn sendmail(relay: &TestRelay, args: &[&str], input: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("sendmail")
        .args(args)
        .env("RELAYQ_CONFIG", &relay.config_path)
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
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.code().expect("exit code"), stderr);
        }
        assert!(
            Instant::now() < deadline,
            "sendmail did not finish within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_message_that_cannot_be_signed_gets_451_and_is_not_stored() {
    let directory = tempfile::tempdir().unwrap();
    let key = make_key(directory.path(), "example.com", "ed", None);
    // A fixed port, so that `sendmail` finds the listener in the config. No
    // `[dns]`: accepted mail stays queued, for the spool to be read.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut relay = TestRelay::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\n{}",
        dkim_block("example.com", "ed", &key)
    ));

    let mut client = relay.client();
    client.greet();
    let content = long_header_message("app@example.com", "too long to sign", "\r\n");
    let reply = client.send_message("app@example.com", &["rcpt@dest.test"], content.as_bytes());
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text().starts_with("4.3.0 "), "{reply:?}");
    assert!(reply.text().contains("DKIM"), "{reply:?}");
    relay.wait_for_log("refused, not DKIM-signed: the header section is over 65536 octets");
    // The session goes on; mail from the domain is signed as usual, and
    // mail no key covers is queued unsigned, long header section or not.
    let signed = "From: app@example.com\r\nSubject: short\r\n\r\nbody\r\n";
    queued_id(&client.send_message("app@example.com", &["rcpt@dest.test"], signed.as_bytes()));
    let other = long_header_message("app@other.org", "not ours", "\r\n");
    queued_id(&client.send_message("app@other.org", &["rcpt@dest.test"], other.as_bytes()));
    client.command("QUIT");

    // `sendmail` gets the 451 and leaves the message in the maildrop; the
    // importer is refused in turn, and keeps it there to try again.
    let maildrop = relay.spool_path().join("maildrop");
    let input = long_header_message("cron@example.com", "from cron", "\n");
    let (code, stderr) = sendmail(&relay, &["-t", "-i"], input.as_bytes());
    assert_eq!(code, 0, "{stderr}");
    let deadline = Instant::now() + WAIT;
    while relay.log_lines("not imported, will retry").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no retry; logs:\n{}",
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let retry = relay.log_lines("not imported, will retry").remove(0);
    assert!(retry.contains("451 4.3.0"), "{retry}");
    assert_eq!(maildrop_files(&maildrop).len(), 1);
    assert!(maildrop_files(&maildrop.join("bad")).is_empty());

    relay.stop();
    let mut stored: Vec<(String, bool)> = relay
        .spooled_messages()
        .iter()
        .map(|message| {
            let body = String::from_utf8_lossy(&message.body).into_owned();
            let subject = body
                .split("Subject: ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap();
            (subject.to_owned(), body.starts_with("DKIM-Signature: "))
        })
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [("not ours".to_owned(), false), ("short".to_owned(), true)]
    );
    assert_eq!(
        maildrop_files(&maildrop).len(),
        1,
        "kept for the next start"
    );
}
