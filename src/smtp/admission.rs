//! Lane admission (`lanes.*.max_queued`, docs/delivery.md, "Backpressure"): a lane
//! that holds its cap of queued messages refuses new mail with `452 4.3.1`,
//! so a producer that fills it is slowed down while the other lane keeps
//! accepting.
//!
//! Intake asks twice. At MAIL it refuses only when every lane the message
//! can still end in is full ([`Lane::candidates_at_mail`]); after the data,
//! when the lane is final, it reserves room for the message before storing
//! it, so concurrent sessions never overfill a lane between them. Both are
//! atomic reads or one atomic update: no lock and no scan per message.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, RefusalReason};
use crate::queue::{Lane, PerLane, Queue, Reservation};

/// At most one "lane full" log line per lane in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// New mail for `lane` cannot be taken now: the lane holds its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{lane} lane full")]
pub struct LaneFull {
    pub lane: Lane,
}

/// The caps and the bookkeeping of refusals; one per daemon, shared by
/// every session and the maildrop importer.
#[derive(Debug, Default)]
pub struct LaneAdmission {
    /// `None`: the lane has no cap, and admission costs nothing.
    max_queued: PerLane<Option<usize>>,
    full_log: PerLane<Mutex<FullLog>>,
}

impl LaneAdmission {
    pub fn new(max_queued: PerLane<Option<usize>>) -> LaneAdmission {
        LaneAdmission {
            max_queued,
            full_log: PerLane::default(),
        }
    }

    /// The caps this admission enforces.
    pub fn max_queued(&self) -> &PerLane<Option<usize>> {
        &self.max_queued
    }

    fn is_full(&self, queue: &Queue, lane: Lane) -> bool {
        self.max_queued[lane].is_some_and(|limit| queue.occupancy(lane) >= limit)
    }

    /// At MAIL: refuses when every lane the message can still end in is
    /// full. The refusal names the most likely lane.
    pub fn check_at_mail(
        &self,
        queue: &Queue,
        mt_priority: Option<i8>,
        listener_lane: Lane,
    ) -> Result<(), LaneFull> {
        let candidates = Lane::candidates_at_mail(mt_priority, listener_lane);
        if candidates.iter().all(|&lane| self.is_full(queue, lane)) {
            return Err(LaneFull {
                lane: candidates[0],
            });
        }
        Ok(())
    }

    /// After the data, with the final lane: room for the message, held
    /// until it is queued (`Ok(None)` when the lane has no cap).
    pub fn reserve(&self, queue: &Arc<Queue>, lane: Lane) -> Result<Option<Reservation>, LaneFull> {
        let Some(limit) = self.max_queued[lane] else {
            return Ok(None);
        };
        queue
            .try_reserve(lane, limit)
            .map(Some)
            .ok_or(LaneFull { lane })
    }

    /// Counts a refusal and logs it, at most once a minute per lane with
    /// the number refused since the previous line (and, while the queue is
    /// rebuilt after a start, the messages it has not read, which count in
    /// every lane).
    pub fn refused(&self, full: LaneFull, queue: &Queue, metrics: &Metrics) {
        metrics.message_refused(full.lane, RefusalReason::LaneFull);
        let report = self.full_log[full.lane]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(Instant::now());
        if let Some(refused) = report {
            let limit = self.max_queued[full.lane].unwrap_or_default();
            let rebuild = queue.rebuild_progress();
            let unread = if rebuild.in_progress {
                format!(
                    ", counting the {} stored messages the queue's rebuild has not read yet",
                    rebuild.total.saturating_sub(rebuild.scanned)
                )
            } else {
                String::new()
            };
            tracing::warn!(
                lane = %full.lane,
                "{} lane full (lanes.{}.max_queued = {limit}{unread}): new mail for it gets 452; {refused} refused since the last report",
                full.lane,
                full.lane,
            );
        }
    }
}

/// When the last "lane full" line was written, and the refusals since.
#[derive(Debug, Default)]
struct FullLog {
    last_line: Option<Instant>,
    refused: u64,
}

impl FullLog {
    /// Records one refusal at `now`; returns the number to report when a
    /// line is due (the first refusal, then at most once per interval).
    fn record(&mut self, now: Instant) -> Option<u64> {
        self.refused += 1;
        if self
            .last_line
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_INTERVAL)
        {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.refused))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use relayq_spool::QueueId;

    use super::*;
    use crate::queue::Envelope;
    use crate::queue::envelope::Recipient;

    fn queue_with(high: u64, low: u64) -> Arc<Queue> {
        let queue = Arc::new(Queue::default());
        let lanes = (0..high)
            .map(|_| Lane::High)
            .chain((0..low).map(|_| Lane::Low));
        for (n, lane) in lanes.enumerate() {
            let recipients = vec![Recipient::new("user@example.org".into())];
            let envelope = Envelope::new(String::new(), recipients, lane, SystemTime::now(), 10);
            queue.insert(QueueId(n as u64 + 1), &envelope);
        }
        queue
    }

    fn caps(high: Option<usize>, low: Option<usize>) -> LaneAdmission {
        LaneAdmission::new(PerLane::from_fn(|lane| match lane {
            Lane::High => high,
            Lane::Low => low,
        }))
    }

    #[test]
    fn mail_is_refused_only_when_every_candidate_lane_is_full() {
        let admission = caps(Some(2), Some(2));
        let low_full = queue_with(0, 2);
        let low = Err(LaneFull { lane: Lane::Low });
        assert_eq!(
            admission.check_at_mail(&low_full, Some(-3), Lane::High),
            low
        );
        assert_eq!(admission.check_at_mail(&low_full, None, Lane::Low), low);
        assert_eq!(
            admission.check_at_mail(&low_full, Some(3), Lane::Low),
            Ok(())
        );
        // From a high listener the headers may still choose either lane.
        assert_eq!(admission.check_at_mail(&low_full, None, Lane::High), Ok(()));
        let both_full = queue_with(2, 2);
        assert_eq!(
            admission.check_at_mail(&both_full, None, Lane::High),
            Err(LaneFull { lane: Lane::High })
        );
        // A lane without a cap is never full.
        let uncapped = caps(None, Some(2));
        assert_eq!(uncapped.check_at_mail(&both_full, None, Lane::High), Ok(()));
        assert!(matches!(uncapped.reserve(&both_full, Lane::High), Ok(None)));
    }

    #[test]
    fn reservations_stop_at_the_cap_and_free_room_when_dropped() {
        let admission = caps(None, Some(3));
        let queue = queue_with(5, 1);
        let first = admission.reserve(&queue, Lane::Low).unwrap();
        let second = admission.reserve(&queue, Lane::Low).unwrap();
        assert!(first.is_some() && second.is_some());
        assert_eq!(
            admission.reserve(&queue, Lane::Low).err(),
            Some(LaneFull { lane: Lane::Low })
        );
        // Reserved room counts at MAIL too.
        assert!(admission.check_at_mail(&queue, None, Lane::Low).is_err());
        drop(first);
        assert!(admission.check_at_mail(&queue, None, Lane::Low).is_ok());
        assert!(admission.reserve(&queue, Lane::Low).unwrap().is_some());
    }

    #[test]
    fn the_full_log_reports_once_per_interval_with_the_count_meanwhile() {
        let mut log = FullLog::default();
        let start = Instant::now();
        assert_eq!(log.record(start), Some(1));
        for second in 1..=59 {
            assert_eq!(log.record(start + Duration::from_secs(second)), None);
        }
        assert_eq!(log.record(start + Duration::from_secs(60)), Some(60));
        assert_eq!(log.record(start + Duration::from_secs(61)), None);
        assert_eq!(log.record(start + Duration::from_secs(200)), Some(2));
    }
}
