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

use relayq_spool::{QueueId, SpoolError};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::select::Filter;
use super::view::{OperationCounts, OperationReport, Skipped};
use crate::queue::handle::LoadError;
use crate::queue::operations::ClaimError;
use crate::queue::transition::{self, Operation, Transition};
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
pub async fn run(handle: &Context, operation: Operation, ids: Vec<QueueId>) -> OperationReport {
    let mut report = OperationReport::default();
    for id in ids {
        let result = apply(handle, operation, id).await;
        record(&mut report, id, result, true);
    }
    report
}

/// Adds one message's result to `report` (its id only when `ids`).
fn record(report: &mut OperationReport, id: QueueId, result: Result<(), Outcome>, ids: bool) {
    let counts = &mut report.counts;
    match result {
        Ok(()) => {
            counts.done += 1;
            if ids {
                report.done.push(id.to_string());
            }
        }
        Err(Outcome::NotFound) => {
            counts.not_found += 1;
            if ids {
                report.not_found.push(id.to_string());
            }
        }
        Err(Outcome::Pending(reason)) => {
            counts.pending += 1;
            if ids {
                report.pending.push(Skipped {
                    id: id.to_string(),
                    reason,
                });
            }
        }
        Err(Outcome::Skipped(reason)) => {
            counts.skipped += 1;
            if ids {
                report.skipped.push(Skipped {
                    id: id.to_string(),
                    reason,
                });
            }
        }
    }
}

/// An operation on every message a filter selects (`queue delete --all`,
/// `queue hold --domain D --older-than 1d`, …).
#[derive(Debug, Clone)]
pub struct Bulk {
    pub operation: Operation,
    pub filter: Filter,
    /// List the ids in the report, not only the counts.
    pub report_ids: bool,
}

/// Whether a bulk `operation` is meant for a message in `state`: a bulk
/// retry means the deferred messages, a bulk release the held ones;
/// reporting every other one as skipped would only be noise.
fn selects(operation: Operation, state: State) -> bool {
    match operation {
        Operation::Retry => state == State::Deferred,
        Operation::Release => state == State::Held,
        Operation::Hold => state != State::Held,
        Operation::Delete | Operation::Bounce => true,
    }
}

/// Runs a bulk operation in chunks of `chunk` messages: each chunk's
/// messages are claimed, changed in one spool commit (with the DSNs of a
/// bounce), then the schedule, events and metrics follow. `progress` is
/// updated after each chunk. At `shutdown` it stops between two chunks:
/// what was done is committed, the rest stays queued as it was.
pub async fn run_bulk(
    handle: &Context,
    bulk: &Bulk,
    chunk: usize,
    shutdown: &CancellationToken,
    progress: &watch::Sender<OperationCounts>,
) -> OperationReport {
    let chunk = chunk.max(1);
    let mut report = OperationReport::default();
    let matcher_time = SystemTime::now();
    let matcher = bulk.filter.at(matcher_time);
    // Only messages queued before the operation: not the DSNs a bulk bounce
    // queues as it goes, nor mail arriving meanwhile.
    let Some(until) = handle.queue.last_id() else {
        return report;
    };
    let mut after = None;
    loop {
        if shutdown.is_cancelled() {
            report.interrupted = true;
            break;
        }
        let mut candidates = Vec::with_capacity(chunk);
        let mut last = after;
        let mut more = false;
        handle.queue.visit(after, |id, entry, domains| {
            if id > until {
                more = false;
                return false;
            }
            last = Some(id);
            if selects(bulk.operation, entry.state()) && matcher.matches(entry, domains) {
                candidates.push(id);
            }
            more = candidates.len() >= chunk;
            !more
        });
        after = last;
        if !candidates.is_empty() {
            let stop = run_chunk(handle, bulk, candidates, &mut report).await;
            progress.send_replace(report.counts);
            if stop {
                break;
            }
        }
        if !more {
            break;
        }
    }
    if report.interrupted {
        tracing::info!(
            "bulk {:?} stopped by shutdown after {} messages; the rest stays queued",
            bulk.operation,
            report.counts.done
        );
    }
    report
}

/// One chunk of a bulk operation; true when the operation must stop (the
/// spool refused the commit).
async fn run_chunk(
    handle: &Context,
    bulk: &Bulk,
    candidates: Vec<QueueId>,
    report: &mut OperationReport,
) -> bool {
    let operation = bulk.operation;
    let queue = &handle.queue;
    let mut claimed: Vec<(QueueId, Entry)> = Vec::with_capacity(candidates.len());
    for id in candidates {
        let Some(entry) = queue.get(id) else {
            record(report, id, Err(Outcome::NotFound), bulk.report_ids);
            continue;
        };
        let outcome = if entry.state() == State::Active {
            Some(leave_with_pass(handle, operation, id))
        } else if let Some(reason) = refusal(operation, entry.state()) {
            Some(Err(Outcome::Skipped(reason.to_owned())))
        } else {
            match queue.claim(id) {
                Ok(entry) => {
                    claimed.push((id, entry));
                    None
                }
                Err(ClaimError::NotFound) => Some(Err(Outcome::NotFound)),
                Err(ClaimError::InProgress) => Some(leave_with_pass(handle, operation, id)),
            }
        };
        if let Some(outcome) = outcome {
            record(report, id, outcome, bulk.report_ids);
        }
    }
    if claimed.is_empty() {
        return false;
    }
    let now = SystemTime::now();
    let mut transitions: Vec<Transition> = Vec::with_capacity(claimed.len());
    let mut applied: Vec<(QueueId, Entry)> = Vec::with_capacity(claimed.len());
    if operation == Operation::Delete && !handle.webhooks.wants(crate::webhook::EventType::Deleted)
    {
        // A delete changes nothing in the envelope and reports on none of its
        // recipients: it is not read (unless a webhook takes `deleted`
        // events, which name the recipients).
        for (id, entry) in claimed {
            transitions.push(transition::deleted(id, entry.lane, entry.arrival_ms, now));
            applied.push((id, entry));
        }
    } else {
        let envelopes = match read_envelopes(handle, &claimed).await {
            Ok(envelopes) => envelopes,
            Err(error) => {
                tracing::error!("bulk {operation:?}: cannot read envelopes: {error}");
                for (id, entry) in claimed {
                    queue.unclaim(id, entry);
                    let reason = format!("cannot read the envelope: {error}");
                    record(report, id, Err(Outcome::Skipped(reason)), bulk.report_ids);
                }
                return true;
            }
        };
        for ((id, entry), bytes) in claimed.into_iter().zip(envelopes) {
            match bytes.map(|bytes| crate::queue::Envelope::decode(&bytes)) {
                Some(Ok(envelope)) => {
                    transitions.push(transition::operator(id, envelope, operation, now));
                    applied.push((id, entry));
                }
                Some(Err(error)) => {
                    queue.unclaim(id, entry);
                    let reason = format!("cannot read the envelope: {error}");
                    record(report, id, Err(Outcome::Skipped(reason)), bulk.report_ids);
                }
                None => {
                    queue.remove(id);
                    record(report, id, Err(Outcome::NotFound), bulk.report_ids);
                }
            }
        }
    }
    let mut stop = false;
    let mut done = Vec::with_capacity(applied.len());
    if let Err(error) = handle.apply_all(&transitions).await {
        // One message the spool refuses fails the whole commit: go on one
        // at a time, so it fails alone.
        tracing::warn!(
            "bulk {operation:?}: a chunk of {} failed to commit ({error}); committing it one message at a time",
            applied.len()
        );
        for ((id, entry), transition) in applied.into_iter().zip(&transitions) {
            match handle.apply(transition).await {
                Ok(()) => done.push(id),
                Err(SpoolError::NotFound(_)) => {
                    queue.remove(id);
                    record(report, id, Err(Outcome::NotFound), bulk.report_ids);
                }
                Err(error) => {
                    queue.unclaim(id, entry);
                    let reason = format!("cannot commit: {error}");
                    record(report, id, Err(Outcome::Skipped(reason)), bulk.report_ids);
                    stop = true;
                }
            }
        }
    } else {
        done.extend(applied.into_iter().map(|(id, _)| id));
    }
    for id in done {
        record(report, id, Ok(()), bulk.report_ids);
        // Another operator asked for the message while this chunk held it.
        if let Some(pending) = queue.drop_pending(id) {
            let later = Operation::from(pending);
            if let Err(Outcome::Skipped(reason)) = apply(handle, later, id).await {
                tracing::info!(queue_id = %id, "{id}: {later:?} requested meanwhile was skipped: {reason}");
            }
        }
    }
    stop
}

/// The stored envelopes of `claimed`, in one read transaction on the
/// blocking pool.
async fn read_envelopes(
    handle: &Context,
    claimed: &[(QueueId, Entry)],
) -> Result<Vec<Option<Vec<u8>>>, String> {
    let ids: Vec<QueueId> = claimed.iter().map(|(id, _)| *id).collect();
    let spool = handle.spool.clone();
    match tokio::task::spawn_blocking(move || spool.envelopes(&ids)).await {
        Ok(Ok(envelopes)) => Ok(envelopes),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// For a message whose delivery pass is in flight: leaves a hold, delete
/// or bounce with the pass; anything else is skipped.
fn leave_with_pass(handle: &Context, operation: Operation, id: QueueId) -> Result<(), Outcome> {
    let Some((pending, word)) = pending(operation) else {
        return Err(Outcome::Skipped("delivery in progress".to_owned()));
    };
    if handle.queue.add_pending(id, pending) {
        Err(Outcome::Pending(format!(
            "delivery in progress; {word} when it ends"
        )))
    } else {
        Err(Outcome::Skipped("delivery in progress".to_owned()))
    }
}

enum Outcome {
    NotFound,
    Skipped(String),
    /// Left with the pass in flight, which applies it when it ends.
    Pending(String),
}

async fn apply(handle: &Context, operation: Operation, id: QueueId) -> Result<(), Outcome> {
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
    handle: &Context,
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
