//! A destination's connection limit after overload feedback
//! (docs/delivery.md, "Feedback"): halved (at least 1) when the remote end
//! signals overload, at most once per round of connections in flight, and
//! raised by one after as many successful new connections as the current
//! limit, never above the cap (additive increase, multiplicative decrease).

use std::time::Duration;

use super::{DestinationKey, Destinations, Queued};
use tokio::time::Instant;

/// A lowered limit of a destination with nothing in flight is forgotten
/// this long after it was last lowered, so a destination that had one bad
/// moment does not stay slow (or in memory) for ever.
const FEEDBACK_MEMORY: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub(super) struct Limit {
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
}

impl Limit {
    pub(super) fn new(cap: usize) -> Limit {
        Limit {
            cap,
            limit: cap,
            successes: 0,
            decreased_at: None,
        }
    }

    /// The connections the destination may have at once now.
    pub(super) fn get(&self) -> usize {
        self.limit
    }

    pub(super) fn is_lowered(&self) -> bool {
        self.limit < self.cap
    }

    /// A reload's cap: a limit at the old cap follows it; one lowered by
    /// feedback stays lowered, within the new cap.
    pub(super) fn set_cap(&mut self, cap: usize) {
        if self.limit == self.cap || self.limit > cap {
            self.limit = cap;
        }
        self.cap = cap;
    }

    /// An overload signal from a connection begun at `begun`: halves the
    /// limit unless this round was counted already. Returns the new limit
    /// when it changed.
    pub(super) fn overload(&mut self, begun: Instant, now: Instant) -> Option<usize> {
        if self.decreased_at.is_some_and(|at| begun < at) {
            return None;
        }
        self.decreased_at = Some(now);
        self.successes = 0;
        let lowered = (self.limit / 2).max(1);
        let changed = lowered != self.limit;
        self.limit = lowered;
        changed.then_some(lowered)
    }

    /// A new connection completed a transaction; returns whether the limit
    /// rose.
    pub(super) fn succeeded(&mut self) -> bool {
        if self.limit >= self.cap {
            return false;
        }
        self.successes += 1;
        if self.successes < self.limit {
            return false;
        }
        self.successes = 0;
        self.limit += 1;
        true
    }

    /// For a destination with nothing in flight or waiting: a lowering
    /// older than `FEEDBACK_MEMORY` is forgotten.
    pub(super) fn forget_stale(&mut self, now: Instant) {
        if self
            .decreased_at
            .is_some_and(|at| now.duration_since(at) >= FEEDBACK_MEMORY)
        {
            self.limit = self.cap;
            self.decreased_at = None;
            self.successes = 0;
        }
    }
}

impl<J: Queued> Destinations<J> {
    /// An overload signal (a 421, or a connection refused, reset or timed
    /// out before the greeting) from a connection attempt begun at
    /// `begun`: halves the limit (at least 1), once per round of
    /// connections in flight. Returns the new limit when it changed.
    pub fn overload(&self, key: &DestinationKey, begun: Instant) -> Option<usize> {
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        destination.limit.overload(begun, Instant::now())
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
        if destination.limit.succeeded() {
            let pushes = destination.grant();
            drop(table);
            self.ready.push(key, pushes);
        }
    }
}
