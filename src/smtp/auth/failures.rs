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

    /// Checked again once a thread is free, just before the password is:
    /// whether a budget of the attempt was locked out while it waited.
    /// Attempts in flight cannot overfill a budget by themselves, but a
    /// known network's failures count in the user and total budgets
    /// without waiting for room in them.
    pub fn locked_out(&self, now: Instant) -> Option<Scope> {
        let state = self.failures.lock();
        let locked = |tally: Option<&Tally>| tally.is_some_and(|tally| tally.is_locked(now));
        if locked(state.networks.get(&self.network)) {
            Some(Scope::Network)
        } else if self.limited && locked(state.users.get(&self.user)) {
            Some(Scope::User)
        } else if self.limited && locked(Some(&state.global)) {
            Some(Scope::Global)
        } else {
            None
        }
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
mod tests;
