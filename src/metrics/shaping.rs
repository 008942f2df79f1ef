//! Output control metrics (README "Output control"): per destination the
//! connection limit after feedback, active connections, suspension, and
//! why mail was throttled; and whether the cluster's Redis answers.
//!
//! The destination gauges are read from the delivery engine at scrape time
//! through a source it registers, like the queue gauges, so they never
//! drift from it. Throttle counts sit behind a mutex: they are counted per
//! throttled job, which is never the per-message hot path of unthrottled
//! mail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use super::text::{escape_label_value, family, sample};

/// One destination with a rule or a lowered limit, as `queue stats` and
/// the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DestinationShaping {
    pub destination: String,
    pub concurrency_limit: usize,
    pub active: usize,
    /// Jobs waiting for a connection slot.
    pub waiting: usize,
    /// RFC 3339; `None` (JSON null) when not suspended.
    pub suspended_until: Option<String>,
}

/// Why a destination held mail back (`relayq_destination_throttled_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Throttle {
    Rate,
    Feedback,
    Suspended,
}

impl Throttle {
    pub const ALL: [Throttle; 3] = [Throttle::Rate, Throttle::Feedback, Throttle::Suspended];

    pub fn as_str(self) -> &'static str {
        match self {
            Throttle::Rate => "rate",
            Throttle::Feedback => "feedback",
            Throttle::Suspended => "suspended",
        }
    }
}

type Source = Box<dyn Fn() -> Vec<DestinationShaping> + Send + Sync>;
/// A per-destination gauge: name, help, and its value in a row.
type Gauge = (&'static str, &'static str, fn(&DestinationShaping) -> u64);

/// The output control part of [`super::Metrics`].
#[derive(Default)]
pub struct ShapingMetrics {
    source: OnceLock<Source>,
    throttled: Mutex<BTreeMap<(String, Throttle), u64>>,
    /// 0: no `[cluster]`; 1: Redis down (or not reached yet); 2: up.
    redis: AtomicU8,
}

impl ShapingMetrics {
    /// Registers where the destination rows come from (once, by the daemon).
    pub fn set_source(&self, source: impl Fn() -> Vec<DestinationShaping> + Send + Sync + 'static) {
        let _ = self.source.set(Box::new(source));
    }

    /// The destinations with a rule or a lowered limit, by name.
    pub fn rows(&self) -> Vec<DestinationShaping> {
        self.source.get().map(|source| source()).unwrap_or_default()
    }

    pub fn throttled(&self, destination: &str, reason: Throttle) {
        let mut counts = self
            .throttled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry((destination.to_owned(), reason)).or_default() += 1;
    }

    /// Whether the last Redis command succeeded (`relayq_cluster_redis_up`).
    pub fn set_redis_up(&self, up: bool) {
        self.redis.store(if up { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Writes the output control families.
    pub(super) fn render(&self, out: &mut String) {
        let rows = self.rows();
        // relayq_destination_active_connections covers every destination,
        // not only these rows: it is written with the other delivery gauges.
        let gauges: [Gauge; 2] = [
            (
                "relayq_destination_concurrency_limit",
                "Connections a destination may have at once, after overload feedback.",
                |row| row.concurrency_limit as u64,
            ),
            (
                "relayq_destination_suspended",
                "1 while a destination is suspended after a suspend_on reply.",
                |row| u64::from(row.suspended_until.is_some()),
            ),
        ];
        for (name, help, value) in gauges {
            family(out, name, "gauge", help);
            for row in &rows {
                let destination = escape_label_value(&row.destination);
                sample(out, name, &[("destination", &destination)], value(row));
            }
        }
        family(
            out,
            "relayq_destination_throttled_total",
            "counter",
            "Jobs held back by a destination's rate, overload feedback or suspension.",
        );
        let counts = self
            .throttled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let mut names: Vec<&str> = rows.iter().map(|row| row.destination.as_str()).collect();
        names.extend(counts.keys().map(|(name, _)| name.as_str()));
        names.sort_unstable();
        names.dedup();
        for name in names {
            for reason in Throttle::ALL {
                let count = counts.get(&(name.to_owned(), reason)).copied().unwrap_or(0);
                sample(
                    out,
                    "relayq_destination_throttled_total",
                    &[
                        ("destination", &escape_label_value(name)),
                        ("reason", reason.as_str()),
                    ],
                    count,
                );
            }
        }
        let redis = self.redis.load(Ordering::Relaxed);
        if redis != 0 {
            family(
                out,
                "relayq_cluster_redis_up",
                "gauge",
                "1 while commands to the cluster's Redis succeed; 0 while rates fall back to local buckets.",
            );
            sample(out, "relayq_cluster_redis_up", &[], u64::from(redis == 2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_throttles_and_redis_render() {
        let shaping = ShapingMetrics::default();
        let mut out = String::new();
        shaping.render(&mut out);
        assert!(!out.contains("relayq_cluster_redis_up"), "{out}");
        shaping.set_source(|| {
            vec![DestinationShaping {
                destination: "google".into(),
                concurrency_limit: 3,
                active: 2,
                waiting: 5,
                suspended_until: Some("2026-12-01T21:00:00Z".into()),
            }]
        });
        shaping.throttled("google", Throttle::Rate);
        shaping.throttled("google", Throttle::Rate);
        shaping.set_redis_up(false);
        let mut out = String::new();
        shaping.render(&mut out);
        for line in [
            "relayq_destination_concurrency_limit{destination=\"google\"} 3\n",
            "relayq_destination_suspended{destination=\"google\"} 1\n",
            "relayq_destination_throttled_total{destination=\"google\",reason=\"rate\"} 2\n",
            "relayq_destination_throttled_total{destination=\"google\",reason=\"feedback\"} 0\n",
            "relayq_cluster_redis_up 0\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }
}
