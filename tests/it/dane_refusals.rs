//! DANE refusals (RFC 7672 §2.2): a certificate that matches no TLSA
//! record, an MX without STARTTLS, a failed TLSA lookup, bogus signatures
//! and name servers that serve no DNSSEC all defer (`4.7.5` for DANE's own,
//! `4.4.3` for DNS), nothing falls back to unauthenticated TLS, and past
//! `retry.max_age` the mail bounces naming DANE.

use crate::common::TestRelay;
use crate::common::dane::*;
use crate::common::delivery::{expect_messages, start_mx, submit};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::{Script, test_ca};
use crate::common::signed_dns::Security;

#[test]
fn a_mismatch_defers_and_past_max_age_bounces_naming_dane() {
    let mx_ip = "127.0.72.21";
    let presented = test_ca().0;
    let published = ca_issued("mx.mismatch.dane.test");
    let (port, servers) = start_mx(vec![
        (mx_ip, tls_script(presented)),
        ("127.0.72.29", Script::default()),
    ]);
    let dns = zones("127.0.72.29")
        .mx("mismatch.dane.test", 10, "mx.mismatch.dane.test")
        .a("mx.mismatch.dane.test", mx_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.mismatch.dane.test"),
            3,
            1,
            1,
            &dane_ee(&published),
        )
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(
        &relay_config(&dns, anchors.path(), port, "")
            .replace("max_age = \"1h\"", "max_age = \"3s\""),
    );
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@mismatch.dane.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("DANE"),
        "{line}"
    );
    assert!(line.contains("policy=dane"), "{line}");
    assert!(
        line.contains("matches none of the 1 usable TLSA records"),
        "{line}"
    );
    assert!(line.contains("class=tls_failure"), "{line}");
    assert!(servers[0].sessions() >= 1, "the handshake was tried");
    assert_no_transaction(&servers[0]);

    let bounces = expect_messages(&relay, &servers[1], 1, WITHIN);
    let report = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert!(
        report.contains("Action: failed") && report.contains("4.7.5") && report.contains("DANE"),
        "{report}"
    );
    assert_no_transaction(&servers[0]);
    assert!(dane_count(&relay, "mismatch") >= 1.0);
}

#[test]
fn an_mx_without_starttls_defers() {
    let mx_ip = "127.0.72.31";
    let identity = test_ca().0;
    let (port, servers) = start_mx(vec![(mx_ip, Script::default())]);
    let dns = zones("127.0.72.39")
        .mx("plaintext.dane.test", 10, "mx.plaintext.dane.test")
        .a("mx.plaintext.dane.test", mx_ip)
        .tlsa(
            &format!("_{port}._tcp.mx.plaintext.dane.test"),
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
        &["user@plaintext.dane.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5") && line.contains("no STARTTLS offered; DANE requires TLS"),
        "{line}"
    );
    assert!(servers[0].sessions() >= 1);
    assert_no_transaction(&servers[0]);
    assert!(dane_count(&relay, "no_starttls") >= 1.0);
}

#[test]
fn a_failed_tlsa_lookup_defers_without_connecting() {
    let mx_ip = "127.0.72.41";
    let (port, servers) = start_mx(vec![(mx_ip, tls_script(test_ca().0))]);
    let dns = zones("127.0.72.49")
        .mx("servfail.dane.test", 10, "mx.servfail.dane.test")
        .a("mx.servfail.dane.test", mx_ip)
        .servfail(&format!("_{port}._tcp.mx.servfail.dane.test"))
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@servfail.dane.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("dsn=4.7.5")
            && line.contains("TLSA lookup failed")
            && line.contains("SERVFAIL"),
        "{line}"
    );
    assert_eq!(
        servers[0].sessions(),
        0,
        "a secure host whose TLSA lookup failed is never used, not even with TLS"
    );
    assert!(dane_count(&relay, "tlsa_lookup_failed") >= 1.0);
}

#[test]
fn bogus_signatures_defer() {
    let mx_ip = "127.0.72.51";
    let (port, servers) = start_mx(vec![(mx_ip, tls_script(test_ca().0))]);
    let dns = zones("127.0.72.59")
        .zone("bogus.test", Security::Bogus)
        .mx("bogus.test", 10, "mx.bogus.test")
        .a("mx.bogus.test", mx_ip)
        .start();
    let anchors = tempfile::tempdir().unwrap();
    let relay = TestRelay::start(&relay_config(&dns, anchors.path(), port, ""));
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@bogus.test"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(line.contains("DNSSEC validation failed (bogus)"), "{line}");
    assert_eq!(servers[0].sessions(), 0);
    assert!(dane_count(&relay, "dnssec_failed") >= 1.0);
}

#[test]
fn name_servers_without_dnssec_defer_and_the_log_says_why() {
    let mx_ip = "127.0.72.81";
    let (port, servers) = start_mx(vec![(mx_ip, tls_script(test_ca().0))]);
    // A plain name server, and the built-in root anchor: nothing validates.
    let dns = TestDns::start(
        Zone::default()
            .mx("plain.example", 10, "mx.plain.example")
            .a("mx.plain.example", mx_ip),
    );
    let relay = TestRelay::start(&format!(
        "[delivery]\nport = {port}\ndane = true\nconnect_timeout = \"2s\"\n\
         [dns]\nnameservers = [\"{}\"]\n\
         [retry]\ninitial = \"1s\"\nfactor = 1.0\nmax = \"1s\"\nmax_age = \"1h\"\n",
        dns.address
    ));
    let line = relay.wait_for_log("DNSSEC validation fails");
    assert!(
        line.contains("do not seem to pass DNSSEC records"),
        "{line}"
    );
    let id = submit(
        &relay,
        "app@sender.test",
        &["user@plain.example"],
        "Subject: x\r\n\r\n",
    );
    let line = wait_for_delivery(&relay, &id, "deferred");
    assert!(
        line.contains("DNSSEC validation failed") && line.contains("do not seem to pass DNSSEC"),
        "{line}"
    );
    assert_eq!(servers[0].sessions(), 0);
}
