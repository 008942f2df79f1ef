//! ESMTP extensions the message needs or carries: SIZE (RFC 1870),
//! SMTPUTF8 (RFC 6531), and DSN parameters (RFC 3461) only when offered.

use std::time::Duration;

use relayq::delivery::client::{Disposition, OutboundMessage, OutboundRecipient, TlsMode};
use relayq::queue::envelope::{Notify, Ret};

use super::{dispositions, message, open, recipients, send, start};
use crate::common::fake_mx::Script;

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
