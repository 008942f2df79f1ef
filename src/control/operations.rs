//! Operator operations on queued messages: retry, hold, release, delete and
//! bounce. Each claims the message from the schedule first
//! (`Queue::claim`), so it never races a delivery pass. Hold, delete and
//! bounce of a message whose pass is in flight are left with the pass,
//! which applies them in the transition that records its results (as
//! Postfix's queue manager does once a delivery agent is done); retry and
//! release do not apply to it. What an operation does to the message is a
//! [`transition::operator`] value, applied by [`QueueHandle::apply`] in one
//! spool commit; the schedule follows only once it is stored.

use std::time::{Duration, SystemTime};

use relayq_spool::QueueId;

use super::view::{OperationReport, Skipped};
use crate::queue::handle::{LoadError, QueueHandle};
use crate::queue::operations::ClaimError;
use crate::queue::transition::{self, Operation};
use crate::queue::{Entry, PendingOperation, State};

/// While a pass records its results (one commit) an operation can neither
/// claim the message nor be left with the pass: it asks again this often,
/// at most `BUSY_TRIES` times.
const BUSY_WAIT: Duration = Duration::from_millis(20);
const BUSY_TRIES: usize = 250;

/// The operation's name in the control API (`POST /queue/NAME`).
pub fn parse(name: &str) -> Option<Operation> {
    Some(match name {
        "retry" => Operation::Retry,
        "hold" => Operation::Hold,
        "release" => Operation::Release,
        "delete" => Operation::Delete,
        "bounce" => Operation::Bounce,
        _ => return None,
    })
}

/// What a pass in flight does with `operation` when it ends.
fn pending(operation: Operation) -> Option<(PendingOperation, &'static str)> {
    match operation {
        Operation::Hold => Some((PendingOperation::Hold, "held")),
        Operation::Delete => Some((PendingOperation::Delete, "deleted")),
        Operation::Bounce => Some((PendingOperation::Bounce, "bounced")),
        Operation::Retry | Operation::Release => None,
    }
}

/// Why `operation` does not apply to a message in `state`, if so.
fn refusal(operation: Operation, state: State) -> Option<&'static str> {
    match (operation, state) {
        (_, State::Active) => Some("delivery in progress"),
        (Operation::Retry, State::Held) => Some("held (release it instead)"),
        (Operation::Retry, State::Ready) => Some("already due"),
        (Operation::Hold, State::Held) => Some("already held"),
        (Operation::Release, State::Ready | State::Deferred) => Some("not held"),
        _ => None,
    }
}

/// Applies `operation` to each of `ids` in turn.
pub async fn run(handle: &QueueHandle, operation: Operation, ids: Vec<QueueId>) -> OperationReport {
    let mut report = OperationReport::default();
    for id in ids {
        match apply(handle, operation, id).await {
            Ok(()) => report.done.push(id.to_string()),
            Err(Outcome::NotFound) => report.not_found.push(id.to_string()),
            Err(Outcome::Pending(reason)) => report.pending.push(Skipped {
                id: id.to_string(),
                reason,
            }),
            Err(Outcome::Skipped(reason)) => report.skipped.push(Skipped {
                id: id.to_string(),
                reason,
            }),
        }
    }
    report
}

enum Outcome {
    NotFound,
    Skipped(String),
    /// Left with the pass in flight, which applies it when it ends.
    Pending(String),
}

async fn apply(handle: &QueueHandle, operation: Operation, id: QueueId) -> Result<(), Outcome> {
    let queue = &handle.queue;
    for _ in 0..BUSY_TRIES {
        let entry = queue.get(id).ok_or(Outcome::NotFound)?;
        if entry.state() == State::Active {
            let Some((pending, word)) = pending(operation) else {
                return Err(Outcome::Skipped("delivery in progress".to_owned()));
            };
            if queue.add_pending(id, pending) {
                tracing::info!(queue_id = %id, "{id}: to be {word} when the delivery in progress ends");
                return Err(Outcome::Pending(format!(
                    "delivery in progress; {word} when it ends"
                )));
            }
            tokio::time::sleep(BUSY_WAIT).await;
            continue;
        }
        if let Some(reason) = refusal(operation, entry.state()) {
            return Err(Outcome::Skipped(reason.to_owned()));
        }
        let entry = match queue.claim(id) {
            Ok(entry) => entry,
            Err(ClaimError::NotFound) => return Err(Outcome::NotFound),
            // A pass started since the look: look again.
            Err(ClaimError::InProgress) => continue,
        };
        // The state may have changed between the look and the claim.
        if let Some(reason) = refusal(operation, entry.state()) {
            queue.unclaim(id, entry);
            return Err(Outcome::Skipped(reason.to_owned()));
        }
        let result = commit(handle, operation, id, &entry).await;
        if result.is_err() {
            queue.unclaim(id, entry);
        }
        // Another operator asked for the message while this one held it.
        if let Some(pending) = queue.drop_pending(id) {
            let later = Operation::from(pending);
            if let Err(Outcome::Skipped(reason)) = Box::pin(apply(handle, later, id)).await {
                tracing::info!(queue_id = %id, "{id}: {later:?} requested meanwhile was skipped: {reason}");
            }
        }
        return result;
    }
    Err(Outcome::Skipped("delivery in progress".to_owned()))
}

/// Builds and applies the operation's transition on a claimed message; on
/// `Err` nothing was stored.
async fn commit(
    handle: &QueueHandle,
    operation: Operation,
    id: QueueId,
    _entry: &Entry,
) -> Result<(), Outcome> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        tracing::error!(queue_id = %id, "{id}: cannot {what}: {error}");
        Outcome::Skipped(format!("cannot {what}: {error}"))
    };
    let envelope = match handle.envelope(id).await {
        Ok(Some(envelope)) => envelope,
        Ok(None) => {
            handle.queue.remove(id);
            return Err(Outcome::NotFound);
        }
        Err(error @ (LoadError::Unreadable(_) | LoadError::Undecodable(_))) => {
            return Err(failed("read the envelope", &error));
        }
    };
    let transition = transition::operator(id, envelope, operation, SystemTime::now());
    handle.apply(&transition).await.map_err(|error| {
        let what = match operation {
            Operation::Delete => "remove the message",
            Operation::Bounce => "bounce",
            _ => "update the envelope",
        };
        failed(what, &error)
    })
}
