//! Suppression list metrics (docs/suppression.md): the addresses on the
//! list, and the recipients refused at RCPT because of it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::text::{family, sample};

/// The suppression part of [`super::Metrics`].
#[derive(Default)]
pub struct SuppressionMetrics {
    /// `relayq_suppressed_addresses`: entries in the in-memory set (lapsed
    /// ones included until the sweep removes them).
    addresses: AtomicU64,
    /// `relayq_suppressed_rcpts_total`.
    refused: AtomicU64,
}

impl SuppressionMetrics {
    pub fn set_addresses(&self, count: usize) {
        self.addresses.store(count as u64, Ordering::Relaxed);
    }

    /// One `RCPT TO:` refused because its address is suppressed.
    pub fn rcpt_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String) {
        family(
            out,
            "relayq_suppressed_addresses",
            "gauge",
            "Addresses on the suppression list.",
        );
        sample(
            out,
            "relayq_suppressed_addresses",
            &[],
            self.addresses.load(Ordering::Relaxed),
        );
        family(
            out,
            "relayq_suppressed_rcpts_total",
            "counter",
            "RCPT TO: commands refused because the address is on the suppression list.",
        );
        sample(
            out,
            "relayq_suppressed_rcpts_total",
            &[],
            self.refused.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_series_are_written() {
        let metrics = SuppressionMetrics::default();
        metrics.set_addresses(3);
        metrics.rcpt_refused();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("# TYPE relayq_suppressed_addresses gauge\n"));
        assert!(out.contains("relayq_suppressed_addresses 3\n"));
        assert!(out.contains("# TYPE relayq_suppressed_rcpts_total counter\n"));
        assert!(out.contains("relayq_suppressed_rcpts_total 1\n"));
    }
}
