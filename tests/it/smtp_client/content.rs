//! What the client sends arrives byte for byte: dot-stuffing, a final CRLF
//! added where missing, and a large body streamed from a file.

use std::time::Duration;

use relayq::delivery::client::{Disposition, TlsMode};

use super::{dispositions, message, open, recipients, send, start};
use crate::common::fake_mx::Script;

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
