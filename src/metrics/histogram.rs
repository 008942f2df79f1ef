//! A Prometheus histogram on atomics: fixed upper bounds, observed from any
//! thread without a lock (hot path: a few relaxed atomic adds, no I/O).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of `relayq_spool_commit_seconds`: an fsync takes from well
/// under a millisecond (NVMe) to tens of milliseconds (spinning disk).
pub const COMMIT_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of `relayq_spool_commit_batch_size` (messages per commit).
pub const BATCH_SIZE: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Upper bounds of `relayq_delivery_seconds`: from a direct delivery (under
/// a second) to the end of the default `retry.max_age` (5 days).
pub const DELIVERY_SECONDS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 432000.0,
];

pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds` for
    /// `+Inf`. Made cumulative when encoded.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum's `f64` bits, updated by compare-and-swap.
    sum: AtomicU64,
}

/// What an encoder needs: cumulative counts per upper bound (the last for
/// `+Inf`), the sum and the count.
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    pub cumulative: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values. Concurrent observations may show in a bucket but
    /// not yet in the count; scrapes tolerate that skew.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|bucket| {
                running += bucket.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 7.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative, vec![2, 3, 4]);
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.sum, 10.0);
    }
}
