//! DANE for SMTP (RFC 7672) in MX delivery, `[delivery] dane = true`
//! against a DNSSEC-signed test root served in process (its key is the
//! relay's `[dns] trust_anchor`): a certificate that matches the MX host's
//! TLSA records (DANE-EE, DANE-TA with a name match) delivers with
//! `tls=dane policy=dane`; unusable records still require TLS; an
//! unsigned zone gets opportunistic TLS and no TLSA lookup; DANE wins over
//! MTA-STS. The refusals are in `dane_refusals`.

use crate::common::TestRelay;
use crate::common::dane::*;
use crate::common::delivery::{expect_messages, start_mx, submit};
use crate::common::fake_mx::{Script, test_ca};
use crate::common::policy_server::{self, policy_response};
use crate::common::signed_dns::Security;

#[test]
fn a_matching_dane_ee_record_delivers_with_tls_dane() {
    let mx_ip = "127.0.72.1";
    // A DANE-EE match ignores the certificate's names and issuer.
    let identity = test_ca().0;
    let (port, servers) = start_mx(vec![
        (mx_ip, tls_script(identity.clone())),
        ("127.0.72.9", Script::default()),
    ]);
    let dns = zones("127.0.72.9")
        .mx("ee.dane.test", 10, "mx.ee.dane.test")
        .a("mx.ee.dane.test", mx_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.ee.dane.test"),
            3,
            1,
            1,
            &dane_ee(&identity),
        )
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@ee.dane.test"],
        "Subject: dane\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=dane, policy=dane,"), "{line}");
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].tls);
    assert!(
        relay.logs_text().contains("matched DANE-EE record 3 1 1"),
        "{}",
        relay.logs_text()
    );
    assert!(dane_count(&relay, "matched") >= 1.0);
    assert!(
        relay.logs_text().contains("DNSSEC validation works"),
        "the start checks the path: {}",
        relay.logs_text()
    );

    // The authenticated session is pooled and carries the next message.
    let id = submit(
        &relay,
        "app@sender.test",
        &["other@ee.dane.test"],
        "Subject: again\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=dane, policy=dane,"), "{line}");
    assert_eq!(servers[0].sessions(), 1, "the connection was reused");
}

#[test]
fn a_dane_ta_record_needs_the_chain_and_a_name_match() {
    let good_ip = "127.0.72.11";
    let wrong_name_ip = "127.0.72.12";
    let good = ca_issued("mx.ta.dane.test");
    let wrong_name = ca_issued("www.elsewhere.test");
    let (port, servers) = start_mx(vec![
        (good_ip, tls_script(good.clone())),
        (wrong_name_ip, tls_script(wrong_name)),
        ("127.0.72.19", Script::default()),
    ]);
    let dns = zones("127.0.72.19")
        .mx("ta.dane.test", 10, "mx.ta.dane.test")
        .a("mx.ta.dane.test", good_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.ta.dane.test"),
            2,
            0,
            1,
            &dane_ta(&good),
        )
        .mx("ta-wrong.dane.test", 10, "mx.ta-wrong.dane.test")
        .a("mx.ta-wrong.dane.test", wrong_name_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.ta-wrong.dane.test"),
            2,
            0,
            1,
            &dane_ta(&good),
        )
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));

    let id = submit(
        &relay,
        "app@sender.test",
        &["user@ta.dane.test"],
        "Subject: ta\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=dane, policy=dane,"), "{line}");
    expect_messages(&relay, &servers[0], 1, WITHIN);

    // The same anchor, but the certificate names another host.
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@ta-wrong.dane.test"],
        "Subject: ta\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("DANE"),
        "{line}"
    );
    assert!(line.contains("names none of"), "{line}");
    assert_no_transaction(&servers[1]);
}

#[test]
fn unusable_tlsa_records_still_require_tls() {
    let tls_ip = "127.0.72.91";
    let plain_ip = "127.0.72.92";
    let identity = test_ca().0;
    let (port, servers) = start_mx(vec![
        (tls_ip, tls_script(identity.clone())),
        (plain_ip, Script::default()),
    ]);
    // PKIX-EE (1) is unusable for SMTP (RFC 7672 §3.1.3): TLS is still
    // required, the certificate is not authenticated.
    let dns = zones("127.0.72.99")
        .mx("pkix.dane.test", 10, "mx.pkix.dane.test")
        .a("mx.pkix.dane.test", tls_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.pkix.dane.test"),
            1,
            1,
            1,
            &dane_ee(&identity),
        )
        .mx("pkix-plain.dane.test", 10, "mx.pkix-plain.dane.test")
        .a("mx.pkix-plain.dane.test", plain_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.pkix-plain.dane.test"),
            1,
            1,
            1,
            &dane_ee(&identity),
        )
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));

    let id = submit(
        &relay,
        "app@sender.test",
        &["user@pkix.dane.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=unverified, policy=dane,"), "{line}");
    assert!(expect_messages(&relay, &servers[0], 1, WITHIN)[0].tls);

    let id = submit(
        &relay,
        "app@sender.test",
        &["user@pkix-plain.dane.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("no STARTTLS offered"),
        "{line}"
    );
    assert_no_transaction(&servers[1]);
    assert!(dane_count(&relay, "no_usable_tlsa") >= 1.0);
}

#[test]
fn an_unsigned_zone_gets_opportunistic_tls() {
    let mx_ip = "127.0.72.61";
    let identity = test_ca().0;
    let (port, servers) = start_mx(vec![(mx_ip, tls_script(identity.clone()))]);
    // TLSA records in an unsigned zone prove nothing: they are not asked.
    let other = ca_issued("mx.unsigned.test");
    let dns = zones("127.0.72.69")
        .zone("unsigned.test", Security::Unsigned)
        .mx("unsigned.test", 10, "mx.unsigned.test")
        .a("mx.unsigned.test", mx_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.unsigned.test"),
            3,
            1,
            1,
            &dane_ee(&other),
        )
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@unsigned.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=unverified, policy=none,"), "{line}");
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].tls);
    assert!(
        !dns.queries().iter().any(|query| query.starts_with("TLSA")),
        "no TLSA lookup for an insecure host: {:?}",
        dns.queries()
    );
    assert!(dane_count(&relay, "insecure") >= 1.0);

    // The session was judged (no DANE): it is pooled and carries the next
    // message too.
    let id = submit(
        &relay,
        "app@sender.test",
        &["other@unsigned.test"],
        "Subject: y\r\n\r\n",
    );
    wait_for_delivery(&relay, &id, "sent");
    assert_eq!(servers[0].sessions(), 1, "the connection was reused");
}

#[test]
fn dane_wins_over_mta_sts() {
    let first = "first.dane.test";
    let second = "second.dane.test";
    let accepted_ip = "127.0.72.71";
    let refused_ip = "127.0.72.72";
    let matching = test_ca().0;
    let (port, servers) = start_mx(vec![
        (accepted_ip, tls_script(matching.clone())),
        // Its certificate verifies for its name (the test CA is trusted),
        // so MTA-STS alone would take it; its TLSA record does not match.
        (refused_ip, tls_script(ca_issued("mx2.both.dane.test"))),
        ("127.0.72.79", Script::default()),
    ]);
    // The first domain's policy names neither MX host: without DANE no
    // mail could go. The second's names its MX host.
    let _first_policy = policy_server::PolicyServer::start(
        "127.0.73.1",
        &format!("mta-sts.{first}"),
        policy_response(
            "version: STSv1\r\nmode: enforce\r\nmx: elsewhere.test\r\nmax_age: 86400\r\n",
        ),
    );
    let _second_policy = policy_server::PolicyServer::start(
        "127.0.73.2",
        &format!("mta-sts.{second}"),
        policy_response(
            "version: STSv1\r\nmode: enforce\r\nmx: mx2.both.dane.test\r\nmax_age: 86400\r\n",
        ),
    );
    let dns = zones("127.0.72.79")
        .mx(first, 10, "mx1.both.dane.test")
        .a("mx1.both.dane.test", accepted_ip)
        .tlsa(
            &format!("_{port}._tcp.mx1.both.dane.test"),
            3,
            1,
            1,
            &dane_ee(&matching),
        )
        .txt(&format!("_mta-sts.{first}"), "v=STSv1; id=dane1;")
        .a(&format!("mta-sts.{first}"), "127.0.73.1")
        .mx(second, 10, "mx2.both.dane.test")
        .a("mx2.both.dane.test", refused_ip)
        .tlsa(
            &format!("_{port}._tcp.mx2.both.dane.test"),
            3,
            1,
            1,
            &dane_ee(&matching),
        )
        .txt(&format!("_mta-sts.{second}"), "v=STSv1; id=dane2;")
        .a(&format!("mta-sts.{second}"), "127.0.73.2")
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));

    let id = submit(
        &relay,
        "app@sender.test",
        &[&format!("user@{first}")],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "sent");
    assert!(line.contains("tls=dane, policy=dane,"), "{line}");
    expect_messages(&relay, &servers[0], 1, WITHIN);

    // A failing DANE match is not rescued by a certificate MTA-STS would
    // accept (RFC 8461 §2).
    let id = submit(
        &relay,
        "app@sender.test",
        &[&format!("user@{second}")],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("DANE"),
        "{line}"
    );
    assert!(line.contains("policy=dane"), "{line}");
    assert_no_transaction(&servers[1]);
}
