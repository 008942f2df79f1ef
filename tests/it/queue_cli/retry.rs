//! `relayq queue retry`: deferred mail goes now, by id or by domain, and
//! unknown ids are reported rather than an error.

use super::{json, ok, setup, state_of, submit_deferred, wait_until};

#[test]
fn retry_makes_deferred_mail_go_now() {
    let setup = setup("1h");
    let relay = &setup.relay;
    let id = submit_deferred(&setup);
    let after_first = setup.attempts();
    let report = json(relay, &["retry", &id]);
    assert_eq!(report["done"], serde_json::json!([id]));
    wait_until("the retried message is attempted", || {
        setup.attempts() > after_first
    });
    wait_until("deferred again", || {
        state_of(relay, &id).as_deref() == Some("deferred")
    });
    let after_second = setup.attempts();
    // A selection by domain is a bulk operation: it reports counts.
    assert!(
        ok(relay, &["retry", "--domain", "dest.test"]).contains("retry requested: 1 message\n")
    );
    wait_until("retried by domain", || setup.attempts() > after_second);
    // Unknown ids are reported, not an error.
    let report = json(relay, &["retry", "00000000000001"]);
    assert_eq!(report["not_found"], serde_json::json!(["00000000000001"]));
}
