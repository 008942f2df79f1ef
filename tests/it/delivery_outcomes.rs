//! Per-recipient outcomes: 4xx retried after backoff, 5xx bounced with a DSN,
//! mixed results in one transaction, expiry, NOTIFY=NEVER, and mail from <>.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;

const WITHIN: Duration = Duration::from_secs(15);

fn zone() -> common::dns_server::Zone {
    zone_with_sender_mx("127.0.20.9")
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.20.1")
}

#[test]
fn temporary_failure_is_retried_after_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let greylisting = Script {
        rcpt_reply: Arc::new(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                "451 4.7.1 greylisted, try again later".to_owned()
            } else {
                "250 2.1.5 Ok".to_owned()
            }
        }),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.20.1", greylisting),
        ("127.0.20.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let started = Instant::now();
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@dest.test"],
        "Subject: grey\r\n\r\n",
    );
    expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "waited for the backoff (retry.initial = 1s)"
    );
    let deferred = relay.wait_for_log(&format!("{id}: to=<user@dest.test>"));
    assert!(
        deferred.contains("status=deferred") && deferred.contains("451 4.7.1 greylisted"),
        "{deferred}"
    );
    relay.wait_for_log(&format!("{id}: removed"));
    let reports = relay.log_lines(&format!("delivery status notification for {id} queued"));
    assert!(reports.is_empty(), "no DSN queued: {reports:?}");
    assert!(
        servers[1].messages().is_empty(),
        "no bounce for a temporary failure"
    );
}

#[test]
fn mixed_results_in_one_transaction() {
    let picky = Script {
        rcpt_reply: Arc::new(|address: &str| match address.split('@').next() {
            Some("bad") => "550 5.1.1 no such user".to_owned(),
            Some("later") => "452 4.2.2 mailbox full".to_owned(),
            _ => "250 2.1.5 Ok".to_owned(),
        }),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.20.1", picky),
        ("127.0.20.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &["good@dest.test", "bad@dest.test", "later@dest.test"],
        "Subject: mixed\r\n\r\n",
    );
    let delivered = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert_eq!(
        delivered[0].rcpt_to.len(),
        1,
        "only the good recipient was accepted"
    );
    let bounces = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert!(
        report.contains("Final-Recipient: rfc822; bad@dest.test"),
        "{report}"
    );
    assert!(report.contains("Status: 5.1.1"), "{report}");
    assert!(report.contains("Remote-MTA: dns; mx.dest.test"), "{report}");
    assert!(
        report.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"),
        "{report}"
    );
    assert!(
        !report.contains("good@dest.test"),
        "only the failed recipient is reported"
    );
    assert!(!report.contains("Final-Recipient: rfc822; later@dest.test"));
    let later = relay.wait_for_log(&format!("{id}: to=<later@dest.test>"));
    assert!(later.contains("status=deferred"), "{later}");
}

#[test]
fn expired_mail_is_bounced_with_4_4_7() {
    let refusing = Script {
        rcpt_reply: Arc::new(|_| "451 4.3.0 temporarily unavailable".to_owned()),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.20.1", refusing),
        ("127.0.20.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let extra = config(&dns, port, "", "").replace("max_age = \"1h\"", "max_age = \"2s\"");
    let relay = TestRelay::start(&extra);
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@dest.test"],
        "Subject: expire\r\n\r\n",
    );
    let bounces = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert!(
        report.contains("Action: failed") && report.contains("Status: 4.4.7"),
        "{report}"
    );
    let expired = relay.wait_for_log(&format!("{id}: to=<user@dest.test>, delay="));
    assert!(relay.logs_text().contains("status=expired"), "{expired}");
    relay.wait_for_log(&format!("{id}: removed"));
}

#[test]
fn notify_never_and_null_sender_get_no_bounce() {
    let rejecting = Script {
        rcpt_reply: Arc::new(|_| "550 5.1.1 no such user".to_owned()),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.20.1", rejecting),
        ("127.0.20.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<app@sender.test>");
    client.command("RCPT TO:<quiet@dest.test> NOTIFY=NEVER");
    client.command("DATA");
    client.send_raw(b"Subject: never\r\n\r\n.\r\n");
    let never = common::queued_id(&client.read()).to_string();
    let null = common::queued_id(&client.send_message(
        "",
        &["x@dest.test"],
        b"Subject: from null\r\n\r\n",
    ))
    .to_string();
    relay.wait_for_log(&format!("{never}: removed"));
    relay.wait_for_log(&format!("{null}: removed"));
    relay.wait_for_log(&format!("{null}: sender is <>, no bounce"));
    // A DSN is queued in the commit that removes the message it reports on,
    // and logged before the removal: none in the log up to there means none
    // was queued.
    for id in [&never, &null] {
        let reports = relay.log_lines(&format!("delivery status notification for {id} queued"));
        assert!(reports.is_empty(), "no DSN for {id}: {reports:?}");
    }
    assert!(servers[1].messages().is_empty(), "no DSN was sent");
}

#[test]
fn notify_success_to_a_next_hop_without_dsn_gets_a_relayed_notice() {
    let no_dsn = Script {
        extensions: vec![
            "PIPELINING".into(),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.20.1", no_dsn),
        ("127.0.20.9", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let mut client = relay.client();
    client.greet();
    client.command("MAIL FROM:<app@sender.test> ENVID=order-17");
    client.command("RCPT TO:<user@dest.test> NOTIFY=SUCCESS,FAILURE");
    client.command("DATA");
    client.send_raw(b"Subject: receipt\r\n\r\n.\r\n");
    common::queued_id(&client.read());
    let delivered = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(
        !delivered[0].rcpt_to[0].contains("NOTIFY"),
        "no DSN parameters to a server without DSN"
    );
    let notices = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&notices[0].data).into_owned();
    assert!(report.contains("Action: relayed"), "{report}");
    assert!(
        report.contains("Original-Envelope-Id: order-17"),
        "{report}"
    );
}
