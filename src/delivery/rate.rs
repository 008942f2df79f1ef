//! A destination's rate (README "Output control"): at most one start per
//! interval, so in any window of T seconds at most rate × T + 1
//! transactions start (a start is a transaction's MAIL command).
//!
//! Two parts. Admission, when a message's job is formed, hands out slots
//! one interval apart: a job whose slot is now (or within a short wait)
//! goes ahead; otherwise the slot is promised to the message, which is
//! deferred until then without an attempt and takes its promised slot when
//! it comes back, so waiting messages are spread over the slots instead of
//! all returning at the next one. The start gate, right before MAIL, keeps
//! actual starts an interval apart even when promised jobs arrive late
//! together. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::Duration;

use relayq_spool::QueueId;
use tokio::time::Instant;

/// How long a promised slot is kept for a message that does not come back
/// for it (held, deleted, or dispatched late).
const PROMISE_KEPT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// Deferred until this slot, which is the message's.
    Later(Instant),
}

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// The first slot not yet handed out.
    next_free: Option<Instant>,
    promises: HashMap<QueueId, Instant>,
    /// Slots a little ahead given to jobs admitted now: the start gate
    /// holds each job until its slot.
    not_before: HashMap<QueueId, Instant>,
    last_start: Option<Instant>,
    /// `last_start` before the latest start, restored by `unstart`.
    previous_start: Option<Instant>,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            next_free: None,
            promises: HashMap::new(),
            not_before: HashMap::new(),
            last_start: None,
            previous_start: None,
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
        self.next_free = self.last_start.map(|last| last + interval);
        self.promises.clear();
        self.not_before.clear();
    }

    /// A slot for message `id`'s job: its promised one, else the next
    /// free one. `Now` when the slot is within `short_wait` (the start gate
    /// then holds the job until its slot).
    pub fn admit(&mut self, id: QueueId, now: Instant, short_wait: Duration) -> Admission {
        let slot = match self.promises.get(&id) {
            Some(&slot) => {
                if slot > now + short_wait {
                    return Admission::Later(slot);
                }
                self.promises.remove(&id);
                slot
            }
            None => {
                let slot = self.next_free.map_or(now, |free| free.max(now));
                self.next_free = Some(slot + self.interval);
                slot
            }
        };
        if slot <= now + short_wait {
            if slot > now {
                self.not_before.insert(id, slot);
            }
            Admission::Now
        } else {
            self.promises.insert(id, slot);
            Admission::Later(slot)
        }
    }

    /// Promises `id` the first free slot at `earliest` or later (a start
    /// refused until then).
    pub fn promise(&mut self, id: QueueId, now: Instant, earliest: Instant) -> Instant {
        let slot = self
            .next_free
            .map_or(earliest, |free| free.max(earliest))
            .max(now);
        self.next_free = Some(slot + self.interval);
        self.promises.insert(id, slot);
        slot
    }

    /// Hands out a slot that a promise of an earlier slot may reuse: the
    /// one already promised to `id`, else a new one.
    pub fn promise_next(&mut self, id: QueueId, now: Instant) -> Instant {
        match self.admit(id, now, Duration::ZERO) {
            Admission::Now => {
                // The slot is now, but the gate refused: take the next one.
                let slot = self.next_free.map_or(now, |free| free.max(now));
                self.next_free = Some(slot + self.interval);
                self.promises.insert(id, slot);
                slot
            }
            Admission::Later(slot) => slot,
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
        if let Some(last) = self.last_start
            && now < last + self.interval
        {
            return Err(last + self.interval);
        }
        self.previous_start = self.last_start;
        self.last_start = Some(now);
        Ok(())
    }

    /// The latest start did not happen after all.
    pub fn unstart(&mut self) {
        self.last_start = self.previous_start.take();
    }

    pub fn expire_promises(&mut self, now: Instant) {
        self.promises.retain(|_, slot| *slot + PROMISE_KEPT > now);
        self.not_before.retain(|_, slot| *slot + PROMISE_KEPT > now);
    }

    /// Nothing promised and nothing that would delay a start now.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.promises.is_empty()
            && self.not_before.is_empty()
            && self.next_free.is_none_or(|free| free <= now)
            && self
                .last_start
                .is_none_or(|last| last + self.interval <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> QueueId {
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
        rate.unstart();
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
