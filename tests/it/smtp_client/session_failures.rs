//! Sessions that fail: a refused connection or greeting, EHLO refused
//! (HELO instead), silence after DATA or the final dot, a lost connection.

use std::time::Duration;
use std::time::Instant;

use relayq::delivery::client::{
    ClientSettings, ConnectErrorKind, Connection, Disposition, Target, TlsMode,
};

use super::{dispositions, open, open_with, send, settings, start, system_trust, target};
use crate::common::fake_mx::{Script, Stage};

#[tokio::test]
async fn refused_greeting_is_a_greeting_error() {
    for greeting in ["421 4.3.2 busy, try later", "554 5.7.1 no service"] {
        let mx = start(Script {
            greeting: greeting.to_owned(),
            ..Script::default()
        });
        let error = Connection::open(
            &target(&mx),
            &settings(),
            TlsMode::Opportunistic,
            None,
            system_trust(),
        )
        .await
        .err()
        .expect("greeting refused");
        assert_eq!(error.kind, ConnectErrorKind::Greeting);
        assert_eq!(error.reply().to_string(), greeting);
    }
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let target = Target {
        host: "mx.test".to_owned(),
        address,
    };
    let error = Connection::open(
        &target,
        &settings(),
        TlsMode::Disabled,
        None,
        system_trust(),
    )
    .await
    .err()
    .expect("nothing listens");
    assert_eq!(error.kind, ConnectErrorKind::Connect);
    let reply = error.reply();
    assert_eq!((reply.code, &*reply.status), (0, "4.4.1"));
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let mx = start(Script {
        reject_ehlo: true,
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Opportunistic).await;
    assert!(!connection.offers_dsn());
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    assert!(
        mx.commands()
            .iter()
            .any(|command| command == "HELO relay.test")
    );
}

#[tokio::test]
async fn no_reply_to_data_defers_within_the_timeout() {
    let mx = start(Script {
        never_answer_data: true,
        ..Script::default()
    });
    let settings = ClientSettings {
        data_timeout: Duration::from_millis(300),
        ..settings()
    };
    let mut connection = open_with(&mx, &settings).await;
    let started = Instant::now();
    let attempt = send(&mut connection, &["a@x.test", "b@x.test"], b"hi\r\n").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(dispositions(&attempt), [Disposition::Deferred; 2]);
    let reply = &attempt.outcomes[0].reply;
    assert_eq!(reply.to_string(), "4.4.2 timeout waiting for reply to DATA");
    assert!(!attempt.connection_usable);
}

#[tokio::test]
async fn no_reply_to_final_dot_defers() {
    let mx = start(Script {
        delay_before: vec![(Stage::FinalDot, Duration::from_secs(30))],
        ..Script::default()
    });
    let settings = ClientSettings {
        final_timeout: Duration::from_millis(300),
        ..settings()
    };
    let mut connection = open_with(&mx, &settings).await;
    let started = Instant::now();
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(dispositions(&attempt), [Disposition::Deferred]);
    let reply = &attempt.outcomes[0].reply;
    assert_eq!((reply.code, &*reply.status), (0, "4.4.2"));
    assert!(reply.text.contains("end of data"), "{reply}");
    assert!(!attempt.connection_usable);
}

#[tokio::test]
async fn connection_lost_mid_transaction_defers() {
    let mx = start(Script {
        disconnect_at: Some(Stage::Rcpt),
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Deferred]);
    let reply = &attempt.outcomes[0].reply;
    assert_eq!((reply.code, &*reply.status), (0, "4.4.2"));
    assert!(reply.text.contains("connection lost"), "{reply}");
    assert!(!attempt.connection_usable);
}
