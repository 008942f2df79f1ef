//! Queue events, published as they happen: `queue tail` follows them and
//! metrics count them. Publishing never blocks: a subscriber that falls
//! behind loses the oldest events (and is told how many), the queue does not
//! slow down for it.

use std::net::IpAddr;
use std::time::SystemTime;

use relayq_spool::QueueId;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::bounce::BounceClass;
use crate::queue::Lane;

/// Events kept for slow subscribers before the oldest are dropped.
const BACKLOG: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Accepted,
    Delivered,
    Deferred,
    Bounced,
    Expired,
    Held,
    Released,
    Deleted,
    Retried,
    Removed,
    /// A destination stopped sending after a `suspend_on` reply.
    Suspended,
    /// A suspended destination sends again.
    Resumed,
    /// `RCPT TO:` refused: the address is on the suppression list. No
    /// message was queued: no `id`, no `lane`.
    Suppressed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::Bounced => "bounced",
            EventKind::Expired => "expired",
            EventKind::Held => "held",
            EventKind::Released => "released",
            EventKind::Deleted => "deleted",
            EventKind::Retried => "retried",
            EventKind::Removed => "removed",
            EventKind::Suspended => "suspended",
            EventKind::Resumed => "resumed",
            EventKind::Suppressed => "suppressed",
        }
    }
}

/// One event. Fields that do not apply are `None`. A destination's
/// events (`suspended`, `resumed`) name no message: their `id` is empty
/// and left out of the JSON, `lane` too, and `destination` is set.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// RFC 3339.
    pub time: String,
    pub event: EventKind,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane: Option<Lane>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The end of a suspension, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// How a delivery attempt's session was protected: `none`,
    /// `unverified` or `verified` (docs/mail-authentication.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// The policy a delivery attempt was under: `none`, `mta-sts-testing`
    /// or `mta-sts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why a recipient failed: on `deferred`, `bounced` and `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<BounceClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    /// Seconds from arrival to this event (delivery and bounce events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
}

impl Event {
    pub fn new(event: EventKind, id: QueueId, lane: Lane) -> Event {
        Event {
            time: crate::timefmt::rfc3339(SystemTime::now()),
            event,
            id: id.to_string(),
            lane: Some(lane),
            destination: None,
            until: None,
            sender: None,
            recipient: None,
            recipients: None,
            size: None,
            relay: None,
            tls: None,
            policy: None,
            status: None,
            class: None,
            reply: None,
            client: None,
            delay: None,
        }
    }

    /// A destination's event: `suspended` (with its end and the reply that
    /// caused it) or `resumed`.
    pub fn destination(
        event: EventKind,
        name: &str,
        until: Option<SystemTime>,
        reply: Option<String>,
    ) -> Event {
        Event {
            time: crate::timefmt::rfc3339(SystemTime::now()),
            event,
            id: String::new(),
            lane: None,
            destination: Some(name.to_owned()),
            until: until.map(crate::timefmt::rfc3339),
            sender: None,
            recipient: None,
            recipients: None,
            size: None,
            relay: None,
            tls: None,
            policy: None,
            status: None,
            class: None,
            reply,
            client: None,
            delay: None,
        }
    }

    /// A recipient refused at RCPT because it is suppressed (`class`: the
    /// entry's): `reply` is the refusal sent to the client.
    pub fn suppressed(sender: &str, recipient: &str, class: BounceClass, reply: String) -> Event {
        Event {
            time: crate::timefmt::rfc3339(SystemTime::now()),
            event: EventKind::Suppressed,
            id: String::new(),
            lane: None,
            destination: None,
            until: None,
            sender: Some(sender.to_owned()),
            recipient: Some(recipient.to_owned()),
            recipients: None,
            size: None,
            relay: None,
            tls: None,
            policy: None,
            status: Some("5.1.1".to_owned()),
            class: Some(class),
            reply: Some(reply),
            client: None,
            delay: None,
        }
    }

    /// One line for `queue tail` without `--json`.
    pub fn to_text(&self) -> String {
        if let Some(name) = &self.destination {
            return match (&self.until, &self.reply) {
                (Some(until), reply) => format!(
                    "{} destination {name} {} until {until}: {}",
                    self.time,
                    self.event.as_str(),
                    reply.as_deref().unwrap_or("")
                ),
                _ => format!("{} destination {name} {}", self.time, self.event.as_str()),
            };
        }
        let lane = self.lane.map_or("-", Lane::as_str);
        let mut line = if self.id.is_empty() {
            // An event of no queued message (`suppressed`).
            format!("{} {}", self.time, self.event.as_str())
        } else {
            format!(
                "{} {} {:<9} lane={lane}",
                self.time,
                self.id,
                self.event.as_str(),
            )
        };
        let mut field = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                line.push_str(&format!(" {name}={value}"));
            }
        };
        field("from", self.sender.as_ref().map(|s| format!("<{s}>")));
        field("to", self.recipient.as_ref().map(|r| format!("<{r}>")));
        field("nrcpt", self.recipients.map(|n| n.to_string()));
        field("size", self.size.map(|n| n.to_string()));
        field("relay", self.relay.clone());
        field("tls", self.tls.map(str::to_owned));
        field("policy", self.policy.map(str::to_owned));
        field("delay", self.delay.map(|d| format!("{d:.1}")));
        field("dsn", self.status.clone());
        field("class", self.class.map(|class| class.as_str().to_owned()));
        if let Some(reply) = &self.reply {
            line.push_str(&format!(" ({reply})"));
        }
        line
    }
}

/// The publishing side, cloned into every component that reports events.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Publishes an event; with no subscriber it is simply dropped.
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suppressed_event_names_no_message() {
        let event = Event::suppressed(
            "app@example.com",
            "gone@example.org",
            BounceClass::InvalidRecipient,
            "<gone@example.org>: recipient is suppressed".into(),
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "suppressed");
        assert_eq!(json["class"], "invalid_recipient");
        assert_eq!(json["sender"], "app@example.com");
        assert!(
            json.get("id").is_none() && json.get("lane").is_none(),
            "{json}"
        );
        let text = event.to_text();
        assert!(
            text.ends_with(
                " suppressed from=<app@example.com> to=<gone@example.org> dsn=5.1.1 class=invalid_recipient (<gone@example.org>: recipient is suppressed)"
            ),
            "{text}"
        );
        assert!(!text.contains("lane="), "{text}");
    }

    #[test]
    fn delivery_events_say_how_they_were_protected() {
        let mut event = Event::new(EventKind::Delivered, QueueId(1), Lane::High);
        event.recipient = Some("user@example.org".into());
        event.relay = Some("mx.example.org[192.0.2.7]:25".into());
        event.tls = Some("verified");
        event.policy = Some("mta-sts");
        let text = event.to_text();
        assert!(
            text.contains(" relay=mx.example.org[192.0.2.7]:25 tls=verified policy=mta-sts"),
            "{text}"
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["tls"], "verified");
        assert_eq!(json["policy"], "mta-sts");

        let accepted = Event::new(EventKind::Accepted, QueueId(1), Lane::High);
        let json = serde_json::to_value(&accepted).unwrap();
        assert!(json.get("tls").is_none() && json.get("policy").is_none());
        assert!(!accepted.to_text().contains("tls="));
    }

    #[test]
    fn failure_events_carry_their_class() {
        let mut event = Event::new(EventKind::Bounced, QueueId(1), Lane::High);
        event.recipient = Some("user@example.org".into());
        event.status = Some("5.1.1".into());
        event.class = Some(BounceClass::InvalidRecipient);
        event.reply = Some("550 5.1.1 user unknown".into());
        let text = event.to_text();
        assert!(
            text.contains(" dsn=5.1.1 class=invalid_recipient (550 5.1.1 user unknown)"),
            "{text}"
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["class"], "invalid_recipient");
        let delivered = Event::new(EventKind::Delivered, QueueId(1), Lane::High);
        assert!(
            serde_json::to_value(&delivered)
                .unwrap()
                .get("class")
                .is_none()
        );
        assert!(!delivered.to_text().contains("class="));
    }
}
