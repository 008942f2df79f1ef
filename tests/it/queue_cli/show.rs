//! `relayq queue show`: one message's recipients with their last reply,
//! its headers, and with `--body` its content.

use super::{json, ok, setup, submit_deferred};

#[test]
fn show_gives_recipient_state_headers_and_body() {
    let setup = setup("1h");
    let relay = &setup.relay;
    let id = submit_deferred(&setup);

    let shown = ok(relay, &["show", &id, "--body"]);
    assert!(
        shown.contains("deferred (451 4.7.1 try again later)"),
        "{shown}"
    );
    assert!(shown.contains("Subject: queued"), "{shown}");
    assert!(shown.contains("hello"), "{shown}");
    let detail = json(relay, &["show", &id]);
    assert!(
        detail["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: queued")
    );
}
