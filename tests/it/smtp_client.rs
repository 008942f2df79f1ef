//! The outbound SMTP client (`relayq::delivery::client`) against scripted
//! fake MX servers on loopback: what arrives, byte for byte, and the
//! outcome each recipient gets.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::common::fake_mx::{FakeMx, Script, Stage, test_ca};
use relayq::delivery::client::{
    Attempt, ClientSettings, ConnectErrorKind, Connection, Credentials, Disposition,
    OutboundMessage, OutboundRecipient, Target, TlsMode,
};
use relayq::queue::envelope::{Notify, Ret};
use relayq::tls::TlsConfigs;

fn settings() -> ClientSettings {
    ClientSettings {
        helo_name: "relay.test".to_owned(),
        connect_timeout: Duration::from_secs(5),
        greeting_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        final_timeout: Duration::from_secs(5),
    }
}

/// Trusts the system roots only: the test CA is unknown.
fn system_trust() -> &'static TlsConfigs {
    static CONFIGS: OnceLock<TlsConfigs> = OnceLock::new();
    CONFIGS.get_or_init(|| TlsConfigs::load().unwrap())
}

/// Also trusts the test CA.
fn test_trust() -> &'static TlsConfigs {
    static CONFIGS: OnceLock<TlsConfigs> = OnceLock::new();
    CONFIGS.get_or_init(|| TlsConfigs::with_extra_ca(test_ca().0.ca_pem.as_bytes()).unwrap())
}

fn start(script: Script) -> FakeMx {
    FakeMx::start("127.0.0.1:0".parse().unwrap(), script).unwrap()
}

fn target(mx: &FakeMx) -> Target {
    Target {
        host: "mx.test".to_owned(),
        address: mx.address,
    }
}

async fn open(mx: &FakeMx, tls: TlsMode) -> Connection {
    Connection::open(&target(mx), &settings(), tls, None, system_trust())
        .await
        .expect("session opens")
}

/// A plaintext session with `settings` (shorter timeouts).
async fn open_with(mx: &FakeMx, settings: &ClientSettings) -> Connection {
    Connection::open(
        &target(mx),
        settings,
        TlsMode::Disabled,
        None,
        system_trust(),
    )
    .await
    .expect("session opens")
}

fn recipients(addresses: &[&str]) -> Vec<OutboundRecipient> {
    addresses
        .iter()
        .map(|address| OutboundRecipient {
            address: (*address).to_owned(),
            notify: Notify::default(),
            orcpt: None,
        })
        .collect()
}

fn message<'a>(recipients: &'a [OutboundRecipient], body: &[u8]) -> OutboundMessage<'a> {
    OutboundMessage {
        reverse_path: "sender@example.com",
        recipients,
        size: body.len() as u64,
        eight_bit_mime: false,
        smtputf8: false,
        ret: None,
        envid: None,
        mt_priority: None,
    }
}

async fn send(connection: &mut Connection, addresses: &[&str], body: &[u8]) -> Attempt {
    let recipients = recipients(addresses);
    connection.deliver(&message(&recipients, body), body).await
}

fn dispositions(attempt: &Attempt) -> Vec<Disposition> {
    attempt
        .outcomes
        .iter()
        .map(|outcome| outcome.disposition)
        .collect()
}

#[tokio::test]
async fn delivers_byte_for_byte_with_dot_stuffing() {
    let mx = start(Script::default());
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let body = b".first line starts with a dot\r\nSubject: dots\r\n\r\n.\r\n..two\r\nmid.dle\r\n";
    let attempt = send(&mut connection, &["a@example.org"], body).await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    let reply = &attempt.outcomes[0].reply;
    assert_eq!(reply.code, 250);
    assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as FAKE0");
    assert!(attempt.connection_usable);
    connection.quit().await;

    let received = mx.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(received[0].data, body);
    assert_eq!(received[0].helo, "relay.test");
    assert_eq!(
        received[0].mail_from,
        "MAIL FROM:<sender@example.com> SIZE=67"
    );
    assert_eq!(received[0].rcpt_to, ["RCPT TO:<a@example.org>"]);
    assert!(!received[0].tls);
}

#[tokio::test]
async fn body_without_final_crlf_gets_one() {
    let mx = start(Script::default());
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(
        &mut connection,
        &["a@example.org"],
        b"Subject: x\r\n\r\n.no end",
    )
    .await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = mx.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(received[0].data, b"Subject: x\r\n\r\n.no end\r\n");
}

#[tokio::test]
async fn one_mib_body_is_streamed_from_a_file() {
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let mut line = 0;
    while body.len() < 1024 * 1024 {
        if line % 100 == 0 {
            body.extend_from_slice(b".a line that needs stuffing\r\n");
        }
        body.extend_from_slice(format!("{line:08} {}\r\n", "x".repeat(66)).as_bytes());
        line += 1;
    }
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("body");
    std::fs::write(&path, &body).unwrap();

    let mx = start(Script::default());
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let recipients = recipients(&["a@example.org"]);
    let file = tokio::fs::File::open(&path).await.unwrap();
    let attempt = connection.deliver(&message(&recipients, &body), file).await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = mx.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(received[0].data.len(), body.len());
    assert!(received[0].data == body, "content differs");
}

#[tokio::test]
async fn pipelines_envelope_when_offered() {
    let mx = start(Script::default());
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(
        &mut connection,
        &["a@x.test", "b@x.test", "c@x.test"],
        b"hi\r\n",
    )
    .await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered; 3]);
    connection.quit().await;
    mx.wait_for_messages(1, Duration::from_secs(5));
    // EHLO; MAIL + 3 RCPT + DATA together; QUIT.
    assert_eq!(mx.command_batches(), 3, "{:?}", mx.commands());
    assert_eq!(mx.commands().len(), 7);
}

#[tokio::test]
async fn one_command_at_a_time_without_pipelining() {
    let mx = start(Script {
        extensions: vec!["8BITMIME".to_owned()],
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(
        &mut connection,
        &["a@x.test", "b@x.test", "c@x.test"],
        b"hi\r\n",
    )
    .await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered; 3]);
    connection.quit().await;
    mx.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(mx.command_batches(), 7, "{:?}", mx.commands());
}

#[tokio::test]
async fn mixed_recipient_results_in_one_transaction() {
    for pipelining in [true, false] {
        let mut script = Script {
            rcpt_reply: Arc::new(|address| {
                match address.split('@').next().unwrap() {
                    "unknown" => "550 5.1.1 user unknown",
                    "later" => "451 4.3.0 try again later",
                    _ => "250 2.1.5 Ok",
                }
                .to_owned()
            }),
            ..Script::default()
        };
        if !pipelining {
            script.extensions.retain(|keyword| keyword != "PIPELINING");
        }
        let mx = start(script);
        let mut connection = open(&mx, TlsMode::Disabled).await;
        let attempt = send(
            &mut connection,
            &["ok@x.test", "unknown@x.test", "later@x.test"],
            b"hi\r\n",
        )
        .await;
        assert_eq!(
            dispositions(&attempt),
            [
                Disposition::Delivered,
                Disposition::Bounced,
                Disposition::Deferred
            ]
        );
        assert_eq!(
            attempt.outcomes[1].reply.to_string(),
            "550 5.1.1 user unknown"
        );
        assert_eq!(attempt.outcomes[2].reply.code, 451);
        assert!(attempt.connection_usable);
        connection.quit().await;
        let received = mx.wait_for_messages(1, Duration::from_secs(5));
        assert_eq!(received[0].rcpt_to, ["RCPT TO:<ok@x.test>"]);
    }
}

#[tokio::test]
async fn too_many_recipients_means_retry_now() {
    let mx = start(Script {
        rcpt_reply: Arc::new(|address| {
            if address.starts_with("third") {
                "452 4.5.3 Too many recipients".to_owned()
            } else {
                "250 2.1.5 Ok".to_owned()
            }
        }),
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(
        &mut connection,
        &["first@x.test", "second@x.test", "third@x.test"],
        b"hi\r\n",
    )
    .await;
    assert_eq!(
        dispositions(&attempt),
        [
            Disposition::Delivered,
            Disposition::Delivered,
            Disposition::RetryNow
        ]
    );
    assert!(attempt.connection_usable);
    connection.quit().await;
}

#[tokio::test]
async fn final_dot_4xx_defers_and_5xx_bounces() {
    let mx = start(Script {
        final_reply: Arc::new(|index| {
            if index == 0 {
                "451 4.3.0 queue full".to_owned()
            } else {
                "554 5.6.0 content rejected".to_owned()
            }
        }),
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(&mut connection, &["a@x.test", "b@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Deferred; 2]);
    assert_eq!(
        attempt.outcomes[0].reply.to_string(),
        "451 4.3.0 queue full"
    );
    assert!(attempt.connection_usable);
    connection.reset().await.unwrap();
    let attempt = send(&mut connection, &["a@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Bounced]);
    connection.quit().await;
    assert!(mx.messages().is_empty());
}

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

#[tokio::test]
async fn no_accepted_recipient_sends_no_data() {
    let mx = start(Script {
        rcpt_reply: Arc::new(|_| "550 5.1.1 user unknown".to_owned()),
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let attempt = send(&mut connection, &["a@x.test", "b@x.test"], b"hi\r\n").await;
    assert_eq!(dispositions(&attempt), [Disposition::Bounced; 2]);
    assert!(attempt.connection_usable);
    assert!(mx.messages().is_empty());
    // The refused transaction is reset before the next one on this
    // connection (pipelined with its MAIL, since the server offers it).
    send(&mut connection, &["c@x.test"], b"hi\r\n").await;
    connection.quit().await;
    let commands = mx.commands();
    let mails: Vec<usize> = (0..commands.len())
        .filter(|&i| commands[i].starts_with("MAIL"))
        .collect();
    assert_eq!(mails.len(), 2, "{commands:?}");
    assert_eq!(commands[mails[1] - 1], "RSET", "{commands:?}");
    assert!(mx.messages().is_empty());
}

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

#[tokio::test]
async fn message_over_the_size_limit_bounces_without_data() {
    let mx = start(Script {
        extensions: vec!["PIPELINING".to_owned(), "SIZE 1000".to_owned()],
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let body = vec![b'x'; 5000];
    let attempt = send(&mut connection, &["a@x.test", "b@x.test"], &body).await;
    assert_eq!(dispositions(&attempt), [Disposition::Bounced; 2]);
    let reply = &attempt.outcomes[0].reply;
    assert_eq!((reply.code, &*reply.status), (0, "5.3.4"));
    assert!(attempt.connection_usable);
    connection.quit().await;
    assert!(
        !mx.commands()
            .iter()
            .any(|command| command.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn smtputf8_message_bounces_when_not_offered() {
    let mx = start(Script {
        extensions: vec!["PIPELINING".to_owned(), "8BITMIME".to_owned()],
        ..Script::default()
    });
    let mut connection = open(&mx, TlsMode::Disabled).await;
    let recipients = recipients(&["jöran@x.test"]);
    let message = OutboundMessage {
        smtputf8: true,
        ..message(&recipients, b"hi\r\n")
    };
    let attempt = connection.deliver(&message, &b"hi\r\n"[..]).await;
    assert_eq!(dispositions(&attempt), [Disposition::Bounced]);
    assert_eq!(attempt.outcomes[0].reply.status, "5.6.7");
    connection.quit().await;
    assert!(
        !mx.commands()
            .iter()
            .any(|command| command.starts_with("MAIL"))
    );
}

#[tokio::test]
async fn dsn_parameters_only_when_offered() {
    let recipients = vec![OutboundRecipient {
        address: "rcpt@x.test".to_owned(),
        notify: Notify {
            success: true,
            failure: true,
            ..Notify::default()
        },
        orcpt: Some("Orig+tag=1@x.test".to_owned()),
    }];
    let body = b"hi\r\n";
    let message = OutboundMessage {
        ret: Some(Ret::Headers),
        envid: Some("env id+1"),
        eight_bit_mime: true,
        mt_priority: Some(4),
        ..message(&recipients, body)
    };

    let with_dsn = start(Script::default());
    let mut connection = open(&with_dsn, TlsMode::Disabled).await;
    assert!(connection.offers_dsn());
    let attempt = connection.deliver(&message, &body[..]).await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = with_dsn.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(
        received[0].mail_from,
        "MAIL FROM:<sender@example.com> SIZE=4 BODY=8BITMIME RET=HDRS ENVID=env+20id+2B1"
    );
    assert_eq!(
        received[0].rcpt_to,
        ["RCPT TO:<rcpt@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig+2Btag+3D1@x.test"]
    );

    let without_dsn = start(Script {
        extensions: vec!["PIPELINING".to_owned(), "MT-PRIORITY".to_owned()],
        ..Script::default()
    });
    let mut connection = open(&without_dsn, TlsMode::Disabled).await;
    assert!(!connection.offers_dsn());
    let attempt = connection.deliver(&message, &body[..]).await;
    assert_eq!(dispositions(&attempt), [Disposition::Delivered]);
    connection.quit().await;
    let received = without_dsn.wait_for_messages(1, Duration::from_secs(5));
    assert_eq!(
        received[0].mail_from,
        "MAIL FROM:<sender@example.com> MT-PRIORITY=4"
    );
    assert_eq!(received[0].rcpt_to, ["RCPT TO:<rcpt@x.test>"]);
}

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

#[tokio::test]
async fn two_messages_over_one_connection() {
    let mx = start(Script::default());
    let target = target(&mx);
    // On a spawned task, as the delivery code runs it: the futures are Send.
    let delivery = tokio::spawn(async move {
        let mut connection = Connection::open(
            &target,
            &settings(),
            TlsMode::Opportunistic,
            None,
            system_trust(),
        )
        .await
        .unwrap();
        let first = send(&mut connection, &["a@x.test"], b"first\r\n").await;
        assert!(first.connection_usable);
        connection.reset().await.unwrap();
        let second = send(&mut connection, &["b@x.test"], b"second\r\n").await;
        assert_eq!(dispositions(&second), [Disposition::Delivered]);
        assert_eq!(connection.completed_transactions(), 2);
        connection.quit().await;
    });
    delivery.await.unwrap();

    let received = mx.wait_for_messages(2, Duration::from_secs(5));
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].data, b"second\r\n");
    assert_eq!(mx.sessions(), 1);
    assert!(mx.commands().iter().any(|command| command == "RSET"));
}
