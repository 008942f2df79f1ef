//! `relayq sendmail` and relayq invoked as `sendmail`: the command lines PHP
//! and cron use, the maildrop while the daemon is down, and the exit codes.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{SpooledMessage, TestRelay, WAIT, maildrop_files};

/// The origin of the harness's relay (its hostname).
const ORIGIN: &str = "relay.test.example";

/// A relay on a fixed loopback port, so that `sendmail` finds it from the
/// config and finds it again after a restart.
pub(crate) fn start_relay(extra: &str) -> TestRelay {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    TestRelay::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\n{extra}"
    ))
}

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stderr: String,
}

/// Runs `program args` with `input` on stdin, as user `tester`, within WAIT.
fn run(program: &Path, args: &[&str], config: &Path, input: &[u8]) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .env("RELAYQ_CONFIG", config)
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    let mut stdin = child.stdin.take().unwrap();
    // A lone dot ends input without -i: sendmail may exit before reading
    // everything, so a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return Run {
                code: status.code().expect("exit code"),
                stderr,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sendmail did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `relayq sendmail ARGS` against `relay`.
pub(crate) fn sendmail(relay: &TestRelay, args: &[&str], input: &[u8]) -> Run {
    let mut full = vec!["sendmail"];
    full.extend_from_slice(args);
    run(
        Path::new(env!("CARGO_BIN_EXE_relayq")),
        &full,
        &relay.config_path,
        input,
    )
}

fn only_message(relay: &mut TestRelay) -> SpooledMessage {
    relay.stop();
    let mut messages = relay.spooled_messages();
    assert_eq!(messages.len(), 1, "logs:\n{}", relay.logs_text());
    messages.remove(0)
}

fn recipients(message: &SpooledMessage) -> Vec<String> {
    message
        .envelope
        .recipients
        .iter()
        .map(|recipient| recipient.address.clone())
        .collect()
}

fn body_text(message: &SpooledMessage) -> String {
    String::from_utf8(message.body.clone()).unwrap()
}

#[test]
fn php_style_extracts_recipients_and_strips_bcc() {
    let mut relay = start_relay("");
    let input = b"To: a@example.org\nCc: B <b@example.org>\nBcc: hidden@example.org\n\
Subject: php\n\nHello\n.\nstill the body\n";
    let result = sendmail(&relay, &["-t", "-i", "-f", "app@example.com"], input);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let message = only_message(&mut relay);
    assert_eq!(message.envelope.reverse_path, "app@example.com");
    assert_eq!(
        recipients(&message),
        ["a@example.org", "b@example.org", "hidden@example.org"]
    );
    let body = body_text(&message);
    assert!(body.contains("Subject: php\r\n"), "{body}");
    assert!(!body.contains("hidden@example.org"), "Bcc leaked: {body}");
    assert!(body.contains("From: app@example.com\r\n"), "{body}");
    assert!(
        body.ends_with("\r\n\r\nHello\r\n.\r\nstill the body\r\n"),
        "a lone dot is content with -i: {body}"
    );
}

#[test]
fn without_f_the_sender_is_the_user_at_origin() {
    let mut relay = start_relay("");
    let input = b"To: someone@example.org\nSubject: no -f\n\nx\n";
    let result = sendmail(&relay, &["-t", "-i"], input);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let message = only_message(&mut relay);
    assert_eq!(message.envelope.reverse_path, format!("tester@{ORIGIN}"));
    assert!(body_text(&message).contains(&format!("From: tester@{ORIGIN}\r\n")));
}

/// Cron's command line, through a symlink named `sendmail`.
fn cron_job(relay: &mut TestRelay) -> SpooledMessage {
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("sendmail");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_relayq"), &link).unwrap();
    let input = b"To: root\nSubject: Cron <root@host> backup\n\nbackup done\n";
    let result = run(
        &link,
        &["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"],
        &relay.config_path,
        input,
    );
    assert_eq!(result.code, 0, "{}", result.stderr);
    only_message(relay)
}

#[test]
fn cron_style_via_symlink_qualifies_root() {
    let mut relay = start_relay("");
    let message = cron_job(&mut relay);
    assert_eq!(recipients(&message), [format!("root@{ORIGIN}")]);
    assert_eq!(message.envelope.reverse_path, format!("tester@{ORIGIN}"));
    let body = body_text(&message);
    assert!(
        body.contains(&format!("From: \"CronDaemon\" <tester@{ORIGIN}>\r\n")),
        "{body}"
    );
}

#[test]
fn cron_mail_to_root_goes_to_the_admin_address() {
    let mut relay = start_relay("[smtp]\nadmin_address = \"ops@example.com\"\n");
    let message = cron_job(&mut relay);
    assert_eq!(recipients(&message), ["ops@example.com"]);
}

#[test]
fn argument_recipients_and_a_lone_dot_ends_input() {
    let mut relay = start_relay("");
    let input = b"Subject: args\n\nfirst\n.\nnever read\n";
    let result = sendmail(
        &relay,
        &["-f", "app@example.com", "a@example.org", "b@example.org"],
        input,
    );
    assert_eq!(result.code, 0, "{}", result.stderr);
    let message = only_message(&mut relay);
    assert_eq!(recipients(&message), ["a@example.org", "b@example.org"]);
    let body = body_text(&message);
    assert!(body.ends_with("\r\n\r\nfirst\r\n"), "{body}");
}

#[test]
fn message_built_by_lettre_is_submitted_with_t() {
    use lettre::message::{Mailbox, Message};
    let mut relay = start_relay("");
    let built = Message::builder()
        .from("App <app@example.com>".parse::<Mailbox>().unwrap())
        .to("Reader <reader@example.org>".parse::<Mailbox>().unwrap())
        .cc("cc@example.org".parse::<Mailbox>().unwrap())
        .bcc("blind@example.org".parse::<Mailbox>().unwrap())
        .subject("built by lettre")
        .body(String::from("line one\r\n.\r\nline three\r\n"))
        .unwrap();
    // lettre leaves Bcc out of the formatted message (it belongs to the
    // envelope), so the blind copy goes on the command line, next to -t.
    let result = sendmail(
        &relay,
        &["-t", "-i", "blind@example.org"],
        &built.formatted(),
    );
    assert_eq!(result.code, 0, "{}", result.stderr);
    let message = only_message(&mut relay);
    let mut got = recipients(&message);
    got.sort();
    assert_eq!(
        got,
        ["blind@example.org", "cc@example.org", "reader@example.org"]
    );
    let body = body_text(&message);
    assert!(!body.contains("blind@"), "{body}");
    assert!(body.contains("From: App <app@example.com>"), "{body}");
    assert!(body.contains("line one\r\n.\r\nline three"), "{body}");
}

#[test]
fn daemon_down_message_waits_in_the_maildrop_and_is_imported() {
    let mut relay = start_relay("");
    relay.stop();
    let maildrop = relay.spool_path().join("maildrop");
    let input = b"To: root\nSubject: while down\n\nkept\n";
    let result = sendmail(&relay, &["-t", "-i"], input);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert_eq!(maildrop_files(&maildrop).len(), 1);
    assert!(relay.spooled_messages().is_empty());

    relay.launch();
    relay.wait_for_log("imported from maildrop file");
    let message = only_message(&mut relay);
    assert_eq!(recipients(&message), [format!("root@{ORIGIN}")]);
    assert_eq!(message.envelope.reverse_path, format!("tester@{ORIGIN}"));
    let body = body_text(&message);
    assert!(body.starts_with("Received: from maildrop"), "{body}");
    assert!(body.contains("Subject: while down\r\n") && body.contains("Message-ID: <"));
    assert!(maildrop_files(&maildrop).is_empty());
}

#[test]
fn running_daemon_imports_a_dropped_file() {
    let relay = start_relay("");
    let maildrop = relay.spool_path().join("maildrop");
    // What an earlier `sendmail` left behind while the daemon was down.
    let dropped = "relayq-maildrop 1\nsender app@example.com\nrecipient later@example.org\n\n\
Subject: late\r\n\r\nlate\r\n";
    std::fs::write(maildrop.join(".tmp-x"), dropped).unwrap();
    std::fs::rename(maildrop.join(".tmp-x"), maildrop.join("1.x")).unwrap();
    std::fs::write(maildrop.join("2.bad"), "not a maildrop file\n").unwrap();
    relay.wait_for_log("imported from maildrop file 1.x");
    relay.wait_for_log("maildrop file 2.bad: not a relayq maildrop file; moved to");
    assert!(maildrop_files(&maildrop).is_empty());
    assert_eq!(maildrop_files(&maildrop.join("bad")), ["2.bad"]);
}

#[test]
fn exit_75_when_neither_listener_nor_maildrop_works() {
    let elsewhere = tempfile::tempdir().unwrap();
    let not_a_directory = elsewhere.path().join("maildrop");
    std::fs::write(&not_a_directory, "").unwrap();
    let mut relay = start_relay(&format!(
        "[control]\nmaildrop = \"{}\"\n",
        not_a_directory.display()
    ));
    relay.stop();
    let result = sendmail(&relay, &["user@example.org"], b"Subject: lost?\n\nx\n");
    assert_eq!(result.code, 75, "{}", result.stderr);
    assert!(result.stderr.contains("maildrop"), "{}", result.stderr);
}

#[test]
fn exit_65_for_no_recipients_or_a_refusal_and_64_for_usage() {
    let mut relay = start_relay("");
    let result = sendmail(&relay, &["-t", "-i"], b"Subject: nobody\n\nx\n");
    assert_eq!(result.code, 65, "{}", result.stderr);
    let result = sendmail(&relay, &["-i", "bad@@example.org"], b"Subject: x\n\nx\n");
    assert_eq!(result.code, 65, "{}", result.stderr);
    let result = sendmail(&relay, &["-x"], b"");
    assert_eq!(result.code, 64, "{}", result.stderr);
    relay.stop();
    assert!(relay.spooled_messages().is_empty());
}
