//! Webhook metrics (docs/events.md): events committed per webhook
//! and type, posts by result, the backlog, the oldest waiting event's age,
//! and events dropped. Read at scrape time from the webhooks, which own the
//! counts, through a source the daemon registers.

use std::sync::OnceLock;

use super::text::{escape_label_value, family, sample};

/// One webhook's counts.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub webhook: String,
    /// Events committed for the webhook, per type it takes.
    pub events: Vec<(&'static str, u64)>,
    pub posts_ok: u64,
    pub posts_error: u64,
    pub backlog: u64,
    /// 0 when nothing waits.
    pub oldest_event_seconds: f64,
    pub dropped: u64,
}

type Source = Box<dyn Fn() -> Vec<WebhookRow> + Send + Sync>;
/// A per-webhook series: name, help, and its value in a row.
type Series = (&'static str, &'static str, fn(&WebhookRow) -> String);

#[derive(Default)]
pub struct WebhookMetrics {
    source: OnceLock<Source>,
}

impl WebhookMetrics {
    /// Registers where the rows come from (once, by the daemon).
    pub fn set_source(&self, source: impl Fn() -> Vec<WebhookRow> + Send + Sync + 'static) {
        let _ = self.source.set(Box::new(source));
    }

    pub(super) fn render(&self, out: &mut String) {
        let rows = self.source.get().map(|source| source()).unwrap_or_default();
        if rows.is_empty() {
            return;
        }
        let names: Vec<String> = rows
            .iter()
            .map(|row| escape_label_value(&row.webhook))
            .collect();
        family(
            out,
            "relayq_webhook_events_total",
            "counter",
            "Events committed to a webhook's outbox, by type.",
        );
        for (row, name) in rows.iter().zip(&names) {
            for (event_type, count) in &row.events {
                sample(
                    out,
                    "relayq_webhook_events_total",
                    &[("webhook", name), ("type", event_type)],
                    count,
                );
            }
        }
        family(
            out,
            "relayq_webhook_posts_total",
            "counter",
            "Batches posted to a webhook, by result (ok: a 2xx answer).",
        );
        for (row, name) in rows.iter().zip(&names) {
            for (result, count) in [("ok", row.posts_ok), ("error", row.posts_error)] {
                sample(
                    out,
                    "relayq_webhook_posts_total",
                    &[("webhook", name), ("result", result)],
                    count,
                );
            }
        }
        let gauges: [Series; 3] = [
            (
                "relayq_webhook_backlog",
                "Events waiting to be taken by a webhook.",
                |row| row.backlog.to_string(),
            ),
            (
                "relayq_webhook_oldest_event_seconds",
                "Age of the oldest event waiting for a webhook (0: none waits).",
                |row| format!("{:.3}", row.oldest_event_seconds),
            ),
            (
                "relayq_webhook_events_dropped_total",
                "Events dropped past retry_for or beyond max_backlog.",
                |row| row.dropped.to_string(),
            ),
        ];
        for (metric, help, value) in gauges {
            let kind = if metric.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            family(out, metric, kind, help);
            for (row, name) in rows.iter().zip(&names) {
                sample(out, metric, &[("webhook", name)], value(row));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_render_every_family() {
        let metrics = WebhookMetrics::default();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.is_empty());
        metrics.set_source(|| {
            vec![WebhookRow {
                webhook: "app".into(),
                events: vec![("delivered", 3), ("bounced", 1)],
                posts_ok: 2,
                posts_error: 1,
                backlog: 4,
                oldest_event_seconds: 1.5,
                dropped: 0,
            }]
        });
        metrics.render(&mut out);
        for line in [
            "relayq_webhook_events_total{webhook=\"app\",type=\"delivered\"} 3\n",
            "relayq_webhook_posts_total{webhook=\"app\",result=\"error\"} 1\n",
            "relayq_webhook_backlog{webhook=\"app\"} 4\n",
            "relayq_webhook_oldest_event_seconds{webhook=\"app\"} 1.500\n",
            "relayq_webhook_events_dropped_total{webhook=\"app\"} 0\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
    }
}
