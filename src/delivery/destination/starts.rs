//! The start gate: right before each transaction's MAIL command a
//! destination's suspension and rate say whether it may start now; the
//! slots a message holds are given back when it stops waiting.

use std::sync::Arc;
use std::time::Duration;

use relayq_spool::QueueId;
use tokio::time::Instant;

use super::{DestinationKey, Destinations, Queued, SHORT_WAIT, Wait};
use crate::metrics::Throttle;
use crate::queue::reservations::Reservations;

impl<J: Queued> Destinations<J> {
    /// The name and interval of `key`'s rate, when it has one: what a fleet
    /// rate is kept under in Redis.
    pub fn rate_of(&self, key: &DestinationKey) -> Option<(Arc<str>, Duration)> {
        let DestinationKey::Rule(name) = key else {
            return None;
        };
        let interval = self.rules.load().rule(name)?.rate?.interval();
        Some((name.clone(), interval))
    }

    /// Right before a transaction's MAIL command: `Ok` to start it now
    /// (counted as a start), else how long to wait. A suspension always
    /// refuses; the rate refuses a start closer than its interval to the
    /// previous one, so starts are exactly spaced even when jobs promised
    /// consecutive slots arrive late together.
    pub fn start_transaction(
        &self,
        key: &DestinationKey,
        id: QueueId,
    ) -> Result<(), (Duration, Wait, Throttle)> {
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if let Some(suspension) = destination.suspended_at(now) {
            let left = suspension.until - now;
            return Err((left, suspension.wait(&key.label()), Throttle::Suspended));
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
            return Err((at - now, Wait::rate(&key.label(), at, now), Throttle::Rate));
        }
        Ok(())
    }

    /// Gives back the rate slot taken by `start_transaction` for message
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
        Wait::rate(&key.label(), at, now)
    }

    /// Message `id` no longer waits for delivery (it left the queue, or was
    /// held): the rate slots promised to it go to other mail.
    pub fn release(&self, id: QueueId) {
        let rules = self.rules.load();
        if rules.rated.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut table = self.lock();
        for key in &rules.rated {
            if let Some(rate) = table
                .get_mut(key)
                .and_then(|destination| destination.rate.as_mut())
            {
                rate.release(id, now);
            }
        }
    }
}

impl<J: Queued + Send> Reservations for Destinations<J> {
    fn release(&self, id: QueueId) {
        Destinations::release(self, id);
    }
}
