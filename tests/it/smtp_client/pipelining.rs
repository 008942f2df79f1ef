//! PIPELINING (RFC 2920): the envelope goes in one batch when the server
//! offers it, one command at a time when not.

use std::time::Duration;

use relayq::delivery::client::{Disposition, TlsMode};

use super::{dispositions, open, send, start};
use crate::common::fake_mx::Script;

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
