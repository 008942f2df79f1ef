//! Bounce classes as an operator and an application see them: every
//! deferral, bounce, expiry and operator's bounce is classified, and the
//! class appears in the delivery log line, `queue show`, `queue tail`
//! events, the DSN's `X-Relayq-Class:` and `relayq_bounces_total`; the
//! operator's `bounce.rules_file` is tried first, checked by
//! `check-config`, and re-read on reload (a bad one changes nothing).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use crate::common::shaping::{metrics_address, queue_json, queue_text, sample, scrape, wait_until};

const WITHIN: Duration = Duration::from_secs(20);

fn zone() -> common::dns_server::Zone {
    zone_with_sender_mx("127.0.57.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.57.1")
}

/// The per-recipient block of a DSN that reports on `address`.
fn block_of<'a>(report: &'a str, address: &str) -> &'a str {
    let marker = format!("Final-Recipient: rfc822; {address}");
    let start = report
        .find(&marker)
        .unwrap_or_else(|| panic!("no block for {address} in\n{report}"));
    let rest = &report[start..];
    let end = rest.find("\r\n\r\n").unwrap_or(rest.len());
    &rest[..end]
}

fn recipient<'a>(message: &'a serde_json::Value, address: &str) -> &'a serde_json::Value {
    message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|recipient| recipient["address"] == address)
        .unwrap_or_else(|| panic!("no {address} in {message}"))
}

#[test]
fn failures_are_classified_in_logs_queue_show_events_dsns_and_metrics() {
    let provider = Script {
        rcpt_reply: Arc::new(|address: &str| {
            match address.split('@').next() {
            Some("blocked") => "550 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org".to_owned(),
            Some("nobody") => "550 5.1.1 The email account that you tried to reach does not exist.".to_owned(),
            _ => "452 4.2.2 The email account that you tried to reach is over quota.".to_owned(),
        }
        }),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.57.1", provider),
        ("127.0.57.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let metrics = metrics_address(&relay);
    let (mut tail, events) = common::spawn_tail(&relay, &["--json"]);

    let id = submit(
        &relay,
        "app@sender.test",
        &["blocked@dest.test", "nobody@dest.test", "full@dest.test"],
        "Subject: classes\r\n\r\nhello\r\n",
    );

    // The delivery log line.
    let blocked = relay.wait_for_log(&format!("{id}: to=<blocked@dest.test>"));
    assert!(
        blocked.contains(", class=spam_block, dsn=5.7.1, status=bounced"),
        "{blocked}"
    );
    let nobody = relay.wait_for_log(&format!("{id}: to=<nobody@dest.test>"));
    assert!(
        nobody.contains("class=invalid_recipient,") && nobody.contains("status=bounced"),
        "{nobody}"
    );
    let full = relay.wait_for_log(&format!("{id}: to=<full@dest.test>"));
    assert!(
        full.contains("class=mailbox_full,") && full.contains("status=deferred"),
        "{full}"
    );

    // The DSN, one block per failed recipient.
    let bounces = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert!(
        block_of(&report, "blocked@dest.test").contains("\r\nX-Relayq-Class: spam_block"),
        "{report}"
    );
    assert!(
        block_of(&report, "nobody@dest.test").contains("\r\nX-Relayq-Class: invalid_recipient"),
        "{report}"
    );

    // `queue show`: the message waits for full@, every recipient with the
    // class of its last failure.
    let shown = queue_json(&relay, &["show", &id]);
    assert_eq!(
        recipient(&shown, "blocked@dest.test")["class"],
        "spam_block"
    );
    assert_eq!(
        recipient(&shown, "nobody@dest.test")["class"],
        "invalid_recipient"
    );
    assert_eq!(recipient(&shown, "full@dest.test")["class"], "mailbox_full");
    let text = queue_text(&relay, &["show", &id]);
    assert!(
        text.contains("<full@dest.test> deferred (452 4.2.2 The email account that you tried to reach is over quota.) class=mailbox_full"),
        "{text}"
    );

    // Events (full@ is retried every second, so its deferrals reach the
    // tail whenever it subscribed).
    let tail_shows = |kind: &str, address: &str, class: &str| {
        wait_until(
            &format!("queue tail shows {kind} {address} {class}"),
            WITHIN,
            || {
                events.lock().unwrap().iter().any(|line| {
                    let event: serde_json::Value = serde_json::from_str(line).unwrap();
                    event["event"] == kind
                        && event["recipient"] == address
                        && event["class"] == class
                })
            },
        )
    };
    tail_shows("deferred", "full@dest.test", "mailbox_full");

    // An operator's bounce of what is left: class `admin`.
    queue_text(&relay, &["bounce", &id]);
    tail_shows("bounced", "full@dest.test", "admin");
    let admin = relay.wait_for_log("class=admin, dsn=5.0.0, status=bounced");
    assert!(admin.contains("to=<full@dest.test>, delay="), "{admin}");
    let bounces = expect_messages(&relay, &servers[1], 2, WITHIN);
    let report = String::from_utf8_lossy(&bounces[1].data).into_owned();
    assert!(
        block_of(&report, "full@dest.test").contains("\r\nX-Relayq-Class: admin"),
        "{report}"
    );

    // Metrics: permanent failures by class; deferrals apart.
    wait_until("the bounce counters", WITHIN, || {
        let text = scrape(metrics);
        sample(&text, "relayq_bounces_total{class=\"spam_block\"}") == Some(1.0)
            && sample(&text, "relayq_bounces_total{class=\"invalid_recipient\"}") == Some(1.0)
            && sample(&text, "relayq_bounces_total{class=\"admin\"}") == Some(1.0)
            && sample(&text, "relayq_bounces_total{class=\"mailbox_full\"}") == Some(0.0)
            && sample(&text, "relayq_deferrals_total{class=\"mailbox_full\"}")
                .is_some_and(|count| count >= 1.0)
    });
    let _ = tail.kill();
    let _ = tail.wait();
}

#[test]
fn expired_recipients_have_the_class_expired_also_in_json_logs() {
    let deferring = Script {
        rcpt_reply: Arc::new(|_| "451 4.7.1 greylisted, try again later".to_owned()),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.57.1", deferring),
        ("127.0.57.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(
        &config(&dns, port, "", "[log]\nformat = \"json\"\n")
            .replace("max_age = \"1h\"", "max_age = \"2s\""),
    );
    let entry = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON log line: {line}"))
    };
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@dest.test"],
        "Subject: expire\r\n\r\n",
    );
    let deferred = relay.wait_for_log(&format!("{id}: to=<user@dest.test>"));
    assert!(
        deferred.contains("class=policy,") && deferred.contains("status=deferred"),
        "greylisting is the receiver's policy: {deferred}"
    );
    assert_eq!(entry(&deferred)["class"], "policy", "{deferred}");
    let expired = relay.wait_for_log("status=expired");
    assert!(
        expired.contains(", class=expired, dsn=4.4.7, status=expired"),
        "{expired}"
    );
    assert_eq!(entry(&expired)["class"], "expired", "{expired}");
    let bounces = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert!(
        block_of(&report, "user@dest.test").contains("\r\nX-Relayq-Class: expired"),
        "{report}"
    );
}

fn relayq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(args)
        .output()
        .expect("run relayq")
}

/// Submits one message to `user@dest.test` and returns the class its
/// delivery log line gives.
fn class_of_next_failure(relay: &TestRelay) -> String {
    let id = submit(
        relay,
        "app@sender.test",
        &["user@dest.test"],
        "Subject: rules\r\n\r\n",
    );
    let line = relay.wait_for_log(&format!("{id}: to=<user@dest.test>"));
    line.split("class=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no class in {line}"))
        .to_owned()
}

#[test]
fn the_operators_rules_come_first_and_a_reload_rereads_them() {
    let acme = Script {
        rcpt_reply: Arc::new(|_| "550 5.7.1 Rejected by the ACME gateway".to_owned()),
        ..Script::default()
    };
    let (port, _servers) = start_mx(vec![
        ("127.0.57.1", acme),
        ("127.0.57.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("bounce-rules.toml");
    let write_rules = |text: &str| {
        let staged = rules.with_extension("new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &rules).unwrap();
    };
    // Built in, the reply is a policy refusal (an ambiguous 5.7.1).
    write_rules("[rules]\n");
    let relay = TestRelay::start(&config(
        &dns,
        port,
        "",
        &format!("[bounce]\nrules_file = \"{}\"\n", rules.display()),
    ));
    assert_eq!(class_of_next_failure(&relay), "policy");

    write_rules("[rules]\n# The ACME gateway filters content.\nspam_content = ['acme gateway']\n");
    let reloaded = relay.reload();
    let stdout = String::from_utf8_lossy(&reloaded.stdout);
    assert!(
        reloaded.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    assert!(
        stdout.contains("changed: bounce"),
        "the reload names it: {stdout}"
    );
    assert_eq!(class_of_next_failure(&relay), "spam_content");

    // A bad file: the reload and check-config name the file, the key and
    // the reason, and the rules in force stay.
    write_rules("[rules]\nspam_content = ['acme gateway']\nspammy = ['acme']\n");
    let refused = relay.reload();
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    for expected in [
        "bounce.rules_file",
        rules.to_str().unwrap(),
        "rules.spammy",
        "unknown bounce class",
    ] {
        assert!(stderr.contains(expected), "{expected} in: {stderr}");
    }
    let checked = relayq(&["check-config", relay.config_path.to_str().unwrap()]);
    let check_stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(64), "{check_stderr}");
    assert!(
        check_stderr.contains(rules.to_str().unwrap()) && check_stderr.contains("rules.spammy"),
        "{check_stderr}"
    );
    assert_eq!(class_of_next_failure(&relay), "spam_content");

    write_rules("[rules]\nspam_content = ['(unclosed']\n");
    let refused = relay.reload();
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("rules.spam_content[0]: invalid regular expression"),
        "{stderr}"
    );
    assert_eq!(class_of_next_failure(&relay), "spam_content");
}
