//! Metadata header fields (docs/idempotency.md): `X-Relayq-Meta-KEY: VALUE`
//! is taken out of the message at acceptance and kept with the envelope
//! (`queue show` shows it, across a restart); more than 16 fields, a value
//! over 256 octets or a malformed key is refused with `550 5.6.0` after the
//! data, and nothing is stored. (That the fields are not delivered nor
//! signed: `idempotency::the_key_and_metadata_are_not_delivered_and_dkim_signs_without_them`.)

use crate::common::{Response, TestRelay, queue_json, queue_ok, queued_id};

fn send(relay: &TestRelay, fields: &str) -> Response {
    let mut client = relay.client();
    client.greet();
    let content = format!(
        "From: app@example.com\r\nTo: user@example.org\r\nSubject: meta\r\n{fields}\r\nbody\r\n"
    );
    let reply = client.send_message("app@example.com", &["user@example.org"], content.as_bytes());
    client.command("QUIT");
    reply
}

#[test]
fn metadata_is_taken_from_the_message_and_kept_with_its_envelope() {
    let mut relay = TestRelay::start("");
    let id = queued_id(&send(
        &relay,
        "X-Relayq-Meta-Order_ID: A-42\r\nx-relayq-meta-tenant: acme\r\n corp\r\n",
    ))
    .to_string();
    let plain = queued_id(&send(&relay, "")).to_string();

    let shown = |relay: &TestRelay| {
        let detail = queue_json(relay, &["show", &id]);
        assert_eq!(
            detail["meta"],
            serde_json::json!({"order_id": "A-42", "tenant": "acme corp"}),
            "{detail}"
        );
        let headers = detail["headers"].as_str().unwrap().to_owned();
        assert!(
            !headers.to_ascii_lowercase().contains("x-relayq-meta"),
            "{headers}"
        );
        assert!(headers.contains("Subject: meta\r\n"), "{headers}");
    };
    shown(&relay);
    assert_eq!(
        queue_json(&relay, &["show", &plain])["meta"],
        serde_json::json!({})
    );
    let text = queue_ok(&relay, &["show", &id]);
    assert!(
        text.lines()
            .any(|line| line.starts_with("Meta order_id:") && line.ends_with("A-42")),
        "{text}"
    );
    relay.stop();
    relay.launch();
    shown(&relay);
}

#[test]
fn too_many_fields_a_long_value_or_a_malformed_key_is_refused() {
    let relay = TestRelay::start("");
    let seventeen: String = (0..17)
        .map(|n| format!("X-Relayq-Meta-k{n}: v\r\n"))
        .collect();
    let long_value = format!("X-Relayq-Meta-note: {}\r\n", "v".repeat(257));
    for (fields, text) in [
        (seventeen.as_str(), "5.6.0 More than 16 X-Relayq-Meta fields".to_owned()),
        (
            long_value.as_str(),
            "5.6.0 X-Relayq-Meta-note value longer than 256 octets".to_owned(),
        ),
        (
            "X-Relayq-Meta-a.b: x\r\n",
            "5.6.0 Malformed field name X-Relayq-Meta-a.b: the key after X-Relayq-Meta- must be 1-40 of A-Z a-z 0-9 _ -".to_owned(),
        ),
        (
            "X-Relayq-Meta-: x\r\n",
            "5.6.0 Malformed field name X-Relayq-Meta-: the key after X-Relayq-Meta- must be 1-40 of A-Z a-z 0-9 _ -".to_owned(),
        ),
    ] {
        let reply = send(&relay, fields);
        assert_eq!((reply.code, reply.text()), (550, text));
    }
    assert_eq!(queue_json(&relay, &["list"]), serde_json::json!([]));
    // At the limits, it is accepted.
    let fields = |count: usize| -> String {
        (0..count)
            .map(|n| format!("X-Relayq-Meta-k{n}: v\r\n"))
            .collect()
    };
    let longest = format!("X-Relayq-Meta-note: {}\r\n", "v".repeat(256));
    queued_id(&send(&relay, &format!("{}{longest}", fields(15))));
    queued_id(&send(&relay, &fields(16)));
    assert_eq!(queue_json(&relay, &["list"]).as_array().unwrap().len(), 2);
}
