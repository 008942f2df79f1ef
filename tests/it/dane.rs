//! DANE for SMTP (RFC 7672) in MX delivery, `[delivery] dane = true`
//! against a DNSSEC-signed test root served in process (its key is the
//! relay's `[dns] trust_anchor`): a certificate that matches the MX host's
//! TLSA records delivers with `tls=dane policy=dane`; a mismatch, an MX
//! without STARTTLS, a failed TLSA lookup and bogus signatures defer, and
//! nothing ever falls back to unauthenticated TLS; an unsigned zone gets
//! opportunistic TLS; DANE wins over MTA-STS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest as _, Sha256};

use crate::common::delivery::{expect_messages, start_mx, submit};
use crate::common::dns_server::{TestDns, Zone};
use crate::common::fake_mx::{FakeMx, Script, TlsIdentity, test_ca};
use crate::common::policy_server::{self, policy_response};
use crate::common::signed_dns::{Security, SignedDns, SignedZones};
use crate::common::{TestRelay, WAIT};

const WITHIN: Duration = Duration::from_secs(15);

/// The DER certificates of a PEM chain, end entity first.
fn chain(identity: &TlsIdentity) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM chain")
}

/// `3 1 1`: SHA-256 of the server certificate's public key.
fn dane_ee(identity: &TlsIdentity) -> Vec<u8> {
    let spki = relayq::dane::public_key_info(&chain(identity)[0]).expect("SPKI");
    Sha256::digest(spki).to_vec()
}

/// `2 0 1`: SHA-256 of the issuing CA's certificate.
fn dane_ta(identity: &TlsIdentity) -> Vec<u8> {
    let ca = CertificateDer::from_pem_slice(identity.ca_pem.as_bytes()).expect("CA PEM");
    Sha256::digest(ca.as_ref()).to_vec()
}

/// An MX offering STARTTLS with `identity`.
fn tls_script(identity: TlsIdentity) -> Script {
    Script {
        tls: Some(identity),
        ..Script::default()
    }
}

/// A certificate for `host` from the MTA-STS test CA, the CA's certificate
/// sent along (DANE-TA needs the anchor in the chain, RFC 7672 §3.1.2).
fn ca_issued(host: &str) -> TlsIdentity {
    let mut identity = policy_server::identity(host);
    identity.cert_pem = format!("{}{}", identity.cert_pem, identity.ca_pem);
    identity
}

/// Signed zones with the senders' domain (bounces go there, no TLSA).
fn zones(sender_mx_ip: &str) -> SignedZones {
    SignedZones::new()
        .zone("dane.test", Security::Signed)
        .mx("sender.test", 10, "mx.sender.test")
        .a("mx.sender.test", sender_mx_ip)
}

fn relay_config(dns: &SignedDns, anchor_dir: &std::path::Path, port: u16, extra: &str) -> String {
    let anchor = dns.trust_anchor_file(anchor_dir);
    format!(
        "[delivery]\nport = {port}\ndane = true\nconnect_timeout = \"2s\"\ngreeting_timeout = \"5s\"\n\
         command_timeout = \"5s\"\ndata_timeout = \"5s\"\nfinal_timeout = \"5s\"\n\
         tls_ca_file = \"{}\"\n\
         [dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\
         [retry]\ninitial = \"1s\"\nfactor = 1.0\nmax = \"1s\"\nmax_age = \"1h\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
        policy_server::ca_file().display(),
        dns.address,
        anchor.display()
    )
}

/// The first delivery log line of message `id` with `status`.
fn wait_for_delivery(relay: &TestRelay, id: &str, status: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = relay
            .log_lines(&format!("{id}: to="))
            .into_iter()
            .find(|line| line.contains(&format!("status={status}")))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no {status} line for {id}; logs:\n{}",
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_no_transaction(server: &FakeMx) {
    let commands = server.commands();
    assert!(
        commands
            .iter()
            .all(|command| !command.to_ascii_uppercase().starts_with("MAIL")),
        "no MAIL FROM may reach a host DANE refuses: {commands:?}"
    );
    assert!(server.messages().is_empty());
}

/// `relayq_dane_results_total{result="RESULT"}` as scraped now.
fn dane_count(relay: &TestRelay, result: &str) -> f64 {
    let line = relay.wait_for_log("metrics on ");
    let address: SocketAddr = line
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|address| address.parse().ok())
        .expect("metrics address");
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("metrics");
    let series = format!("relayq_dane_results_total{{result=\"{result}\"}} ");
    response
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{response}"))
}

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
