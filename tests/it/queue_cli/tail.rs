//! `relayq queue tail`: queue events as they happen, one JSON object per
//! line with `--json`, and a tail that outlives a daemon restart.

use super::{ok, setup, spawn_tail, submit_deferred, submit_until_tail_shows, wait_until};
use crate::common::TestRelay;

#[test]
fn tail_shows_acceptance_then_deferral_as_json() {
    let setup = setup("1h");
    let relay = &setup.relay;
    let (mut tail, lines) = spawn_tail(relay, &["--json"]);
    // The probe proves the subscription; it is deleted again at the end.
    let probe = submit_until_tail_shows(
        relay,
        &mut tail,
        &lines,
        ("probe@sender.test", "probe@dest.test"),
        "accepted",
    );

    let id = submit_deferred(&setup);
    wait_until("tail saw the deferral", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&id) && line.contains("\"deferred\""))
    });
    let _ = tail.kill();
    let _ = tail.wait();
    let events: Vec<serde_json::Value> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .filter(|event: &serde_json::Value| event["id"] == id.as_str())
        .collect();
    assert_eq!(events[0]["event"], "accepted", "{events:?}");
    assert_eq!(events[1]["event"], "deferred", "{events:?}");
    assert_eq!(events[1]["recipient"], "user@dest.test");

    ok(relay, &["delete", &probe]);
}

#[test]
fn tail_reconnects_when_the_daemon_restarts() {
    let mut relay = TestRelay::start("");
    let (mut tail, lines) = spawn_tail(&relay, &[]);
    let message = ("app@sender.test", "user@dest.test");
    submit_until_tail_shows(&relay, &mut tail, &lines, message, "accepted");
    relay.stop();
    relay.launch();
    submit_until_tail_shows(&relay, &mut tail, &lines, message, "accepted");
    assert!(tail.try_wait().unwrap().is_none(), "tail kept running");
    let _ = tail.kill();
    let _ = tail.wait();
}
