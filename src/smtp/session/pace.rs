//! The pace a client must keep (pure): the deadline of a whole command line
//! and of a whole DATA/BDAT transfer, and the idle mark sessions are shed by.
//!
//! A command line must be complete within the idle timeout of the moment the
//! wait for it began, however its octets trickle in. A transfer earns one
//! second per `min_data_rate` octets received (Postfix's
//! `smtpd_min_data_rate` rule) on top of the idle timeout, so a client on a
//! slow but real link is never cut while one sending a byte a second is.
//! Both are bounded too by the idle timeout between any two reads.
//!
//! The credit a transfer earns is capped: its mark is never more than one
//! idle timeout ahead of the moment the octets arrived. Without the cap a
//! client could bank hours of credit with a fast burst (octets it may not
//! even be allowed to send) and then trickle, never shed and never cut.

use std::time::Duration;

use tokio::time::Instant;

/// What a session is waiting to receive from its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// When the wait for the command line, or the transfer, began.
    since: Instant,
    /// The instant up to which the client has kept pace: `since` for a
    /// command line; for a transfer, advanced by the octets received.
    mark: Instant,
    content: bool,
}

impl Request {
    pub fn command(since: Instant) -> Request {
        Request {
            since,
            mark: since,
            content: false,
        }
    }

    pub fn content(since: Instant) -> Request {
        Request {
            since,
            mark: since,
            content: true,
        }
    }

    /// A DATA or BDAT transfer (not a command line).
    pub fn is_content(&self) -> bool {
        self.content
    }

    /// When the transfer (or the wait for the command line) began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Counts `octets` of content that arrived at `now`: one second of credit
    /// per `min_data_rate` octets, the mark kept at most `timeout` (the idle
    /// timeout in force) ahead of `now`. Nothing for a command line.
    pub fn add_received(
        &mut self,
        octets: usize,
        min_data_rate: u64,
        now: Instant,
        timeout: Duration,
    ) {
        if !self.content {
            return;
        }
        let earned = Duration::from_secs_f64(octets as f64 / min_data_rate.max(1) as f64);
        let ceiling = now.checked_add(timeout).unwrap_or_else(far_future);
        let mark = self.mark.checked_add(earned).unwrap_or(ceiling);
        // A shortened timeout (stress mode) takes back credit beyond it.
        self.mark = mark.min(ceiling);
    }

    /// The instant up to which the client has kept pace, seen at `now` with
    /// `timeout` in force: never more than `timeout` ahead of `now` (the
    /// timeout may have shortened since the credit was earned). A client
    /// faster than the minimum rate has a mark in the future.
    pub fn mark(&self, now: Instant, timeout: Duration) -> Instant {
        let ceiling = now.checked_add(timeout).unwrap_or_else(far_future);
        self.mark.min(ceiling)
    }

    /// When the request times out: `timeout` after its mark (as of
    /// `last_read`), and no later than `timeout` after `last_read` (the
    /// longest silence).
    pub fn deadline(&self, timeout: Duration, last_read: Instant) -> Instant {
        let silence = last_read.checked_add(timeout).unwrap_or_else(far_future);
        let paced = self.mark(last_read, timeout).checked_add(timeout);
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
        assert_eq!(request.deadline(TIMEOUT, Instant::now()), start + TIMEOUT);
        assert_eq!(request.mark(Instant::now(), TIMEOUT), start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_earns_one_second_per_min_rate_octets() {
        let start = Instant::now();
        let mut request = Request::content(start);
        request.add_received(2_500, RATE, start, TIMEOUT);
        assert_eq!(request.mark(start, TIMEOUT), start + Duration::from_secs(5));
        // Ahead of its pace: only the silence bound applies.
        assert_eq!(request.deadline(TIMEOUT, start), start + TIMEOUT);
        tokio::time::advance(Duration::from_secs(8)).await;
        let now = Instant::now();
        assert_eq!(
            request.deadline(TIMEOUT, now),
            start + Duration::from_secs(15)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn credit_is_capped_at_one_timeout_ahead() {
        let start = Instant::now();
        let mut banked = Request::content(start);
        // A fast burst worth hours at the minimum rate...
        banked.add_received(25_000_000, RATE, start, TIMEOUT);
        assert_eq!(banked.mark(start, TIMEOUT), start + TIMEOUT);
        // ...then a trickle: the mark barely moves, and it falls behind.
        for _ in 0..21 {
            tokio::time::advance(Duration::from_secs(1)).await;
            banked.add_received(1, RATE, Instant::now(), TIMEOUT);
        }
        let now = Instant::now();
        assert!(banked.mark(now, TIMEOUT) < now);
        assert!(
            banked.deadline(TIMEOUT, now) <= now,
            "cut within two timeouts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_shortens_the_credit_already_earned() {
        let start = Instant::now();
        let mut request = Request::content(start);
        let long = Duration::from_secs(300);
        request.add_received(1_000_000, RATE, start, long);
        assert_eq!(request.mark(start, long), start + long);
        // Stress mode began: the mark seen now is at most TIMEOUT ahead.
        assert_eq!(request.mark(start, TIMEOUT), start + TIMEOUT);
        request.add_received(1, RATE, start, TIMEOUT);
        assert_eq!(request.mark(start, long), start + TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_falls_behind_and_a_slow_link_does_not() {
        let start = Instant::now();
        let mut trickle = Request::content(start);
        let mut slow_link = Request::content(start);
        for second in 1..=60u64 {
            tokio::time::advance(Duration::from_secs(1)).await;
            let now = Instant::now();
            trickle.add_received(1, RATE, now, TIMEOUT);
            slow_link.add_received(600, RATE, now, TIMEOUT);
            assert!(slow_link.deadline(TIMEOUT, now) > now);
            assert!(slow_link.mark(now, TIMEOUT) >= now);
            if second > 10 {
                assert!(trickle.deadline(TIMEOUT, now) <= now, "second {second}");
            }
        }
    }
}
