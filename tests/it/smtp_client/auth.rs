//! AUTH PLAIN and LOGIN to a smarthost, over TLS only, and a refused
//! password that never shows up in the error.

use std::time::Duration;

use relayq::delivery::client::{ConnectErrorKind, Connection, Credentials, Disposition, TlsMode};

use super::{dispositions, send, settings, start, system_trust, target, test_trust};
use crate::common::fake_mx::{Script, test_ca};

fn credentials(password: &str) -> Credentials {
    Credentials {
        username: "app".to_owned(),
        password: password.to_owned(),
    }
}

#[tokio::test]
async fn auth_plain_over_implicit_tls() {
    let mx = start(Script {
        tls: Some(test_ca().0),
        implicit_tls: true,
        auth: Some(("app".to_owned(), "s3cret".to_owned())),
        ..Script::default()
    });
    let mut connection = Connection::open(
        &target(&mx),
        &settings(),
        TlsMode::Implicit { verify: true },
        Some(&credentials("s3cret")),
        test_trust(),
    )
    .await
    .unwrap();
    assert!(connection.tls().unwrap().verified);
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = mx.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(received[0].auth_user.as_deref(), Some("app"));
    assert!(received[0].tls);
    assert!(
        mx.commands()
            .iter()
            .any(|command| command.starts_with("AUTH PLAIN "))
    );
}

#[tokio::test]
async fn auth_login_after_starttls_and_wrong_password() {
    let mx = start(Script {
        tls: Some(test_ca().0),
        extensions: vec!["PIPELINING".to_owned(), "AUTH LOGIN".to_owned()],
        auth: Some(("app".to_owned(), "s3cret".to_owned())),
        ..Script::default()
    });
    let mode = TlsMode::StartTls { verify: true };
    let mut connection = Connection::open(
        &target(&mx),
        &settings(),
        mode,
        Some(&credentials("s3cret")),
        test_trust(),
    )
    .await
    .unwrap();
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = mx.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(received[0].auth_user.as_deref(), Some("app"));
    assert!(mx.commands().iter().any(|command| command == "AUTH LOGIN"));

    let error = Connection::open(
        &target(&mx),
        &settings(),
        mode,
        Some(&credentials("wrong-password")),
        test_trust(),
    )
    .await
    .err()
    .expect("AUTH refused");
    assert_eq!(error.kind, ConnectErrorKind::Auth);
    assert_eq!(
        error.reply().to_string(),
        "535 5.7.8 Error: authentication failed"
    );
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("wrong-password"), "{shown}");
}

#[tokio::test]
async fn credentials_are_never_sent_in_plaintext() {
    let mx = start(Script {
        auth: Some(("app".to_owned(), "s3cret".to_owned())),
        ..Script::default()
    });
    for mode in [TlsMode::Disabled, TlsMode::Opportunistic] {
        let error = Connection::open(
            &target(&mx),
            &settings(),
            mode,
            Some(&credentials("s3cret")),
            system_trust(),
        )
        .await
        .err()
        .expect("no AUTH without TLS");
        assert_eq!(error.kind, ConnectErrorKind::Auth);
        assert!(error.detail.contains("without TLS"), "{error}");
    }
    assert!(
        !mx.commands()
            .iter()
            .any(|command| command.starts_with("AUTH"))
    );
}
