//! A destination's suspension (docs/delivery.md, "Suspension"): a reply
//! containing one of its rule's `suspend_on` strings stops it for
//! `suspend_for`: no new connections, no transactions on open ones, its
//! queued mail deferred to the end without counting attempts.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Wait;
use super::{DestinationKey, Destinations, Queued};
use crate::delivery::client::Connection;
use crate::outcome::RemoteReply;
use crate::queue::Lane;

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

impl<J: Queued> Destinations<J> {
    /// If `reply` contains one of the `suspend_on` substrings of `key`'s
    /// rule: the wait of the destination's mail, and when this reply is what
    /// suspended it (it was not suspended yet) for its `suspend_for`, what
    /// the caller must announce, defer and close.
    pub fn suspend_on(
        &self,
        key: &DestinationKey,
        reply: &RemoteReply,
    ) -> Option<(Wait, Option<Suspended<J>>)> {
        let DestinationKey::Rule(name) = key else {
            return None;
        };
        let rules = self.rules.load();
        let rule = rules.rule(name)?;
        if !rule.suspends_on(&reply.to_string()) {
            return None;
        }
        let label = key.label();
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if let Some(suspension) = destination.suspended_at(now) {
            return Some((suspension.wait(&label), None));
        }
        let suspension = Suspension::new(reply, rule.suspend_for, now);
        let wait = suspension.wait(&label);
        let until = suspension.until_wall;
        destination.suspension = Some(suspension);
        let mut jobs = Vec::new();
        for lane in Lane::ALL {
            jobs.extend(destination.jobs[lane].drain(..));
        }
        destination.tokens.clear();
        let connections = destination.idle.take_all();
        Some((
            wait,
            Some(Suspended {
                name: rule.name.clone(),
                until,
                reply: reply.clone(),
                jobs,
                connections,
            }),
        ))
    }
}
