//! TLS on intake listeners: STARTTLS (RFC 3207) with its session reset and
//! its defence against commands injected before the handshake, implicit TLS
//! (RFC 8314), the `Received:` protocol, and certificate errors at
//! check-config.

use std::process::Command;

use rustls::pki_types::pem::PemObject;

use crate::common::tls_client::{ListenerFiles, TlsClient, presented_certificate};
use crate::common::{TestRelay, queue_json, queued_id};

const CONTENT: &[u8] =
    b"From: app@example.com\r\nTo: user@example.org\r\nSubject: tls\r\n\r\nHello.\r\n";

pub(crate) fn received_header(relay: &TestRelay, id: &str) -> String {
    let detail = queue_json(relay, &["show", id]);
    let headers = detail["headers"].as_str().unwrap().replace("\r\n\t", " ");
    let first = headers.lines().next().unwrap();
    assert!(first.starts_with("Received: "), "{headers}");
    first.to_owned()
}

#[test]
fn starttls_secures_the_session_and_forgets_what_came_before() {
    let files = ListenerFiles::new("");
    let relay = TestRelay::start(&files.listener("starttls", "none"));
    let mut client = TlsClient::connect(relay.address);
    let ehlo = client.greet();
    assert!(ehlo.lines.iter().any(|line| line == "STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.lines.iter().any(|line| line.starts_with("AUTH")),
        "{ehlo:?}"
    );
    assert_eq!(client.command("MAIL FROM:<app@example.com>").code, 250);

    client.starttls();
    assert!(client.is_tls());
    // RFC 3207 §4.2: the EHLO and the transaction begun before are forgotten.
    let mail = client.command("MAIL FROM:<app@example.com>");
    assert_eq!((mail.code, &mail.lines[0][..5]), (503, "5.5.1"), "{mail:?}");
    let ehlo = client.ehlo();
    assert!(
        !ehlo.lines.iter().any(|line| line == "STARTTLS"),
        "{ehlo:?}"
    );
    let again = client.command("STARTTLS");
    assert_eq!((again.code, &again.lines[0][..5]), (503, "5.5.1"));
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT));
    let received = received_header(&relay, &id.to_string());
    assert!(received.contains(" with ESMTPS id "), "{received}");
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let files = ListenerFiles::new("");
    let relay = TestRelay::start(&files.listener("starttls", "none"));
    let mut client = TlsClient::connect(relay.address);
    client.greet();
    // A man in the middle appends commands to the client's STARTTLS, in
    // the same packet (CVE-2011-0411). They must not be run under TLS.
    client.send_raw(b"STARTTLS\r\nHELP\r\nMAIL FROM:<evil@example.net>\r\n");
    let reply = client.read();
    assert_eq!(reply.code, 220, "{reply:?}");
    client.upgrade();
    let first = client.command("EHLO client.test.example");
    assert_eq!(
        first.code, 250,
        "an injected command was answered: {first:?}"
    );
    assert_eq!(first.lines[0], "relay.test.example");
    // Nothing else is pending: the next reply is the NOOP's.
    assert_eq!(client.command("NOOP").text(), "2.0.0 Ok");
    assert_eq!(client.command("MAIL FROM:<app@example.com>").code, 250);
}

#[test]
fn implicit_tls_handshakes_before_the_greeting() {
    let files = ListenerFiles::new("");
    let relay = TestRelay::start(&files.listener("implicit", "none"));
    let mut client = TlsClient::connect_implicit(relay.address);
    let ehlo = client.greet();
    assert!(client.is_tls());
    assert!(
        !ehlo.lines.iter().any(|line| line == "STARTTLS"),
        "{ehlo:?}"
    );
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT));
    let received = received_header(&relay, &id.to_string());
    assert!(received.contains(" with ESMTPS id "), "{received}");

    // A plaintext client gets no greeting: the relay waits for a ClientHello.
    let mut plain = TlsClient::connect(relay.address);
    plain.send_raw(b"EHLO client.test.example\r\n");
    assert!(
        plain.try_read().is_none(),
        "plaintext answered on an implicit TLS listener"
    );
}

#[test]
fn plain_sessions_say_esmtp_and_offer_no_starttls() {
    let relay = TestRelay::start("");
    let mut client = TlsClient::connect(relay.address);
    let ehlo = client.greet();
    assert!(
        !ehlo.lines.iter().any(|line| line == "STARTTLS"),
        "{ehlo:?}"
    );
    let id = queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT));
    let received = received_header(&relay, &id.to_string());
    assert!(received.contains(" with ESMTP id "), "{received}");
}

fn check_config(text: &str) -> (i32, String) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("relayq.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_reads_the_certificate_key_and_users_files() {
    let files = ListenerFiles::new("alice:$2b$04$notavalidbcrypthash\n");
    let good = ListenerFiles::new("");
    let listener = files.listener("starttls", "required");

    let (code, stderr) = check_config(&format!("{listener}[smtp]\n{}", files.users_file()));
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "smtp.users_file: {}: line 1: malformed bcrypt hash",
            files.path("users")
        )),
        "{stderr}"
    );

    let missing = listener.replace(&files.path("cert.pem"), "/nonexistent/cert.pem");
    let (code, stderr) = check_config(&format!("{missing}[smtp]\n{}", good.users_file()));
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("listener[0].certificate: cannot read /nonexistent/cert.pem"),
        "{stderr}"
    );

    // The certificate where the key should be.
    let swapped = listener.replace(&files.path("key.pem"), &files.path("cert.pem"));
    let (code, stderr) = check_config(&format!("{swapped}[smtp]\n{}", good.users_file()));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("listener[0].private_key: "), "{stderr}");
    assert!(stderr.contains(&files.path("cert.pem")), "{stderr}");

    let (code, stderr) = check_config(&format!("{listener}[smtp]\n{}", good.users_file()));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_failed_handshake_ends_only_that_session() {
    let files = ListenerFiles::new("");
    let relay = TestRelay::start(&files.listener("starttls", "none"));
    let mut client = TlsClient::connect(relay.address);
    client.greet();
    let reply = client.command("STARTTLS");
    assert_eq!(reply.code, 220);
    // Plaintext where a ClientHello belongs.
    client.send_raw(b"EHLO client.test.example\r\n");
    assert!(
        client.try_read().is_none(),
        "plaintext answered after STARTTLS"
    );

    let mut client = TlsClient::connect(relay.address);
    client.greet();
    client.starttls();
    client.ehlo();
    queued_id(&client.send_message("app@example.com", &["user@example.org"], CONTENT));
}

#[test]
fn a_reload_rereads_the_certificate_and_keeps_it_when_the_new_one_is_bad() {
    let files = ListenerFiles::new("");
    let relay = TestRelay::start(&files.listener("starttls", "none"));
    let (identity, _) = crate::common::fake_mx::test_ca();
    let first = rustls::pki_types::CertificateDer::from_pem_slice(identity.cert_pem.as_bytes())
        .expect("the test certificate");
    assert_eq!(presented_certificate(relay.address), first.to_vec());

    // Rotated in place, as certbot does: same paths, new files.
    let key = rcgen::KeyPair::generate().unwrap();
    let rotated = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(files.path("cert.pem"), rotated.pem()).unwrap();
    std::fs::write(files.path("key.pem"), key.serialize_pem()).unwrap();
    let output = relay.reload();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(presented_certificate(relay.address), rotated.der().to_vec());

    // A file that is not a certificate: the reload changes nothing.
    std::fs::write(files.path("cert.pem"), "not a certificate\n").unwrap();
    let output = relay.reload();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let said = crate::common::output_text(&output);
    assert!(said.contains("listener[0].certificate"), "{said}");
    assert_eq!(presented_certificate(relay.address), rotated.der().to_vec());
}
