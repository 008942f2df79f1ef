//! The types of delivery events (docs/events.md, "Webhooks"): what a
//! `[[webhook]]` subscribes to. A leaf: the configuration parses them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What happened. `test` is only sent by `relayq webhook test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Accepted,
    Delivered,
    Deferred,
    Bounced,
    Expired,
    Delayed,
    Suppressed,
    Deleted,
    Test,
}

impl EventType {
    /// The types a `[[webhook]]` may subscribe to.
    pub const SUBSCRIBABLE: [EventType; 8] = [
        EventType::Accepted,
        EventType::Delivered,
        EventType::Deferred,
        EventType::Bounced,
        EventType::Expired,
        EventType::Delayed,
        EventType::Suppressed,
        EventType::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Accepted => "accepted",
            EventType::Delivered => "delivered",
            EventType::Deferred => "deferred",
            EventType::Bounced => "bounced",
            EventType::Expired => "expired",
            EventType::Delayed => "delayed",
            EventType::Suppressed => "suppressed",
            EventType::Deleted => "deleted",
            EventType::Test => "test",
        }
    }

    /// Index into per-type tables of [`EventType::SUBSCRIBABLE`] length.
    pub fn index(self) -> Option<usize> {
        EventType::SUBSCRIBABLE
            .iter()
            .position(|subscribable| *subscribable == self)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = ();

    fn from_str(text: &str) -> Result<EventType, ()> {
        EventType::SUBSCRIBABLE
            .into_iter()
            .chain([EventType::Test])
            .find(|event| event.as_str() == text)
            .ok_or(())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
