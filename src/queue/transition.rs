//! Every change of a queued message's state, as a value: what a delivery
//! pass found out, expiry, the delay warning, and an operator's retry,
//! hold, release, delete or bounce. The functions here build a
//! [`Transition`] and are pure (no I/O, no clock, no randomness: the caller
//! passes `now` and the jitter), so they are unit-tested as they are;
//! [`super::handle::QueueHandle::apply`] is the one place that carries a
//! transition out.
//!
//! Invariant: every state change of a queued message is a `Transition`
//! applied by `QueueHandle::apply`.

use std::time::{Duration, SystemTime};

use relayq_spool::QueueId;

use super::envelope::{Notify, RecipientStatus, unix_ms};
use super::retry::RetryPolicy;
use super::{Envelope, Lane, PendingOperation};
use crate::bounce::{BounceClass, Classifier};
use crate::events::EventKind;
use crate::outcome::{Protection, RemoteReply, Target};

/// The enhanced status and text of an operator's bounce.
pub const OPERATOR_BOUNCE_STATUS: &str = "5.0.0";
pub const OPERATOR_BOUNCE_TEXT: &str = "bounced by administrator";

/// What the spool stores for a transition: all of it in one commit, with
/// the DSNs the transition implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Replace the envelope with the transition's.
    Update,
    /// Mark these recipients delivered in the envelope as stored, whatever
    /// else it holds: an early commit in a delivery pass. Applying it twice,
    /// or after a later early commit, changes nothing more (idempotent, so
    /// the order in which two jobs' commits land does not matter).
    MarkDelivered(Vec<usize>),
    /// Remove the message (every recipient is final, or an operator deleted
    /// or bounced it).
    Remove,
}

/// How a recipient's change came about, which decides its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A delivery attempt: the server that answered, if one did.
    Attempt {
        relay: Option<Target>,
        protection: Protection,
    },
    /// `retry.max_age` passed; `age` since arrival.
    Expired { age: Duration },
    /// An operator's bounce.
    Operator,
}

/// One recipient's change, announced (log line, event, metric) once the
/// transition is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientChange {
    pub address: String,
    /// `Delivered`, `Deferred`, `Bounced` or `Expired`.
    pub kind: EventKind,
    pub reply: RemoteReply,
    /// Why it failed: set for `Deferred`, `Bounced` (`admin` for an
    /// operator's bounce) and `Expired` (always `expired`); `None` for
    /// `Delivered`.
    pub class: Option<BounceClass>,
    pub cause: Cause,
    /// From arrival to this change.
    pub delay: Duration,
}

/// Which DSN a reported recipient goes into (RFC 3464 `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Bounced or expired: `Action: failed`.
    Failed,
    /// Still being retried after `retry.delay_warning`: `Action: delayed`.
    Delayed,
    /// Delivered to a next hop without DSN support: `Action: relayed`.
    Relayed,
}

impl NoteKind {
    pub const ALL: [NoteKind; 3] = [NoteKind::Failed, NoteKind::Delayed, NoteKind::Relayed];
}

/// A recipient that may need reporting to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Index into the envelope's recipients.
    pub index: usize,
    pub kind: NoteKind,
    pub reply: RemoteReply,
    /// The class of the failure reported (the DSN's `X-Relayq-Class:`);
    /// `None` for a relayed recipient.
    pub class: Option<BounceClass>,
    pub relay: Option<Target>,
    pub at: SystemTime,
}

/// An operator's action on the message as a whole, announced after the
/// commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    Retried,
    Held,
    Released,
    Deleted,
}

impl OperatorAction {
    pub fn event(self) -> EventKind {
        match self {
            OperatorAction::Retried => EventKind::Retried,
            OperatorAction::Held => EventKind::Held,
            OperatorAction::Released => EventKind::Released,
            OperatorAction::Deleted => EventKind::Deleted,
        }
    }

    /// The log words: `ID: held by administrator`.
    pub fn words(self) -> &'static str {
        match self {
            OperatorAction::Retried => "retry requested by administrator",
            OperatorAction::Held => "held by administrator",
            OperatorAction::Released => "released by administrator",
            OperatorAction::Deleted => "deleted by administrator (no bounce)",
        }
    }
}

/// An operator operation on a claimed message, or one left with a pass.
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

/// One change of one queued message.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub id: QueueId,
    pub lane: Lane,
    /// The envelope after the change.
    pub envelope: Envelope,
    pub record: Record,
    pub recipients: Vec<RecipientChange>,
    /// Recipients to report; which of them a DSN goes out for (NOTIFY, the
    /// null sender) is [`reported`]'s decision.
    pub notes: Vec<Note>,
    /// The recipients still open when this transition passed the delay
    /// warning point (`retry.delay_warning`), whatever their NOTIFY: the
    /// `delayed` events (a DSN only goes to those with NOTIFY=DELAY, in
    /// `notes`).
    pub delayed: Vec<usize>,
    pub operator: Option<OperatorAction>,
    pub now: SystemTime,
}

/// What one delivery attempt found for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// Index into the envelope's recipients.
    pub index: usize,
    pub outcome: Outcome,
    pub reply: RemoteReply,
    /// The server that answered, if one did.
    pub relay: Option<Target>,
    /// The next hop offered DSN (so it handles NOTIFY=SUCCESS itself).
    pub next_hop_offers_dsn: bool,
    /// TLS and policy of the attempt (none when no session was opened).
    pub protection: Protection,
}

/// A recipient's outcome in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Deferred,
    Bounced,
    /// Not attempted: its destination held it back (no rate token yet, a
    /// lowered connection limit, a suspension) until `until`. Deferred
    /// without counting an attempt or growing the backoff, and without a
    /// log line or event of its own (the destination's throttle metric and
    /// the recipient's last reply say why).
    Waiting {
        until: SystemTime,
    },
}

/// What a delivery pass has found so far: the envelope as the pass sees it,
/// the changes to announce and the recipients to report.
#[derive(Debug, Clone, PartialEq)]
pub struct PassResults {
    pub envelope: Envelope,
    pub recipients: Vec<RecipientChange>,
    pub notes: Vec<Note>,
    /// Some recipient was attempted: the pass counts as an attempt.
    pub attempted: bool,
    /// The earliest end of a wait among recipients held back.
    pub wait_until: Option<SystemTime>,
}

impl PassResults {
    pub fn new(envelope: Envelope) -> PassResults {
        PassResults {
            envelope,
            recipients: Vec::new(),
            notes: Vec::new(),
            attempted: false,
            wait_until: None,
        }
    }

    /// Records one job's results (`delay`: from arrival to the pass's
    /// start; `now`: when the job ended), each failure with its class by
    /// `classifier`. Returns the indices delivered.
    pub fn record(
        &mut self,
        results: Vec<RecipientResult>,
        delay: Duration,
        now: SystemTime,
        classifier: &Classifier,
    ) -> Vec<usize> {
        let mut delivered = Vec::new();
        for result in results {
            let Some(recipient) = self.envelope.recipients.get_mut(result.index) else {
                continue;
            };
            let (status, kind) = match result.outcome {
                Outcome::Delivered => (RecipientStatus::Delivered, EventKind::Delivered),
                Outcome::Bounced => (RecipientStatus::Bounced, EventKind::Bounced),
                Outcome::Deferred => (RecipientStatus::Deferred, EventKind::Deferred),
                Outcome::Waiting { until } => {
                    recipient.status = RecipientStatus::Deferred;
                    recipient.last_reply = Some(result.reply.to_string());
                    recipient.class = Some(classifier.classify(&result.reply));
                    self.wait_until = Some(self.wait_until.map_or(until, |at| at.min(until)));
                    continue;
                }
            };
            self.attempted = true;
            let class = (kind != EventKind::Delivered).then(|| classifier.classify(&result.reply));
            recipient.status = status;
            recipient.last_reply = Some(result.reply.to_string());
            recipient.class = class;
            let note = match result.outcome {
                Outcome::Delivered => {
                    delivered.push(result.index);
                    (recipient.notify.success && !result.next_hop_offers_dsn)
                        .then_some(NoteKind::Relayed)
                }
                Outcome::Bounced => Some(NoteKind::Failed),
                Outcome::Deferred | Outcome::Waiting { .. } => None,
            };
            if let Some(kind) = note {
                self.notes.push(Note {
                    index: result.index,
                    kind,
                    reply: result.reply.clone(),
                    class,
                    relay: result.relay.clone(),
                    at: now,
                });
            }
            self.recipients.push(RecipientChange {
                address: recipient.address.clone(),
                kind,
                reply: result.reply,
                class,
                cause: Cause::Attempt {
                    relay: result.relay,
                    protection: result.protection,
                },
                delay,
            });
        }
        delivered
    }

    /// The early commit of recipients delivered before the pass ends, so a
    /// crash before then does not send them again. Takes their
    /// announcements out of the pass.
    pub fn delivered_early(
        &mut self,
        id: QueueId,
        delivered: Vec<usize>,
        now: SystemTime,
    ) -> Transition {
        let addresses: Vec<&str> = delivered
            .iter()
            .filter_map(|&index| self.envelope.recipients.get(index))
            .map(|recipient| recipient.address.as_str())
            .collect();
        let (announced, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.recipients)
            .into_iter()
            .partition(|change| {
                change.kind == EventKind::Delivered && addresses.contains(&change.address.as_str())
            });
        self.recipients = kept;
        Transition {
            id,
            lane: self.envelope.lane,
            envelope: self.envelope.clone(),
            record: Record::MarkDelivered(delivered),
            recipients: announced,
            notes: Vec::new(),
            delayed: Vec::new(),
            operator: None,
            now,
        }
    }

    /// The end of the pass: one more attempt, expiry or the delay warning,
    /// an operator's operation left with the pass, then the removal or the
    /// next attempt (`jitter` in 0..1, see [`RetryPolicy::delay`]).
    ///
    /// A pass in which every open recipient was held back by its
    /// destination ([`Outcome::Waiting`]) is no attempt: the count stays,
    /// and the next attempt is the end of the wait, not a backoff. A pass
    /// with both comes back at the earlier of the two.
    pub fn finish(
        self,
        id: QueueId,
        pending: Option<Operation>,
        policy: &RetryPolicy,
        now: SystemTime,
        jitter: f64,
    ) -> Transition {
        let PassResults {
            mut envelope,
            mut recipients,
            mut notes,
            attempted,
            wait_until,
        } = self;
        let counts_as_attempt = attempted || wait_until.is_none();
        if counts_as_attempt {
            envelope.attempts += 1;
        }
        let age = now.duration_since(envelope.arrival()).unwrap_or_default();
        // Time on hold counts neither toward expiry nor the delay warning.
        let counted_age = envelope.queued_age(now);
        let open = open_recipients(&envelope);
        let mut delayed = Vec::new();
        if !open.is_empty() && policy.is_expired(counted_age) {
            for &index in &open {
                let recipient = &mut envelope.recipients[index];
                let last = recipient
                    .last_reply
                    .clone()
                    .unwrap_or_else(|| "no attempt succeeded".to_owned());
                recipient.status = RecipientStatus::Bounced;
                recipient.class = Some(BounceClass::Expired);
                recipients.push(RecipientChange {
                    address: recipient.address.clone(),
                    kind: EventKind::Expired,
                    reply: RemoteReply::local("4.4.7", last.clone()),
                    class: Some(BounceClass::Expired),
                    cause: Cause::Expired { age },
                    delay: age,
                });
                notes.push(Note {
                    index,
                    kind: NoteKind::Failed,
                    reply: RemoteReply::local(
                        "4.4.7",
                        format!("delivery time expired; last reply: {last}"),
                    ),
                    class: Some(BounceClass::Expired),
                    relay: None,
                    at: now,
                });
            }
        } else if !open.is_empty()
            && let Some(warning) = policy.delay_warning
            && counted_age >= warning
            && !envelope.delay_warned
        {
            delayed = open.clone();
            for &index in &open {
                let recipient = &envelope.recipients[index];
                if recipient.notify.delay {
                    notes.push(Note {
                        index,
                        kind: NoteKind::Delayed,
                        reply: RemoteReply::local(
                            "4.4.7",
                            recipient.last_reply.clone().unwrap_or_default(),
                        ),
                        // Still being retried: the class of the last try.
                        class: recipient.class,
                        relay: None,
                        at: now,
                    });
                }
            }
            envelope.delay_warned = true;
        }

        let mut operator = None;
        let mut removed = false;
        match pending {
            Some(Operation::Bounce) => {
                recipients.extend(bounce_open_recipients(&mut envelope, &mut notes, now));
            }
            Some(Operation::Hold) => {
                envelope.hold(now);
                operator = Some(OperatorAction::Held);
            }
            Some(Operation::Delete) => {
                removed = true;
                operator = Some(OperatorAction::Deleted);
            }
            Some(Operation::Retry | Operation::Release) | None => {}
        }
        let record = if removed || envelope.is_complete() {
            Record::Remove
        } else {
            let backoff = counts_as_attempt.then(|| now + policy.delay(envelope.attempts, jitter));
            let next = match (backoff, wait_until) {
                (Some(backoff), Some(wait)) => backoff.min(wait),
                (Some(backoff), None) => backoff,
                (None, Some(wait)) => wait,
                (None, None) => now,
            };
            envelope.next_attempt_ms = Some(unix_ms(next));
            Record::Update
        };
        Transition {
            id,
            lane: envelope.lane,
            envelope,
            record,
            recipients,
            notes,
            delayed,
            operator,
            now,
        }
    }
}

/// A message found with every recipient final (a crash after the commit
/// that recorded them, before the removal): it leaves the spool.
pub fn complete(id: QueueId, envelope: Envelope, now: SystemTime) -> Transition {
    Transition {
        id,
        lane: envelope.lane,
        envelope,
        record: Record::Remove,
        recipients: Vec::new(),
        notes: Vec::new(),
        delayed: Vec::new(),
        operator: None,
        now,
    }
}

/// An operator's delete of a claimed message whose envelope was not read
/// (a bulk delete): nothing in it changes and no recipient is reported, so
/// the message's lane and arrival (for the announcement) are all it needs.
pub fn deleted(id: QueueId, lane: Lane, arrival_ms: u64, now: SystemTime) -> Transition {
    let arrival = SystemTime::UNIX_EPOCH + Duration::from_millis(arrival_ms);
    Transition {
        id,
        lane,
        envelope: Envelope::new(String::new(), Vec::new(), lane, arrival, 0),
        record: Record::Remove,
        recipients: Vec::new(),
        notes: Vec::new(),
        delayed: Vec::new(),
        operator: Some(OperatorAction::Deleted),
        now,
    }
}

/// An operator's operation on a message it has claimed (not in a pass).
pub fn operator(
    id: QueueId,
    mut envelope: Envelope,
    operation: Operation,
    now: SystemTime,
) -> Transition {
    let mut recipients = Vec::new();
    let mut notes = Vec::new();
    let (record, action) = match operation {
        Operation::Retry => {
            envelope.release(now);
            envelope.next_attempt_ms = None;
            (Record::Update, Some(OperatorAction::Retried))
        }
        Operation::Release => {
            envelope.release(now);
            envelope.next_attempt_ms = None;
            (Record::Update, Some(OperatorAction::Released))
        }
        Operation::Hold => {
            envelope.hold(now);
            (Record::Update, Some(OperatorAction::Held))
        }
        Operation::Delete => (Record::Remove, Some(OperatorAction::Deleted)),
        Operation::Bounce => {
            recipients = bounce_open_recipients(&mut envelope, &mut notes, now);
            (Record::Remove, None)
        }
    };
    Transition {
        id,
        lane: envelope.lane,
        envelope,
        record,
        recipients,
        notes,
        delayed: Vec::new(),
        operator: action,
        now,
    }
}

/// Marks every open recipient bounced by the operator, with a note for its
/// DSN; returns the changes to announce.
fn bounce_open_recipients(
    envelope: &mut Envelope,
    notes: &mut Vec<Note>,
    now: SystemTime,
) -> Vec<RecipientChange> {
    let reply = RemoteReply::local(OPERATOR_BOUNCE_STATUS, OPERATOR_BOUNCE_TEXT);
    let delay = now.duration_since(envelope.arrival()).unwrap_or_default();
    let mut changes = Vec::new();
    for (index, recipient) in envelope.recipients.iter_mut().enumerate() {
        if recipient.status.is_final() {
            continue;
        }
        recipient.status = RecipientStatus::Bounced;
        recipient.last_reply = Some(reply.to_string());
        recipient.class = Some(BounceClass::Admin);
        notes.push(Note {
            index,
            kind: NoteKind::Failed,
            reply: reply.clone(),
            class: Some(BounceClass::Admin),
            relay: None,
            at: now,
        });
        changes.push(RecipientChange {
            address: recipient.address.clone(),
            kind: EventKind::Bounced,
            reply: reply.clone(),
            class: Some(BounceClass::Admin),
            cause: Cause::Operator,
            delay,
        });
    }
    changes
}

fn open_recipients(envelope: &Envelope) -> Vec<usize> {
    (0..envelope.recipients.len())
        .filter(|&index| !envelope.recipients[index].status.is_final())
        .collect()
}

/// Marks `indices` delivered in an envelope as stored: the edit behind
/// [`Record::MarkDelivered`].
pub fn mark_delivered(envelope: &mut Envelope, indices: &[usize]) {
    for &index in indices {
        if let Some(recipient) = envelope.recipients.get_mut(index) {
            recipient.status = RecipientStatus::Delivered;
            recipient.class = None;
        }
    }
}

/// RFC 3461 §4.1: without NOTIFY, failures are reported; NEVER reports
/// nothing.
fn wants(notify: &Notify, kind: NoteKind) -> bool {
    let unspecified = !(notify.success || notify.failure || notify.delay || notify.never);
    match kind {
        NoteKind::Failed => notify.failure || unspecified,
        NoteKind::Delayed => notify.delay,
        NoteKind::Relayed => notify.success,
    }
}

/// The DSNs a transition sends: per kind, the notes whose recipient asked
/// for that kind (at most one DSN per kind). Mail from `<>` is never
/// reported on (RFC 3461 §6.2, RFC 5321 §4.5.5).
pub fn reported<'a>(envelope: &Envelope, notes: &'a [Note]) -> Vec<(NoteKind, Vec<&'a Note>)> {
    if envelope.reverse_path.is_empty() {
        return Vec::new();
    }
    NoteKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let selected: Vec<&Note> = notes
                .iter()
                .filter(|note| {
                    note.kind == kind
                        && envelope
                            .recipients
                            .get(note.index)
                            .is_some_and(|recipient| wants(&recipient.notify, kind))
                })
                .collect();
            (!selected.is_empty()).then_some((kind, selected))
        })
        .collect()
}

/// Failure notes that go unreported because the sender is `<>`.
pub fn unreported_failures(envelope: &Envelope, notes: &[Note]) -> usize {
    if !envelope.reverse_path.is_empty() {
        return 0;
    }
    notes
        .iter()
        .filter(|note| {
            note.kind == NoteKind::Failed
                && envelope
                    .recipients
                    .get(note.index)
                    .is_some_and(|recipient| wants(&recipient.notify, NoteKind::Failed))
        })
        .count()
}

#[cfg(test)]
mod class_tests;
#[cfg(test)]
mod tests;
