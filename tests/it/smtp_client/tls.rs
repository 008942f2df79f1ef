//! STARTTLS: opportunistic (unverified, falls back to plaintext when the
//! handshake fails) and required (verified, never plaintext).

use std::time::Duration;

use relayq::delivery::client::{ConnectErrorKind, Connection, Disposition, Target, TlsMode};

use super::{dispositions, open, send, settings, start, system_trust, target, test_trust};
use crate::common::fake_mx::{Script, test_ca};

#[tokio::test]
async fn opportunistic_starttls_accepts_an_unverified_certificate() {
    let mx = start(Script {
        tls: Some(test_ca().0),
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Opportunistic).await;
    let tls = connection.tls().expect("STARTTLS used").clone();
    assert!(!tls.verified);
    assert!(tls.protocol.starts_with("TLSv1."), "{tls:?}");
    assert!(!tls.cipher.is_empty());
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = mx.wait_for_messages(1, Duration::from_secs(5));
    assert!(received[0].tls);
    assert_eq!(received[0].helo, "relay.test", "EHLO again after STARTTLS");
}

#[tokio::test]
async fn required_tls_verifies_the_certificate() {
    let mx = start(Script {
        tls: Some(test_ca().0),
        ..Script::default()
    });
    let mut connection = Connection::open(
        &target(&mx),
        &settings(),
        TlsMode::Required,
        None,
        test_trust(),
    )
    .await
    .unwrap();
    assert!(connection.tls().unwrap().verified);
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;

    // The same server is "verified" under opportunistic TLS too, and fails
    // when the CA is not trusted or the name does not match.
    let connection = Connection::open(
        &target(&mx),
        &settings(),
        TlsMode::Opportunistic,
        None,
        test_trust(),
    )
    .await
    .unwrap();
    assert!(connection.tls().unwrap().verified);
    connection.quit().await;
    let error = Connection::open(
        &target(&mx),
        &settings(),
        TlsMode::Required,
        None,
        system_trust(),
    )
    .await
    .err()
    .expect("untrusted CA");
    assert_eq!(error.kind, ConnectErrorKind::Tls);
    let wrong_name = Target {
        host: "other.test".to_owned(),
        address: mx.address,
    };
    let error = Connection::open(
        &wrong_name,
        &settings(),
        TlsMode::Required,
        None,
        test_trust(),
    )
    .await
    .err()
    .expect("name mismatch");
    assert_eq!(error.kind, ConnectErrorKind::Tls);
}

#[tokio::test]
async fn required_tls_against_plaintext_server() {
    let mx = start(Script::default());
    for mode in [TlsMode::Required, TlsMode::StartTls { verify: false }] {
        let error = Connection::open(&target(&mx), &settings(), mode, None, test_trust())
            .await
            .err()
            .expect("no STARTTLS offered");
        assert_eq!(error.kind, ConnectErrorKind::TlsRequired);
        assert_eq!(error.reply().status, "4.7.10");
    }
    assert!(mx.messages().is_empty());
}

#[tokio::test]
async fn failed_opportunistic_handshake_falls_back_to_plaintext() {
    let mx = start(Script {
        broken_tls: true,
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Opportunistic).await;
    assert!(connection.tls().is_none());
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = mx.wait_for_messages(1, Duration::from_secs(5));
    assert!(!received[0].tls);
    assert_eq!(mx.sessions(), 2);
}
