//! Destinations and output control (docs/delivery.md; ARCHITECTURE.md,
//! "The flow of a message"): per destination (a `[[destination]]` rule, or
//! a next hop without one) its queue of jobs, its connection limit after
//! overload feedback (`limit`), its rate (`rate`), its suspension
//! (`suspension`), the ready tokens it hands the lanes (`ready`), its idle
//! connections (`idle`); and the next hops remembered as dead (`dead`).
//!
//! A lane worker only ever takes work that can start now: a destination
//! hands a lane a ready token for each job it could start under its limit.
//! Jobs beyond the limit wait here, holding no lane slot, so one slow domain
//! cannot occupy a lane (KumoMTA's ready queues). Jobs that cannot start
//! for a longer while (no rate slot yet, a suspension) are given back to be
//! deferred without an attempt, so they hold neither a slot nor a pass.
//!
//! The jobs themselves are opaque here ([`Queued`]): delivery's jobs build
//! on destinations, not the other way round.

mod dead;
mod hop;
mod idle;
mod limit;
mod rate;
mod ready;
mod rules;
mod starts;
mod suspension;
#[cfg(test)]
mod tests;
mod wait;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use relayq_spool::QueueId;
use tokio::time::Instant;

use self::dead::DeadHops;
pub use self::hop::{DestinationKey, NextHop, RouteHop};
use self::idle::IdleConnections;
use self::limit::Limit;
use self::rate::{Admission, RateLimiter};
use self::ready::{ReadyLists, Tokens};
use self::rules::Rules;
use self::suspension::Suspension;
pub use self::wait::{Refusal, Rejected, Wait};
use super::client::Connection;
use crate::config::DestinationRule;
use crate::metrics::{ActiveConnections, DestinationShaping, Throttle};
use crate::queue::{Lane, PerLane};

/// A rate slot due this soon is waited for by the worker holding the job
/// rather than deferring the message: deferring costs a spool commit.
pub const SHORT_WAIT: Duration = Duration::from_millis(500);

/// What destinations need to know of a job queued at one.
pub trait Queued {
    /// Whose limits, rate and suspension the job is under.
    fn destination(&self) -> &DestinationKey;
    /// Where its mail goes: skipped while remembered as dead.
    fn hop(&self) -> &NextHop;
    fn lane(&self) -> Lane;
    /// The message: a rate slot is promised to a message.
    fn message(&self) -> QueueId;
}

/// What the sweep found: idle connections to close, suspensions that ended.
pub struct Swept {
    pub connections: Vec<Connection>,
    pub resumed: Vec<String>,
}

struct Destination<J> {
    /// Jobs taken by a lane worker and not finished.
    active: usize,
    tokens: Tokens,
    jobs: PerLane<VecDeque<J>>,
    idle: IdleConnections,
    limit: Limit,
    rate: Option<RateLimiter>,
    suspension: Option<Suspension>,
}

impl<J> Destination<J> {
    fn new(cap: usize, rate: Option<RateLimiter>) -> Destination<J> {
        Destination {
            active: 0,
            tokens: Tokens::default(),
            jobs: PerLane::default(),
            idle: IdleConnections::default(),
            limit: Limit::new(cap),
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
            && !self.limit.is_lowered()
            && self.suspension.is_none()
            && self.rate.as_ref().is_none_or(|rate| rate.is_idle(now))
    }

    fn suspended_at(&self, now: Instant) -> Option<&Suspension> {
        self.suspension
            .as_ref()
            .filter(|suspension| suspension.until > now)
    }

    /// Ready tokens for the jobs that may start now (none while
    /// suspended), per lane.
    fn grant(&mut self) -> PerLane<usize> {
        if self.suspended_at(Instant::now()).is_some() {
            return PerLane::default();
        }
        let waiting = PerLane::from_fn(|lane| self.jobs[lane].len());
        self.tokens.grant(self.active, self.limit.get(), waiting)
    }
}

pub struct Destinations<J> {
    dead: DeadHops,
    rules: ArcSwap<Rules>,
    table: Mutex<HashMap<DestinationKey, Destination<J>>>,
    ready: ReadyLists,
}

impl<J: Queued> Destinations<J> {
    /// `default_cap`: concurrent deliveries per destination without a rule;
    /// `dead_for`: how long a next hop whose hosts all refused connections
    /// is skipped.
    pub fn new(
        default_cap: usize,
        dead_for: Duration,
        rules: &[DestinationRule],
    ) -> Destinations<J> {
        Destinations {
            dead: DeadHops::new(dead_for),
            rules: ArcSwap::new(Arc::new(Rules::new(default_cap, rules))),
            table: Mutex::default(),
            ready: ReadyLists::default(),
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
        self.rules.load().key_for(domain, hop, mx_host)
    }

    /// A domain's destination when it can be decided without its MX host:
    /// a rule matching the domain comes before any rule with `mx:`
    /// patterns, or no rule has them.
    pub fn key_without_mx(&self, domain: &str, hop: &NextHop) -> Option<DestinationKey> {
        self.rules.load().key_without_mx(domain, hop)
    }

    fn create(&self, key: &DestinationKey) -> Destination<J> {
        let (cap, interval) = self.rules.load().limits(key);
        Destination::new(cap, interval.map(RateLimiter::new))
    }

    /// Applies reloaded settings: new destinations are created with them,
    /// and the ones known now take their new cap and rate at once (a limit
    /// lowered by feedback stays lowered, within the new cap). Jobs in
    /// flight finish; waiting jobs start as the new limits allow.
    pub fn reconfigure(&self, default_cap: usize, rules: &[DestinationRule]) {
        // Stored before the table is locked: a destination created meanwhile
        // from the old settings is updated below.
        self.rules.store(Arc::new(Rules::new(default_cap, rules)));
        let rules = self.rules.load();
        let mut table = self.lock();
        let mut pushes = Vec::new();
        for (key, destination) in table.iter_mut() {
            let (cap, interval) = rules.limits(key);
            destination.limit.set_cap(cap);
            match (&mut destination.rate, interval) {
                (Some(rate), Some(interval)) => rate.set_interval(interval),
                (rate, interval) => *rate = interval.map(RateLimiter::new),
            }
            pushes.push((key.clone(), destination.grant()));
        }
        drop(table);
        for (key, pushes) in pushes {
            self.ready.push(&key, pushes);
        }
    }

    /// Queues a job at its destination, or says why it cannot start now:
    /// its next hop is remembered as dead, the destination is suspended, or
    /// its rate has no slot before `SHORT_WAIT` (the slot it will get is
    /// then promised to the message).
    pub fn submit(&self, job: J) -> Result<(), Box<Rejected<J>>> {
        if let Some(reason) = self.dead.check(job.hop()) {
            return Err(Box::new(Rejected {
                job,
                refusal: Refusal::Dead(reason),
                throttle: None,
            }));
        }
        let key = job.destination().clone();
        let lane = job.lane();
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table
            .entry(key.clone())
            .or_insert_with(|| self.create(&key));
        if let Some(suspension) = destination.suspended_at(now) {
            let wait = suspension.wait(&key.label());
            return Err(Box::new(Rejected {
                job,
                refusal: Refusal::Wait(wait),
                throttle: Some(Throttle::Suspended),
            }));
        }
        if let Some(rate) = &mut destination.rate
            && let Admission::Later(at) = rate.admit(job.message(), now, SHORT_WAIT)
        {
            return Err(Box::new(Rejected {
                job,
                refusal: Refusal::Wait(Wait::rate(&key.label(), at, now)),
                throttle: Some(Throttle::Rate),
            }));
        }
        destination.jobs[lane].push_back(job);
        let pushes = destination.grant();
        drop(table);
        self.ready.push(&key, pushes);
        Ok(())
    }

    /// Puts a job back at the front of its destination's queue: its
    /// connection met an overload signal, and it runs again as soon as the
    /// lowered limit allows.
    pub fn requeue(&self, job: J) {
        let key = job.destination().clone();
        let lane = job.lane();
        let mut table = self.lock();
        let destination = table
            .entry(key.clone())
            .or_insert_with(|| self.create(&key));
        destination.jobs[lane].push_front(job);
        let pushes = destination.grant();
        drop(table);
        self.ready.push(&key, pushes);
    }

    /// Jobs waiting at `key` (admission control for new passes).
    pub fn queued(&self, key: &DestinationKey) -> usize {
        self.lock().get(key).map_or(0, Destination::waiting)
    }

    /// Waits for a job of `lane` that can start now and takes it; the caller
    /// must call `finished` when it is done.
    pub async fn take(&self, lane: Lane) -> J {
        loop {
            let key = self.ready.next(lane).await;
            let mut table = self.lock();
            let Some(destination) = table.get_mut(&key) else {
                continue;
            };
            destination.tokens.taken(lane);
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
        let pushes = destination.grant();
        if destination.is_unused(Instant::now()) && !self.rules.load().has_rule(key) {
            table.remove(key);
        }
        drop(table);
        self.ready.push(key, pushes);
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
        let rules = self.rules.load();
        let mut table = self.lock();
        let mut pushes = Vec::new();
        table.retain(|key, destination| {
            swept.connections.extend(destination.idle.take_stale());
            if destination
                .suspension
                .as_ref()
                .is_some_and(|suspension| suspension.until <= now)
            {
                destination.suspension = None;
                swept.resumed.push(key.label());
                pushes.push((key.clone(), destination.grant()));
            }
            if let Some(rate) = &mut destination.rate {
                rate.expire_promises(now);
            }
            if destination.active == 0 && destination.waiting() == 0 {
                destination.limit.forget_stale(now);
            }
            rules.has_rule(key) || !destination.is_unused(now)
        });
        drop(table);
        for (key, pushes) in pushes {
            self.ready.push(&key, pushes);
        }
        self.dead.sweep(now);
        swept
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
                destination: key.label(),
                rule: key.is_rule(),
                active: active as u64,
            })
            .collect()
    }

    /// Each destination with a rule or a lowered limit, by label.
    pub fn shaping(&self) -> Vec<DestinationShaping> {
        let now = Instant::now();
        let rules = self.rules.load();
        let table = self.lock();
        let mut rows: Vec<DestinationShaping> = table
            .iter()
            .filter(|(key, destination)| rules.has_rule(key) || destination.limit.is_lowered())
            .map(|(key, destination)| DestinationShaping {
                destination: key.label(),
                concurrency_limit: destination.limit.get(),
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
        for rule in rules.all() {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestinationKey, Destination<J>>> {
        lock(&self.table)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
