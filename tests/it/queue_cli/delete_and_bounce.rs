//! `relayq queue delete` removes a message without a bounce; `relayq queue
//! bounce` removes it and sends its sender a DSN.

use super::{assert_deleted_without_report, ok, queue, setup, state_of, submit_deferred};
use crate::common::WAIT;

#[test]
fn delete_removes_without_bounce_and_bounce_sends_a_dsn() {
    let setup = setup("1h");
    let relay = &setup.relay;
    let deleted = submit_deferred(&setup);
    let bounced = submit_deferred(&setup);

    assert_eq!(
        ok(relay, &["delete", &deleted]),
        format!("{deleted}: deleted\n")
    );
    assert_eq!(state_of(relay, &deleted), None);
    let missing = queue(relay, &["show", &deleted]);
    assert_eq!(missing.status.code(), Some(64));

    assert_eq!(
        ok(relay, &["bounce", &bounced]),
        format!("{bounced}: bounced\n")
    );
    let dsns = setup.sender_mx.wait_for_messages(1, WAIT);
    assert_eq!(dsns.len(), 1, "one DSN; relay log:\n{}", relay.logs_text());
    let dsn = String::from_utf8_lossy(&dsns[0].data);
    assert!(dsn.contains(&bounced), "{dsn}");
    assert!(dsn.contains("Status: 5.0.0"), "{dsn}");
    assert!(!dsn.contains(&deleted), "{dsn}");
    assert!(dsns[0].mail_from.contains("<>"));
    assert_deleted_without_report(relay, &deleted);
    assert_eq!(
        setup.sender_mx.messages().len(),
        1,
        "no DSN for the deleted message"
    );
    assert_eq!(state_of(relay, &bounced), None);
}
