//! The JSON documents of the control API (docs/operations.md): what `queue list`,
//! `show`, `stats` and the operations print with `--json`. The CLI reads
//! them back with the same types.

use serde::{Deserialize, Serialize};

use crate::bounce::BounceClass;
use crate::metrics::DestinationShaping;
use crate::queue::envelope::{Meta, RecipientStatus, unix_ms};
use crate::queue::{Entry, Envelope, RebuildProgress, State};

/// One queued message, as `queue list --json` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageView {
    pub id: String,
    pub lane: String,
    pub state: String,
    /// The reverse-path; empty for the null sender `<>`.
    pub sender: String,
    /// RFC 3339.
    pub arrival: String,
    pub size: u64,
    pub attempts: u32,
    /// RFC 3339; `null` when due now or held.
    pub next_attempt: Option<String>,
    pub recipients: Vec<RecipientView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientView {
    pub address: String,
    pub status: RecipientStatus,
    pub last_reply: Option<String>,
    /// Why the last attempt failed (docs/events.md, "Bounce classes");
    /// left out while pending and once delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<BounceClass>,
}

/// `queue show`: the list entry and more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageView,
    pub client_address: Option<String>,
    pub helo: Option<String>,
    /// The user the client authenticated as (SMTP AUTH); null when it did not.
    #[serde(default)]
    pub auth_user: Option<String>,
    pub envid: Option<String>,
    pub ret: Option<String>,
    pub mt_priority: Option<i8>,
    /// The `X-Relayq-Meta-*` fields taken from the message at acceptance,
    /// as an object (`{}` when there were none).
    #[serde(default)]
    pub meta: Meta,
    /// The header section, as stored.
    pub headers: String,
    /// The whole message, when asked for (`?body=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// What an operation did, per id. A bulk operation lists ids only when
/// asked (`report_ids`); its `counts` are always there.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperationReport {
    pub done: Vec<String>,
    pub not_found: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Left with the delivery pass in flight, applied when it ends.
    #[serde(default)]
    pub pending: Vec<Skipped>,
    #[serde(default)]
    pub counts: OperationCounts,
    /// A bulk operation that shutdown stopped between two chunks: what it
    /// counts is done, the rest stays queued as it was.
    #[serde(default)]
    pub interrupted: bool,
}

/// How many messages an operation did, skipped, left with a pass or did
/// not find.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationCounts {
    pub done: usize,
    pub not_found: usize,
    pub skipped: usize,
    pub pending: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

/// Upper bounds (minutes) of the age buckets of the destination table, as
/// Postfix's qshape; a last bucket holds everything older.
pub const AGE_BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// `queue stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsView {
    /// While the startup rebuild runs (the counts cover only the messages
    /// it has read): how far it is. Left out once it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildProgress>,
    pub total: usize,
    /// `[{lane, ready, active, deferred, held}]`.
    pub lanes: Vec<LaneCounts>,
    /// Messages with an open recipient at each destination domain, by age,
    /// busiest first. `buckets` has one count per `AGE_BUCKETS` entry and a
    /// last one for older messages.
    pub destinations: Vec<DestinationAges>,
    /// Output control: each destination with a rule or a lowered limit.
    #[serde(default)]
    pub shaping: Vec<DestinationShaping>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaneCounts {
    pub lane: String,
    pub ready: usize,
    pub active: usize,
    pub deferred: usize,
    pub held: usize,
}

impl LaneCounts {
    pub fn add(&mut self, state: State) {
        match state {
            State::Ready => self.ready += 1,
            State::Active => self.active += 1,
            State::Deferred => self.deferred += 1,
            State::Held => self.held += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.ready + self.active + self.deferred + self.held
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationAges {
    pub domain: String,
    pub total: usize,
    pub buckets: Vec<usize>,
}

/// The age bucket of a message `age_minutes` old.
pub fn age_bucket(age_minutes: u64) -> usize {
    AGE_BUCKETS
        .iter()
        .position(|&limit| age_minutes < limit)
        .unwrap_or(AGE_BUCKETS.len())
}

impl MessageView {
    pub fn new(id: relayq_spool::QueueId, entry: &Entry, envelope: &Envelope) -> MessageView {
        let time = |ms: u64| {
            crate::timefmt::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        };
        let state = entry.state();
        let next_attempt = match state {
            State::Held => None,
            _ => envelope
                .next_attempt_ms
                .filter(|&due| due > unix_ms(std::time::SystemTime::now()))
                .map(time),
        };
        MessageView {
            id: id.to_string(),
            lane: envelope.lane.to_string(),
            state: state.as_str().to_owned(),
            sender: envelope.reverse_path.clone(),
            arrival: time(envelope.arrival_ms),
            size: envelope.size,
            attempts: envelope.attempts,
            next_attempt,
            recipients: envelope
                .recipients
                .iter()
                .map(|recipient| RecipientView {
                    address: recipient.address.clone(),
                    status: recipient.status,
                    last_reply: recipient.last_reply.clone(),
                    class: recipient.class,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_qshape() {
        assert_eq!(age_bucket(0), 0);
        assert_eq!(age_bucket(4), 0);
        assert_eq!(age_bucket(5), 1);
        assert_eq!(age_bucket(1279), 8);
        assert_eq!(age_bucket(1280), 9);
        assert_eq!(age_bucket(100_000), 9);
    }
}
