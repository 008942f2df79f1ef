//! A destination's suspension (docs/delivery.md, "Suspension"): a reply
//! containing one of its rule's `suspend_on` strings stops it for
//! `suspend_for`: no new connections, no transactions on open ones, its
//! queued mail deferred to the end without counting attempts.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Wait;
use crate::delivery::client::Connection;
use crate::outcome::RemoteReply;

pub(super) struct Suspension {
    pub(super) until: Instant,
    pub(super) until_wall: SystemTime,
    /// The reply that suspended it.
    reply: RemoteReply,
}

impl Suspension {
    pub(super) fn new(reply: &RemoteReply, length: Duration, now: Instant) -> Suspension {
        Suspension {
            until: now + length,
            until_wall: SystemTime::now() + length,
            reply: reply.clone(),
        }
    }

    /// The wait of the mail of destination `label` meanwhile.
    pub(super) fn wait(&self, label: &str) -> Wait {
        Wait {
            until: self.until_wall,
            reply: RemoteReply::local(
                "4.7.0",
                format!(
                    "destination {label} suspended until {}: {}",
                    crate::timefmt::rfc3339(self.until_wall),
                    self.reply
                ),
            ),
        }
    }
}

/// A destination just suspended: what the caller announces and gives back.
pub struct Suspended<J> {
    pub name: String,
    pub until: SystemTime,
    pub reply: RemoteReply,
    /// Jobs that were waiting for a slot: to be deferred until `until`.
    pub jobs: Vec<J>,
    /// Its idle connections: to be closed.
    pub connections: Vec<Connection>,
}
