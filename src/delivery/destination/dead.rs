//! Dead next hops (Postfix's dead destination cache): a next hop whose
//! hosts all refused or timed out is skipped for a while, and its mail is
//! deferred without taking a lane slot.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::NextHop;
use super::lock;
use super::{Destinations, Queued};
use crate::outcome::RemoteReply;

pub(super) struct DeadHops {
    /// How long a dead next hop is skipped.
    dead_for: Duration,
    /// Each with when it may be tried again, and why it is dead.
    hops: Mutex<HashMap<NextHop, (Instant, RemoteReply)>>,
}

impl DeadHops {
    pub(super) fn new(dead_for: Duration) -> DeadHops {
        DeadHops {
            dead_for,
            hops: Mutex::default(),
        }
    }

    pub(super) fn mark(&self, hop: &NextHop, reason: RemoteReply) {
        lock(&self.hops).insert(hop.clone(), (Instant::now() + self.dead_for, reason));
    }

    /// Why `hop` is skipped now, if it is.
    pub(super) fn check(&self, hop: &NextHop) -> Option<RemoteReply> {
        match lock(&self.hops).get(hop) {
            Some((until, reason)) if *until > Instant::now() => Some(reason.clone()),
            _ => None,
        }
    }

    /// Forgets the hops whose time is up.
    pub(super) fn sweep(&self, now: Instant) {
        lock(&self.hops).retain(|_, (until, _)| *until > now);
    }
}

impl<J: Queued> Destinations<J> {
    /// Every host of `hop` refused or timed out: skip it for a while.
    pub fn mark_dead(&self, hop: &NextHop, reason: RemoteReply) {
        self.dead.mark(hop, reason);
    }

    pub fn is_dead(&self, hop: &NextHop) -> Option<RemoteReply> {
        self.dead.check(hop)
    }
}
