//! Per-destination queues (ARCHITECTURE.md, "Delivery"): a concurrency cap per
//! next hop, lane ready lists, idle connections kept for reuse, and the dead
//! destination memory.
//!
//! A lane worker only ever takes work that can start now: a destination puts
//! a "ready token" into a lane's list for each job it could start under its
//! cap. Jobs beyond the cap wait here, holding no lane slot, so one slow
//! domain cannot occupy a lane (KumoMTA's ready queues).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::client::{Connection, RemoteReply};
use super::job::Job;
use crate::config::Route;
use crate::queue::{Lane, PerLane};

/// Where mail goes next: a recipient domain's MX hosts, or a configured route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    Mx(String),
    Route(usize),
}

impl NextHop {
    /// The destination's name in metrics: the recipient domain, or
    /// `route:HOST` for a route (`routes` is the configuration's list).
    pub fn label(&self, routes: &[Route]) -> String {
        match self {
            NextHop::Mx(domain) => domain.clone(),
            NextHop::Route(index) => match routes.get(*index) {
                Some(route) => format!("route:{}", route.host),
                None => format!("route:{index}"),
            },
        }
    }
}

/// How long a connection may sit idle before it is closed.
pub const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(5);
/// Transactions per connection before it is closed and a new one opened.
pub const MAX_TRANSACTIONS_PER_CONNECTION: u32 = 100;
/// Idle connections kept per destination.
const MAX_IDLE_CONNECTIONS: usize = 8;

#[derive(Default)]
struct Destination {
    active: usize,
    /// Ready tokens handed to each lane's list and not yet taken.
    tokens: PerLane<usize>,
    jobs: PerLane<VecDeque<Job>>,
    idle: Vec<(Connection, Instant)>,
    dead_until: Option<Instant>,
    dead_reason: Option<RemoteReply>,
}

impl Destination {
    fn is_unused(&self) -> bool {
        self.active == 0
            && self.jobs.iter().all(|(_, jobs)| jobs.is_empty())
            && self.idle.is_empty()
            && self.dead_until.is_none()
    }
}

#[derive(Default)]
struct ReadyList {
    hops: Mutex<VecDeque<NextHop>>,
    notify: Notify,
}

pub struct Destinations {
    cap: usize,
    dead_for: Duration,
    table: Mutex<HashMap<NextHop, Destination>>,
    ready: PerLane<ReadyList>,
}

impl Destinations {
    /// `cap`: concurrent deliveries per destination; `dead_for`: how long a
    /// destination whose hosts all refused connections is skipped.
    pub fn new(cap: usize, dead_for: Duration) -> Destinations {
        Destinations {
            cap: cap.max(1),
            dead_for,
            table: Mutex::default(),
            ready: Default::default(),
        }
    }

    /// Queues a job at its destination. A destination remembered as dead
    /// gives the job back with the reason, to be deferred without a slot.
    pub fn submit(&self, job: Job) -> Result<(), (Job, RemoteReply)> {
        let hop = job.hop.clone();
        let lane = job.lane();
        let mut table = self.lock();
        let destination = table.entry(hop.clone()).or_default();
        if let Some(until) = destination.dead_until {
            if until > Instant::now() {
                let reason = destination.dead_reason.clone().unwrap_or_else(|| {
                    RemoteReply::local("4.4.1", "destination unreachable (recently failed)")
                });
                return Err((job, reason));
            }
            destination.dead_until = None;
            destination.dead_reason = None;
        }
        destination.jobs[lane].push_back(job);
        let pushes = self.grant_tokens(destination);
        drop(table);
        self.push_ready(&hop, pushes);
        Ok(())
    }

    /// Jobs waiting at `hop` (admission control for new passes).
    pub fn queued(&self, hop: &NextHop) -> usize {
        self.lock()
            .get(hop)
            .map(|destination| destination.jobs.iter().map(|(_, jobs)| jobs.len()).sum())
            .unwrap_or(0)
    }

    /// Per destination known now, the jobs running there: each holds one
    /// place under the cap and at most one connection (open, or being
    /// looked up and opened), so this is the connections in use.
    pub fn active_connections(&self) -> Vec<(NextHop, usize)> {
        self.lock()
            .iter()
            .map(|(hop, destination)| (hop.clone(), destination.active))
            .collect()
    }

    /// Waits for a job of `lane` that can start now and takes it; the caller
    /// must call `finished` when it is done.
    pub async fn take(&self, lane: Lane) -> Job {
        let ready = &self.ready[lane];
        loop {
            let notified = ready.notify.notified();
            let hop = ready
                .hops
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(hop) = hop else {
                notified.await;
                continue;
            };
            let mut table = self.lock();
            let Some(destination) = table.get_mut(&hop) else {
                continue;
            };
            destination.tokens[lane] = destination.tokens[lane].saturating_sub(1);
            if let Some(job) = destination.jobs[lane].pop_front() {
                destination.active += 1;
                return job;
            }
        }
    }

    /// A job at `hop` ended: frees its place under the cap.
    pub fn finished(&self, hop: &NextHop) {
        let mut table = self.lock();
        let Some(destination) = table.get_mut(hop) else {
            return;
        };
        destination.active = destination.active.saturating_sub(1);
        let pushes = self.grant_tokens(destination);
        if destination.is_unused() {
            table.remove(hop);
        }
        drop(table);
        self.push_ready(hop, pushes);
    }

    /// Hands out ready tokens while the destination is under its cap,
    /// high-lane jobs first. Returns how many to push per lane.
    fn grant_tokens(&self, destination: &mut Destination) -> PerLane<usize> {
        let mut pushes = PerLane::default();
        loop {
            let in_use =
                destination.active + destination.tokens[Lane::High] + destination.tokens[Lane::Low];
            if in_use >= self.cap {
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

    fn push_ready(&self, hop: &NextHop, pushes: PerLane<usize>) {
        for (lane, &count) in pushes.iter() {
            if count == 0 {
                continue;
            }
            let list = &self.ready[lane];
            let mut hops = list.hops.lock().unwrap_or_else(|p| p.into_inner());
            for _ in 0..count {
                hops.push_back(hop.clone());
            }
            drop(hops);
            for _ in 0..count {
                list.notify.notify_one();
            }
        }
    }

    /// Every host of `hop` refused or timed out: skip it for a while.
    pub fn mark_dead(&self, hop: &NextHop, reason: RemoteReply) {
        let mut table = self.lock();
        let destination = table.entry(hop.clone()).or_default();
        destination.dead_until = Some(Instant::now() + self.dead_for);
        destination.dead_reason = Some(reason);
    }

    pub fn is_dead(&self, hop: &NextHop) -> Option<RemoteReply> {
        let table = self.lock();
        let destination = table.get(hop)?;
        match destination.dead_until {
            Some(until) if until > Instant::now() => destination.dead_reason.clone(),
            _ => None,
        }
    }

    /// An idle connection to `hop`, if one is fresh enough.
    pub fn take_idle(&self, hop: &NextHop) -> Option<Connection> {
        let mut table = self.lock();
        let destination = table.get_mut(hop)?;
        while let Some((connection, since)) = destination.idle.pop() {
            if since.elapsed() < IDLE_CONNECTION_TTL {
                return Some(connection);
            }
            // Stale: dropping closes the socket without a QUIT round trip.
        }
        None
    }

    /// Keeps a connection (already reset) for the next message to `hop`.
    pub fn put_idle(&self, hop: &NextHop, connection: Connection) {
        if connection.completed_transactions() >= MAX_TRANSACTIONS_PER_CONNECTION {
            tokio::spawn(connection.quit());
            return;
        }
        let mut table = self.lock();
        let destination = table.entry(hop.clone()).or_default();
        if destination.idle.len() < MAX_IDLE_CONNECTIONS {
            destination.idle.push((connection, Instant::now()));
        } else {
            drop(table);
            tokio::spawn(connection.quit());
        }
    }

    /// Takes the connections idle for longer than the TTL (to be closed with
    /// QUIT by the caller) and forgets destinations nothing refers to.
    pub fn sweep(&self) -> Vec<Connection> {
        let mut stale = Vec::new();
        let mut table = self.lock();
        table.retain(|_, destination| {
            let (keep, old): (Vec<_>, Vec<_>) = destination
                .idle
                .drain(..)
                .partition(|(_, since)| since.elapsed() < IDLE_CONNECTION_TTL);
            destination.idle = keep;
            stale.extend(old.into_iter().map(|(connection, _)| connection));
            if destination
                .dead_until
                .is_some_and(|until| until <= Instant::now())
            {
                destination.dead_until = None;
            }
            !destination.is_unused()
        });
        stale
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NextHop, Destination>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
