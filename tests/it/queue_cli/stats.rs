//! `relayq queue stats`: counts per lane and state, and the qshape-like
//! table of destinations by age.

use super::{json, ok, setup, submit_deferred};

#[test]
fn stats_count_per_lane_and_per_destination() {
    let setup = setup("1h");
    let relay = &setup.relay;
    submit_deferred(&setup);

    let stats = json(relay, &["stats"]);
    assert_eq!(stats["lanes"][0]["lane"], "high");
    assert!(stats["lanes"][0]["deferred"].as_u64().unwrap() >= 1);
    let destination = &stats["destinations"][0];
    assert_eq!(destination["domain"], "dest.test");
    assert_eq!(destination["buckets"][0], destination["total"]);
    let text = ok(relay, &["stats"]);
    assert!(
        text.contains("deferred") && text.contains("dest.test") && text.contains("1280+"),
        "{text}"
    );
}
