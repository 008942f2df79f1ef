//! Failed AUTH attempts per client address, across sessions: the third
//! failure within [`WINDOW`] locks the address out of AUTH for [`LOCKOUT`];
//! a success clears its record.
//!
//! The map is bounded: at [`CAPACITY`] addresses, stale records go first,
//! then the one idle longest. Time is passed in, so tests need no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures within [`WINDOW`] that lock an address out.
pub const MAX_FAILURES: usize = 3;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at most (about 64 bytes each).
const CAPACITY: usize = 16 * 1024;

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Below the limit: the client may try again.
    Counted,
    /// This was the failure that locks the address out.
    LockedOut,
}

#[derive(Default)]
pub struct AuthFailures {
    by_address: Mutex<HashMap<IpAddr, Record>>,
    capacity: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures inside the window, oldest first; at most `MAX_FAILURES - 1`.
    recent: [Option<Instant>; MAX_FAILURES - 1],
    locked_until: Option<Instant>,
}

impl Record {
    /// When this record stops mattering.
    fn expires(&self) -> Option<Instant> {
        let last_failure = self.recent.iter().flatten().max().map(|at| *at + WINDOW);
        last_failure.max(self.locked_until)
    }
}

impl AuthFailures {
    pub fn new() -> AuthFailures {
        AuthFailures::default()
    }

    #[cfg(test)]
    fn with_capacity(capacity: usize) -> AuthFailures {
        AuthFailures {
            by_address: Mutex::default(),
            capacity: Some(capacity),
        }
    }

    /// Whether AUTH from `address` is refused at `now`.
    pub fn is_locked_out(&self, address: IpAddr, now: Instant) -> bool {
        let map = self
            .by_address
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        map.get(&address)
            .and_then(|record| record.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failed AUTH from `address` at `now`.
    pub fn failed(&self, address: IpAddr, now: Instant) -> AfterFailure {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !map.contains_key(&address) {
            make_room(&mut map, self.capacity.unwrap_or(CAPACITY), now);
        }
        let record = map.entry(address).or_insert(Record {
            recent: [None; MAX_FAILURES - 1],
            locked_until: None,
        });
        let in_window: Vec<Instant> = record
            .recent
            .iter()
            .flatten()
            .copied()
            .filter(|at| now.saturating_duration_since(*at) < WINDOW)
            .collect();
        if in_window.len() + 1 >= MAX_FAILURES {
            record.recent = [None; MAX_FAILURES - 1];
            record.locked_until = Some(now + LOCKOUT);
            return AfterFailure::LockedOut;
        }
        record.recent = [None; MAX_FAILURES - 1];
        for (slot, at) in record
            .recent
            .iter_mut()
            .zip(in_window.into_iter().chain([now]))
        {
            *slot = Some(at);
        }
        AfterFailure::Counted
    }

    /// A successful AUTH from `address`: its failures are forgotten.
    pub fn succeeded(&self, address: IpAddr) {
        let mut map = self
            .by_address
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        map.remove(&address);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_address.lock().unwrap().len()
    }
}

/// Leaves room for one more record: drops the expired ones, then, if still
/// full, the one that expires first among those not locked out (a flood of
/// single failures from many addresses must not lift a lockout).
fn make_room(map: &mut HashMap<IpAddr, Record>, capacity: usize, now: Instant) {
    if map.len() < capacity {
        return;
    }
    map.retain(|_, record| record.expires().is_some_and(|expires| expires > now));
    if map.len() < capacity {
        return;
    }
    let first = map
        .iter()
        .min_by_key(|(_, record)| {
            let locked = record.locked_until.is_some_and(|until| until > now);
            (locked, record.expires())
        })
        .map(|(address, _)| *address);
    if let Some(address) = first {
        map.remove(&address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn third_failure_in_the_window_locks_out_for_the_lockout() {
        let failures = AuthFailures::new();
        let start = Instant::now();
        let client = ip("192.0.2.1");
        assert_eq!(failures.failed(client, start), AfterFailure::Counted);
        assert_eq!(
            failures.failed(client, start + Duration::from_secs(60)),
            AfterFailure::Counted
        );
        assert!(!failures.is_locked_out(client, start + Duration::from_secs(61)));
        let third = start + Duration::from_secs(120);
        assert_eq!(failures.failed(client, third), AfterFailure::LockedOut);
        assert!(failures.is_locked_out(client, third));
        assert!(failures.is_locked_out(client, third + LOCKOUT - Duration::from_secs(1)));
        assert!(!failures.is_locked_out(client, third + LOCKOUT));
        assert!(!failures.is_locked_out(ip("192.0.2.2"), third));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let failures = AuthFailures::new();
        let start = Instant::now();
        let client = ip("2001:db8::1");
        failures.failed(client, start);
        failures.failed(client, start + Duration::from_secs(1));
        let later = start + WINDOW + Duration::from_secs(1);
        assert_eq!(failures.failed(client, later), AfterFailure::Counted);
        assert_eq!(failures.failed(client, later), AfterFailure::Counted);
        assert_eq!(failures.failed(client, later), AfterFailure::LockedOut);
    }

    #[test]
    fn success_resets_the_count() {
        let failures = AuthFailures::new();
        let now = Instant::now();
        let client = ip("192.0.2.1");
        failures.failed(client, now);
        failures.failed(client, now);
        failures.succeeded(client);
        assert_eq!(failures.failed(client, now), AfterFailure::Counted);
        assert_eq!(failures.failed(client, now), AfterFailure::Counted);
    }

    #[test]
    fn memory_is_bounded_and_lockouts_outlive_plain_failures() {
        let failures = AuthFailures::with_capacity(4);
        let now = Instant::now();
        let locked = ip("10.0.0.1");
        for _ in 0..MAX_FAILURES {
            failures.failed(locked, now);
        }
        for host in 2..50 {
            failures.failed(
                ip(&format!("10.0.0.{host}")),
                now + Duration::from_secs(host),
            );
            assert!(failures.len() <= 4);
        }
        // Single failures are dropped before a lockout.
        assert!(failures.is_locked_out(locked, now + Duration::from_secs(60)));
        // Expired records are dropped before anything else.
        let much_later = now + LOCKOUT + WINDOW + Duration::from_secs(100);
        failures.failed(ip("10.0.1.1"), much_later);
        assert_eq!(failures.len(), 1);
    }
}
