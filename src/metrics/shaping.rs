//! Output control metrics (docs/delivery.md): per destination the
//! connection limit after feedback, active connections, suspension, and
//! why mail was throttled; and whether the cluster's Redis answers.
//!
//! The destination gauges are read from the delivery engine at scrape time
//! through a source it registers, like the queue gauges, so they never
//! drift from it. Throttle counts sit behind a mutex: they are counted per
//! throttled job, which is never the per-message hot path of unthrottled
//! mail.
//!
//! Series per destination stay bounded whatever the number of recipient
//! domains: a `[[destination]]` rule always has its own (rules are few),
//! a next hop without a rule (one per domain) only while it is among
//! [`MAX_HOP_SERIES`] of them; the rest are counted under `other` (throttle
//! counts, connections) or left out (the per-destination limit gauges show
//! the most constrained next hops).

use std::cmp::Ordering as Order;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::text::{escape_label_value, family, sample};

/// Next hops without a rule that have series of their own at a time.
pub const MAX_HOP_SERIES: usize = 100;
/// The label that next hops beyond [`MAX_HOP_SERIES`] are counted under.
pub const OTHER: &str = "other";
/// A next hop's throttle counts move to `other` once it has not been
/// throttled for this long (as long as a lowered limit is remembered).
const HOP_SERIES_IDLE: Duration = Duration::from_secs(600);

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
    /// A `[[destination]]` rule's (else a next hop's): whether it always
    /// has series of its own.
    #[serde(skip)]
    pub rule: bool,
}

/// The connections in use at one destination
/// (`relayq_destination_active_connections`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveConnections {
    pub destination: String,
    /// A `[[destination]]` rule's (else a next hop's).
    pub rule: bool,
    pub active: u64,
}

/// Throttle counts per reason ([`Throttle::ALL`] order).
type Counts = [u64; 3];

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
    throttled: Mutex<Throttles>,
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

    /// Counts a job that `destination` (a rule's name when `rule`, else a
    /// next hop's) held back.
    pub fn throttled(&self, destination: &str, rule: bool, reason: Throttle) {
        let mut throttles = self
            .throttled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        throttles.count(destination, rule, reason, Instant::now());
    }

    /// Whether the last Redis command succeeded (`relayq_cluster_redis_up`).
    pub fn set_redis_up(&self, up: bool) {
        self.redis.store(if up { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Writes the output control families.
    pub(super) fn render(&self, out: &mut String) {
        let (rows, _) = split_hops(self.rows(), |row| row.rule, most_constrained);
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
        let counts = {
            let mut throttles = self
                .throttled
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            throttles.fold_idle(Instant::now());
            throttles.by_label()
        };
        let mut names: Vec<&str> = rows.iter().map(|row| row.destination.as_str()).collect();
        names.extend(counts.keys().map(String::as_str));
        names.sort_unstable();
        names.dedup();
        for name in names {
            let counted = counts.get(name).copied().unwrap_or_default();
            for (reason, count) in Throttle::ALL.into_iter().zip(counted) {
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

/// Throttle counts by destination: rules by name, next hops by name while
/// they are among [`MAX_HOP_SERIES`] counted lately, the rest as `other`
/// (what moves there keeps its count, so sums never go down).
#[derive(Default)]
struct Throttles {
    rules: BTreeMap<String, Counts>,
    /// Each with when it was last counted.
    hops: HashMap<String, (Counts, Instant)>,
    other: Counts,
}

impl Throttles {
    fn count(&mut self, destination: &str, rule: bool, reason: Throttle, now: Instant) {
        let index = reason as usize;
        if rule {
            self.rules.entry(destination.to_owned()).or_default()[index] += 1;
            return;
        }
        if let Some((counts, last)) = self.hops.get_mut(destination) {
            counts[index] += 1;
            *last = now;
            return;
        }
        if self.hops.len() >= MAX_HOP_SERIES {
            self.fold_idle(now);
        }
        if self.hops.len() < MAX_HOP_SERIES {
            let mut counts = Counts::default();
            counts[index] = 1;
            self.hops.insert(destination.to_owned(), (counts, now));
        } else {
            self.other[index] += 1;
        }
    }

    /// Moves the counts of next hops not throttled for a while to `other`.
    fn fold_idle(&mut self, now: Instant) {
        let other = &mut self.other;
        self.hops.retain(|_, (counts, last)| {
            let keep = now.duration_since(*last) < HOP_SERIES_IDLE;
            if !keep {
                for (sum, count) in other.iter_mut().zip(*counts) {
                    *sum += count;
                }
            }
            keep
        });
    }

    fn by_label(&self) -> BTreeMap<String, Counts> {
        let mut labels = self.rules.clone();
        for (name, (counts, _)) in &self.hops {
            labels.insert(name.clone(), *counts);
        }
        if self.other != Counts::default() {
            let sums = labels.entry(OTHER.to_owned()).or_default();
            for (sum, count) in sums.iter_mut().zip(self.other) {
                *sum += count;
            }
        }
        labels
    }
}

/// Splits per-destination rows into those with series of their own (every
/// rule's, and the first [`MAX_HOP_SERIES`] next hops' in `order`) and the
/// rest.
pub(super) fn split_hops<T>(
    rows: Vec<T>,
    is_rule: impl Fn(&T) -> bool,
    order: impl FnMut(&T, &T) -> Order,
) -> (Vec<T>, Vec<T>) {
    let (mut shown, mut hops): (Vec<T>, Vec<T>) = rows.into_iter().partition(|row| is_rule(row));
    if hops.len() <= MAX_HOP_SERIES {
        shown.append(&mut hops);
        return (shown, Vec::new());
    }
    hops.sort_by(order);
    let rest = hops.split_off(MAX_HOP_SERIES);
    shown.append(&mut hops);
    (shown, rest)
}

/// Lowest connection limit first, then suspended ones, then by name.
fn most_constrained(a: &DestinationShaping, b: &DestinationShaping) -> Order {
    a.concurrency_limit
        .cmp(&b.concurrency_limit)
        .then_with(|| {
            b.suspended_until
                .is_some()
                .cmp(&a.suspended_until.is_some())
        })
        .then_with(|| a.destination.cmp(&b.destination))
}

/// The `relayq_destination_active_connections` series: every rule, the
/// next hops with the most connections in use, and the rest summed up as
/// `other`.
pub(super) fn connection_series(destinations: Vec<ActiveConnections>) -> Vec<(String, u64)> {
    let (shown, rest) = split_hops(
        destinations,
        |row| row.rule,
        |a, b| {
            b.active
                .cmp(&a.active)
                .then_with(|| a.destination.cmp(&b.destination))
        },
    );
    let mut series: Vec<(String, u64)> = shown
        .into_iter()
        .map(|row| (row.destination, row.active))
        .collect();
    if !rest.is_empty() {
        series.push((OTHER.to_owned(), rest.iter().map(|row| row.active).sum()));
    }
    series
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
                rule: true,
            }]
        });
        shaping.throttled("google", true, Throttle::Rate);
        shaping.throttled("google", true, Throttle::Rate);
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

#[cfg(test)]
mod bounded {
    use super::*;

    fn series(out: &str, name: &str) -> Vec<String> {
        out.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .map(str::to_owned)
            .collect()
    }

    fn total(lines: &[String]) -> u64 {
        lines
            .iter()
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn series_stay_bounded_with_a_hundred_thousand_domains() {
        let shaping = ShapingMetrics::default();
        let domains = 100_000;
        shaping.set_source(move || {
            let mut rows: Vec<DestinationShaping> = (0..domains)
                .map(|n| DestinationShaping {
                    destination: format!("d{n}.test"),
                    concurrency_limit: 1 + n % 20,
                    active: 0,
                    waiting: 1,
                    suspended_until: None,
                    rule: false,
                })
                .collect();
            rows.push(DestinationShaping {
                destination: "google".into(),
                concurrency_limit: 20,
                active: 0,
                waiting: 0,
                suspended_until: None,
                rule: true,
            });
            rows
        });
        for n in 0..domains {
            shaping.throttled(&format!("d{n}.test"), false, Throttle::Feedback);
        }
        shaping.throttled("google", true, Throttle::Rate);
        let mut out = String::new();
        shaping.render(&mut out);

        let limits = series(&out, "relayq_destination_concurrency_limit");
        assert_eq!(limits.len(), MAX_HOP_SERIES + 1, "the rule and the hops");
        assert!(limits.iter().any(|line| line.contains("\"google\"")));
        // The most constrained next hops are the ones shown.
        assert!(
            limits
                .iter()
                .all(|line| line.contains("google") || line.ends_with(" 1"))
        );

        let throttled = series(&out, "relayq_destination_throttled_total");
        assert!(
            throttled.len() <= (MAX_HOP_SERIES * 2 + 2) * Throttle::ALL.len(),
            "{} throttle series",
            throttled.len()
        );
        // Nothing counted is lost: beyond the bound it is counted as other.
        assert_eq!(total(&throttled), domains as u64 + 1);
        assert!(throttled.iter().any(|line| line.starts_with(&format!(
            "relayq_destination_throttled_total{{destination=\"{OTHER}\",reason=\"feedback\"}}"
        ))));

        let connections = connection_series(
            (0..domains)
                .map(|n| ActiveConnections {
                    destination: format!("d{n}.test"),
                    rule: false,
                    active: u64::from(n % 3 == 0),
                })
                .collect(),
        );
        assert_eq!(connections.len(), MAX_HOP_SERIES + 1);
        assert_eq!(
            connections.iter().map(|(_, active)| active).sum::<u64>(),
            (0..domains).filter(|n| n % 3 == 0).count() as u64
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_next_hop_not_throttled_for_a_while_moves_to_other() {
        let shaping = ShapingMetrics::default();
        shaping.throttled("a.test", false, Throttle::Feedback);
        shaping.throttled("a.test", false, Throttle::Feedback);
        tokio::time::advance(HOP_SERIES_IDLE).await;
        shaping.throttled("b.test", false, Throttle::Rate);
        let mut out = String::new();
        shaping.render(&mut out);
        assert!(!out.contains("\"a.test\""), "{out}");
        assert!(
            out.contains(
                "relayq_destination_throttled_total{destination=\"other\",reason=\"feedback\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "relayq_destination_throttled_total{destination=\"b.test\",reason=\"rate\"} 1\n"
            ),
            "{out}"
        );
    }
}
