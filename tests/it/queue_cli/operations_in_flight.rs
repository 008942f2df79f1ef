//! Hold, delete and bounce asked for while a delivery pass is in flight are
//! left with the pass and applied when it ends.

use std::time::Duration;

use super::{assert_deleted_without_report, json, ok, setup_with, state_of, wait_until};
use crate::common::WAIT;
use crate::common::delivery::submit;

#[test]
fn hold_delete_and_bounce_wait_for_the_delivery_in_progress() {
    let setup = setup_with("1h", "1d", Duration::from_secs(3));
    let relay = &setup.relay;
    let submit_active = || {
        let id = submit(
            relay,
            "app@sender.test",
            &["user@dest.test"],
            "Subject: slow\r\n\r\nhello\r\n",
        );
        wait_until("its delivery pass is in flight", || {
            state_of(relay, &id).as_deref() == Some("active")
        });
        id
    };
    let held = submit_active();
    let deleted = submit_active();
    let bounced = submit_active();

    assert_eq!(
        ok(relay, &["hold", &held]),
        format!("{held}: delivery in progress; held when it ends\n")
    );
    let report = json(relay, &["delete", &deleted]);
    assert_eq!(report["pending"][0]["id"], deleted.as_str(), "{report}");
    assert_eq!(report["done"], serde_json::json!([]), "{report}");
    assert_eq!(
        ok(relay, &["bounce", &bounced]),
        format!("{bounced}: delivery in progress; bounced when it ends\n")
    );

    wait_until("the passes ended and the operations were applied", || {
        state_of(relay, &held).as_deref() == Some("held")
            && state_of(relay, &deleted).is_none()
            && state_of(relay, &bounced).is_none()
    });
    let dsns = setup.sender_mx.wait_for_messages(1, WAIT);
    let dsn = String::from_utf8_lossy(&dsns[0].data);
    assert!(dsn.contains(&bounced), "{dsn}");
    assert!(dsn.contains("Status: 5.0.0"), "{dsn}");
    let attempts = setup.attempts_for("user@dest.test");
    assert_deleted_without_report(relay, &deleted);
    assert_eq!(
        setup.sender_mx.messages().len(),
        1,
        "no DSN for the deleted message"
    );
    // The only message left for user@dest.test is the held one. A message
    // queued now is attempted at once; the held one, were it due, would have
    // been attempted no later (the scheduler goes in due-time order).
    submit(
        relay,
        "app@sender.test",
        &["later@dest.test"],
        "Subject: later\r\n\r\n",
    );
    wait_until("a message queued after the hold is attempted", || {
        setup.attempts_for("later@dest.test") > 0
    });
    assert_eq!(
        setup.attempts_for("user@dest.test"),
        attempts,
        "held: no attempt"
    );
    let logs = relay.logs_text();
    assert!(
        logs.contains(&format!("{held}: held by administrator")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("{deleted}: deleted by administrator (no bounce)")),
        "{logs}"
    );
    assert_eq!(
        ok(relay, &["release", &held]),
        format!("{held}: released\n")
    );
}
