//! Operator access to the schedule: an operation on a queued message
//! (retry, hold, release, delete, bounce) first claims it here, so no
//! delivery pass can start on it while the operation commits, and an
//! operation never touches a message whose pass is in flight. Hold, delete
//! and bounce of a message in a pass are left here instead, and the pass
//! applies them in the commit that records its results.

use relayq_spool::QueueId;

use super::{Entry, Phase, Queue};

/// Why a message could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    NotFound,
    /// A delivery pass (or another operation) has it.
    InProgress,
}

/// An operator operation waiting for a delivery pass to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingOperation {
    Hold,
    Delete,
    Bounce,
}

impl Queue {
    /// Leaves `operation` for the pass in flight on `id`, which applies it
    /// when it records its results (a later one replaces an earlier one).
    /// False when the message is not in a pass, or its pass is already
    /// recording its results: then ask again in a moment.
    pub fn add_pending(&self, id: QueueId, operation: PendingOperation) -> bool {
        let mut state = self.lock();
        let in_pass = state
            .entries
            .get(&id)
            .is_some_and(|entry| entry.phase == Phase::Active);
        if in_pass {
            state.pending.insert(id, operation);
        }
        in_pass
    }

    /// For a pass about to record its results: the operation left for it,
    /// if any. From here until the message leaves the pass no other
    /// operation is accepted (`add_pending` answers false).
    pub fn take_pending(&self, id: QueueId) -> Option<PendingOperation> {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(&id) {
            entry.phase = Phase::Finishing;
        }
        state.pending.remove(&id)
    }

    /// Removes and returns an operation that was left while another
    /// operator operation held the message (not a pass), so that operation
    /// can apply it once it is done.
    pub fn drop_pending(&self, id: QueueId) -> Option<PendingOperation> {
        self.lock().pending.remove(&id)
    }

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
            Phase::Active | Phase::Finishing => return Err(ClaimError::InProgress),
            Phase::Waiting { due } => {
                state.waiting[entry.lane].remove(&(due, id));
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
        let mut state = self.lock();
        state.domain_sets.retain(entry.domains);
        self.place(state, id, entry);
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

    #[tokio::test(start_paused = true)]
    async fn a_pending_operation_waits_for_the_pass_and_is_taken_once() {
        let queue = Queue::default();
        queue.reschedule(QueueId(1), Lane::High, Instant::now());
        assert!(
            !queue.add_pending(QueueId(1), PendingOperation::Hold),
            "not in a pass"
        );
        assert_eq!(queue.next_due(Lane::High).await, QueueId(1));
        assert!(queue.add_pending(QueueId(1), PendingOperation::Hold));
        assert!(queue.add_pending(QueueId(1), PendingOperation::Delete));
        assert_eq!(
            queue.take_pending(QueueId(1)),
            Some(PendingOperation::Delete)
        );
        assert!(
            !queue.add_pending(QueueId(1), PendingOperation::Hold),
            "the pass is recording its results"
        );
        queue.reschedule(QueueId(1), Lane::High, Instant::now());
        assert_eq!(queue.next_due(Lane::High).await, QueueId(1));
        assert!(queue.add_pending(QueueId(1), PendingOperation::Bounce));
        assert_eq!(
            queue.drop_pending(QueueId(1)),
            Some(PendingOperation::Bounce)
        );
        assert_eq!(queue.drop_pending(QueueId(1)), None);
        assert!(queue.add_pending(QueueId(1), PendingOperation::Bounce));
        queue.remove(QueueId(1));
        assert_eq!(queue.take_pending(QueueId(1)), None);
    }
}
