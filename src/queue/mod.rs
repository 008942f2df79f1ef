//! The in-memory schedule: which messages wait, in which lane, and when each
//! is due. Rebuilt from the spool at startup, in the background while intake
//! already runs (`rebuild`); the spool stays the only source of truth, this
//! is an index over it.
//!
//! Time is `tokio::time::Instant`, so scheduling tests can pause and advance
//! the clock; the wall-clock due time lives in the envelope.

pub(crate) mod domains;
pub mod envelope;
pub(crate) mod fresh;
pub(crate) mod handle;
pub(crate) mod hooks;
mod lane;
pub(crate) mod operations;
pub(crate) mod rebuild;
pub(crate) mod reservations;
pub(crate) mod retry;
pub(crate) mod settings;
pub(crate) mod transition;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use relayq_spool::QueueId;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use domains::{DomainSets, SetId};
pub use envelope::Envelope;
pub use lane::{Lane, PerLane};
pub use operations::PendingOperation;
pub use rebuild::RebuildProgress;

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

/// What the schedule keeps of a message: enough to list, count and select
/// it without reading its envelope, and small (48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub lane: Lane,
    pub phase: Phase,
    /// Arrival, in milliseconds since the Unix epoch (for ages).
    pub arrival_ms: u64,
    /// Delivery attempts so far (see [`Entry::state`]).
    pub attempts: u32,
    /// The domains of its open recipients (interned, see `domains`).
    pub domains: SetId,
}

/// The state names `queue list` and the metrics show.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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
    /// The entry of a message as its envelope describes it: held, or due
    /// at its next attempt (now if none), with its open recipients' domains.
    fn for_envelope(envelope: &Envelope, clock: &Clock, domain_sets: &mut DomainSets) -> Entry {
        let phase = if envelope.held {
            Phase::Held
        } else {
            Phase::Waiting {
                due: clock.instant_for(envelope.next_attempt_ms),
            }
        };
        Entry {
            lane: envelope.lane,
            phase,
            arrival_ms: envelope.arrival_ms,
            attempts: envelope.attempts,
            domains: domain_sets.acquire_for(envelope),
        }
    }

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
    domain_sets: DomainSets,
    /// Per lane: the number of entries, whatever their phase. Kept by
    /// `place` and `remove` so that counting a lane never scans the entries.
    queued: PerLane<usize>,
    /// While the startup rebuild runs: which ids it covers, how far it got.
    scan: Option<rebuild::Scan>,
}

/// Entries visited per lock by [`Queue::visit`]: the lock is never held for
/// long, whatever the length of the queue.
const VISIT_CHUNK: usize = 4096;

#[derive(Default)]
pub struct Queue {
    state: Mutex<Schedule>,
    /// Wakes a lane's dispatcher when an earlier due time appears.
    wake: PerLane<Notify>,
    /// Per lane: queued messages plus the [`Reservation`]s intake holds for
    /// messages it is storing. Every change is one atomic operation, so
    /// intake reads it and reserves room without taking the schedule's lock,
    /// and a reservation can never be granted past a lane's cap.
    occupancy: PerLane<AtomicUsize>,
    /// Just-accepted messages, until their first pass.
    fresh: fresh::Fresh,
    /// The startup rebuild's progress and the messages it has not read yet.
    rebuild: rebuild::Progress,
}

/// Room for one message in a lane, taken by intake before it stores the
/// message (`lanes.*.max_queued`). [`Queue::insert_reserved`] turns it into
/// the queued message; dropped unused (the store failed), it frees the room.
#[must_use = "dropping a reservation frees the room it holds"]
pub struct Reservation {
    queue: Arc<Queue>,
    lane: Lane,
    /// Still counted in the lane's occupancy on its own behalf.
    holds_room: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.holds_room {
            self.queue.occupancy[self.lane].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The scheduler's clock and the wall clock read together, to convert many
/// due times with one reading.
struct Clock {
    now: Instant,
    now_ms: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            now: Instant::now(),
            now_ms: envelope::unix_ms(SystemTime::now()),
        }
    }

    /// Converts a wall-clock due time (ms since the epoch) to a scheduler
    /// instant; none is now.
    fn instant_for(&self, due_ms: Option<u64>) -> Instant {
        let Some(due_ms) = due_ms else {
            return self.now;
        };
        self.now + Duration::from_millis(due_ms.saturating_sub(self.now_ms))
    }
}

impl Queue {
    /// Adds (or replaces) a message, due as its envelope says.
    pub fn insert(&self, id: QueueId, envelope: &Envelope) {
        self.insert_with(id, envelope, None);
    }

    /// Adds a message intake stored under `reservation`: the room it held
    /// becomes the message's, so the lane's occupancy does not change.
    pub fn insert_reserved(&self, id: QueueId, envelope: &Envelope, reservation: Reservation) {
        self.insert_with(id, envelope, Some(reservation));
    }

    /// Adds a message intake has just stored, keeping its envelope and
    /// (small) body in memory for its first pass. Kept before it enters the
    /// schedule, so a dispatcher that sees it finds them.
    pub fn insert_accepted(
        &self,
        id: QueueId,
        envelope: &Envelope,
        body: Option<bytes::Bytes>,
        reservation: Option<Reservation>,
    ) {
        if let Some(body) = body {
            self.fresh.keep(id, envelope.clone(), body);
        }
        self.insert_with(id, envelope, reservation);
    }

    /// Takes message `id`'s envelope and body as accepted, if they are still
    /// in memory and no transition changed them since.
    pub fn take_fresh(&self, id: QueueId) -> Option<(Envelope, bytes::Bytes)> {
        self.fresh.take(id)
    }

    /// Called before a transition of message `id` is committed: its envelope
    /// as accepted is no longer the one to deliver from.
    pub fn forget_fresh(&self, id: QueueId) {
        self.fresh.forget(id);
    }

    fn insert_with(&self, id: QueueId, envelope: &Envelope, reservation: Option<Reservation>) {
        let clock = Clock::now();
        let mut state = self.lock();
        let entry = Entry::for_envelope(envelope, &clock, &mut state.domain_sets);
        self.place_with(state, id, entry, reservation);
    }

    /// After a pass that could not be recorded, or a postponed one: wait
    /// until `due`, with everything else as it was.
    pub fn reschedule(&self, id: QueueId, lane: Lane, due: Instant) {
        let mut state = self.lock();
        let entry = match state.entries.get(&id).copied() {
            Some(entry) => {
                state.domain_sets.retain(entry.domains);
                Entry {
                    lane,
                    phase: Phase::Waiting { due },
                    ..entry
                }
            }
            None => Entry {
                lane,
                phase: Phase::Waiting { due },
                arrival_ms: envelope::unix_ms(SystemTime::now()),
                attempts: 0,
                domains: DomainSets::EMPTY,
            },
        };
        self.place(state, id, entry);
    }

    /// Calls `visit` for each queued message after `after` (all when
    /// `None`), in queue id order, with the domain sets to resolve its
    /// domains; stops when `visit` returns false. The lock is taken per
    /// chunk of entries and never held across `visit` calls of two chunks,
    /// so intake and delivery go on during a walk over a million entries;
    /// an entry added or removed meanwhile may or may not be seen.
    pub fn visit(
        &self,
        after: Option<QueueId>,
        mut visit: impl FnMut(QueueId, &Entry, &DomainSets) -> bool,
    ) {
        let mut from = after;
        loop {
            let state = self.lock();
            let range = match from {
                Some(id) => state
                    .entries
                    .range((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded)),
                None => state.entries.range(..),
            };
            let mut seen = 0;
            for (id, entry) in range.take(VISIT_CHUNK) {
                seen += 1;
                from = Some(*id);
                if !visit(*id, entry, &state.domain_sets) {
                    return;
                }
            }
            if seen < VISIT_CHUNK {
                return;
            }
        }
    }

    /// The highest queue id in the schedule: queue ids grow, so a walk that
    /// stops there never meets a message queued after it started.
    pub fn last_id(&self) -> Option<QueueId> {
        self.lock().entries.last_key_value().map(|(id, _)| *id)
    }

    /// The domains of message `id`'s open recipients, as the schedule knows
    /// them.
    pub fn domains(&self, id: QueueId) -> Vec<std::sync::Arc<str>> {
        let state = self.lock();
        state
            .entries
            .get(&id)
            .map(|entry| state.domain_sets.domains(entry.domains).to_vec())
            .unwrap_or_default()
    }

    pub fn remove(&self, id: QueueId) -> Option<Entry> {
        self.fresh.forget(id);
        let mut state = self.lock();
        state.pending.remove(&id);
        let entry = state.entries.remove(&id)?;
        if let Phase::Waiting { due } = entry.phase {
            state.waiting[entry.lane].remove(&(due, id));
        }
        state.domain_sets.release(entry.domains);
        state.queued[entry.lane] -= 1;
        self.occupancy[entry.lane].fetch_sub(1, Ordering::AcqRel);
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

    /// Number of queued messages in `lane`, in every state.
    pub fn count(&self, lane: Lane) -> usize {
        self.lock().queued[lane]
    }

    /// Queued messages in `lane` plus the reservations intake holds for it,
    /// plus, while the startup rebuild runs, every message it has not read
    /// yet (its lane is not known). Lock-free: intake may call it for every
    /// MAIL command.
    pub fn occupancy(&self, lane: Lane) -> usize {
        self.occupancy[lane]
            .load(Ordering::Acquire)
            .saturating_add(self.rebuild.unscanned.load(Ordering::Acquire))
    }

    /// Reserves room for one message in `lane` unless its occupancy has
    /// reached `limit`. Lock-free; concurrent callers never overfill the
    /// lane between them (the check and the increment are one operation).
    pub fn try_reserve(self: &Arc<Self>, lane: Lane, limit: usize) -> Option<Reservation> {
        self.occupancy[lane]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |occupied| {
                let unscanned = self.rebuild.unscanned.load(Ordering::Acquire);
                (occupied.saturating_add(unscanned) < limit).then_some(occupied + 1)
            })
            .ok()?;
        Some(Reservation {
            queue: self.clone(),
            lane,
            holds_room: true,
        })
    }

    /// Waits until a message of `lane` is due, marks it active and returns
    /// it. Cancel-safe: a message is taken only when this returns.
    pub async fn next_due(&self, lane: Lane) -> QueueId {
        self.next_due_batch(lane, 1).await[0]
    }

    /// Waits until a message of `lane` is due, then marks active and returns
    /// it and up to `max - 1` more that are due too (earliest first).
    /// Cancel-safe: messages are taken only when this returns.
    pub async fn next_due_batch(&self, lane: Lane, max: usize) -> Vec<QueueId> {
        let max = max.max(1);
        loop {
            let notified = self.wake[lane].notified();
            let next_due = {
                let mut guard = self.lock();
                let state = &mut *guard;
                let now = Instant::now();
                match state.waiting[lane].first().copied() {
                    Some((due, _)) if due <= now => {
                        let mut taken = Vec::with_capacity(max);
                        while taken.len() < max {
                            match state.waiting[lane].first().copied() {
                                Some((due, id)) if due <= now => {
                                    state.waiting[lane].remove(&(due, id));
                                    if let Some(entry) = state.entries.get_mut(&id) {
                                        entry.phase = Phase::Active;
                                    }
                                    taken.push(id);
                                }
                                _ => break,
                            }
                        }
                        return taken;
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

    /// Puts `entry` in the schedule (replacing an earlier one) under the
    /// held lock. `entry.domains` must carry a reference the schedule takes
    /// over; the replaced entry's is released.
    fn place(&self, state: std::sync::MutexGuard<'_, Schedule>, id: QueueId, entry: Entry) {
        self.place_with(state, id, entry, None);
    }

    /// [`Queue::place`], keeping the lane counts: a new entry counts in its
    /// lane, paid for by `reservation` when that is for the same lane (any
    /// other reservation is simply released when dropped here); a replaced
    /// entry that changes lane moves its count.
    fn place_with(
        &self,
        mut state: std::sync::MutexGuard<'_, Schedule>,
        id: QueueId,
        entry: Entry,
        reservation: Option<Reservation>,
    ) {
        let lane = entry.lane;
        match state.entries.insert(id, entry) {
            None => {
                state.queued[lane] += 1;
                match reservation {
                    Some(mut reservation) if reservation.lane == lane => {
                        reservation.holds_room = false;
                    }
                    _ => {
                        self.occupancy[lane].fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
            Some(previous) => {
                if let Phase::Waiting { due } = previous.phase {
                    state.waiting[previous.lane].remove(&(due, id));
                }
                state.domain_sets.release(previous.domains);
                if previous.lane != lane {
                    state.queued[previous.lane] -= 1;
                    state.queued[lane] += 1;
                    self.occupancy[previous.lane].fetch_sub(1, Ordering::AcqRel);
                    self.occupancy[lane].fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        if let Phase::Waiting { due } = entry.phase {
            let waiting = &mut state.waiting[entry.lane];
            let becomes_first = waiting.first().is_none_or(|&(first, _)| due < first);
            waiting.insert((due, id));
            drop(state);
            if becomes_first {
                self.wake[entry.lane].notify_one();
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
    async fn a_batch_takes_only_what_is_due_earliest_first() {
        let queue = Queue::default();
        let now = Instant::now();
        queue.reschedule(id(1), Lane::Low, now);
        queue.reschedule(id(2), Lane::Low, now - Duration::from_secs(1));
        queue.reschedule(id(3), Lane::Low, now);
        queue.reschedule(id(4), Lane::Low, now + Duration::from_secs(30));
        assert_eq!(queue.next_due_batch(Lane::Low, 2).await, vec![id(2), id(1)]);
        assert_eq!(queue.next_due_batch(Lane::Low, 5).await, vec![id(3)]);
        assert_eq!(queue.get(id(3)).unwrap().phase, Phase::Active);
        let started = Instant::now();
        assert_eq!(queue.next_due_batch(Lane::Low, 5).await, vec![id(4)]);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
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
        let held = Entry {
            lane: Lane::High,
            phase: Phase::Held,
            arrival_ms: 0,
            attempts: 0,
            domains: DomainSets::EMPTY,
        };
        queue.place(queue.lock(), id(2), held);
        queue.reschedule(id(3), Lane::High, Instant::now() + Duration::from_secs(1));
        assert_eq!(queue.next_due(Lane::High).await, id(3));
        assert_eq!(queue.len(), 2);
    }

    fn envelope(lane: Lane) -> Envelope {
        let recipients = vec![envelope::Recipient::new("user@example.org".into())];
        Envelope::new(String::new(), recipients, lane, SystemTime::now(), 100)
    }

    fn entry(lane: Lane, phase: Phase) -> Entry {
        Entry {
            lane,
            phase,
            arrival_ms: 0,
            attempts: 1,
            domains: DomainSets::EMPTY,
        }
    }

    fn counts(queue: &Queue) -> [(usize, usize); 2] {
        Lane::ALL.map(|lane| (queue.count(lane), queue.occupancy(lane)))
    }

    #[test]
    fn lane_counts_follow_inserts_replacements_and_removals() {
        let queue = Queue::default();
        queue.insert(id(1), &envelope(Lane::High));
        queue.insert(id(2), &envelope(Lane::Low));
        queue.insert(id(3), &envelope(Lane::Low));
        assert_eq!(counts(&queue), [(1, 1), (2, 2)]);
        // A replacement is not a new message; held and active ones count too.
        queue.insert(id(2), &envelope(Lane::Low));
        queue.place(queue.lock(), id(3), entry(Lane::Low, Phase::Held));
        queue.place(queue.lock(), id(1), entry(Lane::High, Phase::Active));
        assert_eq!(counts(&queue), [(1, 1), (2, 2)]);
        // An entry that changes lane moves its count with it.
        queue.insert(id(2), &envelope(Lane::High));
        assert_eq!(counts(&queue), [(2, 2), (1, 1)]);
        assert_eq!(
            queue.remove(id(2)).map(|entry| entry.lane),
            Some(Lane::High)
        );
        assert_eq!(queue.remove(id(2)), None);
        queue.remove(id(3));
        assert_eq!(counts(&queue), [(1, 1), (0, 0)]);
    }

    #[test]
    fn reservations_never_overfill_a_lane() {
        let queue = std::sync::Arc::new(Queue::default());
        queue.insert(id(1), &envelope(Lane::Low));
        let first = queue.try_reserve(Lane::Low, 3).expect("room for a second");
        let second = queue.try_reserve(Lane::Low, 3).expect("room for a third");
        assert!(queue.try_reserve(Lane::Low, 3).is_none());
        assert_eq!(counts(&queue)[1], (1, 3));
        // The other lane is unaffected by this one's cap.
        assert!(queue.try_reserve(Lane::High, 1).is_some());
        assert_eq!(queue.occupancy(Lane::High), 0);

        // A failed store drops its reservation: the room is free again.
        drop(first);
        assert_eq!(counts(&queue)[1], (1, 2));
        // A stored message takes over its reservation's room.
        queue.insert_reserved(id(2), &envelope(Lane::Low), second);
        assert_eq!(counts(&queue)[1], (2, 2));
        let third = queue.try_reserve(Lane::Low, 3).expect("room for a third");
        queue.insert_reserved(id(3), &envelope(Lane::Low), third);
        assert_eq!(counts(&queue)[1], (3, 3));
        assert!(queue.try_reserve(Lane::Low, 3).is_none());
        // Mail leaving the queue frees room.
        queue.remove(id(1));
        assert!(queue.try_reserve(Lane::Low, 3).is_some());
    }

    #[test]
    fn concurrent_reservations_stop_at_the_cap() {
        let queue = std::sync::Arc::new(Queue::default());
        let granted: Vec<Vec<Reservation>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let queue = queue.clone();
                    scope.spawn(move || {
                        (0..1000)
                            .filter_map(|_| queue.try_reserve(Lane::High, 100))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap())
                .collect()
        });
        assert_eq!(granted.iter().map(Vec::len).sum::<usize>(), 100);
        assert_eq!(queue.occupancy(Lane::High), 100);
        drop(granted);
        assert_eq!(queue.occupancy(Lane::High), 0);
    }

    #[test]
    fn a_reservation_for_another_lane_does_not_pay_for_the_message() {
        let queue = std::sync::Arc::new(Queue::default());
        let reservation = queue.try_reserve(Lane::High, 10).unwrap();
        queue.insert_reserved(id(1), &envelope(Lane::Low), reservation);
        assert_eq!(counts(&queue), [(0, 0), (1, 1)]);
    }

    /// The rebuild's scan builds what inserting each message would: the
    /// same entries, lane counts, domains and due order, over more than one
    /// scan chunk; completed messages leave the spool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuild_schedules_what_inserting_each_message_would() {
        let dir = tempfile::tempdir().unwrap();
        let spool = relayq_spool::Spool::open(relayq_spool::SpoolOptions::new(dir.path())).unwrap();
        let now_ms = envelope::unix_ms(SystemTime::now());
        let count = rebuild::REBUILD_CHUNK as u64 + 900;
        let mut stored = Vec::new();
        let mut changes = Vec::new();
        for n in 0..count {
            let id = spool.allocate_id();
            let recipients = (0..1 + n % 3)
                .map(|r| {
                    let mut recipient =
                        envelope::Recipient::new(format!("u{r}@D{}.test", (n + r) % 5));
                    if n % 11 == 0 || (r == 1 && n % 4 == 0) {
                        recipient.status = envelope::RecipientStatus::Delivered;
                    }
                    recipient
                })
                .collect();
            let lane = if n % 2 == 0 { Lane::High } else { Lane::Low };
            let mut envelope =
                Envelope::new(String::new(), recipients, lane, SystemTime::now(), 10);
            envelope.attempts = (n % 3) as u32;
            envelope.held = n % 7 == 0;
            // Distinct due times in an order unrelated to the ids, some past.
            envelope.next_attempt_ms =
                (n % 13 != 0).then(|| now_ms - 600_000 + (n * 7_919 % count) * 1_000);
            changes.push(relayq_spool::Change::Insert {
                id,
                envelope: envelope.encode(),
                body: relayq_spool::Body::from_bytes(b"x".to_vec()),
            });
            stored.push((id, envelope));
        }
        spool.apply(changes).await.unwrap();

        let expected = Queue::default();
        for (id, envelope) in &stored {
            if !envelope.is_complete() {
                expected.insert(*id, envelope);
            }
        }
        let rebuilt = Arc::new(Queue::rebuilding(
            spool.last_allocated_id(),
            spool.message_count().unwrap() as usize,
        ));
        let recovery = rebuilt
            .scan(&spool, tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
        assert!(!rebuilt.rebuild_progress().in_progress);

        let completed = stored.iter().filter(|(_, e)| e.is_complete()).count();
        assert!(completed > 0);
        assert_eq!(recovery.completed, completed);
        assert_eq!(recovery.high + recovery.low, stored.len() - completed);
        assert_eq!(counts(&rebuilt), counts(&expected));
        let (got, want) = (rebuilt.lock(), expected.lock());
        assert_eq!(got.entries.len(), want.entries.len());
        for (id, envelope) in &stored {
            let Some(want_entry) = want.entries.get(id) else {
                assert!(!got.entries.contains_key(id));
                assert_eq!(spool.envelope(*id).unwrap(), None, "{id} left in the spool");
                continue;
            };
            let got_entry = got.entries[id];
            assert_eq!(got_entry.lane, envelope.lane);
            assert_eq!(
                (got_entry.arrival_ms, got_entry.attempts),
                (want_entry.arrival_ms, want_entry.attempts)
            );
            match (got_entry.phase, want_entry.phase) {
                (Phase::Held, Phase::Held) => {}
                (Phase::Waiting { due: a }, Phase::Waiting { due: b }) => {
                    assert!(a.max(b) - a.min(b) < Duration::from_secs(1), "{id}");
                }
                other => panic!("{id}: phases {other:?}"),
            }
            assert_eq!(
                got.domain_sets.domains(got_entry.domains),
                want.domain_sets.domains(want_entry.domains)
            );
        }
        for lane in Lane::ALL {
            let order = |schedule: &Schedule| -> Vec<QueueId> {
                schedule.waiting[lane].iter().map(|&(_, id)| id).collect()
            };
            assert_eq!(order(&got), order(&want));
        }
    }
}
