//! Tests of the AUTH budgets, with time passed in.

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn failures() -> Arc<AuthFailures> {
    Arc::new(AuthFailures::new())
}

#[track_caller]
fn granted(failures: &Arc<AuthFailures>, client: &str, user: &str, now: Instant) -> Attempt {
    match failures.begin(ip(client), user, now) {
        Admission::Granted(attempt) => attempt,
        Admission::Wait => panic!("{client} {user}: waits"),
        Admission::Refused(scope) => panic!("{client} {user}: refused ({scope:?})"),
    }
}

#[track_caller]
fn refused(failures: &Arc<AuthFailures>, client: &str, user: &str, now: Instant) -> Scope {
    match failures.begin(ip(client), user, now) {
        Admission::Refused(scope) => scope,
        Admission::Wait => panic!("{client} {user}: waits"),
        Admission::Granted(_) => panic!("{client} {user}: granted"),
    }
}

/// A failed attempt from `client` as `user`; returns what it locked.
fn fail(failures: &Arc<AuthFailures>, client: &str, user: &str, now: Instant) -> Vec<Scope> {
    granted(failures, client, user, now).failed(now)
}

#[test]
fn third_failure_of_a_network_locks_it_out_for_the_lockout() {
    let failures = failures();
    let start = Instant::now();
    assert!(fail(&failures, "192.0.2.1", "alice", start).is_empty());
    let later = start + Duration::from_secs(60);
    assert!(fail(&failures, "192.0.2.2", "bob", later).is_empty());
    assert!(!failures.is_locked_out(ip("192.0.2.3"), later));
    let third = start + Duration::from_secs(120);
    assert_eq!(
        fail(&failures, "192.0.2.200", "carol", third),
        [Scope::Network],
        "one /24, whatever the host and the user"
    );
    assert!(failures.is_locked_out(ip("192.0.2.9"), third));
    assert_eq!(
        refused(&failures, "192.0.2.1", "alice", third),
        Scope::Network
    );
    let almost = third + NETWORK.lockout - Duration::from_secs(1);
    assert!(failures.is_locked_out(ip("192.0.2.1"), almost));
    assert!(!failures.is_locked_out(ip("192.0.2.1"), third + NETWORK.lockout));
    assert!(!failures.is_locked_out(ip("192.0.3.1"), third));
}

#[test]
fn every_loopback_address_shares_one_budget() {
    let failures = failures();
    let now = Instant::now();
    fail(&failures, "127.0.0.1", "alice", now);
    fail(&failures, "::1", "alice", now);
    assert_eq!(fail(&failures, "127.0.0.2", "alice", now), [Scope::Network]);
    assert!(failures.is_locked_out(ip("127.9.9.9"), now));
}

#[test]
fn attempts_in_flight_count_before_their_passwords_are_checked() {
    let failures = failures();
    let now = Instant::now();
    let first = granted(&failures, "192.0.2.1", "alice", now);
    let second = granted(&failures, "192.0.2.2", "alice", now);
    let third = granted(&failures, "192.0.2.3", "alice", now);
    // Three guesses under way fill the budget: a fourth waits.
    assert!(matches!(
        failures.begin(ip("192.0.2.4"), "alice", now),
        Admission::Wait
    ));
    // A success makes room; two failures then leave room for one.
    first.succeeded(now);
    let fourth = granted(&failures, "192.0.2.4", "alice", now);
    assert!(second.failed(now).is_empty());
    assert!(third.failed(now).is_empty());
    assert!(matches!(
        failures.begin(ip("192.0.2.5"), "alice", now),
        Admission::Wait
    ));
    // The third failure locks out whatever was waiting.
    assert_eq!(fourth.failed(now), [Scope::Network]);
    assert_eq!(
        refused(&failures, "192.0.2.5", "alice", now),
        Scope::Network
    );
}

#[test]
fn a_dropped_attempt_frees_its_place() {
    let failures = failures();
    let now = Instant::now();
    let attempts: Vec<Attempt> = (0..3)
        .map(|_| granted(&failures, "192.0.2.1", "alice", now))
        .collect();
    drop(attempts);
    assert!(fail(&failures, "192.0.2.1", "alice", now).is_empty());
}

#[test]
fn failures_older_than_the_window_do_not_count() {
    let failures = failures();
    let start = Instant::now();
    fail(&failures, "2001:db8::1", "alice", start);
    fail(
        &failures,
        "2001:db8::2",
        "alice",
        start + Duration::from_secs(1),
    );
    let later = start + NETWORK.window + Duration::from_secs(1);
    assert!(fail(&failures, "2001:db8::1", "alice", later).is_empty());
    assert!(fail(&failures, "2001:db8::1", "alice", later).is_empty());
    assert_eq!(
        fail(&failures, "2001:db8::1", "alice", later),
        [Scope::Network]
    );
}

#[test]
fn success_resets_the_count() {
    let failures = failures();
    let now = Instant::now();
    fail(&failures, "192.0.2.1", "alice", now);
    fail(&failures, "192.0.2.1", "alice", now);
    granted(&failures, "192.0.2.1", "alice", now).succeeded(now);
    assert!(fail(&failures, "192.0.2.1", "alice", now).is_empty());
    assert!(fail(&failures, "192.0.2.1", "alice", now).is_empty());
}

#[test]
fn a_user_guessed_from_many_networks_is_locked_out_but_not_where_it_is_known() {
    let failures = failures();
    let now = Instant::now();
    // alice authenticated from 198.51.100.0/24 before the attack.
    granted(&failures, "198.51.100.7", "alice", now).succeeded(now);
    // Ten failures from four networks (each locked after its third).
    let mut locked = Vec::new();
    for (n, network) in ["192.0.2", "192.0.3", "192.0.4", "192.0.5"]
        .iter()
        .enumerate()
    {
        for host in 0..if n == 3 { 1 } else { 3 } {
            locked.extend(fail(&failures, &format!("{network}.{host}"), "alice", now));
        }
    }
    assert_eq!(
        locked,
        [Scope::Network, Scope::Network, Scope::Network, Scope::User]
    );
    assert_eq!(refused(&failures, "203.0.113.1", "alice", now), Scope::User);
    // Other users, and alice from where she is known, are not refused...
    granted(&failures, "203.0.113.1", "bob", now).failed(now);
    let known = granted(&failures, "198.51.100.8", "alice", now);
    let local = granted(&failures, "127.0.0.1", "alice", now);
    // ...and their success does not lift the lockout.
    known.succeeded(now);
    local.succeeded(now);
    assert_eq!(refused(&failures, "203.0.113.1", "alice", now), Scope::User);
    let over = now + USER.lockout;
    granted(&failures, "203.0.113.1", "alice", over).succeeded(over);
}

#[test]
fn a_lockout_while_an_attempt_waits_for_its_check_refuses_it() {
    let failures = failures();
    let now = Instant::now();
    granted(&failures, "198.51.100.7", "alice", now).succeeded(now);
    let waiting = granted(&failures, "203.0.113.1", "alice", now);
    assert_eq!(waiting.locked_out(now), None);
    // Failures from known networks (each locked after its third) fill
    // alice's budget while the attempt waits for a thread.
    let mut locked = Vec::new();
    for network in ["198.51.100", "198.51.101", "198.51.102", "198.51.103"] {
        let known = format!("{network}.9");
        granted(&failures, &known, "bob", now).succeeded(now);
        for _ in 0..3 {
            if let Admission::Granted(attempt) = failures.begin(ip(&known), "alice", now) {
                locked.extend(attempt.failed(now));
            }
        }
    }
    assert!(locked.contains(&Scope::User), "{locked:?}");
    assert_eq!(waiting.locked_out(now), Some(Scope::User));
}

#[test]
fn the_total_budget_spares_known_networks() {
    let failures = failures();
    let now = Instant::now();
    granted(&failures, "198.51.100.7", "app", now).succeeded(now);
    let mut locked = Vec::new();
    for n in 0..GLOBAL.failures {
        let client = format!("10.{}.{}.1", n / 256, n % 256);
        locked.extend(fail(&failures, &client, &format!("user{n}"), now));
    }
    assert_eq!(locked, [Scope::Global]);
    assert_eq!(refused(&failures, "203.0.113.1", "app", now), Scope::Global);
    granted(&failures, "198.51.100.9", "app", now).succeeded(now);
    granted(&failures, "::1", "app", now).succeeded(now);
    let over = now + GLOBAL.lockout;
    granted(&failures, "203.0.113.1", "app", over).succeeded(over);
}

#[test]
fn memory_is_bounded_and_lockouts_outlive_plain_failures() {
    let failures = Arc::new(AuthFailures::with_capacity(4));
    let now = Instant::now();
    for _ in 0..NETWORK.failures {
        fail(&failures, "10.0.0.1", "alice", now);
    }
    for network in 2..50 {
        fail(
            &failures,
            &format!("10.0.{network}.1"),
            &format!("user{network}"),
            now + Duration::from_secs(network),
        );
        assert!(failures.len() <= 8, "{}", failures.len());
    }
    // Single failures are dropped before a lockout.
    assert!(failures.is_locked_out(ip("10.0.0.1"), now + Duration::from_secs(60)));
    // Records that no longer matter are dropped before anything else.
    let much_later = now + NETWORK.lockout + NETWORK.window + Duration::from_secs(100);
    fail(&failures, "10.1.0.1", "zed", much_later);
    assert_eq!(failures.len(), 2);
}

#[test]
fn user_names_are_counted_by_their_first_octets() {
    assert_eq!(&*user_key("alice"), "alice");
    let long = "é".repeat(100);
    let key = user_key(&long);
    assert!(key.len() <= MAX_USER_KEY && long.starts_with(&*key));
}

#[tokio::test]
async fn a_waiting_attempt_goes_on_when_one_ends() {
    let failures = failures();
    let now = Instant::now();
    let attempts: Vec<Attempt> = (0..3)
        .map(|_| granted(&failures, "192.0.2.1", "alice", now))
        .collect();
    let waiting = tokio::spawn({
        let failures = failures.clone();
        async move { failures.admit(ip("192.0.2.1"), "alice").await.is_ok() }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    let mut attempts = attempts.into_iter();
    attempts.next().unwrap().succeeded(now);
    assert!(waiting.await.unwrap());
}
