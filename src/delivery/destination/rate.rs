//! A destination's rate (docs/delivery.md, "Rate"): at most one start per
//! interval, so in any window of T seconds at most rate × T + 1
//! transactions start (a start is a transaction's MAIL command).
//!
//! Two parts. Admission, when a message's job is formed, hands out slots
//! one interval apart: a job whose slot is now (or within a short wait)
//! goes ahead; otherwise the slot is promised to the message, which is
//! deferred until then without an attempt and takes its promised slot when
//! it comes back, however late, so waiting messages are spread over the
//! slots instead of all returning at the next one. A message that stops
//! waiting (delivered, deleted, held, bounced, expired) gives its promise
//! back: the slot after the last promise still held is the next free one,
//! and a slot given back among them goes to the next newcomer. The start
//! gate, right before MAIL, keeps actual starts an interval apart even when
//! promised jobs arrive late together. Pure: the caller passes the time.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use relayq_spool::QueueId;
use tokio::time::Instant;

/// How long a promise is kept after its slot for a message that has not
/// come back for it. Every way a message stops waiting gives its promise
/// back at once; this only bounds what a message that vanished otherwise
/// (an unreadable record set aside) leaves behind. A message dispatched
/// late (a long due backlog) keeps its slot all that time.
const PROMISE_KEPT: Duration = Duration::from_secs(24 * 3600);
/// How long a slot a little ahead, given to a job admitted now, holds the
/// job at the start gate when the job never starts (its connection failed).
const NOT_BEFORE_KEPT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// Deferred until this slot, which is the message's.
    Later(Instant),
}

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// Slots promised to deferred messages, in time order.
    promised: BTreeSet<(Instant, QueueId)>,
    /// Each promise by message (at most one per message).
    promise_of: HashMap<QueueId, Instant>,
    /// Slots given back before the last promise, earliest first: the next
    /// newcomers take them.
    given_back: BTreeSet<Instant>,
    /// The latest slot handed to a job admitted now.
    last_admitted: Option<Instant>,
    /// Slots a little ahead given to jobs admitted now: the start gate
    /// holds each job until its slot.
    not_before: HashMap<QueueId, Instant>,
    /// The starts of the last interval (older ones no longer hold anything
    /// back), oldest first, by message, so that `unstart` undoes exactly
    /// its own.
    starts: VecDeque<(QueueId, Instant)>,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            promised: BTreeSet::new(),
            promise_of: HashMap::new(),
            given_back: BTreeSet::new(),
            last_admitted: None,
            not_before: HashMap::new(),
            starts: VecDeque::new(),
        }
    }

    /// A reload changed the rate: slots are handed out anew from the last
    /// start at the new interval, and the slots promised at the old one
    /// are forgotten (their messages get new ones when they come back).
    pub fn set_interval(&mut self, interval: Duration) {
        if interval == self.interval {
            return;
        }
        self.interval = interval;
        self.promised.clear();
        self.promise_of.clear();
        self.given_back.clear();
        self.not_before.clear();
        self.last_admitted = None;
    }

    /// A slot for message `id`'s job: its promised one, else the next
    /// free one. `Now` when the slot is within `short_wait` (the start gate
    /// then holds the job until its slot).
    pub fn admit(&mut self, id: QueueId, now: Instant, short_wait: Duration) -> Admission {
        let slot = match self.promise_of.get(&id) {
            Some(&slot) if slot > now + short_wait => return Admission::Later(slot),
            Some(&slot) => {
                // Taken, not given back: the slot is used now.
                self.promise_of.remove(&id);
                self.promised.remove(&(slot, id));
                slot
            }
            None => self.free_slot(now, now),
        };
        if slot <= now + short_wait {
            if slot > now {
                self.not_before.insert(id, slot);
            }
            self.last_admitted = Some(self.last_admitted.map_or(slot, |last| last.max(slot)));
            Admission::Now
        } else {
            self.keep_promise(id, slot);
            Admission::Later(slot)
        }
    }

    /// Promises `id` the first free slot at `earliest` or later (a start
    /// refused until then), in place of any slot promised to it before.
    pub fn promise(&mut self, id: QueueId, now: Instant, earliest: Instant) -> Instant {
        self.release(id, now);
        let slot = self.free_slot(now, earliest);
        self.keep_promise(id, slot);
        slot
    }

    /// Message `id` no longer waits here (delivered elsewhere, deleted,
    /// held, bounced, expired): its promised slot goes to someone else.
    pub fn release(&mut self, id: QueueId, now: Instant) {
        self.not_before.remove(&id);
        let Some(slot) = self.promise_of.remove(&id) else {
            return;
        };
        self.promised.remove(&(slot, id));
        match self.promised.last() {
            // Among later promises: a gap the next newcomer fills.
            Some(&(last, _)) if last > slot => {
                if slot >= now {
                    self.given_back.insert(slot);
                }
            }
            // The last promise: the next free slot moves back to one
            // interval after the last one still held, and gaps beyond
            // that are no gaps any more.
            Some(&(last, _)) => drop(self.given_back.split_off(&last)),
            None => self.given_back.clear(),
        }
    }

    /// The start gate for message `id`'s transaction: `Ok` records a start
    /// now; `Err` is the earliest instant it may start.
    pub fn start(&mut self, id: QueueId, now: Instant) -> Result<(), Instant> {
        if let Some(&slot) = self.not_before.get(&id) {
            if now < slot {
                return Err(slot);
            }
            self.not_before.remove(&id);
        }
        while self
            .starts
            .front()
            .is_some_and(|&(_, at)| at + self.interval <= now)
        {
            self.starts.pop_front();
        }
        if let Some(last) = self.last_start()
            && now < last + self.interval
        {
            return Err(last + self.interval);
        }
        self.starts.push_back((id, now));
        Ok(())
    }

    /// Message `id`'s latest start did not happen after all (its MAIL
    /// command was never sent): only that start is undone, whatever
    /// started since.
    pub fn unstart(&mut self, id: QueueId) {
        if let Some(position) = self.starts.iter().rposition(|&(started, _)| started == id) {
            self.starts.remove(position);
        }
    }

    /// Forgets what messages left behind without coming back or giving it
    /// back (see `PROMISE_KEPT`).
    pub fn expire_promises(&mut self, now: Instant) {
        self.not_before
            .retain(|_, slot| *slot + NOT_BEFORE_KEPT > now);
        let expired: Vec<QueueId> = self
            .promised
            .iter()
            .take_while(|(slot, _)| *slot + PROMISE_KEPT <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in expired {
            self.release(id, now);
        }
        while self.given_back.first().is_some_and(|&slot| slot < now) {
            self.given_back.pop_first();
        }
    }

    /// Nothing promised and nothing that would delay a start now.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.promised.is_empty()
            && self.not_before.is_empty()
            && self
                .last_admitted
                .is_none_or(|last| last + self.interval <= now)
            && self
                .last_start()
                .is_none_or(|last| last + self.interval <= now)
    }

    fn last_start(&self) -> Option<Instant> {
        self.starts.iter().map(|&(_, at)| at).max()
    }

    fn keep_promise(&mut self, id: QueueId, slot: Instant) {
        self.promised.insert((slot, id));
        self.promise_of.insert(id, slot);
    }

    /// The first slot at `earliest` (and `now`) or later that nobody holds:
    /// one given back, else one interval after the last slot handed out or
    /// promised and after the last start.
    fn free_slot(&mut self, now: Instant, earliest: Instant) -> Instant {
        let earliest = earliest.max(now);
        if let Some(&slot) = self.given_back.range(earliest..).next() {
            self.given_back.remove(&slot);
            return slot;
        }
        let after = |slot: Option<Instant>| slot.map(|slot| slot + self.interval);
        [
            Some(earliest),
            after(self.last_admitted),
            after(self.last_start()),
            after(self.promised.last().map(|&(slot, _)| slot)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> QueueId {
        QueueId(u64::from(n))
    }

    #[test]
    fn slots_are_one_interval_apart_and_promised() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut rate = RateLimiter::new(second);
        assert_eq!(rate.admit(id(1), now, Duration::ZERO), Admission::Now);
        assert_eq!(
            rate.admit(id(2), now, Duration::ZERO),
            Admission::Later(now + second)
        );
        assert_eq!(
            rate.admit(id(3), now, Duration::ZERO),
            Admission::Later(now + 2 * second)
        );
        // Coming back early keeps the promise; on time takes it.
        assert_eq!(
            rate.admit(id(3), now + second, Duration::ZERO),
            Admission::Later(now + 2 * second)
        );
        assert_eq!(
            rate.admit(id(2), now + second, Duration::ZERO),
            Admission::Now
        );
        // A newcomer queues behind the promises.
        assert_eq!(
            rate.admit(id(4), now + second, Duration::ZERO),
            Admission::Later(now + 3 * second)
        );
        assert!(!rate.is_idle(now + second));
    }

    #[test]
    fn promises_given_back_free_their_slots_for_newcomers() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut rate = RateLimiter::new(second);
        assert_eq!(rate.admit(id(0), now, Duration::ZERO), Admission::Now);
        assert_eq!(rate.start(id(0), now), Ok(()));
        for n in 1..=5000 {
            assert_eq!(
                rate.admit(id(n), now, Duration::ZERO),
                Admission::Later(now + n * second)
            );
        }
        // A message in the middle leaves: its slot is the next newcomer's.
        rate.release(id(10), now);
        assert_eq!(
            rate.admit(id(9001), now, Duration::ZERO),
            Admission::Later(now + 10 * second)
        );
        // All of them leave (a bulk delete): a newcomer goes one interval
        // after the last start, not after the slots they held.
        for n in 1..=5000 {
            rate.release(id(n), now);
        }
        rate.release(id(9001), now);
        let later = now + Duration::from_millis(1500);
        assert_eq!(rate.admit(id(9002), later, Duration::ZERO), Admission::Now);
        assert_eq!(rate.start(id(9002), later), Ok(()));
        assert!(rate.is_idle(later + second));
    }

    #[test]
    fn releasing_the_last_promise_moves_the_next_free_slot_back() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut rate = RateLimiter::new(second);
        assert_eq!(rate.admit(id(1), now, Duration::ZERO), Admission::Now);
        for n in 2..=4 {
            rate.admit(id(n), now, Duration::ZERO);
        }
        // 3 gives back a slot among others, then 4 (the last) leaves too:
        // the next free slot is the one right after 2's.
        rate.release(id(3), now);
        rate.release(id(4), now);
        assert_eq!(
            rate.admit(id(5), now, Duration::ZERO),
            Admission::Later(now + 2 * second)
        );
        assert_eq!(
            rate.admit(id(6), now, Duration::ZERO),
            Admission::Later(now + 3 * second)
        );
    }

    #[test]
    fn a_message_back_long_after_its_slot_still_has_it() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut rate = RateLimiter::new(second);
        assert_eq!(rate.admit(id(1), now, Duration::ZERO), Admission::Now);
        assert_eq!(
            rate.admit(id(2), now, Duration::ZERO),
            Admission::Later(now + second)
        );
        for n in 3..=1000 {
            rate.admit(id(n), now, Duration::ZERO);
        }
        // Message 2 is dispatched two minutes late (a due backlog): its
        // promise was kept, so it goes now instead of behind everyone.
        let late = now + Duration::from_secs(120);
        rate.expire_promises(late);
        assert_eq!(rate.admit(id(2), late, Duration::ZERO), Admission::Now);
    }

    #[test]
    fn unstart_undoes_only_its_own_start() {
        let now = Instant::now();
        let interval = Duration::from_millis(100);
        let mut rate = RateLimiter::new(interval);
        assert_eq!(rate.start(id(1), now), Ok(()));
        assert_eq!(rate.start(id(2), now + interval), Ok(()));
        // 1's transaction never sent MAIL: 2's start still counts.
        rate.unstart(id(1));
        assert_eq!(
            rate.start(id(3), now + interval + Duration::from_millis(10)),
            Err(now + 2 * interval)
        );
        // 2's undone too: nothing holds 3 back.
        rate.unstart(id(2));
        assert_eq!(
            rate.start(id(3), now + interval + Duration::from_millis(10)),
            Ok(())
        );
    }

    #[test]
    fn a_new_interval_forgets_the_old_promises() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut rate = RateLimiter::new(hour);
        assert_eq!(rate.admit(id(1), now, Duration::ZERO), Admission::Now);
        assert_eq!(rate.start(id(1), now), Ok(()));
        assert_eq!(
            rate.admit(id(2), now, Duration::ZERO),
            Admission::Later(now + hour)
        );
        let second = Duration::from_secs(1);
        rate.set_interval(second);
        // The next slot is one new interval after the last start.
        assert_eq!(
            rate.admit(id(2), now, Duration::ZERO),
            Admission::Later(now + second)
        );
        assert_eq!(
            rate.admit(id(2), now + second, Duration::ZERO),
            Admission::Now
        );
    }

    #[test]
    fn the_gate_spaces_starts_exactly() {
        let now = Instant::now();
        let interval = Duration::from_millis(100);
        let mut rate = RateLimiter::new(interval);
        assert_eq!(rate.start(id(1), now), Ok(()));
        assert_eq!(
            rate.start(id(2), now + Duration::from_millis(50)),
            Err(now + interval)
        );
        assert_eq!(rate.start(id(2), now + interval), Ok(()));
        rate.unstart(id(2));
        assert_eq!(rate.start(id(2), now + interval), Ok(()));
        assert!(rate.is_idle(now + 3 * interval));
    }

    #[test]
    fn a_slot_a_little_ahead_is_admitted_and_held_until_due() {
        let now = Instant::now();
        let interval = Duration::from_millis(100);
        let short = Duration::from_millis(150);
        let mut rate = RateLimiter::new(interval);
        assert_eq!(rate.admit(id(1), now, short), Admission::Now);
        assert_eq!(rate.admit(id(2), now, short), Admission::Now);
        assert_eq!(
            rate.admit(id(3), now, short),
            Admission::Later(now + 2 * interval)
        );
        assert_eq!(rate.start(id(1), now), Ok(()));
        assert_eq!(rate.start(id(2), now), Err(now + interval));
        assert_eq!(rate.start(id(2), now + interval), Ok(()));
        // A refused start is promised a slot of its own, after the others.
        let later = rate.promise(id(4), now, now + Duration::from_millis(50));
        assert_eq!(later, now + 3 * interval);
    }
}
