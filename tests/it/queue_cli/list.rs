//! `relayq queue list`: the Postfix-style text table, its filters, and the
//! JSON form with each recipient's state and last reply.

use super::{json, ok, setup, submit_deferred};

#[test]
fn list_shows_deferred_mail_as_text_and_json() {
    let setup = setup("1h");
    let relay = &setup.relay;
    assert_eq!(ok(relay, &["list"]), "Mail queue is empty\n");
    let id = submit_deferred(&setup);

    let text = ok(
        relay,
        &["list", "--domain", "dest.test", "--state", "deferred"],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    );
    assert!(text.contains(&format!("\n{id} ")), "{text}");
    assert!(text.contains("app@sender.test"), "{text}");
    assert!(text.contains("(451 4.7.1 try again later)"), "{text}");
    assert!(text.contains("user@dest.test"), "{text}");
    assert!(text.ends_with("Requests.\n"), "{text}");

    let listed = json(relay, &["list"]);
    let message = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|message| message["id"] == id.as_str())
        .expect("listed");
    assert_eq!(message["lane"], "high");
    assert_eq!(message["state"], "deferred");
    assert_eq!(message["sender"], "app@sender.test");
    assert!(message["arrival"].as_str().unwrap().contains('T'));
    assert!(message["size"].as_u64().unwrap() > 0);
    assert_eq!(message["attempts"], 1);
    assert!(message["next_attempt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(message["recipients"][0]["address"], "user@dest.test");
    assert_eq!(message["recipients"][0]["status"], "deferred");
    assert_eq!(
        message["recipients"][0]["last_reply"],
        "451 4.7.1 try again later"
    );
    assert_eq!(
        json(relay, &["list", "--lane", "low"]),
        serde_json::json!([])
    );
    assert_eq!(
        json(relay, &["list", "--older-than", "1h"]),
        serde_json::json!([])
    );
}
