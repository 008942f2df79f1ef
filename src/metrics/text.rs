//! The Prometheus text exposition format, version 0.0.4: one `# HELP` and
//! `# TYPE` per family, then its samples. Every labelled series is written
//! even when zero, so dashboards see a series from the first scrape.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::histogram::HistogramSnapshot;
use super::{
    ActiveConnections, AuthScope, Metrics, Outcome, QueueGauges, RefusalReason, ShedReason,
    lane_index,
};
use crate::bounce::BounceClass;
use crate::outcome::DaneResult;
use crate::queue::envelope::unix_ms;
use crate::queue::{Lane, Queue, State};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric, with the queue gauges read from `queue` as of `now` and
/// the connections in use per destination from `destinations`.
pub fn render(
    metrics: &Metrics,
    queue: &Queue,
    destinations: Vec<ActiveConnections>,
    now: SystemTime,
) -> String {
    // Read before the gauges: counts made while the rebuild ran say so.
    let rebuilding = queue.rebuild_progress().in_progress;
    let gauges = QueueGauges::read(queue);
    let now_ms = unix_ms(now);
    let mut out = String::with_capacity(4096);

    family(
        &mut out,
        "relayq_build_info",
        "gauge",
        "Always 1; the version label names the running build.",
    );
    sample(
        &mut out,
        "relayq_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    family(
        &mut out,
        "relayq_queue_messages",
        "gauge",
        "Queued messages by lane and state.",
    );
    for lane in Lane::ALL {
        for state in State::ALL {
            let count = gauges.messages[lane_index(lane)][state as usize];
            sample(
                &mut out,
                "relayq_queue_messages",
                &[("lane", lane.as_str()), ("state", state.as_str())],
                count,
            );
        }
    }

    family(
        &mut out,
        "relayq_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest queued message by lane; 0 when the lane is empty.",
    );
    for lane in Lane::ALL {
        let age_ms = gauges.oldest_arrival_ms[lane_index(lane)]
            .map_or(0, |arrival| now_ms.saturating_sub(arrival));
        sample(
            &mut out,
            "relayq_queue_oldest_age_seconds",
            &[("lane", lane.as_str())],
            age_ms as f64 / 1000.0,
        );
    }

    family(
        &mut out,
        "relayq_queue_rebuild_in_progress",
        "gauge",
        "1 while the schedule is rebuilt from the spool after a start (the queue gauges count only the messages read so far), then 0.",
    );
    sample(
        &mut out,
        "relayq_queue_rebuild_in_progress",
        &[],
        u64::from(rebuilding),
    );

    family(
        &mut out,
        "relayq_messages_accepted_total",
        "counter",
        "Messages acknowledged with 250 after the spool commit, by lane.",
    );
    for lane in Lane::ALL {
        sample(
            &mut out,
            "relayq_messages_accepted_total",
            &[("lane", lane.as_str())],
            metrics.accepted[lane_index(lane)].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_messages_refused_total",
        "counter",
        "New mail refused before it was stored, by lane and reason.",
    );
    for lane in Lane::ALL {
        for reason in RefusalReason::ALL {
            sample(
                &mut out,
                "relayq_messages_refused_total",
                &[("lane", lane.as_str()), ("reason", reason.as_str())],
                metrics.refused[lane_index(lane)][reason as usize].load(Ordering::Relaxed),
            );
        }
    }

    family(
        &mut out,
        "relayq_duplicate_submissions_total",
        "counter",
        "Repeats of an idempotent submission answered with the original queue id; nothing stored.",
    );
    sample(
        &mut out,
        "relayq_duplicate_submissions_total",
        &[],
        metrics.duplicate_submissions.load(Ordering::Relaxed),
    );

    family(
        &mut out,
        "relayq_recipients_total",
        "counter",
        "Recipient outcomes of delivery attempts, by lane and outcome.",
    );
    for lane in Lane::ALL {
        for outcome in Outcome::ALL {
            sample(
                &mut out,
                "relayq_recipients_total",
                &[("lane", lane.as_str()), ("outcome", outcome.as_str())],
                metrics.recipients[lane_index(lane)][outcome as usize].load(Ordering::Relaxed),
            );
        }
    }

    family(
        &mut out,
        "relayq_bounces_total",
        "counter",
        "Recipients bounced or expired, by class (docs/events.md, \"Bounce classes\").",
    );
    for class in BounceClass::ALL {
        sample(
            &mut out,
            "relayq_bounces_total",
            &[("class", class.as_str())],
            metrics.bounces[class.index()].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_deferrals_total",
        "counter",
        "Deferred delivery attempts of a recipient, by class.",
    );
    for class in BounceClass::ALL {
        sample(
            &mut out,
            "relayq_deferrals_total",
            &[("class", class.as_str())],
            metrics.deferrals[class.index()].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_smtp_connections_active",
        "gauge",
        "Open inbound SMTP sessions.",
    );
    sample(
        &mut out,
        "relayq_smtp_connections_active",
        &[],
        metrics.connections_active.load(Ordering::Relaxed),
    );

    family(
        &mut out,
        "relayq_delivery_slots_in_use",
        "gauge",
        "Lane workers running a delivery job now, by lane (at most the lane's concurrency).",
    );
    for lane in Lane::ALL {
        sample(
            &mut out,
            "relayq_delivery_slots_in_use",
            &[("lane", lane.as_str())],
            metrics.delivery_slots_in_use[lane_index(lane)].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_smtp_sessions_shed_total",
        "counter",
        "Inbound SMTP sessions relayq closed itself, by reason: pressure (longest idle, closed for a waiting client), command_timeout, data_timeout.",
    );
    for reason in ShedReason::ALL {
        sample(
            &mut out,
            "relayq_smtp_sessions_shed_total",
            &[("reason", reason.as_str())],
            metrics.sessions_shed[reason as usize].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_auth_lockouts_total",
        "counter",
        "AUTH lockouts begun after failed attempts, by scope: network (3 failures from one /24, /64 or loopback), user (10 for one user name), global (100 in all); each lasts 15 minutes.",
    );
    for scope in AuthScope::ALL {
        sample(
            &mut out,
            "relayq_auth_lockouts_total",
            &[("scope", scope.as_str())],
            metrics.auth_lockouts[scope as usize].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_dane_results_total",
        "counter",
        "DANE (delivery.dane) per attempted MX host: matched, no_usable_tlsa (TLS without authentication), mismatch, no_starttls, handshake_failed, tlsa_lookup_failed, dnssec_failed (MX or address lookup did not validate), insecure (DANE does not apply).",
    );
    for (index, label) in DaneResult::LABELS.iter().enumerate() {
        sample(
            &mut out,
            "relayq_dane_results_total",
            &[("result", label)],
            metrics.dane_results[index].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_destination_active_connections",
        "gauge",
        "Deliveries running at a destination now, each on one connection it holds or is opening (idle pooled connections not counted).",
    );
    for (destination, active) in super::shaping::connection_series(destinations) {
        sample(
            &mut out,
            "relayq_destination_active_connections",
            &[("destination", &escape_label_value(&destination))],
            active,
        );
    }

    family(
        &mut out,
        "relayq_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP, relayq reload), by result: ok (applied) or error (the file did not validate or load; nothing changed).",
    );
    for (index, result) in ["ok", "error"].into_iter().enumerate() {
        sample(
            &mut out,
            "relayq_config_reloads_total",
            &[("result", result)],
            metrics.config_reloads[index].load(Ordering::Relaxed),
        );
    }

    family(
        &mut out,
        "relayq_config_last_reload_successful",
        "gauge",
        "0 from a reload whose file did not validate or load until a reload is applied, else 1: while 0, the file on disk is not what runs, and a restart would fail.",
    );
    sample(
        &mut out,
        "relayq_config_last_reload_successful",
        &[],
        u8::from(!metrics.last_reload_failed.load(Ordering::Relaxed)),
    );

    family(
        &mut out,
        "relayq_smtp_stress",
        "gauge",
        "1 while the SMTP sessions in use are near smtp.max_connections (shorter deadlines), else 0.",
    );
    sample(
        &mut out,
        "relayq_smtp_stress",
        &[],
        u8::from(metrics.smtp_stress.load(Ordering::Relaxed)),
    );

    family(
        &mut out,
        "relayq_spool_commit_seconds",
        "histogram",
        "Time a session waited for the spool commit holding its message.",
    );
    histogram(
        &mut out,
        "relayq_spool_commit_seconds",
        &[],
        &metrics.commit_seconds.snapshot(),
    );

    family(
        &mut out,
        "relayq_spool_commit_batch_size",
        "histogram",
        "Requests in the spool commit that stored each accepted message.",
    );
    histogram(
        &mut out,
        "relayq_spool_commit_batch_size",
        &[],
        &metrics.commit_batch_size.snapshot(),
    );

    family(
        &mut out,
        "relayq_delivery_seconds",
        "histogram",
        "Time from acceptance to a final outcome (delivered, bounced, expired) per recipient.",
    );
    for lane in Lane::ALL {
        histogram(
            &mut out,
            "relayq_delivery_seconds",
            &[("lane", lane.as_str())],
            &metrics.delivery_seconds[lane_index(lane)].snapshot(),
        );
    }
    metrics.shaping.render(&mut out);
    metrics.webhooks.render(&mut out);
    metrics.suppression.render(&mut out);
    out
}

pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format requires: backslash, double quote and
/// line feed escaped. Destination names come from recipient domains, which
/// may hold any of them.
pub(super) fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// One sample line. Label values are written as given: fixed ASCII words
/// (lanes, states, outcomes, the crate version), or escaped by the caller
/// (`escape_label_value`).
pub(super) fn sample(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (index, (label, value)) in labels.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{value}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], values: &HistogramSnapshot) {
    let bucket_name = format!("{name}_bucket");
    let bounds = values
        .bounds
        .iter()
        .map(|bound| bound.to_string())
        .chain(std::iter::once("+Inf".to_owned()));
    for (bound, count) in bounds.zip(&values.cumulative) {
        let mut with_le = labels.to_vec();
        with_le.push(("le", &bound));
        sample(out, &bucket_name, &with_le, count);
    }
    sample(out, &format!("{name}_sum"), labels, values.sum);
    sample(out, &format!("{name}_count"), labels, values.count);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::events::EventKind;

    #[test]
    fn a_refused_reload_shows_until_one_is_applied() {
        let metrics = Metrics::new();
        let gauge = |metrics: &Metrics| {
            let text = render(metrics, &Queue::default(), Vec::new(), SystemTime::now());
            text.lines()
                .find_map(|line| line.strip_prefix("relayq_config_last_reload_successful "))
                .map(str::to_owned)
        };
        assert_eq!(gauge(&metrics).as_deref(), Some("1"));
        metrics.config_reloaded(false);
        assert_eq!(gauge(&metrics).as_deref(), Some("0"));
        metrics.config_reloaded(true);
        assert_eq!(gauge(&metrics).as_deref(), Some("1"));
    }

    #[test]
    fn empty_registry_writes_every_series() {
        let text = render(
            &Metrics::new(),
            &Queue::default(),
            Vec::new(),
            SystemTime::now(),
        );
        let queue_series = text
            .lines()
            .filter(|line| line.starts_with("relayq_queue_messages{"))
            .count();
        assert_eq!(queue_series, 8);
        assert!(text.contains("relayq_queue_messages{lane=\"low\",state=\"held\"} 0\n"));
        assert!(text.contains("relayq_smtp_sessions_shed_total{reason=\"pressure\"} 0\n"));
        assert!(text.contains("relayq_smtp_stress 0\n"));
        assert!(text.contains("relayq_queue_rebuild_in_progress 0\n"));
        let rebuilding = Queue::rebuilding(relayq_spool::QueueId(9), 3);
        let text = render(&Metrics::new(), &rebuilding, Vec::new(), SystemTime::now());
        assert!(text.contains("relayq_queue_rebuild_in_progress 1\n"));
        assert!(text.contains("relayq_queue_oldest_age_seconds{lane=\"high\"} 0\n"));
        assert!(text.contains("relayq_recipients_total{lane=\"high\",outcome=\"expired\"} 0\n"));
        assert!(text.contains("relayq_smtp_connections_active 0\n"));
        assert!(text.contains("relayq_delivery_slots_in_use{lane=\"high\"} 0\n"));
        assert!(text.contains("relayq_delivery_slots_in_use{lane=\"low\"} 0\n"));
        assert!(text.contains("relayq_spool_commit_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("relayq_delivery_seconds_count{lane=\"low\"} 0\n"));
        // Every sample belongs to a family declared above it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared
                        .iter()
                        .any(|family| name.starts_with(family.as_str())),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn queue_gauges_count_states_and_age_the_oldest() {
        use crate::queue::Envelope;
        use relayq_spool::QueueId;
        let queue = Queue::default();
        for (n, attempts) in [(1, 0), (2, 1), (3, 4)] {
            let mut envelope =
                Envelope::new(String::new(), Vec::new(), Lane::Low, SystemTime::now(), 1);
            envelope.attempts = attempts;
            queue.insert(QueueId(n), &envelope);
        }
        let arrival = queue.get(QueueId(1)).unwrap().arrival_ms;
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(arrival + 2500);
        let text = render(&Metrics::new(), &queue, Vec::new(), now);
        assert!(text.contains("relayq_queue_messages{lane=\"low\",state=\"ready\"} 1\n"));
        assert!(text.contains("relayq_queue_messages{lane=\"low\",state=\"deferred\"} 2\n"));
        assert!(text.contains("relayq_queue_messages{lane=\"high\",state=\"ready\"} 0\n"));
        assert!(text.contains("relayq_queue_oldest_age_seconds{lane=\"low\"} 2.5\n"));
    }

    #[test]
    fn recorded_values_appear_with_their_labels() {
        let metrics = Metrics::new();
        metrics.message_accepted(Lane::Low, Duration::from_millis(3), 2);
        metrics.recipient(Lane::Low, EventKind::Bounced, SystemTime::now());
        let text = render(&metrics, &Queue::default(), Vec::new(), SystemTime::now());
        assert!(text.contains("relayq_messages_accepted_total{lane=\"low\"} 1\n"));
        assert!(text.contains("relayq_recipients_total{lane=\"low\",outcome=\"bounced\"} 1\n"));
        assert!(text.contains("relayq_spool_commit_batch_size_bucket{le=\"1\"} 0\n"));
        assert!(text.contains("relayq_spool_commit_batch_size_bucket{le=\"2\"} 1\n"));
        assert!(text.contains("relayq_spool_commit_batch_size_sum 2\n"));
        assert!(text.contains("relayq_spool_commit_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("relayq_delivery_seconds_bucket{lane=\"low\",le=\"0.1\"} 1\n"));
    }

    #[test]
    fn bounces_and_deferrals_are_counted_by_class() {
        let metrics = Metrics::new();
        metrics.failure_class(EventKind::Bounced, BounceClass::InvalidRecipient);
        metrics.failure_class(EventKind::Expired, BounceClass::Expired);
        metrics.failure_class(EventKind::Deferred, BounceClass::RateLimited);
        metrics.failure_class(EventKind::Delivered, BounceClass::Unclassified);
        let text = render(&metrics, &Queue::default(), Vec::new(), SystemTime::now());
        for line in [
            "relayq_bounces_total{class=\"invalid_recipient\"} 1\n",
            "relayq_bounces_total{class=\"expired\"} 1\n",
            "relayq_bounces_total{class=\"rate_limited\"} 0\n",
            "relayq_bounces_total{class=\"unclassified\"} 0\n",
            "relayq_deferrals_total{class=\"rate_limited\"} 1\n",
            "relayq_deferrals_total{class=\"expired\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("relayq_bounces_total{").count(), 16);
    }

    #[test]
    fn slots_in_use_and_destination_connections_are_gauges() {
        let metrics = Arc::new(Metrics::new());
        let _slot = metrics.delivery_slot(Lane::High);
        let destinations = [("dest.example", 2), ("odd\"name\\", 0)]
            .into_iter()
            .map(|(destination, active)| ActiveConnections {
                destination: destination.to_owned(),
                rule: false,
                active,
            })
            .collect();
        let text = render(&metrics, &Queue::default(), destinations, SystemTime::now());
        assert!(text.contains("relayq_delivery_slots_in_use{lane=\"high\"} 1\n"));
        assert!(text.contains("relayq_delivery_slots_in_use{lane=\"low\"} 0\n"));
        assert!(text.contains("# TYPE relayq_destination_active_connections gauge\n"));
        assert!(
            text.contains(
                "relayq_destination_active_connections{destination=\"dest.example\"} 2\n"
            )
        );
        assert!(text.contains(
            "relayq_destination_active_connections{destination=\"odd\\\"name\\\\\"} 0\n"
        ));
    }

    #[test]
    fn refusals_are_counted_by_lane_and_reason() {
        let metrics = Metrics::new();
        metrics.message_refused(Lane::Low, RefusalReason::LaneFull);
        metrics.message_refused(Lane::Low, RefusalReason::LaneFull);
        metrics.message_refused(Lane::High, RefusalReason::Disk);
        metrics.message_refused(Lane::High, RefusalReason::IdempotencyConflict);
        metrics.duplicate_submission();
        let text = render(&metrics, &Queue::default(), Vec::new(), SystemTime::now());
        assert!(
            text.contains("relayq_duplicate_submissions_total 1\n"),
            "{text}"
        );
        for (lane, reason, count) in [
            ("low", "lane_full", 2),
            ("low", "disk", 0),
            ("low", "idempotency_conflict", 0),
            ("high", "lane_full", 0),
            ("high", "disk", 1),
            ("high", "idempotency_conflict", 1),
        ] {
            let line = format!(
                "relayq_messages_refused_total{{lane=\"{lane}\",reason=\"{reason}\"}} {count}\n"
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }
}
