//! `relayq queue hold` and `release`: a held message gets no delivery
//! attempt until it is released, and its time on hold does not count toward
//! its expiry.

use std::time::{Duration, Instant};

use super::{
    json, ok, queue, setup, setup_with, state_of, submit_deferred, submit_deferred_to, wait_until,
};
use crate::common::WAIT;
use crate::common::delivery::submit;

#[test]
fn hold_stops_attempts_until_release() {
    let setup = setup("1s");
    let relay = &setup.relay;
    let id = submit_deferred(&setup);
    // With retry.initial = 1s a pass may be in flight: then the hold is
    // left with it and applied when it ends.
    let report = ok(relay, &["hold", &id]);
    assert!(
        report == format!("{id}: held\n")
            || report == format!("{id}: delivery in progress; held when it ends\n"),
        "{report}"
    );
    wait_until("the message is held", || {
        state_of(relay, &id).as_deref() == Some("held")
    });
    assert_eq!(state_of(relay, &id).as_deref(), Some("held"));
    assert!(ok(relay, &["list"]).contains(&format!("{id}!")));
    let held_at = setup.attempts_for("user@dest.test");
    // A message queued after the hold is attempted at once and then every
    // second (±10%). By its third attempt, two retry intervals after the
    // hold, the held message would have been due at least once had it not
    // been held: the scheduler looks at messages in due-time order.
    submit_deferred_to(&setup, "app@sender.test", "later@dest.test");
    wait_until(
        "a message queued after the hold is attempted three times",
        || setup.attempts_for("later@dest.test") >= 3,
    );
    assert_eq!(
        setup.attempts_for("user@dest.test"),
        held_at,
        "no attempt while held (retry.initial = 1s)"
    );
    let skipped = json(relay, &["retry", &id]);
    assert_eq!(skipped["skipped"][0]["id"], id.as_str());

    assert_eq!(ok(relay, &["release", &id]), format!("{id}: released\n"));
    wait_until("the released message is attempted", || {
        setup.attempts_for("user@dest.test") > held_at
    });
}

#[test]
fn time_on_hold_does_not_count_toward_expiry() {
    let setup = setup_with("1h", "3s", Duration::ZERO);
    let relay = &setup.relay;
    let id = submit_deferred(&setup);
    assert_eq!(ok(relay, &["hold", &id]), format!("{id}: held\n"));
    let held_at = setup.attempts_for("user@dest.test");
    // Wait until the held message is older than max_age: until a message
    // queued after it expires. It is retried until its age is up, and its
    // null sender keeps the expiry from sending a DSN of its own.
    let later = submit(relay, "", &["later@dest.test"], "Subject: expires\r\n\r\n");
    let deadline = Instant::now() + WAIT;
    while relay.log_lines(&format!("{later}: removed")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{later} (max_age = 3s) did not expire within {WAIT:?}; relay log:\n{}",
            relay.logs_text()
        );
        // Refused while its pass is in flight, which is fine: ask again.
        queue(relay, &["retry", &later]);
        std::thread::sleep(Duration::from_millis(250));
    }
    let outcomes = relay.log_lines(&format!("{later}: to=<later@dest.test>"));
    assert!(
        outcomes.iter().any(|line| line.contains("status=expired")),
        "{outcomes:?}"
    );

    assert_eq!(ok(relay, &["release", &id]), format!("{id}: released\n"));
    wait_until(
        "the released message is attempted and deferred again",
        || {
            setup.attempts_for("user@dest.test") > held_at
                && state_of(relay, &id).as_deref() == Some("deferred")
        },
    );
    let shown = json(relay, &["show", &id]);
    assert_eq!(shown["recipients"][0]["status"], "deferred", "{shown}");
    assert!(
        setup.sender_mx.messages().is_empty(),
        "no expiry DSN for a message that spent its age on hold"
    );
}
