//! Operator access to the schedule: an operation on a queued message
//! (retry, hold, release, delete, bounce) first claims it here, so no
//! delivery pass can start on it while the operation commits, and an
//! operation never touches a message whose pass is in flight.

use relayq_spool::QueueId;

use super::{Entry, Phase, Queue, index};

/// Why a message could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    NotFound,
    /// A delivery pass (or another operation) has it.
    InProgress,
}

impl Queue {
    /// Takes a waiting or held message out of the schedule for an operator
    /// operation: it shows as active, and no dispatcher can pick it up,
    /// until the operation puts it back (`insert`) or removes it. Returns
    /// the entry as it was.
    pub fn claim(&self, id: QueueId) -> Result<Entry, ClaimError> {
        let mut state = self.lock();
        let entry = state
            .entries
            .get(&id)
            .copied()
            .ok_or(ClaimError::NotFound)?;
        match entry.phase {
            Phase::Active => return Err(ClaimError::InProgress),
            Phase::Waiting { due } => {
                state.waiting[index(entry.lane)].remove(&(due, id));
            }
            Phase::Held => {}
        }
        if let Some(claimed) = state.entries.get_mut(&id) {
            claimed.phase = Phase::Active;
        }
        Ok(entry)
    }

    /// Puts a claimed message back as it was (the operation did not commit).
    pub fn unclaim(&self, id: QueueId, entry: Entry) {
        self.set(
            id,
            entry.lane,
            entry.phase,
            entry.arrival_ms,
            entry.attempts,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::queue::Lane;

    #[tokio::test(start_paused = true)]
    async fn a_claimed_message_is_never_due_and_can_be_put_back() {
        let queue = Queue::default();
        queue.reschedule(QueueId(1), Lane::High, Instant::now());
        queue.reschedule(
            QueueId(2),
            Lane::High,
            Instant::now() + Duration::from_secs(5),
        );
        let entry = queue.claim(QueueId(1)).unwrap();
        assert_eq!(queue.claim(QueueId(1)), Err(ClaimError::InProgress));
        assert_eq!(queue.claim(QueueId(9)), Err(ClaimError::NotFound));
        assert_eq!(queue.next_due(Lane::High).await, QueueId(2));
        queue.unclaim(QueueId(1), entry);
        assert_eq!(queue.next_due(Lane::High).await, QueueId(1));
        assert_eq!(queue.claim(QueueId(1)), Err(ClaimError::InProgress));
    }
}
