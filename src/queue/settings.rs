//! The queue's part of the live settings: the host name (the
//! Reporting-MTA of DSNs and their Message-ID domain), the retry policy
//! and the bounce classifier (the operator's `bounce.rules_file` as read
//! with this configuration, before the built-in rules). Built with the other layers' parts and swapped with them by a
//! reload (`live`); the queue reads only this part, so it needs nothing of
//! delivery or intake.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::retry::RetryPolicy;
use crate::bounce::{BuiltinRules, Classifier};
use crate::config::Config;

pub struct QueueSettings {
    pub hostname: String,
    pub retry: RetryPolicy,
    /// The classes of failures that transitions record.
    pub classifier: Classifier,
}

impl QueueSettings {
    /// `builtin`: the built-in bounce rules, compiled once per process.
    pub fn new(config: &Config, builtin: Arc<BuiltinRules>) -> QueueSettings {
        QueueSettings {
            hostname: config.hostname.clone(),
            retry: RetryPolicy::new(&config.retry),
            classifier: Classifier::new(config.bounce.rules.clone(), builtin),
        }
    }
}

/// The queue settings in force, replaced whole by a reload; readers load
/// them once per unit of work.
pub type CurrentQueueSettings = Arc<ArcSwap<QueueSettings>>;
