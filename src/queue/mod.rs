//! The in-memory schedule: which messages wait, in which lane, and when each
//! is due. Rebuilt from the spool at startup; the spool stays the only source
//! of truth, this is an index over it.
//!
//! Time is `tokio::time::Instant`, so scheduling tests can pause and advance
//! the clock; the wall-clock due time lives in the envelope.

pub mod envelope;
pub(crate) mod handle;
mod lane;
pub(crate) mod operations;
pub(crate) mod retry;
pub(crate) mod transition;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use relayq_spool::{QueueId, Spool, SpoolError};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use envelope::Envelope;
pub use lane::{Lane, PerLane};
pub use operations::PendingOperation;

/// Where a queued message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its due time (which may be now).
    Waiting { due: Instant },
    /// A delivery pass is running (or an operator operation holds it).
    Active,
    /// A delivery pass is recording its results: still active, but too late
    /// to leave an operation with it.
    Finishing,
    /// Held by an operator: never due until released.
    Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub lane: Lane,
    pub phase: Phase,
    /// Arrival, in milliseconds since the Unix epoch (for ages).
    pub arrival_ms: u64,
    /// Delivery attempts so far (see [`Entry::state`]).
    pub attempts: u32,
}

/// The state names `queue list` and the metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ready,
    Active,
    Deferred,
    Held,
}

impl State {
    pub const ALL: [State; 4] = [State::Ready, State::Active, State::Deferred, State::Held];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Active => "active",
            State::Deferred => "deferred",
            State::Held => "held",
        }
    }
}

impl Entry {
    /// A waiting message is "deferred" once attempted, and also before its
    /// first attempt while its due time is ahead (its destination held it
    /// back: a rate, a suspension); otherwise "ready".
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Active | Phase::Finishing => State::Active,
            Phase::Held => State::Held,
            Phase::Waiting { .. } if self.attempts > 0 => State::Deferred,
            Phase::Waiting { due } if due > Instant::now() => State::Deferred,
            Phase::Waiting { .. } => State::Ready,
        }
    }
}

/// What startup recovery found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub high: usize,
    pub low: usize,
    /// Messages whose recipients were all final: removed.
    pub completed: usize,
    /// Envelopes that did not decode: set aside in the spool's quarantine.
    pub quarantined: usize,
}

#[derive(Default)]
struct Schedule {
    entries: BTreeMap<QueueId, Entry>,
    /// Per lane: waiting messages by due time.
    waiting: PerLane<BTreeSet<(Instant, QueueId)>>,
    /// Operator operations waiting for a message's pass to end.
    pending: HashMap<QueueId, PendingOperation>,
}

#[derive(Default)]
pub struct Queue {
    state: Mutex<Schedule>,
    /// Wakes a lane's dispatcher when an earlier due time appears.
    wake: PerLane<Notify>,
}

/// Converts a wall-clock due time (ms since the epoch) to a scheduler instant.
pub fn instant_for(due_ms: Option<u64>) -> Instant {
    let now = Instant::now();
    let Some(due_ms) = due_ms else { return now };
    let now_ms = envelope::unix_ms(SystemTime::now());
    now + Duration::from_millis(due_ms.saturating_sub(now_ms))
}

impl Queue {
    /// Rebuilds the queue from every message in the spool.
    pub async fn rebuild(spool: &Spool) -> Result<(Queue, Recovery), SpoolError> {
        let queue = Queue::default();
        let mut recovery = Recovery::default();
        for (id, bytes) in spool.scan()? {
            let envelope = match Envelope::decode(&bytes) {
                Ok(envelope) => envelope,
                Err(error) => {
                    tracing::error!(queue_id = %id, "{id}: setting aside unreadable envelope: {error}");
                    spool.quarantine(id, &error.to_string())?;
                    recovery.quarantined += 1;
                    continue;
                }
            };
            if envelope.is_complete() {
                spool.remove(id).await?;
                recovery.completed += 1;
                continue;
            }
            match envelope.lane {
                Lane::High => recovery.high += 1,
                Lane::Low => recovery.low += 1,
            }
            queue.insert(id, &envelope);
        }
        Ok((queue, recovery))
    }

    /// Adds (or replaces) a message, due as its envelope says.
    pub fn insert(&self, id: QueueId, envelope: &Envelope) {
        let phase = if envelope.held {
            Phase::Held
        } else {
            Phase::Waiting {
                due: instant_for(envelope.next_attempt_ms),
            }
        };
        self.set(
            id,
            envelope.lane,
            phase,
            envelope.arrival_ms,
            envelope.attempts,
        );
    }

    /// After a pass that left recipients to retry: wait until `due`.
    pub fn reschedule(&self, id: QueueId, lane: Lane, due: Instant) {
        let (arrival_ms, attempts) = self
            .get(id)
            .map(|entry| (entry.arrival_ms, entry.attempts))
            .unwrap_or((envelope::unix_ms(SystemTime::now()), 0));
        self.set(id, lane, Phase::Waiting { due }, arrival_ms, attempts);
    }

    /// Records that a pass ended with `attempts` attempts in total.
    pub fn set_attempts(&self, id: QueueId, attempts: u32) {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.attempts = attempts;
        }
    }

    /// Every queued message with its entry, in queue id order.
    pub fn snapshot(&self) -> Vec<(QueueId, Entry)> {
        self.lock()
            .entries
            .iter()
            .map(|(id, entry)| (*id, *entry))
            .collect()
    }

    pub fn remove(&self, id: QueueId) -> Option<Entry> {
        let mut state = self.lock();
        state.pending.remove(&id);
        let entry = state.entries.remove(&id)?;
        if let Phase::Waiting { due } = entry.phase {
            state.waiting[entry.lane].remove(&(due, id));
        }
        Some(entry)
    }

    pub fn get(&self, id: QueueId) -> Option<Entry> {
        self.lock().entries.get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Number of queued messages in `lane`.
    pub fn count(&self, lane: Lane) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|entry| entry.lane == lane)
            .count()
    }

    /// Waits until a message of `lane` is due, marks it active and returns
    /// it. Cancel-safe: a message is taken only when this returns.
    pub async fn next_due(&self, lane: Lane) -> QueueId {
        loop {
            let notified = self.wake[lane].notified();
            let next_due = {
                let mut state = self.lock();
                match state.waiting[lane].first().copied() {
                    Some((due, id)) if due <= Instant::now() => {
                        state.waiting[lane].remove(&(due, id));
                        if let Some(entry) = state.entries.get_mut(&id) {
                            entry.phase = Phase::Active;
                        }
                        return id;
                    }
                    other => other.map(|(due, _)| due),
                }
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn set(&self, id: QueueId, lane: Lane, phase: Phase, arrival_ms: u64, attempts: u32) {
        let mut state = self.lock();
        let entry = Entry {
            lane,
            phase,
            arrival_ms,
            attempts,
        };
        if let Some(previous) = state.entries.insert(id, entry)
            && let Phase::Waiting { due } = previous.phase
        {
            state.waiting[previous.lane].remove(&(due, id));
        }
        if let Phase::Waiting { due } = phase {
            let waiting = &mut state.waiting[lane];
            let becomes_first = waiting.first().is_none_or(|&(first, _)| due < first);
            waiting.insert((due, id));
            drop(state);
            if becomes_first {
                self.wake[lane].notify_one();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        // Every operation leaves the maps consistent before it can panic, so
        // a poisoned lock still guards valid data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> QueueId {
        QueueId(n)
    }

    #[tokio::test(start_paused = true)]
    async fn due_order_and_waiting() {
        let queue = Queue::default();
        let now = Instant::now();
        queue.reschedule(id(1), Lane::High, now + Duration::from_secs(60));
        queue.reschedule(id(2), Lane::High, now + Duration::from_secs(10));
        queue.reschedule(id(3), Lane::Low, now);
        assert_eq!(queue.next_due(Lane::Low).await, id(3));
        let started = Instant::now();
        assert_eq!(queue.next_due(Lane::High).await, id(2));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(queue.next_due(Lane::High).await, id(1));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(queue.get(id(1)).unwrap().phase, Phase::Active);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_message_wakes_the_waiter() {
        let queue = std::sync::Arc::new(Queue::default());
        queue.reschedule(
            id(1),
            Lane::High,
            Instant::now() + Duration::from_secs(3600),
        );
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next_due(Lane::High).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        queue.reschedule(id(2), Lane::High, Instant::now());
        assert_eq!(waiter.await.unwrap(), id(2));
    }

    #[tokio::test(start_paused = true)]
    async fn removed_and_held_messages_are_never_due() {
        let queue = Queue::default();
        queue.reschedule(id(1), Lane::High, Instant::now());
        queue.remove(id(1));
        queue.set(id(2), Lane::High, Phase::Held, 0, 0);
        queue.reschedule(id(3), Lane::High, Instant::now() + Duration::from_secs(1));
        assert_eq!(queue.next_due(Lane::High).await, id(3));
        assert_eq!(queue.len(), 2);
    }
}
