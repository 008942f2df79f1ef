//! Per-destination queues and output control (ARCHITECTURE.md, "Delivery";
//! README "Output control"): a connection limit per destination that
//! follows the remote end's overload signals (additive increase,
//! multiplicative decrease), a rate, suspension, lane ready lists, idle
//! connections kept for reuse, and the dead destination memory.
//!
//! A lane worker only ever takes work that can start now: a destination puts
//! a "ready token" into a lane's list for each job it could start under its
//! limit. Jobs beyond the limit wait here, holding no lane slot, so one slow
//! domain cannot occupy a lane (KumoMTA's ready queues). Jobs that cannot
//! start for a longer while (no rate token yet, a suspension) are given back
//! to be deferred without an attempt, so they hold neither a slot nor a pass.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use relayq_spool::QueueId;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::client::{Connection, RemoteReply};
use super::job::Job;
use super::rate::{Admission, RateLimiter};
use crate::config::{DestinationRule, Route};
use crate::metrics::{ActiveConnections, DestinationShaping, Throttle};
use crate::queue::reservations::Reservations;
use crate::queue::{Lane, PerLane};

/// Where mail goes next: a recipient domain's MX hosts, or a configured
/// route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    Mx(String),
    Route(RouteHop),
}

/// A configured route as a next hop, known by identity rather than by its
/// place in the file: after a reload that changes a route, no connection
/// or memory of the old one is used for it. `Live::build` keeps the same
/// `Arc` for a route a reload left as it was, so its connections and
/// limits carry over. Identity also keeps hashing a job's next hop as
/// cheap as hashing an index.
#[derive(Debug, Clone)]
pub struct RouteHop(pub Arc<Route>);

impl PartialEq for RouteHop {
    fn eq(&self, other: &RouteHop) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RouteHop {}

impl std::hash::Hash for RouteHop {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl std::ops::Deref for RouteHop {
    type Target = Route;

    fn deref(&self) -> &Route {
        &self.0
    }
}

/// What limits are kept for: a `[[destination]]` rule (by name, which
/// stays the same across reloads), or a next hop without a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DestinationKey {
    Rule(Arc<str>),
    Hop(NextHop),
}

impl DestinationKey {
    /// A rule's destination: few, named in the configuration (metrics give
    /// each its own series).
    pub fn is_rule(&self) -> bool {
        matches!(self, DestinationKey::Rule(_))
    }
}

/// How long a connection may sit idle before it is closed.
pub const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(5);
/// Transactions per connection, without a rule that says otherwise, before
/// it is closed and a new one opened.
pub const MAX_TRANSACTIONS_PER_CONNECTION: u32 = 100;
/// Idle connections kept per destination.
const MAX_IDLE_CONNECTIONS: usize = 8;
/// A lowered connection limit of a destination with nothing in flight is
/// forgotten this long after it was last lowered, so a destination that
/// had one bad moment does not stay slow (or in memory) for ever.
const FEEDBACK_MEMORY: Duration = Duration::from_secs(600);
/// A rate token due this soon is waited for by the worker holding the job
/// rather than deferring the message: deferring costs a spool commit.
pub const SHORT_WAIT: Duration = Duration::from_millis(500);

/// Why a job cannot start now.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Every host refused connections recently: an ordinary deferral.
    Dead(RemoteReply),
    /// Waiting for a rate token or the end of a suspension: deferred until
    /// then, without counting an attempt.
    Wait(Wait),
}

/// A job its destination would not take now, and why.
pub struct Rejected {
    pub job: Job,
    pub refusal: Refusal,
    /// What to count in `relayq_destination_throttled_total`, if anything.
    pub throttle: Option<Throttle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub until: SystemTime,
    /// `4.7.0 destination NAME …`: the recipients' last reply meanwhile.
    pub reply: RemoteReply,
}

/// A destination just suspended: what the caller announces and gives back.
pub struct Suspended {
    pub name: String,
    pub until: SystemTime,
    pub reply: RemoteReply,
    /// Jobs that were waiting for a slot: to be deferred until `until`.
    pub jobs: Vec<Job>,
    /// Its idle connections: to be closed.
    pub connections: Vec<Connection>,
}

/// What the sweep found: idle connections to close, suspensions that ended.
pub struct Swept {
    pub connections: Vec<Connection>,
    pub resumed: Vec<String>,
}

struct Suspension {
    until: Instant,
    until_wall: SystemTime,
    reply: RemoteReply,
}

struct Destination {
    active: usize,
    /// Ready tokens handed to each lane's list and not yet taken.
    tokens: PerLane<usize>,
    jobs: PerLane<VecDeque<Job>>,
    /// Idle connections with the next hop they lead to: the destination of
    /// a rule may span several next hops.
    idle: Vec<(NextHop, Connection, Instant)>,
    /// The most connections at once: its rule's `concurrency`, or
    /// `delivery.destination_concurrency`.
    cap: usize,
    /// The connection limit after feedback, 1..=cap.
    limit: usize,
    /// Connections that completed a transaction since the limit last
    /// changed: at `limit` of them it rises by one.
    successes: usize,
    /// When the limit was last halved: signals from connections begun
    /// before then belong to the round already counted.
    decreased_at: Option<Instant>,
    rate: Option<RateLimiter>,
    suspension: Option<Suspension>,
}

impl Destination {
    fn new(cap: usize, rate: Option<RateLimiter>) -> Destination {
        Destination {
            active: 0,
            tokens: PerLane::default(),
            jobs: PerLane::default(),
            idle: Vec::new(),
            cap,
            limit: cap,
            successes: 0,
            decreased_at: None,
            rate,
            suspension: None,
        }
    }

    fn waiting(&self) -> usize {
        self.jobs.iter().map(|(_, jobs)| jobs.len()).sum()
    }

    /// Nothing here to remember: a destination without a rule can go.
    fn is_unused(&self, now: Instant) -> bool {
        self.active == 0
            && self.waiting() == 0
            && self.idle.is_empty()
            && self.limit == self.cap
            && self.suspension.is_none()
            && self.rate.as_ref().is_none_or(|rate| rate.is_idle(now))
    }

    fn suspended_at(&self, now: Instant) -> Option<&Suspension> {
        self.suspension
            .as_ref()
            .filter(|suspension| suspension.until > now)
    }
}

#[derive(Default)]
struct ReadyList {
    hops: Mutex<VecDeque<DestinationKey>>,
    notify: Notify,
}

/// The settings destinations are created with; replaced by a reload.
struct Shaping {
    default_cap: usize,
    /// In file order, each with its name as the key uses it.
    rules: Vec<(Arc<str>, DestinationRule)>,
    /// The destinations with a rate (only rules have one).
    rated: Vec<DestinationKey>,
}

impl Shaping {
    fn new(default_cap: usize, rules: &[DestinationRule]) -> Shaping {
        let rules: Vec<(Arc<str>, DestinationRule)> = rules
            .iter()
            .map(|rule| (Arc::from(rule.name.as_str()), rule.clone()))
            .collect();
        let rated = rules
            .iter()
            .filter(|(_, rule)| rule.rate.is_some())
            .map(|(name, _)| DestinationKey::Rule(name.clone()))
            .collect();
        Shaping {
            default_cap: default_cap.max(1),
            rules,
            rated,
        }
    }

    fn rule(&self, name: &str) -> Option<&DestinationRule> {
        self.rules
            .iter()
            .find(|(rule_name, _)| &**rule_name == name)
            .map(|(_, rule)| rule)
    }

    /// Whether `key` is a rule's destination, kept while the rule exists
    /// (a next hop's, or a removed rule's, goes when nothing refers to it).
    fn has_rule(&self, key: &DestinationKey) -> bool {
        matches!(key, DestinationKey::Rule(name) if self.rule(name).is_some())
    }

    /// The cap and rate interval a destination of `key` has now. A rule
    /// that a reload removed while its mail was in flight counts as a next
    /// hop without a rule.
    fn limits(&self, key: &DestinationKey) -> (usize, Option<Duration>) {
        match key {
            DestinationKey::Rule(name) => match self.rule(name) {
                Some(rule) => (rule.concurrency, rule.rate.map(|rate| rate.interval())),
                None => (self.default_cap, None),
            },
            DestinationKey::Hop(_) => (self.default_cap, None),
        }
    }
}

pub struct Destinations {
    dead_for: Duration,
    shaping: ArcSwap<Shaping>,
    table: Mutex<HashMap<DestinationKey, Destination>>,
    dead: Mutex<HashMap<NextHop, (Instant, RemoteReply)>>,
    ready: PerLane<ReadyList>,
}

impl Destinations {
    /// `default_cap`: concurrent deliveries per destination without a rule;
    /// `dead_for`: how long a next hop whose hosts all refused connections
    /// is skipped.
    pub fn new(default_cap: usize, dead_for: Duration, rules: &[DestinationRule]) -> Destinations {
        Destinations {
            dead_for,
            shaping: ArcSwap::new(Arc::new(Shaping::new(default_cap, rules))),
            table: Mutex::default(),
            dead: Mutex::default(),
            ready: Default::default(),
        }
    }

    /// The first rule matching a recipient domain (or its most preferred MX
    /// host, for a next hop by MX), else the next hop itself; and whether
    /// the rule matched by the MX host.
    pub fn key_for(
        &self,
        domain: &str,
        hop: &NextHop,
        mx_host: Option<&str>,
    ) -> (DestinationKey, bool) {
        let mx_host = match hop {
            NextHop::Mx(_) => mx_host,
            NextHop::Route(_) => None,
        };
        for (name, rule) in &self.shaping.load().rules {
            if rule.matches(domain, None) {
                return (DestinationKey::Rule(name.clone()), false);
            }
            if rule.matches(domain, mx_host) {
                return (DestinationKey::Rule(name.clone()), true);
            }
        }
        (DestinationKey::Hop(hop.clone()), false)
    }

    /// A domain's destination when it can be decided without its MX host:
    /// a rule matching the domain comes before any rule with `mx:`
    /// patterns, or no rule has them.
    pub fn key_without_mx(&self, domain: &str, hop: &NextHop) -> Option<DestinationKey> {
        for (name, rule) in &self.shaping.load().rules {
            if rule.matches(domain, None) {
                return Some(DestinationKey::Rule(name.clone()));
            }
            if rule.needs_mx() && matches!(hop, NextHop::Mx(_)) {
                return None;
            }
        }
        Some(DestinationKey::Hop(hop.clone()))
    }

    /// The name in metrics, stats, logs and Redis keys.
    pub fn label(&self, key: &DestinationKey) -> String {
        match key {
            DestinationKey::Rule(name) => name.to_string(),
            DestinationKey::Hop(NextHop::Mx(domain)) => domain.clone(),
            DestinationKey::Hop(NextHop::Route(route)) => format!("route:{}", route.host),
        }
    }

    fn create(&self, key: &DestinationKey) -> Destination {
        let (cap, interval) = self.shaping.load().limits(key);
        Destination::new(cap, interval.map(RateLimiter::new))
    }

    /// Applies reloaded settings: new destinations are created with them,
    /// and the ones known now take their new cap and rate at once (a limit
    /// lowered by feedback stays lowered, within the new cap). Jobs in
    /// flight finish; waiting jobs start as the new limits allow.
    pub fn reconfigure(&self, default_cap: usize, rules: &[DestinationRule]) {
        // Stored before the table is locked: a destination created meanwhile
        // from the old settings is updated below.
        self.shaping
            .store(Arc::new(Shaping::new(default_cap, rules)));
        let shaping = self.shaping.load();
        let mut table = self.lock();
        let mut pushes = Vec::new();
        for (key, destination) in table.iter_mut() {
            let (cap, interval) = shaping.limits(key);
            if destination.limit == destination.cap || destination.limit > cap {
                destination.limit = cap;
            }
            destination.cap = cap;
            match (&mut destination.rate, interval) {
                (Some(rate), Some(interval)) => rate.set_interval(interval),
                (rate, interval) => *rate = interval.map(RateLimiter::new),
            }
            pushes.push((key.clone(), grant_tokens(destination)));
        }
        drop(table);
        for (key, pushes) in pushes {
            self.push_ready(&key, pushes);
        }
    }

    /// Queues a job at its destination, or says why it cannot start now:
    /// its next hop is remembered as dead, the destination is suspended, or
    /// its rate has no token before `SHORT_WAIT` (the token it will get is
    /// then promised to the message).
    pub fn submit(&self, job: Job) -> Result<(), Box<Rejected>> {
        if let Some(reason) = self.is_dead(&job.hop) {
            return Err(Box::new(Rejected {
                job,
                refusal: Refusal::Dead(reason),
                throttle: None,
            }));
        }
        let key = job.destination.clone();
        let lane = job.lane();
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table
            .entry(key.clone())
            .or_insert_with(|| self.create(&key));
        if let Some(suspension) = destination.suspended_at(now) {
            let wait = self.suspended_wait(&key, suspension);
            return Err(Box::new(Rejected {
                job,
                refusal: Refusal::Wait(wait),
                throttle: Some(Throttle::Suspended),
            }));
        }
        if let Some(rate) = &mut destination.rate
            && let Admission::Later(at) = rate.admit(job.pass.id, now, SHORT_WAIT)
        {
            let wait = self.rate_wait(&key, at, now);
            return Err(Box::new(Rejected {
                job,
                refusal: Refusal::Wait(wait),
                throttle: Some(Throttle::Rate),
            }));
        }
        destination.jobs[lane].push_back(job);
        let pushes = grant_tokens(destination);
        drop(table);
        self.push_ready(&key, pushes);
        Ok(())
    }

    /// The name and interval of `key`'s rate, when it has one: what a fleet
    /// rate is kept under in Redis.
    pub fn rate_of(&self, key: &DestinationKey) -> Option<(Arc<str>, Duration)> {
        let DestinationKey::Rule(name) = key else {
            return None;
        };
        let interval = self.shaping.load().rule(name)?.rate?.interval();
        Some((name.clone(), interval))
    }

    /// The fleet (Redis) refused a start that the destination's own rate
    /// allowed: that start is undone, and the message is promised the
    /// first local slot from `wait` on, to be deferred until then.
    pub fn fleet_refused(&self, key: &DestinationKey, id: QueueId, wait: Duration) -> Wait {
        let now = Instant::now();
        let at = {
            let mut table = self.lock();
            let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
            match &mut destination.rate {
                Some(rate) => {
                    rate.unstart(id);
                    rate.promise(id, now, now + wait)
                }
                None => now + wait,
            }
        };
        self.rate_wait(key, at, now)
    }

    /// Puts a job back at the front of its destination's queue: its
    /// connection met an overload signal, and it runs again as soon as the
    /// lowered limit allows.
    pub fn requeue(&self, job: Job) {
        let key = job.destination.clone();
        let lane = job.lane();
        let mut table = self.lock();
        let destination = table
            .entry(key.clone())
            .or_insert_with(|| self.create(&key));
        destination.jobs[lane].push_front(job);
        let pushes = grant_tokens(destination);
        drop(table);
        self.push_ready(&key, pushes);
    }

    /// Jobs waiting at `key` (admission control for new passes).
    pub fn queued(&self, key: &DestinationKey) -> usize {
        self.lock().get(key).map_or(0, Destination::waiting)
    }

    /// Per destination known now, the jobs running there: each holds one
    /// place under the cap and at most one connection (open, or being
    /// looked up and opened), so this is the connections in use.
    pub fn active_connections(&self) -> Vec<ActiveConnections> {
        let keys: Vec<(DestinationKey, usize)> = self
            .lock()
            .iter()
            .map(|(key, destination)| (key.clone(), destination.active))
            .collect();
        keys.into_iter()
            .map(|(key, active)| ActiveConnections {
                destination: self.label(&key),
                rule: key.is_rule(),
                active: active as u64,
            })
            .collect()
    }

    /// Waits for a job of `lane` that can start now and takes it; the caller
    /// must call `finished` when it is done.
    pub async fn take(&self, lane: Lane) -> Job {
        let ready = &self.ready[lane];
        loop {
            let notified = ready.notify.notified();
            let key = ready
                .hops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(key) = key else {
                notified.await;
                continue;
            };
            let mut table = self.lock();
            let Some(destination) = table.get_mut(&key) else {
                continue;
            };
            destination.tokens[lane] = destination.tokens[lane].saturating_sub(1);
            if let Some(job) = destination.jobs[lane].pop_front() {
                destination.active += 1;
                return job;
            }
        }
    }

    /// A job at `key` ended: frees its place under the limit.
    pub fn finished(&self, key: &DestinationKey) {
        let mut table = self.lock();
        let Some(destination) = table.get_mut(key) else {
            return;
        };
        destination.active = destination.active.saturating_sub(1);
        let pushes = grant_tokens(destination);
        if destination.is_unused(Instant::now()) && !self.shaping.load().has_rule(key) {
            table.remove(key);
        }
        drop(table);
        self.push_ready(key, pushes);
    }

    fn push_ready(&self, key: &DestinationKey, pushes: PerLane<usize>) {
        for (lane, &count) in pushes.iter() {
            if count == 0 {
                continue;
            }
            let list = &self.ready[lane];
            let mut keys = list.hops.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..count {
                keys.push_back(key.clone());
            }
            drop(keys);
            for _ in 0..count {
                list.notify.notify_one();
            }
        }
    }

    /// Right before a transaction's MAIL command: `Ok` to start it now
    /// (counted as a start), else how long to wait. A suspension always
    /// refuses; the rate refuses a start closer than its interval to the
    /// previous one, so starts are exactly spaced even when jobs promised
    /// consecutive tokens arrive late together.
    pub fn start_transaction(
        &self,
        key: &DestinationKey,
        id: QueueId,
    ) -> Result<(), (Duration, Wait, Throttle)> {
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if let Some(suspension) = destination.suspended_at(now) {
            let wait = self.suspended_wait(key, suspension);
            let left = suspension.until - now;
            return Err((left, wait, Throttle::Suspended));
        }
        if let Some(rate) = &mut destination.rate
            && let Err(at) = rate.start(id, now)
        {
            // A short wait is the caller's to sleep; a longer one defers the
            // message to a slot of its own.
            let at = if at - now <= SHORT_WAIT {
                at
            } else {
                rate.promise(id, now, at)
            };
            let wait = self.rate_wait(key, at, now);
            return Err((at - now, wait, Throttle::Rate));
        }
        Ok(())
    }

    /// Gives back the rate token taken by `start_transaction` for message
    /// `id`'s transaction, which never sent MAIL (the connection was gone).
    pub fn unstart(&self, key: &DestinationKey, id: QueueId) {
        if let Some(rate) = self
            .lock()
            .get_mut(key)
            .and_then(|destination| destination.rate.as_mut())
        {
            rate.unstart(id);
        }
    }

    /// Message `id` no longer waits for delivery (it left the queue, or was
    /// held): the rate slots promised to it go to other mail.
    pub fn release(&self, id: QueueId) {
        let shaping = self.shaping.load();
        if shaping.rated.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut table = self.lock();
        for key in &shaping.rated {
            if let Some(rate) = table
                .get_mut(key)
                .and_then(|destination| destination.rate.as_mut())
            {
                rate.release(id, now);
            }
        }
    }

    /// An overload signal (a 421, or a connection refused, reset or timed
    /// out before the greeting) from a connection attempt begun at
    /// `begun`: halves the limit (at least 1), once per round of
    /// connections in flight. Returns the new limit when it changed.
    pub fn overload(&self, key: &DestinationKey, begun: Instant) -> Option<usize> {
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if destination.decreased_at.is_some_and(|at| begun < at) {
            return None;
        }
        destination.decreased_at = Some(Instant::now());
        destination.successes = 0;
        let lowered = (destination.limit / 2).max(1);
        let changed = lowered != destination.limit;
        destination.limit = lowered;
        changed.then_some(lowered)
    }

    /// A new connection completed a transaction: after as many of those as
    /// the current limit, the limit rises by one, up to the cap. Counting
    /// connections rather than every transaction on reused ones keeps the
    /// probing for one more connection rare where connections are reused.
    pub fn connection_succeeded(&self, key: &DestinationKey) {
        let mut table = self.lock();
        let Some(destination) = table.get_mut(key) else {
            return;
        };
        if destination.limit >= destination.cap {
            return;
        }
        destination.successes += 1;
        if destination.successes >= destination.limit {
            destination.successes = 0;
            destination.limit += 1;
            let pushes = grant_tokens(destination);
            drop(table);
            self.push_ready(key, pushes);
        }
    }

    /// If `reply` contains one of the `suspend_on` substrings of `key`'s
    /// rule: the wait of the destination's mail, and when this reply is what
    /// suspended it (it was not suspended yet) for its `suspend_for`, what
    /// the caller must announce, defer and close.
    pub fn suspend_on(
        &self,
        key: &DestinationKey,
        reply: &RemoteReply,
    ) -> Option<(Wait, Option<Suspended>)> {
        let DestinationKey::Rule(name) = key else {
            return None;
        };
        let shaping = self.shaping.load();
        let rule = shaping.rule(name)?;
        if !rule.suspends_on(&reply.to_string()) {
            return None;
        }
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if let Some(suspension) = destination.suspended_at(now) {
            return Some((self.suspended_wait(key, suspension), None));
        }
        let suspension = Suspension {
            until: now + rule.suspend_for,
            until_wall: SystemTime::now() + rule.suspend_for,
            reply: reply.clone(),
        };
        let wait = self.suspended_wait(key, &suspension);
        let until = suspension.until_wall;
        destination.suspension = Some(suspension);
        let mut jobs = Vec::new();
        for lane in Lane::ALL {
            jobs.extend(destination.jobs[lane].drain(..));
            destination.tokens[lane] = 0;
        }
        let connections = destination
            .idle
            .drain(..)
            .map(|(_, connection, _)| connection)
            .collect();
        Some((
            wait,
            Some(Suspended {
                name: rule.name.clone(),
                until,
                reply: reply.clone(),
                jobs,
                connections,
            }),
        ))
    }

    /// The wait of mail for a suspended destination.
    fn suspended_wait(&self, key: &DestinationKey, suspension: &Suspension) -> Wait {
        Wait {
            until: suspension.until_wall,
            reply: RemoteReply::local(
                "4.7.0",
                format!(
                    "destination {} suspended until {}: {}",
                    self.label(key),
                    crate::timefmt::rfc3339(suspension.until_wall),
                    suspension.reply
                ),
            ),
        }
    }

    fn rate_wait(&self, key: &DestinationKey, at: Instant, now: Instant) -> Wait {
        let left = at.saturating_duration_since(now);
        Wait {
            until: SystemTime::now() + left,
            reply: RemoteReply::local(
                "4.7.0",
                format!(
                    "destination {} rate limit: next start in {:.1}s",
                    self.label(key),
                    left.as_secs_f64()
                ),
            ),
        }
    }

    /// Every host of `hop` refused or timed out: skip it for a while.
    pub fn mark_dead(&self, hop: &NextHop, reason: RemoteReply) {
        lock(&self.dead).insert(hop.clone(), (Instant::now() + self.dead_for, reason));
    }

    pub fn is_dead(&self, hop: &NextHop) -> Option<RemoteReply> {
        let dead = lock(&self.dead);
        match dead.get(hop) {
            Some((until, reason)) if *until > Instant::now() => Some(reason.clone()),
            _ => None,
        }
    }

    /// An idle connection kept by `key` for the pool `hop` (a next hop, or
    /// the shared MX host of domains grouped by an `mx:` pattern), if one is
    /// fresh enough.
    pub fn take_idle(&self, key: &DestinationKey, hop: &NextHop) -> Option<Connection> {
        let mut table = self.lock();
        let destination = table.get_mut(key)?;
        while let Some(position) = destination.idle.iter().rposition(|(to, _, _)| to == hop) {
            let (_, connection, since) = destination.idle.swap_remove(position);
            if since.elapsed() < IDLE_CONNECTION_TTL {
                return Some(connection);
            }
            // Stale: dropping closes the socket without a QUIT round trip.
        }
        None
    }

    /// Before a job of `key` opens a new connection: the idle connections
    /// (of other pools) that would take the destination past its limit of
    /// open connections, oldest first, to be closed by the caller.
    pub fn make_room(&self, key: &DestinationKey) -> Vec<Connection> {
        let mut table = self.lock();
        let Some(destination) = table.get_mut(key) else {
            return Vec::new();
        };
        let mut evicted = Vec::new();
        while !destination.idle.is_empty()
            && destination.active + destination.idle.len() > destination.limit
        {
            evicted.push(destination.idle.remove(0).1);
        }
        evicted
    }

    /// Keeps a connection (already reset) for the next message to `hop`,
    /// unless it has carried its share of transactions or the destination
    /// is suspended.
    /// Returns the connection when it is not kept (it carried its last
    /// transaction, or the pool is full or suspended): the caller closes it
    /// with QUIT on a tracked task.
    #[must_use = "a connection not kept must be closed"]
    pub fn put_idle(
        &self,
        key: &DestinationKey,
        hop: &NextHop,
        connection: Connection,
    ) -> Option<Connection> {
        let per_connection = match key {
            DestinationKey::Rule(name) => self
                .shaping
                .load()
                .rule(name)
                .map_or(MAX_TRANSACTIONS_PER_CONNECTION, |rule| {
                    rule.messages_per_connection
                }),
            DestinationKey::Hop(_) => MAX_TRANSACTIONS_PER_CONNECTION,
        };
        if connection.completed_transactions() >= per_connection {
            return Some(connection);
        }
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if destination.idle.len() < MAX_IDLE_CONNECTIONS && destination.suspended_at(now).is_none()
        {
            destination.idle.push((hop.clone(), connection, now));
            None
        } else {
            Some(connection)
        }
    }

    /// Takes the connections idle for longer than the TTL (to be closed with
    /// QUIT by the caller), ends suspensions whose time is up (their names
    /// returned, to be announced) and forgets destinations nothing refers to.
    pub fn sweep(&self) -> Swept {
        let now = Instant::now();
        let mut swept = Swept {
            connections: Vec::new(),
            resumed: Vec::new(),
        };
        let shaping = self.shaping.load();
        let mut table = self.lock();
        let mut pushes = Vec::new();
        table.retain(|key, destination| {
            let (keep, old): (Vec<_>, Vec<_>) = destination
                .idle
                .drain(..)
                .partition(|(_, _, since)| since.elapsed() < IDLE_CONNECTION_TTL);
            destination.idle = keep;
            swept
                .connections
                .extend(old.into_iter().map(|(_, connection, _)| connection));
            if destination
                .suspension
                .as_ref()
                .is_some_and(|suspension| suspension.until <= now)
            {
                destination.suspension = None;
                swept.resumed.push(self.label(key));
                pushes.push((key.clone(), grant_tokens(destination)));
            }
            if let Some(rate) = &mut destination.rate {
                rate.expire_promises(now);
            }
            if destination.active == 0
                && destination.waiting() == 0
                && destination
                    .decreased_at
                    .is_some_and(|at| now.duration_since(at) >= FEEDBACK_MEMORY)
            {
                destination.limit = destination.cap;
                destination.decreased_at = None;
                destination.successes = 0;
            }
            shaping.has_rule(key) || !destination.is_unused(now)
        });
        drop(table);
        for (key, pushes) in pushes {
            self.push_ready(&key, pushes);
        }
        lock(&self.dead).retain(|_, (until, _)| *until > now);
        swept
    }

    /// Each destination with a rule or a lowered limit, by label.
    pub fn shaping(&self) -> Vec<DestinationShaping> {
        let now = Instant::now();
        let shaping = self.shaping.load();
        let table = self.lock();
        let mut rows: Vec<DestinationShaping> = table
            .iter()
            .filter(|(key, destination)| {
                shaping.has_rule(key) || destination.limit < destination.cap
            })
            .map(|(key, destination)| DestinationShaping {
                destination: self.label(key),
                concurrency_limit: destination.limit,
                active: destination.active,
                waiting: destination.waiting(),
                suspended_until: destination
                    .suspended_at(now)
                    .map(|suspension| crate::timefmt::rfc3339(suspension.until_wall)),
                rule: key.is_rule(),
            })
            .collect();
        drop(table);
        // Rules not used yet are shown too, at their full limit.
        for (_, rule) in &shaping.rules {
            if !rows.iter().any(|row| row.destination == rule.name) {
                rows.push(DestinationShaping {
                    destination: rule.name.clone(),
                    concurrency_limit: rule.concurrency,
                    active: 0,
                    waiting: 0,
                    suspended_until: None,
                    rule: true,
                });
            }
        }
        rows.sort_by(|a, b| a.destination.cmp(&b.destination));
        rows
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestinationKey, Destination>> {
        lock(&self.table)
    }
}

/// Hands out ready tokens while the destination is under its limit,
/// high-lane jobs first. Returns how many to push per lane.
fn grant_tokens(destination: &mut Destination) -> PerLane<usize> {
    let mut pushes = PerLane::default();
    if destination.suspended_at(Instant::now()).is_some() {
        return pushes;
    }
    loop {
        let in_use =
            destination.active + destination.tokens[Lane::High] + destination.tokens[Lane::Low];
        if in_use >= destination.limit {
            return pushes;
        }
        let lane = Lane::ALL
            .into_iter()
            .find(|&lane| destination.jobs[lane].len() > destination.tokens[lane]);
        let Some(lane) = lane else { return pushes };
        destination.tokens[lane] += 1;
        pushes[lane] += 1;
    }
}

impl Reservations for Destinations {
    fn release(&self, id: QueueId) {
        Destinations::release(self, id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchPattern;

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
        let destinations = Destinations::new(8, Duration::from_secs(60), &[]);
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
        let destinations = Destinations::new(8, Duration::from_secs(60), &[rule()]);
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
        assert_eq!(
            destinations.label(&DestinationKey::Rule("provider".into())),
            "provider"
        );
        assert_eq!(
            destinations.label(&DestinationKey::Hop(route)),
            "route:smarthost.test"
        );
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
        let destinations = Destinations::new(8, Duration::from_secs(60), &[hourly]);
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
        assert_eq!((left, throttle), (Duration::from_millis(10), Throttle::Rate));
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
        let destinations = Destinations::new(8, Duration::from_secs(60), &[rule()]);
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
}
