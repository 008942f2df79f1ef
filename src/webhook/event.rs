//! A delivery event as webhooks receive it (docs/events.md, "Webhooks"): its
//! JSON form, its stored form in the outbox, and how events are made from a
//! committed transition (pure: the caller passes the ids and the time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use super::event_type::EventType;
use crate::bounce::BounceClass;
use crate::events::EventKind;
use crate::outcome::RemoteReply;
use crate::queue::Lane;
use crate::queue::envelope::{Envelope, Meta, RecipientStatus};
use crate::queue::transition::{Cause, OperatorAction, Transition};

/// The reply that decided an event (`remote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remote {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Absent for a condition found on this side (a timeout, DNS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    pub enhanced: String,
    pub text: String,
}

/// One event. Fields that do not apply are `None` and left out of the JSON
/// (never `null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookEvent {
    /// Unique, and the same in every post of the event (receivers dedupe by it).
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// The Message-ID field, without `<>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The reverse-path; empty for `<>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<Lane>,
    /// Delivery attempts made so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<BounceClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'static str>,
    /// RFC 3339, on `deferred`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    #[serde(skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
    /// When, for the outbox (not part of the JSON).
    #[serde(skip)]
    pub at: SystemTime,
}

impl WebhookEvent {
    /// An event of `event_type` at `at` with only the fields every event has.
    pub fn new(id: String, event_type: EventType, at: SystemTime) -> WebhookEvent {
        WebhookEvent {
            id,
            event_type,
            time: rfc3339_millis(at),
            queue_id: None,
            message_id: None,
            sender: None,
            recipient: None,
            lane: None,
            attempt: None,
            class: None,
            remote: None,
            tls: None,
            policy: None,
            next_attempt: None,
            meta: Meta::default(),
            at,
        }
    }

    /// The stored form: the time (ms since the Unix epoch, 8 octets
    /// big-endian, so the sender can age events without parsing them), then
    /// the JSON as it is posted.
    pub fn encode(&self) -> Vec<u8> {
        let mut stored = Vec::with_capacity(320);
        stored.extend_from_slice(&unix_ms(self.at).to_be_bytes());
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut stored, self);
        stored
    }
}

/// A stored event: when it happened and its JSON.
pub fn decode(stored: &[u8]) -> Option<(SystemTime, &[u8])> {
    let (time, json) = stored.split_first_chunk::<8>()?;
    let at = UNIX_EPOCH + std::time::Duration::from_millis(u64::from_be_bytes(*time));
    Some((at, json))
}

/// Event ids: 32 lower-case hex digits, the creation time in milliseconds
/// (12), a number drawn once per process (8) and a counter (12), so ids are
/// unique across restarts and roughly ordered by time, and making one costs
/// no system call.
pub struct EventIds {
    process: u32,
    counter: AtomicU64,
}

impl EventIds {
    pub fn new() -> EventIds {
        let mut seed = [0u8; 4];
        // Without the system's randomness, the time and the process id
        // still separate two processes.
        let process =
            match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed) {
                Ok(()) => u32::from_be_bytes(seed),
                Err(_) => std::process::id() ^ (unix_ms(SystemTime::now()) as u32),
            };
        EventIds {
            process,
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self, at: SystemTime) -> String {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:012x}{:08x}{:012x}",
            unix_ms(at) & 0xffff_ffff_ffff,
            self.process,
            count & 0xffff_ffff_ffff
        )
    }
}

impl Default for EventIds {
    fn default() -> EventIds {
        EventIds::new()
    }
}

/// What events of one message carry besides their own fields.
fn message_fields(event: &mut WebhookEvent, transition: &Transition) {
    let envelope = &transition.envelope;
    event.queue_id = Some(transition.id.to_string());
    event.sender = Some(envelope.reverse_path.clone());
    event.lane = Some(transition.lane);
    event.attempt = Some(envelope.attempts);
    event.message_id = envelope.message_id.clone();
    event.meta = envelope.meta.clone();
}

fn remote(reply: &RemoteReply, relay: Option<&crate::outcome::Target>) -> Remote {
    Remote {
        host: relay.map(|target| target.host.clone()),
        ip: relay.map(|target| target.address.ip().to_string()),
        code: (reply.code != 0).then_some(reply.code),
        enhanced: reply.status.clone(),
        text: reply.text.clone(),
    }
}

/// The events a committed transition announces, for the types `wanted`
/// says some webhook takes, in the order: recipients' outcomes, delay
/// warnings, an operator's delete.
pub fn for_transition(
    transition: &Transition,
    wanted: impl Fn(EventType) -> bool,
    ids: &EventIds,
) -> Vec<WebhookEvent> {
    let at = transition.now;
    let envelope = &transition.envelope;
    let mut events = Vec::new();
    if is_report(envelope) {
        return events;
    }
    for change in &transition.recipients {
        let event_type = match change.kind {
            EventKind::Delivered => EventType::Delivered,
            EventKind::Deferred => EventType::Deferred,
            EventKind::Bounced => EventType::Bounced,
            EventKind::Expired => EventType::Expired,
            _ => continue,
        };
        if !wanted(event_type) {
            continue;
        }
        let mut event = WebhookEvent::new(ids.next(at), event_type, at);
        message_fields(&mut event, transition);
        event.recipient = Some(change.address.clone());
        event.class = change.class;
        match &change.cause {
            Cause::Attempt { relay, protection } => {
                event.remote = Some(remote(&change.reply, relay.as_ref()));
                event.tls = Some(protection.tls.as_str());
                event.policy = Some(protection.policy.as_str());
            }
            Cause::Expired { .. } | Cause::Operator => {
                event.remote = Some(remote(&change.reply, None));
            }
        }
        if event_type == EventType::Deferred {
            event.next_attempt = envelope
                .next_attempt_ms
                .map(|ms| rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms)));
        }
        events.push(event);
    }
    if wanted(EventType::Delayed) {
        for &index in &transition.delayed {
            let Some(recipient) = envelope.recipients.get(index) else {
                continue;
            };
            let mut event = WebhookEvent::new(ids.next(at), EventType::Delayed, at);
            message_fields(&mut event, transition);
            event.recipient = Some(recipient.address.clone());
            event.class = recipient.class;
            event.next_attempt = envelope
                .next_attempt_ms
                .map(|ms| rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms)));
            event.remote = recipient.last_reply.as_ref().map(|last| Remote {
                host: None,
                ip: None,
                code: None,
                enhanced: "4.4.7".to_owned(),
                text: last.clone(),
            });
            events.push(event);
        }
    }
    if transition.operator == Some(OperatorAction::Deleted) && wanted(EventType::Deleted) {
        events.extend(deleted(transition, envelope, ids));
    }
    events
}

/// Whether the message is one relayq wrote itself (a delivery status
/// notification: the null sender, and no client handed it over; or a
/// TLS-RPT report): events are for the application's own mail.
fn is_report(envelope: &Envelope) -> bool {
    (envelope.reverse_path.is_empty() && envelope.client_address.is_none()) || envelope.tls_report
}

/// One `deleted` event per recipient still open when the operator deleted
/// the message.
fn deleted(transition: &Transition, envelope: &Envelope, ids: &EventIds) -> Vec<WebhookEvent> {
    let at = transition.now;
    envelope
        .recipients
        .iter()
        .filter(|recipient| {
            !matches!(
                recipient.status,
                RecipientStatus::Delivered | RecipientStatus::Bounced
            )
        })
        .map(|recipient| {
            let mut event = WebhookEvent::new(ids.next(at), EventType::Deleted, at);
            message_fields(&mut event, transition);
            event.recipient = Some(recipient.address.clone());
            event
        })
        .collect()
}

/// One `accepted` event per recipient of a message just accepted.
pub fn accepted(
    id: relayq_spool::QueueId,
    envelope: &Envelope,
    ids: &EventIds,
) -> Vec<WebhookEvent> {
    let at = envelope.arrival();
    envelope
        .recipients
        .iter()
        .map(|recipient| {
            let mut event = WebhookEvent::new(ids.next(at), EventType::Accepted, at);
            event.queue_id = Some(id.to_string());
            event.sender = Some(envelope.reverse_path.clone());
            event.lane = Some(envelope.lane);
            event.attempt = Some(0);
            event.message_id = envelope.message_id.clone();
            event.meta = envelope.meta.clone();
            event.recipient = Some(recipient.address.clone());
            event
        })
        .collect()
}

/// A recipient refused at RCPT because it is on the suppression list:
/// nothing was queued, so there is no queue id, message id or metadata.
pub fn suppressed(
    sender: &str,
    recipient: &str,
    class: BounceClass,
    ids: &EventIds,
    at: SystemTime,
) -> WebhookEvent {
    let mut event = WebhookEvent::new(ids.next(at), EventType::Suppressed, at);
    event.sender = Some(sender.to_owned());
    event.recipient = Some(recipient.to_owned());
    event.class = Some(class);
    event
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// `2026-12-07T17:43:58.123Z`: always UTC, always milliseconds.
pub fn rfc3339_millis(at: SystemTime) -> String {
    let ms = unix_ms(at);
    let seconds = (ms / 1000) as i64;
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(date) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            date.year(),
            u8::from(date.month()),
            date.day(),
            date.hour(),
            date.minute(),
            date.second(),
            ms % 1000
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}
