//! A delivery pass: one attempt at all of a message's open recipients, split
//! into jobs per destination. Each job's results are recorded here; when the
//! last job ends the pass is finalised in ONE spool commit: new recipient
//! states, the message's removal or next attempt, and the DSNs for the
//! recipients that became final in this pass.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use relayq_spool::{Change, QueueId};
use tokio::sync::OwnedSemaphorePermit;

use super::client::{Disposition, RecipientOutcome, RemoteReply};
use super::engine::DeliveryContext;
use super::report::{self, Note, NoteKind};
use crate::control::operations::{
    DELETED, HELD, announce, announce_bounce, bounce_open_recipients,
};
use crate::events::{Event, EventKind};
use crate::queue::envelope::{RecipientStatus, unix_ms};
use crate::queue::retry::jitter_unit;
use crate::queue::{Envelope, Lane, PendingOperation};

/// What one job found for one recipient.
pub struct RecipientResult {
    /// Index into the envelope's recipients.
    pub index: usize,
    pub outcome: RecipientOutcome,
    /// `host[ip]:port` of the server that answered, if one did.
    pub relay: Option<String>,
    /// The next hop offered DSN (so it handles NOTIFY=SUCCESS itself).
    pub next_hop_offers_dsn: bool,
}

pub struct Pass {
    pub id: QueueId,
    pub lane: Lane,
    started: SystemTime,
    /// The envelope as this pass sees it (updated by each job).
    envelope: Mutex<Envelope>,
    /// The envelope as last committed: only deliveries are applied to it
    /// before the end of the pass, so a crash never re-sends delivered mail
    /// and never loses a bounce notice.
    persisted: Mutex<Envelope>,
    notes: Mutex<Vec<Note>>,
    jobs_remaining: AtomicUsize,
    /// Bounds the passes in flight per lane; released when the pass ends.
    _in_flight: OwnedSemaphorePermit,
}

impl Pass {
    pub fn new(
        id: QueueId,
        envelope: Envelope,
        jobs: usize,
        in_flight: OwnedSemaphorePermit,
    ) -> Pass {
        Pass {
            id,
            lane: envelope.lane,
            started: SystemTime::now(),
            persisted: Mutex::new(envelope.clone()),
            envelope: Mutex::new(envelope),
            notes: Mutex::default(),
            jobs_remaining: AtomicUsize::new(jobs),
            _in_flight: in_flight,
        }
    }

    /// A copy of the current envelope.
    pub fn snapshot(&self) -> Envelope {
        lock(&self.envelope).clone()
    }

    /// Records one job's results; the last job finalises the pass.
    pub async fn record(&self, context: &DeliveryContext, results: Vec<RecipientResult>) {
        let delivered = self.apply_results(context, results);
        // The last job's results are committed by `finalize` right away; an
        // earlier job's deliveries are committed now, so that a crash before
        // the pass ends does not send them again.
        let last_job = self.jobs_remaining.load(Ordering::Acquire) == 1;
        if !delivered.is_empty() && !last_job {
            let bytes = {
                let mut persisted = lock(&self.persisted);
                for index in &delivered {
                    persisted.recipients[*index].status = RecipientStatus::Delivered;
                }
                persisted.encode()
            };
            if let Err(error) = context.spool.update_envelope(self.id, bytes).await {
                tracing::error!(queue_id = %self.id, "{}: cannot record deliveries: {error}", self.id);
            }
        }
        if self.jobs_remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finalize(context).await;
        }
    }

    /// Updates recipient states and logs one line per recipient. Returns the
    /// indices delivered.
    fn apply_results(
        &self,
        context: &DeliveryContext,
        results: Vec<RecipientResult>,
    ) -> Vec<usize> {
        let mut envelope = lock(&self.envelope);
        let mut notes = lock(&self.notes);
        let mut delivered = Vec::new();
        let arrival = envelope.arrival();
        let delay = self.started.duration_since(arrival).unwrap_or_default();
        for result in results {
            let Some(recipient) = envelope.recipients.get_mut(result.index) else {
                continue;
            };
            let reply = result.outcome.reply;
            let (status, word, kind) = match result.outcome.disposition {
                Disposition::Delivered => {
                    (RecipientStatus::Delivered, "sent", EventKind::Delivered)
                }
                Disposition::Bounced => (RecipientStatus::Bounced, "bounced", EventKind::Bounced),
                Disposition::Deferred | Disposition::RetryNow => {
                    (RecipientStatus::Deferred, "deferred", EventKind::Deferred)
                }
            };
            let mut event = Event::new(kind, self.id, self.lane);
            event.recipient = Some(recipient.address.clone());
            event.relay = result.relay.clone();
            event.status = Some(reply.status.clone());
            event.reply = Some(reply.to_string());
            event.delay = Some(delay.as_secs_f64());
            context.events.publish(event);
            context.metrics.recipient(self.lane, kind, arrival);
            tracing::info!(
                queue_id = %self.id,
                "{}: to=<{}>, relay={}, delay={:.1}, dsn={}, status={word} ({reply})",
                self.id,
                recipient.address,
                result.relay.as_deref().unwrap_or("none"),
                delay.as_secs_f64(),
                reply.status,
            );
            recipient.status = status;
            recipient.last_reply = Some(reply.to_string());
            match status {
                RecipientStatus::Delivered => {
                    delivered.push(result.index);
                    if recipient.notify.success && !result.next_hop_offers_dsn {
                        notes.push(Note::new(
                            result.index,
                            NoteKind::Relayed,
                            reply,
                            result.relay,
                        ));
                    }
                }
                RecipientStatus::Bounced => {
                    notes.push(Note::new(
                        result.index,
                        NoteKind::Failed,
                        reply,
                        result.relay,
                    ));
                }
                _ => {}
            }
        }
        delivered
    }

    /// The end of the pass: expiry, next attempt or removal, DSNs; one commit.
    async fn finalize(&self, context: &DeliveryContext) {
        let now = SystemTime::now();
        let mut envelope = lock(&self.envelope).clone();
        let mut notes = std::mem::take(&mut *lock(&self.notes));
        let age = now.duration_since(envelope.arrival()).unwrap_or_default();
        // Time on hold counts neither toward expiry nor the delay warning.
        let counted_age = envelope.queued_age(now);
        envelope.attempts += 1;

        let open: Vec<usize> = (0..envelope.recipients.len())
            .filter(|&index| !envelope.recipients[index].status.is_final())
            .collect();
        if !open.is_empty() && context.policy.is_expired(counted_age) {
            let arrival = envelope.arrival();
            for &index in &open {
                let recipient = &mut envelope.recipients[index];
                let last = recipient
                    .last_reply
                    .clone()
                    .unwrap_or_else(|| "no attempt succeeded".to_owned());
                tracing::info!(
                    queue_id = %self.id,
                    "{}: to=<{}>, delay={:.0}, dsn=4.4.7, status=expired (gave up after {}; last: {last})",
                    self.id,
                    recipient.address,
                    age.as_secs_f64(),
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                );
                let mut event = Event::new(EventKind::Expired, self.id, self.lane);
                event.recipient = Some(recipient.address.clone());
                event.status = Some("4.4.7".to_owned());
                event.reply = Some(last.clone());
                event.delay = Some(age.as_secs_f64());
                context.events.publish(event);
                context
                    .metrics
                    .recipient(self.lane, EventKind::Expired, arrival);
                recipient.status = RecipientStatus::Bounced;
                let reply = RemoteReply::local(
                    "4.4.7",
                    format!("delivery time expired; last reply: {last}"),
                );
                notes.push(Note::new(index, NoteKind::Failed, reply, None));
            }
        } else if !open.is_empty()
            && let Some(warning) = context.policy.delay_warning
            && counted_age >= warning
            && !envelope.delay_warned
        {
            for &index in &open {
                if envelope.recipients[index].notify.delay {
                    let last = envelope.recipients[index]
                        .last_reply
                        .clone()
                        .unwrap_or_default();
                    notes.push(Note::new(
                        index,
                        NoteKind::Delayed,
                        RemoteReply::local("4.4.7", last),
                        None,
                    ));
                }
            }
            envelope.delay_warned = true;
        }

        // An operator's hold, delete or bounce that waited for this pass.
        let pending = context.queue.take_pending(self.id);
        let mut bounced_by_administrator = Vec::new();
        match pending {
            Some(PendingOperation::Bounce) => {
                bounced_by_administrator = bounce_open_recipients(&mut envelope, &mut notes);
            }
            Some(PendingOperation::Hold) => envelope.hold(now),
            Some(PendingOperation::Delete) | None => {}
        }
        let deleted = pending == Some(PendingOperation::Delete);

        let complete = deleted || envelope.is_complete();
        let retry_in = context.policy.delay(envelope.attempts, jitter_unit());
        if !complete {
            envelope.next_attempt_ms = Some(unix_ms(now + retry_in));
        }

        let reports = report::build(context, self.id, &envelope, &notes, now);
        let mut changes = vec![if complete {
            Change::Remove { id: self.id }
        } else {
            Change::UpdateEnvelope {
                id: self.id,
                envelope: envelope.encode(),
            }
        }];
        let queued_reports = report::insertions(reports, &mut changes);
        match context.spool.apply(changes).await {
            Ok(()) => {
                for address in bounced_by_administrator {
                    announce_bounce(context, self.id, self.lane, address, age.as_secs_f64());
                }
                report::queue(context, self.id, &queued_reports);
                if deleted {
                    announce(context, self.id, self.lane, EventKind::Deleted, DELETED);
                }
                if complete {
                    context.removed(self.id, self.lane);
                } else if envelope.held {
                    context.queue.insert(self.id, &envelope);
                    announce(context, self.id, self.lane, EventKind::Held, HELD);
                } else {
                    context.queue.set_attempts(self.id, envelope.attempts);
                    context.queue.reschedule(
                        self.id,
                        self.lane,
                        tokio::time::Instant::now() + retry_in,
                    );
                }
            }
            Err(error) => {
                // Nothing of this pass was stored: try again later; at worst
                // a delivered recipient is delivered twice (DESIGN §3.2).
                tracing::error!(queue_id = %self.id, "{}: cannot record the delivery pass: {error}", self.id);
                if let Some(operation) = pending {
                    tracing::error!(queue_id = %self.id, "{}: the administrator's {operation:?} was not applied; ask again", self.id);
                }
                context.queue.reschedule(
                    self.id,
                    self.lane,
                    tokio::time::Instant::now() + Duration::from_secs(60),
                );
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
