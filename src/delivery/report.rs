//! Delivery status notifications for a finished pass: which recipients get
//! reported (NOTIFY, null sender) and the DSN messages queued for them.

use std::io::Read;
use std::time::SystemTime;

use relayq_spool::{Body, Change, QueueId};

use super::client::RemoteReply;
use super::dsn::{self, Action, ReportedRecipient};
use super::engine::DeliveryContext;
use crate::queue::Envelope;
use crate::queue::envelope::{ENVELOPE_VERSION, Notify, Recipient, RecipientStatus, Ret, unix_ms};

/// Header section bytes read for RET=HDRS reports.
const MAX_HEADER_SECTION: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Bounced or expired: `Action: failed`.
    Failed,
    /// Still being retried after `retry.delay_warning`: `Action: delayed`.
    Delayed,
    /// Delivered to a next hop without DSN support: `Action: relayed`.
    Relayed,
}

/// A recipient that needs reporting, from this pass.
#[derive(Debug, Clone)]
pub struct Note {
    pub index: usize,
    pub kind: NoteKind,
    pub reply: RemoteReply,
    pub relay: Option<String>,
    pub at: SystemTime,
}

impl Note {
    pub fn new(index: usize, kind: NoteKind, reply: RemoteReply, relay: Option<String>) -> Note {
        Note {
            index,
            kind,
            reply,
            relay,
            at: SystemTime::now(),
        }
    }
}

/// Appends the spool insertions of `reports` to `changes`, to be committed
/// with the change they report on; returns what joins the schedule once
/// that commit is done ([`queue`]).
pub fn insertions(
    reports: Vec<(QueueId, Envelope, Body)>,
    changes: &mut Vec<Change>,
) -> Vec<(QueueId, Envelope)> {
    reports
        .into_iter()
        .map(|(id, envelope, body)| {
            changes.push(Change::Insert {
                id,
                envelope: envelope.encode(),
                body,
            });
            (id, envelope)
        })
        .collect()
}

/// After the commit: the reports on message `about` join the schedule.
pub fn queue(context: &DeliveryContext, about: QueueId, reports: &[(QueueId, Envelope)]) {
    for (id, envelope) in reports {
        tracing::info!(queue_id = %id, "{id}: delivery status notification for {about} queued");
        context.queue.insert(*id, envelope);
    }
}

/// RFC 3461 §4.1: without NOTIFY, failures are reported; NEVER reports nothing.
fn wants(notify: &Notify, kind: NoteKind) -> bool {
    let unspecified = !(notify.success || notify.failure || notify.delay || notify.never);
    match kind {
        NoteKind::Failed => notify.failure || unspecified,
        NoteKind::Delayed => notify.delay,
        NoteKind::Relayed => notify.success,
    }
}

/// The DSN messages (id, envelope, body) to queue for `notes`: at most one
/// per kind. Mail from `<>` is never bounced (logged instead).
pub fn build(
    context: &DeliveryContext,
    id: QueueId,
    envelope: &Envelope,
    notes: &[Note],
    now: SystemTime,
) -> Vec<(QueueId, Envelope, Body)> {
    let mut reports = Vec::new();
    for kind in [NoteKind::Failed, NoteKind::Delayed, NoteKind::Relayed] {
        let selected: Vec<&Note> = notes
            .iter()
            .filter(|note| {
                note.kind == kind && wants(&envelope.recipients[note.index].notify, kind)
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        if envelope.reverse_path.is_empty() {
            if kind == NoteKind::Failed {
                tracing::info!(queue_id = %id, "{id}: sender is <>, no bounce for {} recipients", selected.len());
            }
            continue;
        }
        let recipients: Vec<ReportedRecipient> = selected
            .iter()
            .map(|note| reported(context, envelope, note))
            .collect();
        let original = read_original(context, id, envelope.ret);
        let report_id = context.spool.allocate_id();
        let message = dsn::build(&dsn::Report {
            reporting_mta: &context.hostname,
            queue_id: &id.to_string(),
            sender: &envelope.reverse_path,
            envid: envelope.envid.as_deref(),
            arrival: envelope.arrival(),
            ret: envelope.ret,
            recipients: &recipients,
            original: &original,
            now,
            message_id: format!("<{report_id}.dsn@{}>", context.hostname),
        });
        let report_envelope = Envelope {
            version: ENVELOPE_VERSION,
            reverse_path: String::new(),
            recipients: vec![Recipient {
                address: envelope.reverse_path.clone(),
                orcpt: None,
                notify: Notify::default(),
                status: RecipientStatus::Pending,
                last_reply: None,
            }],
            lane: envelope.lane,
            arrival_ms: unix_ms(now),
            size: message.len() as u64,
            client_address: None,
            helo: None,
            eight_bit_mime: !message.is_ascii(),
            smtputf8: !envelope.reverse_path.is_ascii(),
            ret: None,
            envid: None,
            mt_priority: envelope.mt_priority,
            held: false,
            held_since_ms: None,
            held_ms: 0,
            attempts: 0,
            next_attempt_ms: None,
            delay_warned: false,
        };
        reports.push((report_id, report_envelope, Body::from_bytes(message)));
    }
    reports
}

fn reported(context: &DeliveryContext, envelope: &Envelope, note: &Note) -> ReportedRecipient {
    let recipient = &envelope.recipients[note.index];
    let remote_mta = note
        .relay
        .as_ref()
        .map(|relay| relay.split('[').next().unwrap_or(relay).to_owned());
    ReportedRecipient {
        final_recipient: recipient.address.clone(),
        original_recipient: recipient.orcpt.clone(),
        action: match note.kind {
            NoteKind::Failed => Action::Failed,
            NoteKind::Delayed => Action::Delayed,
            NoteKind::Relayed => Action::Relayed,
        },
        status: note.reply.status.clone(),
        diagnostic: (note.reply.code != 0).then(|| note.reply.to_string()),
        remote_mta,
        last_attempt: Some(note.at),
        will_retry_until: (note.kind == NoteKind::Delayed)
            .then(|| envelope.arrival() + context.policy.max_age),
    }
}

/// The original message for the report: the header section, or (RET=FULL)
/// up to one byte more than the DSN builder returns whole.
fn read_original(context: &DeliveryContext, id: QueueId, ret: Option<Ret>) -> Vec<u8> {
    let limit = match ret {
        Some(Ret::Full) => dsn::MAX_RETURNED_MESSAGE + 1,
        _ => MAX_HEADER_SECTION,
    };
    let mut original = Vec::new();
    match context.spool.read_body(id) {
        Ok(reader) => {
            if let Err(error) = reader.take(limit as u64).read_to_end(&mut original) {
                tracing::warn!(queue_id = %id, "{id}: cannot read the original for its DSN: {error}");
            }
        }
        Err(error) => {
            tracing::warn!(queue_id = %id, "{id}: cannot read the original for its DSN: {error}")
        }
    }
    if ret != Some(Ret::Full)
        && let Some(end) = memchr::memmem::find(&original, b"\r\n\r\n")
    {
        original.truncate(end + 4);
    }
    original
}
