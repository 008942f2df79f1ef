//! Why a job cannot start now, as its destination says it: the wait of
//! its recipients (deferred without an attempt), or a dead next hop.

use std::time::SystemTime;

use tokio::time::Instant;

use crate::metrics::Throttle;
use crate::outcome::RemoteReply;

/// Why a job cannot start now.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Every host refused connections recently: an ordinary deferral.
    Dead(RemoteReply),
    /// Waiting for a rate token or the end of a suspension: deferred until
    /// then, without counting an attempt.
    Wait(Wait),
}

/// A job its destination would not take now, and why.
pub struct Rejected<J> {
    pub job: J,
    pub refusal: Refusal,
    /// What to count in `relayq_destination_throttled_total`, if anything.
    pub throttle: Option<Throttle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub until: SystemTime,
    /// `4.7.0 destination NAME …`: the recipients' last reply meanwhile.
    pub reply: RemoteReply,
}

impl Wait {
    /// Waiting for destination `label`'s rate slot at `at`.
    pub(super) fn rate(label: &str, at: Instant, now: Instant) -> Wait {
        let left = at.saturating_duration_since(now);
        Wait {
            until: SystemTime::now() + left,
            reply: RemoteReply::local(
                "4.7.0",
                format!(
                    "destination {label} rate limit: next start in {:.1}s",
                    left.as_secs_f64()
                ),
            ),
        }
    }
}
