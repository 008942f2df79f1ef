//! The idle connections a destination keeps for its next messages, each
//! with the next hop it leads to (a rule's destination may span several):
//! at most a few, for a few seconds, and for a bounded number of
//! transactions each.

use std::time::Duration;

use tokio::time::Instant;

use super::NextHop;
use super::{DestinationKey, Destinations, Queued};
use crate::delivery::client::Connection;

/// How long a connection may sit idle before it is closed.
pub const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(5);
/// Transactions per connection, without a rule that says otherwise, before
/// it is closed and a new one opened.
pub const MAX_TRANSACTIONS_PER_CONNECTION: u32 = 100;
/// Idle connections kept per destination.
const MAX_IDLE_CONNECTIONS: usize = 8;

#[derive(Default)]
pub(super) struct IdleConnections {
    /// Oldest first, with when each became idle.
    kept: Vec<(NextHop, Connection, Instant)>,
}

impl IdleConnections {
    pub(super) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The newest connection to `hop` still fresh enough; stale ones met on
    /// the way are dropped (which closes them without a QUIT round trip).
    pub(super) fn take(&mut self, hop: &NextHop) -> Option<Connection> {
        while let Some(position) = self.kept.iter().rposition(|(to, _, _)| to == hop) {
            let (_, connection, since) = self.kept.swap_remove(position);
            if since.elapsed() < IDLE_CONNECTION_TTL {
                return Some(connection);
            }
        }
        None
    }

    /// The connections, oldest first, that take the destination past
    /// `limit` open connections with `active` in use, to be closed.
    pub(super) fn over(&mut self, active: usize, limit: usize) -> Vec<Connection> {
        let mut evicted = Vec::new();
        while !self.kept.is_empty() && active + self.kept.len() > limit {
            evicted.push(self.kept.remove(0).1);
        }
        evicted
    }

    /// Keeps `connection` to `hop`, or gives it back when the pool is full.
    pub(super) fn keep(
        &mut self,
        hop: &NextHop,
        connection: Connection,
        now: Instant,
    ) -> Option<Connection> {
        if self.kept.len() < MAX_IDLE_CONNECTIONS {
            self.kept.push((hop.clone(), connection, now));
            None
        } else {
            Some(connection)
        }
    }

    /// The connections idle for longer than the TTL.
    pub(super) fn take_stale(&mut self) -> Vec<Connection> {
        let (fresh, stale): (Vec<_>, Vec<_>) = self
            .kept
            .drain(..)
            .partition(|(_, _, since)| since.elapsed() < IDLE_CONNECTION_TTL);
        self.kept = fresh;
        stale
            .into_iter()
            .map(|(_, connection, _)| connection)
            .collect()
    }

    /// Every connection kept.
    pub(super) fn take_all(&mut self) -> Vec<Connection> {
        self.kept
            .drain(..)
            .map(|(_, connection, _)| connection)
            .collect()
    }
}

impl<J: Queued> Destinations<J> {
    /// An idle connection kept by `key` for the pool `hop` (a next hop, or
    /// the shared MX host of domains grouped by an `mx:` pattern), if one is
    /// fresh enough.
    pub fn take_idle(&self, key: &DestinationKey, hop: &NextHop) -> Option<Connection> {
        self.lock().get_mut(key)?.idle.take(hop)
    }

    /// Before a job of `key` opens a new connection: the idle connections
    /// (of other pools) that would take the destination past its limit of
    /// open connections, oldest first, to be closed by the caller.
    pub fn make_room(&self, key: &DestinationKey) -> Vec<Connection> {
        let mut table = self.lock();
        let Some(destination) = table.get_mut(key) else {
            return Vec::new();
        };
        let (active, limit) = (destination.active, destination.limit.get());
        destination.idle.over(active, limit)
    }

    /// Keeps a connection (already reset) for the next message to `hop`.
    /// Returns the connection when it is not kept (it carried its last
    /// transaction, or the pool is full or suspended): the caller closes it
    /// with QUIT on a tracked task.
    #[must_use = "a connection not kept must be closed"]
    pub fn put_idle(
        &self,
        key: &DestinationKey,
        hop: &NextHop,
        connection: Connection,
    ) -> Option<Connection> {
        let per_connection = self.rules.load().transactions_per_connection(key);
        if connection.completed_transactions() >= per_connection {
            return Some(connection);
        }
        let now = Instant::now();
        let mut table = self.lock();
        let destination = table.entry(key.clone()).or_insert_with(|| self.create(key));
        if destination.suspended_at(now).is_some() {
            return Some(connection);
        }
        destination.idle.keep(hop, connection, now)
    }
}
