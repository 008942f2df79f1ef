//! MX delivery end to end: recipients grouped per domain, bodies byte for
//! byte, MX preference and fallback, implicit MX, null MX and NXDOMAIN.

use std::time::Duration;

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{
    closed_port, config, expect_messages, start_mx, submit, zone_with_sender_mx,
};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::Script;
use mail_parser::{MessageParser, MimeHeaders};

const WITHIN: Duration = Duration::from_secs(15);

#[test]
fn recipients_on_several_domains_get_the_message_byte_for_byte() {
    let (port, servers) = start_mx(vec![
        ("127.0.10.1", Script::default()),
        ("127.0.10.2", Script::default()),
    ]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.10.99")
            .mx("alpha.test", 10, "mx.alpha.test")
            .a("mx.alpha.test", "127.0.10.1")
            .mx("beta.test", 10, "mx.beta.test")
            .a("mx.beta.test", "127.0.10.2"),
    );
    let mut relay = TestRelay::start(&config(&dns, port, "", ""));
    let content = "Subject: hello\r\nMessage-ID: <m@sender.test>\r\n\r\nline\r\n.dot line\r\n";
    let id = submit(
        &relay,
        "app@sender.test",
        &["one@alpha.test", "two@alpha.test", "three@beta.test"],
        content,
    );

    let alpha = expect_messages(&relay, &servers[0], 1, WITHIN);
    let beta = expect_messages(&relay, &servers[1], 1, WITHIN);
    assert_eq!(alpha.len(), 1, "one transaction for both alpha recipients");
    assert_eq!(alpha[0].rcpt_to.len(), 2, "{:?}", alpha[0].rcpt_to);
    assert!(
        alpha[0]
            .mail_from
            .starts_with("MAIL FROM:<app@sender.test>"),
        "{}",
        alpha[0].mail_from
    );
    assert_eq!(beta[0].rcpt_to.len(), 1);
    for received in [&alpha[0], &beta[0]] {
        let data = String::from_utf8(received.data.clone()).unwrap();
        assert!(
            data.starts_with("Received: from client.test.example"),
            "{data}"
        );
        assert!(data.ends_with(content), "{data}");
    }
    relay.wait_for_log(&format!("{id}: removed"));
    let sent = relay.log_lines("status=sent");
    assert_eq!(sent.len(), 3, "one log line per recipient: {sent:?}");
    assert!(sent.iter().any(|line| line.contains("to=<three@beta.test>")
        && line.contains("relay=mx.beta.test[127.0.10.2]")));
    relay.stop();
    assert!(
        relay.spooled_messages().is_empty(),
        "delivered mail leaves the spool"
    );
}

#[test]
fn mx_preference_and_fallback_on_refused_and_4xx_greeting() {
    let busy = Script {
        greeting: "421 4.3.2 busy, try later".into(),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![
        ("127.0.11.1", Script::default()), // preference 5: wins for pref.test
        ("127.0.11.2", Script::default()), // preference 10
        ("127.0.11.4", busy),              // 4xx greeting, preference 5 of greet.test
        ("127.0.11.5", Script::default()), // fallback for both
    ]);
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.11.99")
            .mx("pref.test", 10, "b.pref.test")
            .mx("pref.test", 5, "a.pref.test")
            .a("a.pref.test", "127.0.11.1")
            .a("b.pref.test", "127.0.11.2")
            // Nothing listens on 127.0.11.3: connection refused.
            .mx("refused.test", 5, "down.refused.test")
            .a("down.refused.test", "127.0.11.3")
            .mx("refused.test", 10, "up.refused.test")
            .a("up.refused.test", "127.0.11.5")
            .mx("greet.test", 5, "busy.greet.test")
            .a("busy.greet.test", "127.0.11.4")
            .mx("greet.test", 10, "up.greet.test")
            .a("up.greet.test", "127.0.11.5"),
    );
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    submit(
        &relay,
        "app@sender.test",
        &["x@pref.test"],
        "Subject: pref\r\n\r\n",
    );
    submit(
        &relay,
        "app@sender.test",
        &["y@refused.test"],
        "Subject: refused\r\n\r\n",
    );
    submit(
        &relay,
        "app@sender.test",
        &["z@greet.test"],
        "Subject: greet\r\n\r\n",
    );

    expect_messages(&relay, &servers[0], 1, WITHIN);
    let fallback = expect_messages(&relay, &servers[3], 2, WITHIN);
    assert!(
        servers[1].messages().is_empty(),
        "the less preferred MX is not used"
    );
    let recipients: Vec<_> = fallback.iter().map(|m| m.rcpt_to[0].clone()).collect();
    for expected in ["<y@refused.test>", "<z@greet.test>"] {
        assert!(
            recipients.iter().any(|line| line.contains(expected)),
            "{expected} in {recipients:?}"
        );
    }
    assert_eq!(servers[2].sessions(), 1, "the busy MX was tried once");
}

#[test]
fn implicit_mx_uses_the_domains_address() {
    let (port, servers) = start_mx(vec![("127.0.12.1", Script::default())]);
    let dns = TestDns::start(zone_with_sender_mx("127.0.12.99").a("implicit.test", "127.0.12.1"));
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    submit(
        &relay,
        "app@sender.test",
        &["user@implicit.test"],
        "Subject: implicit\r\n\r\n",
    );
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].rcpt_to[0].contains("<user@implicit.test>"));
}

/// A bounce for `domain` reaches the sender's MX and says `status`.
fn assert_bounce(
    domain_zone: impl FnOnce(common::dns_server::Zone) -> common::dns_server::Zone,
    recipient: &str,
    status: &str,
) {
    let (port, servers) = start_mx(vec![("127.0.13.1", Script::default())]);
    let dns = TestDns::start(domain_zone(zone_with_sender_mx("127.0.13.1")));
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &[recipient],
        "Subject: doomed\r\nX-Marker: 42\r\n\r\nbody\r\n",
    );
    let bounces = expect_messages(&relay, &servers[0], 1, WITHIN);
    let bounce = &bounces[0];
    assert_eq!(
        bounce.mail_from.split(' ').nth(1).unwrap_or(""),
        "FROM:<>",
        "{}",
        bounce.mail_from
    );
    assert!(bounce.rcpt_to[0].contains("<app@sender.test>"));
    let message = MessageParser::new()
        .parse(&bounce.data)
        .expect("bounce parses");
    let content_type = message.content_type().expect("content type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("report"));
    assert_eq!(
        content_type.attribute("report-type"),
        Some("delivery-status")
    );
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(
        text.contains(&format!("Final-Recipient: rfc822; {recipient}")),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains(&format!("Status: {status}")), "{text}");
    assert!(
        text.contains("X-Marker: 42"),
        "original headers returned: {text}"
    );
    assert!(
        !text.contains("\r\nbody\r\n"),
        "RET=HDRS by default: no body"
    );
    relay.wait_for_log(&format!("{id}: removed"));
}

#[test]
fn null_mx_bounces_at_once_with_5_1_10() {
    assert_bounce(
        |zone| zone.mx("nullmx.test", 0, "."),
        "user@nullmx.test",
        "5.1.10",
    );
}

#[test]
fn nxdomain_bounces_with_5_1_2() {
    assert_bounce(
        |zone| zone.nxdomain("nowhere.test"),
        "user@nowhere.test",
        "5.1.2",
    );
}

#[test]
fn unreachable_hosts_defer_and_the_destination_is_remembered_as_dead() {
    let port = closed_port();
    let dns = TestDns::start(
        zone_with_sender_mx("127.0.14.99")
            .mx("dead.test", 10, "mx.dead.test")
            .a("mx.dead.test", "127.0.14.1"),
    );
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    let ids: Vec<String> = (0..5)
        .map(|n| {
            submit(
                &relay,
                "app@sender.test",
                &[&format!("u{n}@dead.test")],
                "Subject: x\r\n\r\n",
            )
        })
        .collect();
    for id in &ids {
        relay.wait_for_log(&format!("{id}: to=<"));
    }
    let deferred = relay.log_lines("status=deferred");
    assert!(deferred.len() >= 5, "{deferred:?}");
    let connects = relay.log_lines("cannot use mx.dead.test");
    assert!(
        connects.len() < ids.len(),
        "a dead destination is not retried for every message: {connects:?}"
    );
}
