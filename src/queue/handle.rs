//! The handle through which delivery and the control API change queued
//! messages: the spool, the schedule, the events, the metrics, and what
//! applying a [`Transition`] needs besides (the live settings: host name,
//! retry policy).
//!
//! [`QueueHandle::apply`] is the one place a transition is carried out: one
//! spool commit (the message's new record, the DSNs it implies and the
//! webhook events that announce it), then the schedule, then live events,
//! metrics and log lines, in that order, so nothing is announced that is not
//! stored.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use relayq_spool::{Body, Change, EnvelopeEdit, QueueId, Spool, SpoolError};

use super::envelope::{EnvelopeError, Recipient, Ret};
use super::hooks::{Staged, TransitionHook};
use super::reservations::Reservations;
use super::settings::CurrentQueueSettings;
use super::transition::{self, Cause, Note, NoteKind, Record, Transition};
use super::{Envelope, Queue};
use crate::bounce::BounceClass;
use crate::dsn::{self, Action, ReportedRecipient};
use crate::events::{Event, EventKind, Events};
use crate::metrics::Metrics;

/// Header section bytes read for RET=HDRS reports.
const MAX_HEADER_SECTION: usize = 256 * 1024;

/// Everything a transition touches. Cheap to clone.
#[derive(Clone)]
pub struct QueueHandle {
    /// The queue's part of the live settings: `hostname` (Reporting-MTA of
    /// DSNs and their Message-ID domain) and the retry policy.
    pub settings: CurrentQueueSettings,
    pub spool: Spool,
    pub queue: Arc<Queue>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// What else transitions imply (webhook events, suppression entries):
    /// staged into their commit, told once it returned.
    pub hooks: Vec<Arc<dyn TransitionHook>>,
    /// Given back when a transition removes or holds a message.
    pub reservations: Arc<dyn Reservations>,
}

impl QueueHandle {
    /// Carries `transition` out. On `Err` nothing of it was stored, and
    /// nothing changed in the schedule or was announced.
    pub async fn apply(&self, transition: &Transition) -> Result<(), SpoolError> {
        self.apply_all(std::slice::from_ref(transition)).await
    }

    /// Carries out several transitions (of different messages) in one spool
    /// commit: all of them or none.
    pub async fn apply_all(&self, transitions: &[Transition]) -> Result<(), SpoolError> {
        let mut changes = Vec::with_capacity(transitions.len());
        let mut queued_reports = Vec::with_capacity(transitions.len());
        for transition in transitions {
            // Before the commit: from then on, nobody may deliver from the
            // envelope as it was accepted.
            self.queue.forget_fresh(transition.id);
            let reports = self.build_reports(transition).await;
            changes.push(record_change(transition));
            let mut queued = Vec::with_capacity(reports.len());
            for (report_id, envelope, body) in reports {
                changes.push(Change::Insert {
                    id: report_id,
                    envelope: envelope.encode(),
                    body,
                });
                queued.push((report_id, envelope));
            }
            queued_reports.push(queued);
        }
        let staged: Vec<Staged> = self
            .hooks
            .iter()
            .map(|hook| hook.stage(transitions, &mut changes))
            .collect();
        self.spool.apply(changes).await?;
        for (hook, staged) in self.hooks.iter().zip(staged) {
            hook.committed(transitions, staged);
        }
        for (transition, reports) in transitions.iter().zip(&queued_reports) {
            self.committed(transition, reports);
        }
        Ok(())
    }

    /// After the commit: the schedule follows the spool, then the
    /// announcements.
    fn committed(&self, transition: &Transition, reports: &[(QueueId, Envelope)]) {
        let id = transition.id;
        match &transition.record {
            Record::Update => self.queue.insert(id, &transition.envelope),
            Record::MarkDelivered(_) => {}
            Record::Remove => {
                self.queue.remove(id);
            }
        }
        for (report_id, envelope) in reports {
            self.queue.insert(*report_id, envelope);
        }
        if transition.record == Record::Remove || transition.envelope.held {
            self.reservations.release(id);
        }

        self.announce(transition);
        for (report_id, _) in reports {
            tracing::info!(queue_id = %report_id, "{report_id}: delivery status notification for {id} queued");
        }
        if let Some(action) = transition.operator {
            tracing::info!(queue_id = %id, "{id}: {}", action.words());
            self.events
                .publish(Event::new(action.event(), id, transition.lane));
        }
        if transition.record == Record::Remove {
            tracing::info!(queue_id = %id, "{id}: removed");
            self.events
                .publish(Event::new(EventKind::Removed, id, transition.lane));
        }
    }

    /// Log line, event and metric for each recipient that changed.
    fn announce(&self, transition: &Transition) {
        let id = transition.id;
        let lane = transition.lane;
        let arrival = transition.envelope.arrival();
        for change in &transition.recipients {
            let delay = change.delay.as_secs_f64();
            let mut event = Event::new(change.kind, id, lane);
            event.recipient = Some(change.address.clone());
            event.status = Some(change.reply.status.clone());
            event.class = change.class;
            event.delay = Some(delay);
            // `class=` and the JSON field are there for failures only:
            // after `delay=` (where Postfix has `delays=`), so that `to=…,
            // delay=…` and `dsn=…, status=…` stay side by side for Postfix
            // log readers.
            let class = change.class.map(BounceClass::as_str);
            let class_words = class.map_or(String::new(), |class| format!(", class={class}"));
            match &change.cause {
                Cause::Attempt { relay, protection } => {
                    let word = match change.kind {
                        EventKind::Delivered => "sent",
                        EventKind::Bounced => "bounced",
                        _ => "deferred",
                    };
                    let relay = relay.as_ref().map(ToString::to_string);
                    let tls = protection.tls.as_str();
                    let policy = protection.policy.as_str();
                    tracing::info!(
                        queue_id = %id,
                        tls = %tls,
                        policy = %policy,
                        class,
                        "{id}: to=<{}>, relay={}, tls={tls}, policy={policy}, delay={delay:.1}{class_words}, dsn={}, status={word} ({})",
                        change.address,
                        relay.as_deref().unwrap_or("none"),
                        change.reply.status,
                        change.reply,
                    );
                    event.relay = relay;
                    event.tls = Some(tls);
                    event.policy = Some(policy);
                    event.reply = Some(change.reply.to_string());
                }
                Cause::Expired { age } => {
                    tracing::info!(
                        queue_id = %id,
                        class,
                        "{id}: to=<{}>, delay={:.0}{class_words}, dsn=4.4.7, status=expired (gave up after {}; last: {})",
                        change.address,
                        age.as_secs_f64(),
                        humantime::format_duration(Duration::from_secs(age.as_secs())),
                        change.reply.text,
                    );
                    event.reply = Some(change.reply.text.clone());
                }
                Cause::Operator => {
                    tracing::info!(
                        queue_id = %id,
                        class,
                        "{id}: to=<{}>, delay={delay:.1}{class_words}, dsn={}, status=bounced ({})",
                        change.address,
                        change.reply.status,
                        change.reply.text,
                    );
                    event.reply = Some(change.reply.text.clone());
                }
            }
            self.events.publish(event);
            self.metrics.recipient(lane, change.kind, arrival);
            if let Some(class) = change.class {
                self.metrics.failure_class(change.kind, class);
            }
        }
    }

    /// The DSN messages (id, envelope, body) `transition` sends, at most
    /// one per kind. Reading the original message is blocking I/O: it runs
    /// on the blocking pool.
    async fn build_reports(&self, transition: &Transition) -> Vec<(QueueId, Envelope, Body)> {
        let id = transition.id;
        let envelope = &transition.envelope;
        let unreported = transition::unreported_failures(envelope, &transition.notes);
        if unreported > 0 {
            tracing::info!(queue_id = %id, "{id}: sender is <>, no bounce for {unreported} recipients");
        }
        let reported = transition::reported(envelope, &transition.notes);
        if reported.is_empty() {
            return Vec::new();
        }
        let original = self.read_original(id, envelope.ret).await;
        let now = transition.now;
        let settings = self.settings.load();
        let hostname = &settings.hostname;
        reported
            .into_iter()
            .map(|(kind, notes)| {
                let recipients: Vec<ReportedRecipient> = notes
                    .iter()
                    .map(|note| reported_recipient(envelope, kind, note, settings.retry.max_age))
                    .collect();
                let report_id = self.spool.allocate_id();
                let message = dsn::build(&dsn::Report {
                    reporting_mta: hostname,
                    queue_id: &id.to_string(),
                    sender: &envelope.reverse_path,
                    envid: envelope.envid.as_deref(),
                    arrival: envelope.arrival(),
                    ret: envelope.ret,
                    recipients: &recipients,
                    original: &original,
                    now,
                    message_id: format!("<{report_id}.dsn@{hostname}>"),
                });
                let mut report = Envelope::new(
                    String::new(),
                    vec![Recipient::new(envelope.reverse_path.clone())],
                    envelope.lane,
                    now,
                    message.len() as u64,
                );
                report.eight_bit_mime = !message.is_ascii();
                report.smtputf8 = !envelope.reverse_path.is_ascii();
                report.mt_priority = envelope.mt_priority;
                (report_id, report, Body::from_bytes(message))
            })
            .collect()
    }

    /// The original message for a report: the header section, or (RET=FULL)
    /// up to one byte more than the DSN builder returns whole. A read error
    /// is logged and reports what could be read.
    async fn read_original(&self, id: QueueId, ret: Option<Ret>) -> Vec<u8> {
        let limit = match ret {
            Some(Ret::Full) => dsn::MAX_RETURNED_MESSAGE + 1,
            _ => MAX_HEADER_SECTION,
        };
        let spool = self.spool.clone();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut original = Vec::new();
            let reader = spool.read_body(id).map_err(std::io::Error::other)?;
            reader.take(limit as u64).read_to_end(&mut original)?;
            Ok(original)
        })
        .await;
        let mut original = match read {
            Ok(Ok(original)) => original,
            Ok(Err(error)) => {
                tracing::warn!(queue_id = %id, "{id}: cannot read the original for its DSN: {error}");
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(queue_id = %id, "{id}: cannot read the original for its DSN: {error}");
                Vec::new()
            }
        };
        if ret != Some(Ret::Full)
            && let Some(end) = memchr::memmem::find(&original, b"\r\n\r\n")
        {
            original.truncate(end + 4);
        }
        original
    }

    /// Reads and decodes message `id`'s envelope on the blocking pool.
    /// `Ok(None)`: the message is not in the spool.
    pub async fn envelope(&self, id: QueueId) -> Result<Option<Envelope>, LoadError> {
        let spool = self.spool.clone();
        let read = tokio::task::spawn_blocking(move || spool.envelope(id))
            .await
            .map_err(|error| LoadError::Unreadable(error.to_string()))?
            .map_err(|error| LoadError::Unreadable(error.to_string()))?;
        match read {
            Some(bytes) => Envelope::decode(&bytes)
                .map(Some)
                .map_err(LoadError::Undecodable),
            None => Ok(None),
        }
    }
}

/// The spool change that stores `transition`'s record of its message.
fn record_change(transition: &Transition) -> Change {
    let id = transition.id;
    match &transition.record {
        Record::Update => Change::UpdateEnvelope {
            id,
            envelope: transition.envelope.encode(),
        },
        Record::MarkDelivered(indices) => {
            let indices = indices.clone();
            Change::EditEnvelope {
                id,
                edit: EnvelopeEdit::new(move |stored| {
                    let mut envelope = Envelope::decode(stored).ok()?;
                    transition::mark_delivered(&mut envelope, &indices);
                    Some(envelope.encode())
                }),
            }
        }
        Record::Remove => Change::Remove { id },
    }
}

/// Why a stored envelope could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The spool could not be read (closed, I/O error): try again later.
    #[error("cannot read the envelope: {0}")]
    Unreadable(String),
    /// The record is there but does not decode: set it aside.
    #[error("{0}")]
    Undecodable(#[from] EnvelopeError),
}

/// What a DSN says of one recipient.
fn reported_recipient(
    envelope: &Envelope,
    kind: NoteKind,
    note: &Note,
    max_age: Duration,
) -> ReportedRecipient {
    let recipient = &envelope.recipients[note.index];
    ReportedRecipient {
        final_recipient: recipient.address.clone(),
        original_recipient: recipient.orcpt.clone(),
        action: match kind {
            NoteKind::Failed => Action::Failed,
            NoteKind::Delayed => Action::Delayed,
            NoteKind::Relayed => Action::Relayed,
        },
        status: note.reply.status.clone(),
        // A local condition (expiry with its last reply, DNS, an MTA-STS
        // refusal) is a diagnostic too, of relayq's own type.
        diagnostic: Some(if note.reply.is_local() {
            note.reply.text.clone()
        } else {
            note.reply.to_string()
        }),
        remote_mta: note.relay.as_ref().map(|relay| relay.host.clone()),
        class: note.class,
        last_attempt: Some(note.at),
        will_retry_until: (kind == NoteKind::Delayed).then(|| envelope.arrival() + max_age),
    }
}
