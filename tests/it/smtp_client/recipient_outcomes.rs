//! The outcome each recipient gets from the replies to RCPT and to the
//! final dot: delivered, deferred, bounced, or retried at once.

use std::sync::Arc;
use std::time::Duration;

use relayq::delivery::client::{Disposition, TlsMode};

use super::{dispositions, open, send, start};
use crate::common::fake_mx::Script;

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
