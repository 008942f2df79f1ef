//! The envelope relayq keeps for each queued message, and its encoding in the
//! spool (a compact versioned record, [`codec`]; the spool adds its own
//! checksum).

mod codec;
mod meta;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Lane;
use crate::bounce::BounceClass;

pub use meta::Meta;

/// Bumped when the meaning of a field changes; a new optional field is a new
/// tag in [`codec`] (and `#[serde(default)]` here for JSON).
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    /// The reverse-path; empty for the null sender `<>`.
    pub reverse_path: String,
    pub recipients: Vec<Recipient>,
    pub lane: Lane,
    /// When the message was accepted, in milliseconds since the Unix epoch.
    pub arrival_ms: u64,
    /// Stored size in octets, trace headers included.
    pub size: u64,
    pub client_address: Option<IpAddr>,
    pub helo: Option<String>,
    /// The user the client authenticated as (SMTP AUTH), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    #[serde(default)]
    pub eight_bit_mime: bool,
    #[serde(default)]
    pub smtputf8: bool,
    /// RFC 3461 RET.
    #[serde(default)]
    pub ret: Option<Ret>,
    /// RFC 3461 ENVID, decoded.
    #[serde(default)]
    pub envid: Option<String>,
    /// RFC 6710 priority, when the client gave a non-zero one.
    #[serde(default)]
    pub mt_priority: Option<i8>,
    /// Held by an operator: no delivery attempts until released.
    #[serde(default)]
    pub held: bool,
    /// When the current hold began (ms since the Unix epoch).
    #[serde(default)]
    pub held_since_ms: Option<u64>,
    /// Time spent held in earlier holds, in milliseconds: it does not count
    /// toward `retry.max_age` or the delay warning.
    #[serde(default)]
    pub held_ms: u64,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Earliest next attempt, in milliseconds since the Unix epoch; `None`
    /// means due now.
    #[serde(default)]
    pub next_attempt_ms: Option<u64>,
    /// The one "delayed" DSN (`retry.delay_warning`) has been sent.
    #[serde(default)]
    pub delay_warned: bool,
    /// The `X-Relayq-Meta-*` fields intake took from the message, for its
    /// events (docs/idempotency.md).
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
    /// The message's `Message-ID` without `<>` (the client's, or the one
    /// intake added), for its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// A TLS-RPT report relayq wrote itself (`tls_rpt`): delivered without
    /// MTA-STS or DANE enforcement (RFC 8460 §5.3), announced by no
    /// webhook event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_report: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 ORCPT (the `rfc822` address), decoded.
    #[serde(default)]
    pub orcpt: Option<String>,
    #[serde(default)]
    pub notify: Notify,
    pub status: RecipientStatus,
    /// The last reply or reason for this recipient, for `queue show` and DSNs.
    #[serde(default)]
    pub last_reply: Option<String>,
    /// The class of `last_reply` when it was a failure (a deferral, a
    /// bounce, expiry, an operator's bounce); `None` while pending and once
    /// delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<BounceClass>,
}

/// RFC 3461 NOTIFY; all false means the parameter was absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    pub never: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    Full,
    Headers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    Pending,
    Delivered,
    Deferred,
    Bounced,
}

impl Recipient {
    /// A recipient not yet attempted, without DSN parameters.
    pub fn new(address: String) -> Recipient {
        Recipient {
            address,
            orcpt: None,
            notify: Notify::default(),
            status: RecipientStatus::Pending,
            last_reply: None,
            class: None,
        }
    }
}

impl RecipientStatus {
    /// Final recipients are never attempted again.
    pub fn is_final(self) -> bool {
        matches!(self, RecipientStatus::Delivered | RecipientStatus::Bounced)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("envelope does not decode: {0}")]
    Malformed(&'static str),
    #[error("envelope version {0} is newer than this relayq understands ({ENVELOPE_VERSION})")]
    UnknownVersion(u32),
}

impl Envelope {
    /// A new message's envelope: not held, never attempted, due now, with
    /// no DSN parameters and no client facts; set those fields as needed.
    pub fn new(
        reverse_path: String,
        recipients: Vec<Recipient>,
        lane: Lane,
        arrival: SystemTime,
        size: u64,
    ) -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            reverse_path,
            recipients,
            lane,
            arrival_ms: unix_ms(arrival),
            size,
            client_address: None,
            helo: None,
            auth_user: None,
            eight_bit_mime: false,
            smtputf8: false,
            ret: None,
            envid: None,
            mt_priority: None,
            held: false,
            held_since_ms: None,
            held_ms: 0,
            attempts: 0,
            next_attempt_ms: None,
            delay_warned: false,
            meta: Meta::default(),
            message_id: None,
            tls_report: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let envelope = codec::decode(bytes)?;
        if envelope.version > ENVELOPE_VERSION {
            return Err(EnvelopeError::UnknownVersion(envelope.version));
        }
        Ok(envelope)
    }

    /// The sender as shown in logs: `<>` for the null reverse-path.
    pub fn sender_display(&self) -> &str {
        if self.reverse_path.is_empty() {
            "<>"
        } else {
            &self.reverse_path
        }
    }

    pub fn arrival(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.arrival_ms)
    }

    /// Puts the message on hold at `now`.
    pub fn hold(&mut self, now: SystemTime) {
        if !self.held {
            self.held = true;
            self.held_since_ms = Some(unix_ms(now));
        }
    }

    /// Releases a hold at `now`, banking the time it lasted.
    pub fn release(&mut self, now: SystemTime) {
        if let Some(since) = self.held_since_ms.take() {
            self.held_ms = self
                .held_ms
                .saturating_add(unix_ms(now).saturating_sub(since));
        }
        self.held = false;
    }

    /// Time in the queue at `now` that counts toward expiry: the age since
    /// arrival minus the time spent held.
    pub fn queued_age(&self, now: SystemTime) -> Duration {
        let mut held = self.held_ms;
        if let Some(since) = self.held_since_ms {
            held = held.saturating_add(unix_ms(now).saturating_sub(since));
        }
        let age = now.duration_since(self.arrival()).unwrap_or_default();
        age.saturating_sub(Duration::from_millis(held))
    }

    /// All recipients delivered or bounced: the message can leave the spool.
    pub fn is_complete(&self) -> bool {
        self.recipients
            .iter()
            .all(|recipient| recipient.status.is_final())
    }
}

/// Milliseconds since the Unix epoch for `time`.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_user_is_optional_in_stored_envelopes() {
        let mut envelope = sample();
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        envelope.auth_user = None;
        let encoded = envelope.encode();
        assert!(!String::from_utf8_lossy(&encoded).contains("auth_user"));
        // Spools written before the field existed read as unauthenticated.
        assert_eq!(Envelope::decode(&encoded).unwrap().auth_user, None);
    }

    #[test]
    fn a_damaged_hold_time_saturates_instead_of_overflowing() {
        let mut envelope = sample();
        envelope.held_ms = u64::MAX - 1;
        envelope.held_since_ms = Some(0);
        let now = UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(envelope.queued_age(now), Duration::ZERO);
        envelope.release(now);
        assert_eq!(envelope.held_ms, u64::MAX);
    }

    fn sample() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            reverse_path: "app@example.com".into(),
            recipients: vec![Recipient {
                address: "\"john doe\"@example.org".into(),
                orcpt: Some("john doe@example.org".into()),
                notify: Notify {
                    failure: true,
                    ..Notify::default()
                },
                status: RecipientStatus::Pending,
                last_reply: None,
                class: Some(BounceClass::RateLimited),
            }],
            lane: Lane::Low,
            arrival_ms: 1_790_000_000_000,
            size: 2048,
            client_address: Some("127.0.0.1".parse().unwrap()),
            helo: Some("client".into()),
            auth_user: Some("app".into()),
            eight_bit_mime: true,
            smtputf8: false,
            ret: Some(Ret::Headers),
            envid: Some("x".into()),
            mt_priority: Some(-2),
            held: false,
            held_since_ms: None,
            held_ms: 0,
            attempts: 0,
            next_attempt_ms: None,
            delay_warned: false,
            meta: Meta::new(vec![("order".into(), "42".into())]),
            message_id: Some("20261207.1@app.example".into()),
            tls_report: false,
        }
    }

    #[test]
    fn roundtrip() {
        let envelope = sample();
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
    }

    #[test]
    fn time_on_hold_does_not_count_toward_expiry() {
        let mut envelope = sample();
        let arrival = envelope.arrival();
        let at = |secs| arrival + Duration::from_secs(secs);
        envelope.hold(at(100));
        assert_eq!(envelope.queued_age(at(400)), Duration::from_secs(100));
        envelope.release(at(1000));
        assert_eq!(envelope.queued_age(at(1050)), Duration::from_secs(150));
        envelope.hold(at(2000));
        envelope.hold(at(2500));
        envelope.release(at(3000));
        assert_eq!(envelope.queued_age(at(3000)), Duration::from_secs(1100));
        assert!(!envelope.held);
        let decoded = Envelope::decode(&envelope.encode()).unwrap();
        assert_eq!(decoded.queued_age(at(3000)), Duration::from_secs(1100));
    }

    #[test]
    fn newer_versions_and_garbage_are_refused() {
        let mut envelope = sample();
        envelope.version = ENVELOPE_VERSION + 1;
        assert!(matches!(
            Envelope::decode(&envelope.encode()),
            Err(EnvelopeError::UnknownVersion(_))
        ));
        assert!(Envelope::decode(b"{\"version\":1").is_err());
    }

    #[test]
    fn completeness() {
        let mut envelope = sample();
        assert!(!envelope.is_complete());
        envelope.recipients[0].status = RecipientStatus::Bounced;
        assert!(envelope.is_complete());
    }
}
