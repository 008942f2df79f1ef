//! The in-memory view of the queue: which messages are waiting, in which lane,
//! and when each is due. Rebuilt from the spool at startup; the spool stays
//! the only source of truth.

pub mod envelope;
mod lane;

use std::collections::BTreeMap;
use std::sync::Mutex;

use relayq_spool::{QueueId, Spool, SpoolError};

pub use envelope::Envelope;
pub use lane::Lane;

/// What the scheduler needs to know of one queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub lane: Lane,
    pub held: bool,
    /// Milliseconds since the Unix epoch; `None` means due now.
    pub due_ms: Option<u64>,
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
pub struct Queue {
    entries: Mutex<BTreeMap<QueueId, Entry>>,
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

    pub fn insert(&self, id: QueueId, envelope: &Envelope) {
        let entry = Entry {
            lane: envelope.lane,
            held: envelope.held,
            due_ms: envelope.next_attempt_ms,
        };
        self.lock().insert(id, entry);
    }

    pub fn remove(&self, id: QueueId) -> Option<Entry> {
        self.lock().remove(&id)
    }

    pub fn get(&self, id: QueueId) -> Option<Entry> {
        self.lock().get(&id).copied()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Number of queued messages in `lane`.
    pub fn count(&self, lane: Lane) -> usize {
        self.lock().values().filter(|entry| entry.lane == lane).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<QueueId, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every operation is a single insert/remove), so poison is ignored.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
