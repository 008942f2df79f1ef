//! Retry policy (RFC 5321 §4.5.4.1): exponential backoff with jitter, and expiry.

use std::time::Duration;

use crate::config::RetrySettings;

/// ±10% so that a recovering destination is not hit by the whole queue at once.
const JITTER: f64 = 0.10;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    initial: Duration,
    factor: f64,
    max: Duration,
    pub max_age: Duration,
    pub delay_warning: Option<Duration>,
}

impl RetryPolicy {
    pub fn new(settings: &RetrySettings) -> RetryPolicy {
        RetryPolicy {
            initial: settings.initial,
            factor: settings.factor,
            max: settings.max,
            max_age: settings.max_age,
            delay_warning: settings.delay_warning,
        }
    }

    /// Delay before the next attempt after `attempts` failed ones (≥ 1):
    /// `initial × factor^(attempts−1)`, capped at `max`, without jitter.
    pub fn base_delay(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let seconds = self.initial.as_secs_f64() * self.factor.powi(exponent);
        if !seconds.is_finite() || seconds >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(seconds)
        }
    }

    /// `base_delay` with jitter; `unit` in [0, 1) picks the point in ±10%.
    pub fn delay(&self, attempts: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempts).as_secs_f64();
        let factor = 1.0 + JITTER * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64(base * factor)
    }

    /// Mail still undelivered at this age is bounced as expired.
    pub fn is_expired(&self, age: Duration) -> bool {
        age >= self.max_age
    }
}

/// A number in [0, 1) that differs between calls; good enough for jitter.
pub fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(300),
            factor: 2.0,
            max: Duration::from_secs(3600),
            max_age: Duration::from_secs(5 * 86400),
            delay_warning: None,
        }
    }

    #[test]
    fn exponential_then_capped() {
        let policy = policy();
        let delays: Vec<u64> = (1..=6).map(|n| policy.base_delay(n).as_secs()).collect();
        assert_eq!(delays, [300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(policy.base_delay(10_000), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let policy = policy();
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs(270));
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(300));
        for _ in 0..1000 {
            let delay = policy.delay(2, jitter_unit()).as_secs_f64();
            assert!((540.0..=660.0).contains(&delay), "{delay}");
        }
    }

    #[test]
    fn expiry() {
        let policy = policy();
        assert!(!policy.is_expired(Duration::from_secs(5 * 86400 - 1)));
        assert!(policy.is_expired(Duration::from_secs(5 * 86400)));
    }
}
