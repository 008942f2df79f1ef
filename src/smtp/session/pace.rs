//! The pace a client must keep (pure): the deadline of a whole command line
//! and of a whole DATA/BDAT transfer, and the idle mark sessions are shed by.
//!
//! A command line must be complete within the idle timeout of the moment the
//! wait for it began, however its octets trickle in. A transfer may take the
//! idle timeout plus one second per `min_data_rate` octets received
//! (Postfix's `smtpd_min_data_rate` rule), so a client on a slow but real
//! link is never cut while one sending a byte a second is. Both are bounded
//! too by the idle timeout between any two reads.

use std::time::Duration;

use tokio::time::Instant;

/// What a session is waiting to receive from its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// When the wait for the command line, or the transfer, began.
    since: Instant,
    /// Content octets received so far; `None` for a command line.
    received: Option<u64>,
}

impl Request {
    pub fn command(since: Instant) -> Request {
        Request {
            since,
            received: None,
        }
    }

    pub fn content(since: Instant) -> Request {
        Request {
            since,
            received: Some(0),
        }
    }

    /// A DATA or BDAT transfer (not a command line).
    pub fn is_content(&self) -> bool {
        self.received.is_some()
    }

    /// Counts content octets; nothing for a command line.
    pub fn add_received(&mut self, octets: usize) {
        if let Some(received) = self.received.as_mut() {
            *received = received.saturating_add(octets as u64);
        }
    }

    /// The instant up to which the client has kept pace: the start, plus for
    /// a transfer one second per `min_data_rate` octets received. A client
    /// faster than the minimum rate has a mark in the future.
    pub fn mark(&self, min_data_rate: u64) -> Instant {
        let received = self.received.unwrap_or(0);
        let earned = Duration::from_secs_f64(received as f64 / min_data_rate.max(1) as f64);
        self.since.checked_add(earned).unwrap_or_else(far_future)
    }

    /// When the request times out: `timeout` after its mark, and no later
    /// than `timeout` after `last_read` (the longest silence).
    pub fn deadline(&self, timeout: Duration, min_data_rate: u64, last_read: Instant) -> Instant {
        let paced = self.mark(min_data_rate).checked_add(timeout);
        let silence = last_read.checked_add(timeout).unwrap_or_else(far_future);
        paced.map_or(silence, |paced| paced.min(silence))
    }
}

/// About thirty years from now, as tokio does for "never".
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);
    const RATE: u64 = 500;

    #[tokio::test(start_paused = true)]
    async fn a_command_line_has_one_deadline_however_it_trickles() {
        let start = Instant::now();
        let request = Request::command(start);
        tokio::time::advance(Duration::from_secs(9)).await;
        // A byte just arrived: the deadline stays where the wait began.
        assert_eq!(
            request.deadline(TIMEOUT, RATE, Instant::now()),
            start + TIMEOUT
        );
        assert_eq!(request.mark(RATE), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_earns_one_second_per_min_rate_octets() {
        let start = Instant::now();
        let mut request = Request::content(start);
        request.add_received(5_000);
        assert_eq!(request.mark(RATE), start + Duration::from_secs(10));
        // Well ahead of its pace: only the silence bound applies.
        assert_eq!(request.deadline(TIMEOUT, RATE, start), start + TIMEOUT);
        tokio::time::advance(Duration::from_secs(15)).await;
        let now = Instant::now();
        assert_eq!(
            request.deadline(TIMEOUT, RATE, now),
            start + Duration::from_secs(20)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_falls_behind_and_a_slow_link_does_not() {
        let start = Instant::now();
        let mut trickle = Request::content(start);
        let mut slow_link = Request::content(start);
        for second in 1..=60u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            trickle.add_received(1);
            slow_link.add_received(600);
            let now = Instant::now();
            assert!(slow_link.deadline(TIMEOUT, RATE, now) > now);
            if second > 10 {
                assert!(
                    trickle.deadline(TIMEOUT, RATE, now) <= now,
                    "second {second}"
                );
            }
        }
    }
}
