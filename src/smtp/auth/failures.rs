//! Failed AUTH attempts across sessions, and the budgets that bound
//! password guessing (ARCHITECTURE.md, "AUTH budgets"):
//!
//! - per client network ([`Network`]: an IPv4 /24, an IPv6 /64, loopback as
//!   one): the third failure within 15 minutes locks the network out of
//!   AUTH for 15 minutes;
//! - per user name, from all networks together: the tenth failure within 15
//!   minutes refuses AUTH as that user for 15 minutes;
//! - in total: the hundredth failure within 15 minutes refuses AUTH for 15
//!   minutes.
//!
//! The user and total budgets stop guessing spread over many networks; they
//! do not apply to *known* networks (loopback, and any network a client
//! authenticated from in the last [`KNOWN_FOR`]), so an attacker elsewhere
//! cannot lock out the clients that already use the relay: they are bound
//! by their own network's budget only. Every failure counts in all three.
//!
//! An attempt counts as soon as it is granted, before its password is
//! checked: while the failures plus the attempts in flight fill a budget, a
//! new attempt waits for one to end, so sessions opened at once get no more
//! guesses than sequential ones. A success resets its network's count, but
//! never lifts a lockout.
//!
//! Memory is bounded: at [`CAPACITY`] networks or user names, expired
//! records go first, then the one that expires first among those neither
//! locked nor in flight. Time is passed in, so tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use super::network::Network;
/// What a lockout applies to (`relayq_auth_lockouts_total{scope}`).
pub use crate::metrics::AuthScope as Scope;

/// How many failures within `window` lock a scope out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub failures: usize,
    pub window: Duration,
    pub lockout: Duration,
}

const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

/// Per client network; the contract of ARCHITECTURE.md.
pub const NETWORK: Budget = Budget {
    failures: 3,
    window: FIFTEEN_MINUTES,
    lockout: FIFTEEN_MINUTES,
};

/// Per user name, from networks that are not known: one account guessed
/// from many networks (IPv6 hands out /64s by the thousand).
pub const USER: Budget = Budget {
    failures: 10,
    window: FIFTEEN_MINUTES,
    lockout: FIFTEEN_MINUTES,
};

/// All failures, from networks that are not known: many accounts guessed
/// from many networks, and the CPU their password checks cost.
pub const GLOBAL: Budget = Budget {
    failures: 100,
    window: FIFTEEN_MINUTES,
    lockout: FIFTEEN_MINUTES,
};

/// How long a network stays known after a successful AUTH from it.
pub const KNOWN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Networks, and user names, remembered at most (each about 100 bytes plus
/// the name); known networks remembered at most.
const CAPACITY: usize = 16 * 1024;
const KNOWN_CAPACITY: usize = 4 * 1024;

/// User names are counted by their first octets only, so that a flood of
/// long names cannot take much memory.
const MAX_USER_KEY: usize = 128;

/// Whether an attempt may have its password checked now.
pub enum Admission {
    /// Yes; it counts in its budgets until it ends.
    Granted(Attempt),
    /// Attempts in flight fill a budget: ask again when one ends.
    Wait,
    /// A budget is locked out.
    Refused(Scope),
}

#[derive(Default)]
pub struct AuthFailures {
    state: Mutex<State>,
    /// Woken whenever an attempt ends, for the attempts that wait.
    ended: Notify,
    capacity: Option<usize>,
}

#[derive(Default)]
struct State {
    networks: HashMap<Network, Tally>,
    users: HashMap<Box<str>, Tally>,
    global: Tally,
    /// Networks a client authenticated from, with the last success.
    known: HashMap<Network, Instant>,
}

/// One budget's failures, attempts in flight and lockout.
#[derive(Debug, Default)]
struct Tally {
    /// Failures inside the window, oldest first; fewer than the budget.
    recent: VecDeque<Instant>,
    in_flight: usize,
    locked_until: Option<Instant>,
}

/// Room for one more attempt in a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Free,
    /// Failures and attempts in flight fill the budget.
    Full,
    Locked,
}

impl Tally {
    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    fn forget_old(&mut self, budget: Budget, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= budget.window)
        {
            self.recent.pop_front();
        }
    }

    fn room(&mut self, budget: Budget, now: Instant) -> Room {
        if self.is_locked(now) {
            return Room::Locked;
        }
        self.forget_old(budget, now);
        if self.recent.len() + self.in_flight >= budget.failures {
            Room::Full
        } else {
            Room::Free
        }
    }

    /// Counts a failure; true when it locks the budget out. Failures while
    /// locked out do not extend the lockout.
    fn fail(&mut self, budget: Budget, now: Instant) -> bool {
        if self.is_locked(now) {
            return false;
        }
        self.forget_old(budget, now);
        self.recent.push_back(now);
        if self.recent.len() < budget.failures {
            return false;
        }
        self.recent.clear();
        self.locked_until = Some(now + budget.lockout);
        true
    }

    fn end_attempt(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Whether the record still matters at `now`.
    fn matters(&self, budget: Budget, now: Instant) -> bool {
        self.in_flight > 0
            || self.is_locked(now)
            || self
                .recent
                .back()
                .is_some_and(|last| now.saturating_duration_since(*last) < budget.window)
    }
}

impl AuthFailures {
    pub fn new() -> AuthFailures {
        AuthFailures::default()
    }

    #[cfg(test)]
    fn with_capacity(capacity: usize) -> AuthFailures {
        AuthFailures {
            capacity: Some(capacity),
            ..AuthFailures::default()
        }
    }

    /// Whether AUTH from `client`'s network is locked out at `now`.
    pub fn is_locked_out(&self, client: IpAddr, now: Instant) -> bool {
        let state = self.lock();
        state
            .networks
            .get(&Network::of(client))
            .is_some_and(|tally| tally.is_locked(now))
    }

    /// Asks to check a password of `user` from `client` at `now`.
    pub fn begin(self: &Arc<Self>, client: IpAddr, user: &str, now: Instant) -> Admission {
        let network = Network::of(client);
        let user = user_key(user);
        let capacity = self.capacity.unwrap_or(CAPACITY);
        let mut guard = self.lock();
        let state = &mut *guard;
        let known = state.is_known(network, now);
        let network_tally = tally(&mut state.networks, network, capacity, NETWORK, now);
        let mut rooms = vec![(Scope::Network, network_tally.room(NETWORK, now))];
        if !known {
            let user_tally = tally(&mut state.users, user.clone(), capacity, USER, now);
            rooms.push((Scope::User, user_tally.room(USER, now)));
            rooms.push((Scope::Global, state.global.room(GLOBAL, now)));
        }
        if let Some((scope, _)) = rooms.iter().find(|(_, room)| *room == Room::Locked) {
            return Admission::Refused(*scope);
        }
        if rooms.iter().any(|(_, room)| *room == Room::Full) {
            return Admission::Wait;
        }
        for tally in state.tallies(network, &user, !known) {
            tally.in_flight += 1;
        }
        Admission::Granted(Attempt {
            failures: self.clone(),
            network,
            user,
            limited: !known,
            ended: false,
        })
    }

    /// Waits for an attempt of `user` from `client` to be granted (see
    /// [`AuthFailures::begin`]); `Err` with the budget locked out.
    pub async fn admit(self: &Arc<Self>, client: IpAddr, user: &str) -> Result<Attempt, Scope> {
        loop {
            // Registered before asking, so an attempt that ends in between
            // still wakes this one.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.begin(client, user, Instant::now()) {
                Admission::Granted(attempt) => return Ok(attempt),
                Admission::Refused(scope) => return Err(scope),
                Admission::Wait => ended.await,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each change leaves the state consistent before anything that can
        // panic, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.lock();
        state.networks.len() + state.users.len()
    }
}

impl State {
    fn is_known(&self, network: Network, now: Instant) -> bool {
        network == Network::Loopback
            || self
                .known
                .get(&network)
                .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
    }

    /// The tallies an attempt counts in: its network's, and unless its
    /// network is known (`limited` false), its user name's and the total.
    fn tallies<'a>(
        &'a mut self,
        network: Network,
        user: &str,
        limited: bool,
    ) -> impl Iterator<Item = &'a mut Tally> {
        let network = self.networks.get_mut(&network);
        let (user, global) = if limited {
            (self.users.get_mut(user), Some(&mut self.global))
        } else {
            (None, None)
        };
        network.into_iter().chain(user).chain(global)
    }

    fn remember_known(&mut self, network: Network, now: Instant) {
        if !self.known.contains_key(&network) && self.known.len() >= KNOWN_CAPACITY {
            self.known
                .retain(|_, at| now.saturating_duration_since(*at) < KNOWN_FOR);
            if self.known.len() >= KNOWN_CAPACITY
                && let Some(oldest) = self
                    .known
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(n, _)| *n)
            {
                self.known.remove(&oldest);
            }
        }
        self.known.insert(network, now);
    }
}

/// A password check under way: it counts in its budgets until it ends, as a
/// success, a failure, or dropped (the session ended first).
pub struct Attempt {
    failures: Arc<AuthFailures>,
    network: Network,
    user: Box<str>,
    /// Counted in the user and total budgets too (the network is not known).
    limited: bool,
    ended: bool,
}

impl Attempt {
    pub fn network(&self) -> Network {
        self.network
    }

    /// The password was right: the network's failures are forgotten (a
    /// lockout stays) and the network becomes known.
    pub fn succeeded(mut self, now: Instant) {
        let failures = self.failures.clone();
        let mut state = failures.lock();
        self.end(&mut state);
        if let Some(tally) = state.networks.get_mut(&self.network) {
            tally.recent.clear();
        }
        state.remember_known(self.network, now);
        drop(state);
        failures.ended.notify_waiters();
    }

    /// The password was wrong: counts the failure in every budget; returns
    /// the budgets it locked out.
    pub fn failed(mut self, now: Instant) -> Vec<Scope> {
        let failures = self.failures.clone();
        let capacity = failures.capacity.unwrap_or(CAPACITY);
        let mut guard = failures.lock();
        let state = &mut *guard;
        self.end(state);
        let mut locked = Vec::new();
        let network = tally(&mut state.networks, self.network, capacity, NETWORK, now);
        if network.fail(NETWORK, now) {
            locked.push(Scope::Network);
        }
        let user = tally(&mut state.users, self.user.clone(), capacity, USER, now);
        if user.fail(USER, now) {
            locked.push(Scope::User);
        }
        if state.global.fail(GLOBAL, now) {
            locked.push(Scope::Global);
        }
        drop(guard);
        failures.ended.notify_waiters();
        locked
    }

    fn end(&mut self, state: &mut State) {
        self.ended = true;
        for tally in state.tallies(self.network, &self.user, self.limited) {
            tally.end_attempt();
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.ended {
            let failures = self.failures.clone();
            self.end(&mut failures.lock());
            failures.ended.notify_waiters();
        }
    }
}

fn user_key(user: &str) -> Box<str> {
    let mut end = user.len().min(MAX_USER_KEY);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].into()
}

/// The tally of `key`, made (with room) when there is none.
fn tally<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Tally>,
    key: K,
    capacity: usize,
    budget: Budget,
    now: Instant,
) -> &mut Tally {
    if !map.contains_key(&key) {
        make_room(map, capacity, budget, now);
    }
    map.entry(key).or_default()
}

/// Leaves room for one more record: drops those that no longer matter, then,
/// if still full, the one whose last failure is oldest among those neither
/// locked nor in flight (a flood of single failures must not lift a
/// lockout).
fn make_room<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Tally>,
    capacity: usize,
    budget: Budget,
    now: Instant,
) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, tally| tally.matters(budget, now));
    if map.len() < capacity {
        return;
    }
    let first = map
        .iter()
        .filter(|(_, tally)| tally.in_flight == 0 && !tally.is_locked(now))
        .min_by_key(|(_, tally)| tally.recent.back().copied())
        .map(|(key, _)| key.clone());
    if let Some(key) = first {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
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
}
