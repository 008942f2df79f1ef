//! TLS to next hops: opportunistic STARTTLS, `required`, and a smarthost
//! route with AUTH over implicit TLS.

use std::time::Duration;

use crate::common;
use crate::common::TestRelay;
use crate::common::delivery::{config, expect_messages, start_mx, submit, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{Script, test_ca};

const WITHIN: Duration = Duration::from_secs(15);

fn tls_script() -> Script {
    Script {
        tls: Some(test_ca().0),
        ..Script::default()
    }
}

fn zone() -> common::dns_server::Zone {
    zone_with_sender_mx("127.0.21.9")
        .mx("tls.test", 10, "mx.test")
        .a("mx.test", "127.0.21.1")
        .mx("plain.test", 10, "plain.mx.test")
        .a("plain.mx.test", "127.0.21.2")
}

#[test]
fn starttls_is_used_when_offered() {
    let (port, servers) = start_mx(vec![("127.0.21.1", tls_script())]);
    let dns = TestDns::start(zone());
    let relay = TestRelay::start(&config(&dns, port, "", ""));
    submit(
        &relay,
        "app@sender.test",
        &["user@tls.test"],
        "Subject: secret\r\n\r\n",
    );
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].tls, "the message travelled over TLS");
}

#[test]
fn required_tls_defers_plaintext_hosts_and_verifies_certificates() {
    let (port, servers) = start_mx(vec![
        ("127.0.21.1", tls_script()),
        ("127.0.21.2", Script::default()),
    ]);
    let dns = TestDns::start(zone());
    let ca_file = test_ca().1;
    let relay = TestRelay::start_with_env(
        &config(&dns, port, "tls = \"required\"", ""),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    );
    let plain = submit(
        &relay,
        "app@sender.test",
        &["user@plain.test"],
        "Subject: plain\r\n\r\n",
    );
    submit(
        &relay,
        "app@sender.test",
        &["user@tls.test"],
        "Subject: verified\r\n\r\n",
    );
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].tls);
    let deferred = relay.wait_for_log(&format!("{plain}: to=<user@plain.test>"));
    assert!(
        deferred.contains("status=deferred") && deferred.contains("4.7.10"),
        "{deferred}"
    );
    assert!(
        servers[1].messages().is_empty(),
        "nothing sent in plaintext"
    );
}

#[test]
fn smarthost_route_with_auth_over_implicit_tls() {
    let smarthost = Script {
        tls: Some(test_ca().0),
        implicit_tls: true,
        auth: Some(("app".into(), "s3cret-pass".into())),
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![("127.0.21.1", smarthost)]);
    let dns = TestDns::start(zone());
    let directory = tempfile::tempdir().unwrap();
    let password_file = directory.path().join("smarthost.password");
    std::fs::write(&password_file, "s3cret-pass\n").unwrap();
    let route = format!(
        "[[route]]\ndomains = [\"*\"]\nhost = \"mx.test\"\nport = {port}\ntls = \"implicit\"\n\
         username = \"app\"\npassword_file = \"{}\"\n",
        password_file.display()
    );
    let ca_file = test_ca().1;
    let relay = TestRelay::start_with_env(
        &config(&dns, 1, "", &route),
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    );
    // Any domain goes to the smarthost, MX records or not.
    submit(
        &relay,
        "app@sender.test",
        &["someone@elsewhere.example"],
        "Subject: via smarthost\r\n\r\n",
    );
    let received = expect_messages(&relay, &servers[0], 1, WITHIN);
    assert!(received[0].tls);
    assert_eq!(received[0].auth_user.as_deref(), Some("app"));
    assert!(
        !relay.logs_text().contains("s3cret-pass"),
        "credentials never appear in logs"
    );
}
