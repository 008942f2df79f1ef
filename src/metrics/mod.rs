//! Prometheus metrics (docs/monitoring.md): counters and histograms fed where things
//! happen, queue gauges computed from the queue at scrape time, and the
//! `/metrics` + `/healthz` HTTP endpoint (`http`).
//!
//! One [`Metrics`] is built by the daemon and handed to the sessions, the
//! delivery engine and the endpoint (no global registry: ARCHITECTURE.md, "Invariants").
//! Recording is lock-free: relaxed atomic adds, no I/O, no await, so it may
//! sit on the SMTP and delivery hot paths.

mod health;
mod histogram;
pub mod http;
mod shaping;
mod suppression;
mod text;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::bounce::BounceClass;
use crate::events::EventKind;
use crate::outcome::DaneResult;
use crate::queue::{Lane, Queue};
use histogram::Histogram;

/// Reads, at scrape time, the connections each destination has in use: the
/// delivery engine owns those counts, so they are asked for rather than
/// mirrored here (like the queue gauges).
pub type DestinationConnections = Arc<dyn Fn() -> Vec<ActiveConnections> + Send + Sync>;

pub use shaping::{ActiveConnections, DestinationShaping, ShapingMetrics, Throttle};
pub use suppression::SuppressionMetrics;
pub use webhooks::{WebhookMetrics, WebhookRow};

/// What became of one recipient in one delivery attempt
/// (`relayq_recipients_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Deferred,
    Bounced,
    Expired,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Delivered,
        Outcome::Deferred,
        Outcome::Bounced,
        Outcome::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
            Outcome::Expired => "expired",
        }
    }

    /// The outcome an event reports, if it reports one.
    pub fn of_event(event: EventKind) -> Option<Outcome> {
        match event {
            EventKind::Delivered => Some(Outcome::Delivered),
            EventKind::Deferred => Some(Outcome::Deferred),
            EventKind::Bounced => Some(Outcome::Bounced),
            EventKind::Expired => Some(Outcome::Expired),
            _ => None,
        }
    }

    /// Final outcomes end a recipient's time in the queue.
    fn is_final(self) -> bool {
        self != Outcome::Deferred
    }
}

/// Why new mail was refused before it was stored
/// (`relayq_messages_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The lane reached `lanes.*.max_queued` (452).
    LaneFull,
    /// The spool's file system is below `spool.min_free_space` (452, 421).
    Disk,
    /// The message's `Idempotency-Key` was already used for a different
    /// message (554).
    IdempotencyConflict,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 3] = [
        RefusalReason::LaneFull,
        RefusalReason::Disk,
        RefusalReason::IdempotencyConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::LaneFull => "lane_full",
            RefusalReason::Disk => "disk",
            RefusalReason::IdempotencyConflict => "idempotency_conflict",
        }
    }
}

/// Why relayq closed an inbound SMTP session itself
/// (`relayq_smtp_sessions_shed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Closed, as the longest idle, to make room for a client waiting at
    /// `smtp.max_connections`.
    Pressure,
    /// A command line (or the reading of a reply) took longer than the
    /// idle deadline.
    CommandTimeout,
    /// A DATA or BDAT transfer fell behind its deadline.
    DataTimeout,
}

impl ShedReason {
    pub const ALL: [ShedReason; 3] = [
        ShedReason::Pressure,
        ShedReason::CommandTimeout,
        ShedReason::DataTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Pressure => "pressure",
            ShedReason::CommandTimeout => "command_timeout",
            ShedReason::DataTimeout => "data_timeout",
        }
    }
}

/// What failed AUTH attempts locked out
/// (`relayq_auth_lockouts_total{scope}`; the budgets are in
/// `smtp::auth::failures`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScope {
    /// One client network: an IPv4 /24, an IPv6 /64, or loopback.
    Network,
    /// One user name, from networks that are not known.
    User,
    /// Every user, from networks that are not known.
    Global,
}

impl AuthScope {
    pub const ALL: [AuthScope; 3] = [AuthScope::Network, AuthScope::User, AuthScope::Global];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthScope::Network => "network",
            AuthScope::User => "user",
            AuthScope::Global => "global",
        }
    }
}

/// The daemon's metrics. Queue gauges are not stored here: they are read
/// from the [`Queue`] when scraped, so they can never drift from it.
pub struct Metrics {
    /// `relayq_messages_accepted_total`, per lane (index `lane_index`).
    accepted: [AtomicU64; 2],
    /// `relayq_recipients_total`, per lane and outcome (`Outcome::ALL` order).
    recipients: [[AtomicU64; 4]; 2],
    /// `relayq_bounces_total`, per class (`BounceClass::ALL` order):
    /// recipients bounced or expired.
    bounces: [AtomicU64; BounceClass::ALL.len()],
    /// `relayq_deferrals_total`, per class: deferred attempts.
    deferrals: [AtomicU64; BounceClass::ALL.len()],
    /// `relayq_messages_refused_total`, per lane and reason
    /// (`RefusalReason::ALL` order).
    refused: [[AtomicU64; 3]; 2],
    /// `relayq_duplicate_submissions_total`: repeats of an idempotent
    /// submission answered with the original's queue id.
    duplicate_submissions: AtomicU64,
    connections_active: AtomicI64,
    /// `relayq_delivery_slots_in_use`, per lane: lane workers running a job.
    delivery_slots_in_use: [AtomicI64; 2],
    /// `relayq_smtp_sessions_shed_total`, per reason (`ShedReason::ALL` order).
    sessions_shed: [AtomicU64; 3],
    /// `relayq_smtp_stress`: the listeners are under connection pressure.
    smtp_stress: AtomicBool,
    /// `relayq_auth_lockouts_total`, per scope (`AuthScope::ALL` order).
    auth_lockouts: [AtomicU64; 3],
    /// `relayq_dane_results_total`, per result (`DaneResult::LABELS` order).
    dane_results: [AtomicU64; DaneResult::LABELS.len()],
    commit_seconds: Histogram,
    commit_batch_size: Histogram,
    /// `relayq_delivery_seconds`, per lane.
    delivery_seconds: [Histogram; 2],
    /// Every SMTP listener is bound and accepting.
    listeners_up: AtomicBool,
    /// `relayq_config_reloads_total`: index 0 `ok`, 1 `error`.
    config_reloads: [AtomicU64; 2],
    /// `relayq_config_last_reload_successful`: false from a refused reload
    /// until one is applied (the file on disk would not start the daemon).
    last_reload_failed: AtomicBool,
    /// Output control: destination gauges, throttles, the cluster's Redis.
    pub shaping: ShapingMetrics,
    /// The webhooks' outboxes and posts.
    pub webhooks: WebhookMetrics,
    /// The suppression list: its size, the recipients it refused.
    pub suppression: SuppressionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            accepted: Default::default(),
            recipients: Default::default(),
            bounces: Default::default(),
            deferrals: Default::default(),
            refused: Default::default(),
            duplicate_submissions: AtomicU64::new(0),
            connections_active: AtomicI64::new(0),
            delivery_slots_in_use: Default::default(),
            sessions_shed: Default::default(),
            smtp_stress: AtomicBool::new(false),
            auth_lockouts: Default::default(),
            dane_results: Default::default(),
            commit_seconds: Histogram::new(histogram::COMMIT_SECONDS),
            commit_batch_size: Histogram::new(histogram::BATCH_SIZE),
            delivery_seconds: [
                Histogram::new(histogram::DELIVERY_SECONDS),
                Histogram::new(histogram::DELIVERY_SECONDS),
            ],
            listeners_up: AtomicBool::new(false),
            config_reloads: Default::default(),
            last_reload_failed: AtomicBool::new(false),
            shaping: ShapingMetrics::default(),
            webhooks: WebhookMetrics::default(),
            suppression: SuppressionMetrics::default(),
        }
    }

    /// A message is on disk and its `250` is being sent: `commit` is how
    /// long the session waited for the spool, `batch_size` how many requests
    /// shared that commit.
    pub fn message_accepted(&self, lane: Lane, commit: Duration, batch_size: usize) {
        self.accepted[lane_index(lane)].fetch_add(1, Ordering::Relaxed);
        self.commit_seconds.observe(commit.as_secs_f64());
        self.commit_batch_size.observe(batch_size as f64);
    }

    /// New mail for `lane` was refused for `reason` before anything was
    /// stored (at connect, at MAIL or after the data).
    pub fn message_refused(&self, lane: Lane, reason: RefusalReason) {
        self.refused[lane_index(lane)][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A repeat of an idempotent submission was answered with the
    /// original's queue id, and nothing was stored.
    pub fn duplicate_submission(&self) {
        self.duplicate_submissions.fetch_add(1, Ordering::Relaxed);
    }

    /// One recipient's outcome in a delivery attempt, reported as the event
    /// `event` (events that are not outcomes are ignored). Final outcomes
    /// also observe the time since `arrival` in `relayq_delivery_seconds`.
    pub fn recipient(&self, lane: Lane, event: EventKind, arrival: SystemTime) {
        let Some(outcome) = Outcome::of_event(event) else {
            return;
        };
        let lane = lane_index(lane);
        self.recipients[lane][outcome as usize].fetch_add(1, Ordering::Relaxed);
        if outcome.is_final() {
            let waited = SystemTime::now()
                .duration_since(arrival)
                .unwrap_or_default();
            self.delivery_seconds[lane].observe(waited.as_secs_f64());
        }
    }

    /// The class of a recipient's failure, reported as the event `event`:
    /// a bounce or an expiry counts in `relayq_bounces_total`, a deferral
    /// in `relayq_deferrals_total`.
    pub fn failure_class(&self, event: EventKind, class: BounceClass) {
        let counters = match event {
            EventKind::Bounced | EventKind::Expired => &self.bounces,
            EventKind::Deferred => &self.deferrals,
            _ => return,
        };
        counters[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an SMTP connection as active until the guard is dropped.
    pub fn smtp_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections_active.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            metrics: self.clone(),
        }
    }

    /// Counts one of `lane`'s delivery slots as in use until the guard is
    /// dropped, however the job ends (finished, or dropped at shutdown).
    pub fn delivery_slot(self: &Arc<Self>, lane: Lane) -> DeliverySlotGuard {
        self.delivery_slots_in_use[lane_index(lane)].fetch_add(1, Ordering::Relaxed);
        DeliverySlotGuard {
            metrics: self.clone(),
            lane,
        }
    }

    /// relayq closed an inbound session for `reason`.
    pub fn session_shed(&self, reason: ShedReason) {
        self.sessions_shed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed AUTH attempts locked `scope` out.
    pub fn auth_lockout(&self, scope: AuthScope) {
        self.auth_lockouts[scope as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// What DANE made of one attempted MX host.
    pub fn dane_result(&self, result: DaneResult) {
        self.dane_results[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The listeners entered or left stress mode (connection pressure).
    pub fn set_smtp_stress(&self, stressed: bool) {
        self.smtp_stress.store(stressed, Ordering::Relaxed);
    }

    /// A configuration reload ended: applied (`ok`) or refused (`error`).
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        self.last_reload_failed.store(!ok, Ordering::Relaxed);
    }

    /// All SMTP listeners are bound (for `/healthz`).
    pub fn set_listeners_up(&self) {
        self.listeners_up.store(true, Ordering::Relaxed);
    }

    pub fn listeners_up(&self) -> bool {
        self.listeners_up.load(Ordering::Relaxed)
    }
}

/// Held for the life of one SMTP session (`relayq_smtp_connections_active`).
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a lane worker runs one job (`relayq_delivery_slots_in_use`).
pub struct DeliverySlotGuard {
    metrics: Arc<Metrics>,
    lane: Lane,
}

impl Drop for DeliverySlotGuard {
    fn drop(&mut self) {
        self.metrics.delivery_slots_in_use[lane_index(self.lane)].fetch_sub(1, Ordering::Relaxed);
    }
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::High => 0,
        Lane::Low => 1,
    }
}

/// Per lane and state, the number of queued messages; per lane, the arrival
/// (ms since the epoch) of the oldest.
struct QueueGauges {
    messages: [[u64; 4]; 2],
    oldest_arrival_ms: [Option<u64>; 2],
}

impl QueueGauges {
    fn read(queue: &Queue) -> QueueGauges {
        let mut gauges = QueueGauges {
            messages: [[0; 4]; 2],
            oldest_arrival_ms: [None; 2],
        };
        queue.visit(None, |_, entry, _| {
            let lane = lane_index(entry.lane);
            gauges.messages[lane][entry.state() as usize] += 1;
            let oldest = &mut gauges.oldest_arrival_ms[lane];
            *oldest = Some(oldest.map_or(entry.arrival_ms, |ms| ms.min(entry.arrival_ms)));
            true
        });
        gauges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_outcome_indices_follow_their_all_order() {
        for (index, state) in crate::queue::State::ALL.into_iter().enumerate() {
            assert_eq!(state as usize, index);
        }
        for (index, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index);
        }
        for (index, reason) in RefusalReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index);
        }
        for (index, lane) in Lane::ALL.into_iter().enumerate() {
            assert_eq!(lane_index(lane), index);
        }
        for (index, reason) in ShedReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index);
        }
        for (index, scope) in AuthScope::ALL.into_iter().enumerate() {
            assert_eq!(scope as usize, index);
        }
    }

    #[test]
    fn connection_guard_counts_while_held() {
        let metrics = Arc::new(Metrics::new());
        let first = metrics.smtp_connection();
        let second = metrics.smtp_connection();
        assert_eq!(metrics.connections_active.load(Ordering::Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.connections_active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn delivery_slot_guard_counts_per_lane_while_held() {
        let metrics = Arc::new(Metrics::new());
        let high = metrics.delivery_slot(Lane::High);
        let low = metrics.delivery_slot(Lane::Low);
        let second_low = metrics.delivery_slot(Lane::Low);
        let in_use = |lane| metrics.delivery_slots_in_use[lane_index(lane)].load(Ordering::Relaxed);
        assert_eq!((in_use(Lane::High), in_use(Lane::Low)), (1, 2));
        drop((high, low, second_low));
        assert_eq!((in_use(Lane::High), in_use(Lane::Low)), (0, 0));
    }

    #[test]
    fn deferrals_count_but_do_not_end_the_delivery_time() {
        let metrics = Metrics::new();
        let arrival = SystemTime::now() - Duration::from_secs(3);
        metrics.recipient(Lane::Low, EventKind::Deferred, arrival);
        metrics.recipient(Lane::Low, EventKind::Expired, arrival);
        metrics.recipient(Lane::Low, EventKind::Removed, arrival);
        let counts: Vec<u64> = metrics.recipients[1]
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![0, 1, 0, 1]);
        let delivery = metrics.delivery_seconds[1].snapshot();
        assert_eq!(delivery.count, 1);
        assert!(delivery.sum >= 3.0);
    }
}
