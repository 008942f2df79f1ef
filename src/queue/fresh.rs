//! Messages just accepted, kept in memory until their first delivery pass,
//! so that a relay delivering as fast as it accepts does not read back from
//! the spool (on the blocking pool, a thread hand-off per message) what it
//! has just written.
//!
//! Invariant: an entry is the message's envelope *as stored at acceptance*.
//! It is put in before the message enters the schedule (so a dispatcher that
//! sees the message can find it), taken out by the first pass, and dropped
//! before any transition of the message is committed (so nobody can take an
//! envelope older than the spool's). Misses are always safe: the caller then
//! reads the spool.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use relayq_spool::QueueId;

use super::Envelope;

/// At most this many messages are kept: a lane that cannot deliver as fast
/// as it accepts stops benefiting long before this, and the rest come from
/// the spool as before.
const MAX_ENTRIES: usize = 4096;
/// And at most this many body bytes.
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Bodies larger than this are never kept.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Default)]
pub struct Fresh {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<QueueId, (Envelope, Bytes)>,
    /// Ids in the order they were kept; may name entries already taken.
    order: VecDeque<QueueId>,
    bytes: usize,
}

impl Fresh {
    /// Keeps a just-stored message. Evicts the oldest entries beyond the
    /// bounds.
    pub fn keep(&self, id: QueueId, envelope: Envelope, body: Bytes) {
        if body.len() > MAX_BODY {
            return;
        }
        let mut inner = self.lock();
        inner.bytes += body.len();
        if let Some((_, replaced)) = inner.entries.insert(id, (envelope, body)) {
            inner.bytes -= replaced.len();
        }
        inner.order.push_back(id);
        while inner.order.len() > MAX_ENTRIES || inner.bytes > MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.remove(oldest);
        }
    }

    /// Takes message `id`'s envelope and body, if they are still kept.
    pub fn take(&self, id: QueueId) -> Option<(Envelope, Bytes)> {
        let mut inner = self.lock();
        let taken = inner.remove(id);
        if inner.entries.is_empty() {
            // Everything kept was taken: the order list only names gone
            // entries, so it can start over (this is the common case, and
            // keeps the list from growing while nothing is evicted).
            inner.order.clear();
        }
        taken
    }

    /// Drops message `id`'s entry: its envelope is about to change.
    pub fn forget(&self, id: QueueId) {
        let mut inner = self.lock();
        if !inner.entries.is_empty() {
            inner.remove(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent whatever panicked while holding the lock:
        // every method leaves the map and the byte count in step.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Inner {
    fn remove(&mut self, id: QueueId) -> Option<(Envelope, Bytes)> {
        let removed = self.entries.remove(&id)?;
        self.bytes -= removed.1.len();
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::queue::Lane;
    use crate::queue::envelope::Recipient;

    fn envelope(sender: &str) -> Envelope {
        Envelope::new(
            sender.into(),
            vec![Recipient::new("r@example.org".into())],
            Lane::High,
            SystemTime::now(),
            5,
        )
    }

    fn id(n: u64) -> QueueId {
        QueueId(n)
    }

    #[test]
    fn a_kept_message_is_taken_once() {
        let fresh = Fresh::default();
        fresh.keep(
            id(1),
            envelope("a@example.com"),
            Bytes::from_static(b"body"),
        );
        let (taken, body) = fresh.take(id(1)).expect("kept");
        assert_eq!(taken.reverse_path, "a@example.com");
        assert_eq!(&body[..], b"body");
        assert!(fresh.take(id(1)).is_none());
    }

    #[test]
    fn a_forgotten_message_is_not_taken() {
        let fresh = Fresh::default();
        fresh.keep(
            id(1),
            envelope("a@example.com"),
            Bytes::from_static(b"body"),
        );
        fresh.forget(id(1));
        assert!(fresh.take(id(1)).is_none());
    }

    #[test]
    fn the_oldest_entries_are_evicted_beyond_the_bounds() {
        let fresh = Fresh::default();
        for n in 0..(MAX_ENTRIES as u64 + 10) {
            fresh.keep(id(n), envelope("a@example.com"), Bytes::from_static(b"x"));
        }
        assert_eq!(fresh.len(), MAX_ENTRIES);
        assert!(fresh.take(id(0)).is_none());
        assert!(fresh.take(id(9)).is_none());
        assert!(fresh.take(id(10)).is_some());

        let fresh = Fresh::default();
        let body = Bytes::from(vec![b'x'; MAX_BODY]);
        let fit = MAX_BYTES / MAX_BODY;
        for n in 0..(fit as u64 + 1) {
            fresh.keep(id(n), envelope("a@example.com"), body.clone());
        }
        assert_eq!(fresh.len(), fit);
        assert!(fresh.take(id(0)).is_none());
    }

    #[test]
    fn a_large_body_is_not_kept() {
        let fresh = Fresh::default();
        let body = Bytes::from(vec![b'x'; MAX_BODY + 1]);
        fresh.keep(id(1), envelope("a@example.com"), body);
        assert!(fresh.take(id(1)).is_none());
    }

    #[test]
    fn the_order_list_does_not_grow_while_everything_is_taken() {
        let fresh = Fresh::default();
        for n in 0..(3 * MAX_ENTRIES as u64) {
            fresh.keep(id(n), envelope("a@example.com"), Bytes::from_static(b"x"));
            assert!(fresh.take(id(n)).is_some());
        }
        assert!(fresh.lock().order.is_empty());
    }
}
