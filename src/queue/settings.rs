//! The queue's part of the live settings: the host name (the
//! Reporting-MTA of DSNs and their Message-ID domain) and the retry
//! policy. Built with the other layers' parts and swapped with them by a
//! reload (`live`); the queue reads only this part, so it needs nothing of
//! delivery or intake.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::retry::RetryPolicy;
use crate::config::Config;

#[derive(Debug)]
pub struct QueueSettings {
    pub hostname: String,
    pub retry: RetryPolicy,
}

impl QueueSettings {
    pub fn new(config: &Config) -> QueueSettings {
        QueueSettings {
            hostname: config.hostname.clone(),
            retry: RetryPolicy::new(&config.retry),
        }
    }
}

/// The queue settings in force, replaced whole by a reload; readers load
/// them once per unit of work.
pub type CurrentQueueSettings = Arc<ArcSwap<QueueSettings>>;
