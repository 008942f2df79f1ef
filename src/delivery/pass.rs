//! A delivery pass: one attempt at all of a message's open recipients, split
//! into jobs per destination. Each job's results are added to the pass's
//! [`PassResults`]; deliveries of a job that is not the last are committed
//! at once (so a crash does not send them again); the last job ends the
//! pass with one transition: new recipient states, expiry or the delay
//! warning, an operator's operation left with the pass, the removal or the
//! next attempt, and the DSNs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use relayq_spool::QueueId;
use tokio::sync::OwnedSemaphorePermit;

use super::settings::DeliverySettings;
use crate::queue::handle::QueueHandle;
use crate::queue::retry::jitter_unit;
use crate::queue::transition::{Operation, PassResults, RecipientResult};
use crate::queue::{Envelope, Lane};

/// How long a message whose pass could not be recorded waits before it is
/// tried again.
const RECORD_FAILED_RETRY: Duration = Duration::from_secs(60);

pub struct Pass {
    pub id: QueueId,
    pub lane: Lane,
    /// The message is one of relayq's TLS reports: delivered without
    /// MTA-STS (RFC 8460 §5.3), and its sessions are not counted.
    pub tls_report: bool,
    /// Delivery's settings when the pass started: its jobs and its record
    /// (retry policy) use them to the end, whatever a reload changes.
    pub settings: Arc<DeliverySettings>,
    /// From arrival to the start of the pass: the `delay=` of its log lines.
    delay: Duration,
    results: Mutex<PassResults>,
    /// The message, when small enough to be read with its envelope.
    body: Option<Bytes>,
    jobs_remaining: AtomicUsize,
    /// Bounds the passes in flight per lane; released when the pass ends.
    _in_flight: OwnedSemaphorePermit,
}

impl Pass {
    pub fn new(
        id: QueueId,
        envelope: Envelope,
        body: Option<Bytes>,
        jobs: usize,
        in_flight: OwnedSemaphorePermit,
        settings: Arc<DeliverySettings>,
    ) -> Pass {
        Pass {
            id,
            lane: envelope.lane,
            tls_report: envelope.tls_report,
            settings,
            delay: SystemTime::now()
                .duration_since(envelope.arrival())
                .unwrap_or_default(),
            results: Mutex::new(PassResults::new(envelope)),
            body,
            jobs_remaining: AtomicUsize::new(jobs),
            _in_flight: in_flight,
        }
    }

    /// The message read with its envelope, if it was small enough.
    pub fn body(&self) -> Option<Bytes> {
        self.body.clone()
    }

    /// A copy of the envelope as the pass sees it.
    pub fn snapshot(&self) -> Envelope {
        lock(&self.results).envelope.clone()
    }

    /// Records one job's results; the last job ends the pass.
    pub async fn record(&self, handle: &QueueHandle, results: Vec<RecipientResult>) {
        let now = SystemTime::now();
        let early = {
            let mut pass = lock(&self.results);
            let delivered = pass.record(results, self.delay, now, &self.settings.queue.classifier);
            // The last job's results are committed by `finish` right away.
            let last_job = self.jobs_remaining.load(Ordering::Acquire) == 1;
            (!delivered.is_empty() && !last_job)
                .then(|| pass.delivered_early(self.id, delivered, now))
        };
        if let Some(transition) = early
            && let Err(error) = handle.apply(&transition).await
        {
            tracing::error!(queue_id = %self.id, "{}: cannot record deliveries: {error}", self.id);
            // Announced with the end of the pass instead, which stores them.
            lock(&self.results).recipients.extend(transition.recipients);
        }
        if self.jobs_remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish(handle).await;
        }
    }

    async fn finish(&self, handle: &QueueHandle) {
        let results = lock(&self.results).clone();
        let pending = handle.queue.take_pending(self.id);
        let transition = results.finish(
            self.id,
            pending.map(Operation::from),
            &self.settings.queue.retry,
            SystemTime::now(),
            jitter_unit(),
        );
        if let Err(error) = handle.apply(&transition).await {
            // Nothing of this pass was stored: try again later; at worst a
            // delivered recipient is delivered twice (ARCHITECTURE.md,
            // "at-least-once").
            tracing::error!(queue_id = %self.id, "{}: cannot record the delivery pass: {error}", self.id);
            if let Some(operation) = pending {
                tracing::error!(queue_id = %self.id, "{}: the administrator's {operation:?} was not applied; ask again", self.id);
            }
            handle.queue.reschedule(
                self.id,
                self.lane,
                tokio::time::Instant::now() + RECORD_FAILED_RETRY,
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
