//! Destinations: feedback, rules, reloads and suspension, through the
//! table's own methods.

use super::*;
use crate::config::{MatchPattern, Route};
use crate::outcome::RemoteReply;

/// Destinations are tested without jobs: a job type that is never made.
enum NoJob {}

impl Queued for NoJob {
    fn destination(&self) -> &DestinationKey {
        match *self {}
    }
    fn hop(&self) -> &NextHop {
        match *self {}
    }
    fn lane(&self) -> Lane {
        match *self {}
    }
    fn message(&self) -> QueueId {
        match *self {}
    }
}

type TestDestinations = Destinations<NoJob>;

fn rule() -> DestinationRule {
    DestinationRule {
        name: "provider".into(),
        patterns: vec![
            MatchPattern::Domain("a.test".into()),
            MatchPattern::Mx("*.provider.test".into()),
        ],
        concurrency: 4,
        rate: None,
        messages_per_connection: 10,
        suspend_on: vec!["4.7.28".into()],
        suspend_for: Duration::from_secs(60),
    }
}

#[test]
fn the_limit_halves_once_per_round_and_grows_by_one_per_round_of_successes() {
    let destinations = TestDestinations::new(8, Duration::from_secs(60), &[]);
    let key = DestinationKey::Hop(NextHop::Mx("x.test".into()));
    let round = Instant::now();
    assert_eq!(destinations.overload(&key, round), Some(4));
    // Another connection of the same round signals too: no second halving.
    assert_eq!(destinations.overload(&key, round), None);
    assert_eq!(destinations.overload(&key, Instant::now()), Some(2));
    assert_eq!(destinations.shaping()[0].concurrency_limit, 2);
    destinations.connection_succeeded(&key);
    assert_eq!(destinations.shaping()[0].concurrency_limit, 2);
    destinations.connection_succeeded(&key);
    assert_eq!(destinations.shaping()[0].concurrency_limit, 3);
    for _ in 0..3 + 4 + 5 + 6 + 7 {
        destinations.connection_succeeded(&key);
    }
    // Back at the cap, the destination is no longer shown.
    assert!(destinations.shaping().is_empty());
    assert_eq!(destinations.overload(&key, Instant::now()), Some(4));
    for _ in 0..10 {
        destinations.overload(&key, Instant::now());
    }
    assert_eq!(
        destinations.shaping()[0].concurrency_limit,
        1,
        "never below 1"
    );
}

#[test]
fn rules_match_by_domain_first_then_by_mx_host() {
    let destinations = TestDestinations::new(8, Duration::from_secs(60), &[rule()]);
    let hop = |domain: &str| NextHop::Mx(domain.to_owned());
    let route = NextHop::Route(RouteHop(Arc::new(Route {
        domains: vec!["*".into()],
        host: "smarthost.test".into(),
        port: 587,
        tls: crate::config::RouteTls::Starttls,
        verify_certificate: true,
        username: None,
        password_file: None,
    })));
    assert_eq!(
        destinations.key_without_mx("a.test", &hop("a.test")),
        Some(DestinationKey::Rule("provider".into()))
    );
    assert_eq!(destinations.key_without_mx("b.test", &hop("b.test")), None);
    assert_eq!(
        destinations.key_for("b.test", &hop("b.test"), Some("mx1.provider.test")),
        (DestinationKey::Rule("provider".into()), true)
    );
    assert_eq!(
        destinations.key_for("c.test", &hop("c.test"), Some("mx.elsewhere.test")),
        (DestinationKey::Hop(hop("c.test")), false)
    );
    // A route's mail is never grouped by MX.
    assert_eq!(
        destinations.key_for("b.test", &route, Some("mx1.provider.test")),
        (DestinationKey::Hop(route.clone()), false)
    );
    assert_eq!(DestinationKey::Rule("provider".into()).label(), "provider");
    assert_eq!(DestinationKey::Hop(route).label(), "route:smarthost.test");
}

#[tokio::test(start_paused = true)]
async fn a_reload_gives_known_destinations_their_new_caps_and_rates() {
    let hourly = DestinationRule {
        rate: Some(crate::config::Rate {
            count: 1,
            per: Duration::from_secs(3600),
        }),
        ..rule()
    };
    let destinations = TestDestinations::new(8, Duration::from_secs(60), &[hourly]);
    let rule_key = DestinationKey::Rule("provider".into());
    let hop_key = DestinationKey::Hop(NextHop::Mx("x.test".into()));
    destinations
        .start_transaction(&rule_key, QueueId(1))
        .unwrap();
    let (left, _, throttle) = destinations
        .start_transaction(&rule_key, QueueId(2))
        .expect_err("one start an hour");
    assert!(left > Duration::from_secs(3000) && throttle == Throttle::Rate);
    assert_eq!(destinations.overload(&hop_key, Instant::now()), Some(4));

    let fast = DestinationRule {
        concurrency: 10,
        rate: Some(crate::config::Rate {
            count: 100,
            per: Duration::from_secs(1),
        }),
        ..rule()
    };
    destinations.reconfigure(16, &[fast]);
    let limits: Vec<(String, usize)> = destinations
        .shaping()
        .into_iter()
        .map(|row| (row.destination, row.concurrency_limit))
        .collect();
    // The rule's limit follows its new cap; a limit lowered by
    // feedback stays lowered under the new, higher one.
    assert_eq!(
        limits,
        [("provider".to_owned(), 10), ("x.test".to_owned(), 4)]
    );
    // The clock stands still: the next start is one new interval (10
    // ms) after the last one, not the hour of the old rate.
    let (left, _, throttle) = destinations
        .start_transaction(&rule_key, QueueId(2))
        .expect_err("one interval after the last start");
    assert_eq!(
        (left, throttle),
        (Duration::from_millis(10), Throttle::Rate)
    );
    tokio::time::advance(Duration::from_millis(10)).await;
    destinations
        .start_transaction(&rule_key, QueueId(2))
        .expect("a start at the new rate");
    // A rule the reload removed: its destination falls back to the
    // defaults and is forgotten once unused.
    destinations.reconfigure(16, &[]);
    assert!(destinations.rate_of(&rule_key).is_none());
    destinations.sweep();
    let labels: Vec<String> = destinations
        .shaping()
        .into_iter()
        .map(|row| row.destination)
        .collect();
    assert_eq!(labels, ["x.test"]);
}

#[test]
fn a_suspending_reply_suspends_once_and_words_the_wait() {
    let destinations = TestDestinations::new(8, Duration::from_secs(60), &[rule()]);
    let key = DestinationKey::Rule("provider".into());
    let reply = RemoteReply {
        code: 421,
        status: "4.7.28".into(),
        text: "unusual rate".into(),
    };
    let other = RemoteReply {
        code: 421,
        status: "4.7.0".into(),
        text: "too many connections".into(),
    };
    assert!(destinations.suspend_on(&key, &other).is_none());
    let (wait, suspended) = destinations.suspend_on(&key, &reply).expect("suspends");
    let suspended = suspended.expect("newly suspended");
    assert_eq!(suspended.name, "provider");
    assert_eq!(suspended.until, wait.until);
    assert!(
        wait.reply
            .text
            .starts_with("destination provider suspended until "),
        "{}",
        wait.reply
    );
    assert!(
        wait.reply.text.ends_with(": 421 4.7.28 unusual rate"),
        "{}",
        wait.reply
    );
    let (_, again) = destinations
        .suspend_on(&key, &reply)
        .expect("still matches");
    assert!(again.is_none(), "already suspended");
    let (left, refused, throttle) = destinations
        .start_transaction(&key, QueueId(1))
        .expect_err("no transaction while suspended");
    assert!(left > Duration::from_secs(50));
    assert_eq!(refused, wait);
    assert_eq!(throttle, Throttle::Suspended);
    assert!(destinations.shaping()[0].suspended_until.is_some());
}
