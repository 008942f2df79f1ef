//! Operator operations on queued messages: retry, hold, release, delete and
//! bounce. Each claims the message from the schedule first
//! (`Queue::claim`), so it never races a delivery pass. Hold, delete and
//! bounce of a message whose pass is in flight are left with the pass,
//! which applies them in the commit that records its results (as Postfix's
//! queue manager does once a delivery agent is done); retry and release do
//! not apply to it. Each change is one spool commit; the schedule follows
//! only once it is stored.

use std::time::{Duration, SystemTime};

use relayq_spool::{Change, QueueId};

use super::view::{OperationReport, Skipped};
use crate::delivery::client::RemoteReply;
use crate::delivery::engine::DeliveryContext;
use crate::delivery::report::{self, Note, NoteKind};
use crate::events::{Event, EventKind};
use crate::queue::envelope::RecipientStatus;
use crate::queue::operations::ClaimError;
use crate::queue::{Entry, Envelope, Lane, PendingOperation, State};

/// The enhanced status and text of an administrator's bounce.
const BOUNCE_STATUS: &str = "5.0.0";
const BOUNCE_TEXT: &str = "bounced by administrator";

/// The log words of the other operations.
const RETRIED: &str = "retry requested by administrator";
const RELEASED: &str = "released by administrator";
pub const HELD: &str = "held by administrator";
pub const DELETED: &str = "deleted by administrator (no bounce)";

/// While a pass records its results (one commit) an operation can neither
/// claim the message nor be left with the pass: it asks again this often,
/// at most `BUSY_TRIES` times.
const BUSY_WAIT: Duration = Duration::from_millis(20);
const BUSY_TRIES: usize = 250;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Retry,
    Hold,
    Release,
    Delete,
    Bounce,
}

impl From<PendingOperation> for Operation {
    fn from(pending: PendingOperation) -> Operation {
        match pending {
            PendingOperation::Hold => Operation::Hold,
            PendingOperation::Delete => Operation::Delete,
            PendingOperation::Bounce => Operation::Bounce,
        }
    }
}

impl Operation {
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

    /// What a pass in flight does with this operation when it ends.
    fn pending(self) -> Option<(PendingOperation, &'static str)> {
        match self {
            Operation::Hold => Some((PendingOperation::Hold, "held")),
            Operation::Delete => Some((PendingOperation::Delete, "deleted")),
            Operation::Bounce => Some((PendingOperation::Bounce, "bounced")),
            Operation::Retry | Operation::Release => None,
        }
    }

    /// Why this operation does not apply to a message in `state`, if so.
    fn refusal(self, state: State) -> Option<&'static str> {
        match (self, state) {
            (_, State::Active) => Some("delivery in progress"),
            (Operation::Retry, State::Held) => Some("held (release it instead)"),
            (Operation::Retry, State::Ready) => Some("already due"),
            (Operation::Hold, State::Held) => Some("already held"),
            (Operation::Release, State::Ready | State::Deferred) => Some("not held"),
            _ => None,
        }
    }
}

/// Applies `operation` to each of `ids` in turn.
pub async fn run(
    context: &DeliveryContext,
    operation: Operation,
    ids: Vec<QueueId>,
) -> OperationReport {
    let mut report = OperationReport::default();
    for id in ids {
        match apply(context, operation, id).await {
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

async fn apply(
    context: &DeliveryContext,
    operation: Operation,
    id: QueueId,
) -> Result<(), Outcome> {
    let queue = &context.queue;
    for _ in 0..BUSY_TRIES {
        let entry = queue.get(id).ok_or(Outcome::NotFound)?;
        if entry.state() == State::Active {
            let Some((pending, word)) = operation.pending() else {
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
        if let Some(reason) = operation.refusal(entry.state()) {
            return Err(Outcome::Skipped(reason.to_owned()));
        }
        let entry = match queue.claim(id) {
            Ok(entry) => entry,
            Err(ClaimError::NotFound) => return Err(Outcome::NotFound),
            // A pass started since the look: look again.
            Err(ClaimError::InProgress) => continue,
        };
        // The state may have changed between the look and the claim.
        if let Some(reason) = operation.refusal(entry.state()) {
            queue.unclaim(id, entry);
            return Err(Outcome::Skipped(reason.to_owned()));
        }
        let result = commit(context, operation, id, &entry).await;
        if result.is_err() {
            queue.unclaim(id, entry);
        }
        // Another operator asked for the message while this one held it.
        if let Some(pending) = queue.drop_pending(id) {
            let later = Operation::from(pending);
            if let Err(Outcome::Skipped(reason)) = Box::pin(apply(context, later, id)).await {
                tracing::info!(queue_id = %id, "{id}: {later:?} requested meanwhile was skipped: {reason}");
            }
        }
        return result;
    }
    Err(Outcome::Skipped("delivery in progress".to_owned()))
}

/// Logs and publishes an administrator's bounce of one recipient.
pub fn announce_bounce(
    context: &DeliveryContext,
    id: QueueId,
    lane: Lane,
    address: String,
    delay: f64,
) {
    tracing::info!(
        queue_id = %id,
        "{id}: to=<{address}>, delay={delay:.1}, dsn={BOUNCE_STATUS}, status=bounced ({BOUNCE_TEXT})"
    );
    let mut event = Event::new(EventKind::Bounced, id, lane);
    event.recipient = Some(address);
    event.status = Some(BOUNCE_STATUS.to_owned());
    event.reply = Some(BOUNCE_TEXT.to_owned());
    event.delay = Some(delay);
    context.events.publish(event);
}

/// Does the work for a claimed message; on `Err` nothing was stored.
async fn commit(
    context: &DeliveryContext,
    operation: Operation,
    id: QueueId,
    entry: &Entry,
) -> Result<(), Outcome> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        tracing::error!(queue_id = %id, "{id}: cannot {what}: {error}");
        Outcome::Skipped(format!("cannot {what}: {error}"))
    };
    let mut envelope = match context.spool.envelope(id) {
        Ok(Some(bytes)) => Envelope::decode(&bytes).map_err(|e| failed("read the envelope", &e))?,
        Ok(None) => {
            context.queue.remove(id);
            return Err(Outcome::NotFound);
        }
        Err(error) => return Err(failed("read the envelope", &error)),
    };
    let lane = entry.lane;
    let now = SystemTime::now();
    let (kind, word) = match operation {
        Operation::Retry => (EventKind::Retried, RETRIED),
        Operation::Release => (EventKind::Released, RELEASED),
        Operation::Hold => (EventKind::Held, HELD),
        Operation::Delete => {
            context
                .spool
                .remove(id)
                .await
                .map_err(|e| failed("remove the message", &e))?;
            context.queue.remove(id);
            announce(context, id, lane, EventKind::Deleted, DELETED);
            return Ok(());
        }
        Operation::Bounce => return bounce(context, id, envelope).await,
    };
    if operation == Operation::Hold {
        envelope.hold(now);
    } else {
        envelope.release(now);
        envelope.next_attempt_ms = None;
    }
    context
        .spool
        .update_envelope(id, envelope.encode())
        .await
        .map_err(|e| failed("update the envelope", &e))?;
    context.queue.insert(id, &envelope);
    announce(context, id, lane, kind, word);
    Ok(())
}

/// Logs what the administrator did to message `id` (once it is committed)
/// and tells `queue tail`.
pub fn announce(context: &DeliveryContext, id: QueueId, lane: Lane, kind: EventKind, word: &str) {
    tracing::info!(queue_id = %id, "{id}: {word}");
    context.events.publish(Event::new(kind, id, lane));
}

/// Marks every open recipient of `envelope` bounced by the administrator,
/// with a note for its DSN; returns their addresses, to announce once the
/// change is committed ([`announce_bounce`]).
pub fn bounce_open_recipients(envelope: &mut Envelope, notes: &mut Vec<Note>) -> Vec<String> {
    let reply = RemoteReply::local(BOUNCE_STATUS, BOUNCE_TEXT);
    let mut bounced = Vec::new();
    for (index, recipient) in envelope.recipients.iter_mut().enumerate() {
        if recipient.status.is_final() {
            continue;
        }
        recipient.status = RecipientStatus::Bounced;
        recipient.last_reply = Some(reply.to_string());
        notes.push(Note::new(index, NoteKind::Failed, reply.clone(), None));
        bounced.push(recipient.address.clone());
    }
    bounced
}

/// Gives up on every open recipient: one DSN, committed with the removal.
async fn bounce(
    context: &DeliveryContext,
    id: QueueId,
    mut envelope: Envelope,
) -> Result<(), Outcome> {
    let now = SystemTime::now();
    let mut notes = Vec::new();
    let bounced = bounce_open_recipients(&mut envelope, &mut notes);
    let reports = report::build(context, id, &envelope, &notes, now);
    let mut changes = vec![Change::Remove { id }];
    let queued_reports = report::insertions(reports, &mut changes);
    if let Err(error) = context.spool.apply(changes).await {
        tracing::error!(queue_id = %id, "{id}: cannot bounce: {error}");
        return Err(Outcome::Skipped(format!("cannot bounce: {error}")));
    }
    let delay = now
        .duration_since(envelope.arrival())
        .unwrap_or_default()
        .as_secs_f64();
    for address in bounced {
        announce_bounce(context, id, envelope.lane, address, delay);
    }
    report::queue(context, id, &queued_reports);
    context.removed(id, envelope.lane);
    Ok(())
}
