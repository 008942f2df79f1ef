//! One connection carries several transactions, RSET between them, from a
//! spawned task.

use std::time::Duration;

use relayq::delivery::client::{Connection, Disposition, TlsMode};

use super::{dispositions, send, settings, start, system_trust, target};
use crate::common::fake_mx::Script;

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
