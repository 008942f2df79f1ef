//! Lane workers: each lane runs as many workers as its width
//! (`lanes.*.concurrency`, changed by a reload); a worker takes a job its
//! destination lets start now, runs it, and frees its place there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::job::{self, DeliveryContext};
use crate::queue::{Lane, PerLane};

/// The workers of one lane: as many as its width. Narrowing lets the
/// workers above the new width finish the job in hand and leave; widening
/// starts new ones.
#[derive(Default)]
struct LaneWorkers {
    width: AtomicUsize,
    running: AtomicUsize,
    /// Wakes idle workers when the width falls.
    narrowed: Notify,
}

impl LaneWorkers {
    /// Takes a place for a new worker if the lane is below its width.
    fn claim(&self) -> bool {
        let width = self.width.load(Ordering::Acquire);
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < width).then_some(running + 1)
            })
            .is_ok()
    }

    /// Gives up a worker's place if the lane is above its width.
    fn retire_if_over(&self) -> bool {
        let width = self.width.load(Ordering::Acquire);
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running > width).then(|| running - 1)
            })
            .is_ok()
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Both lanes' workers.
pub(super) struct Workers {
    context: Arc<DeliveryContext>,
    lanes: PerLane<LaneWorkers>,
    /// Stop taking jobs.
    shutdown: CancellationToken,
    /// Drop the jobs in hand (the grace period is over).
    abort: CancellationToken,
}

impl Workers {
    pub(super) fn new(
        context: Arc<DeliveryContext>,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> Arc<Workers> {
        Arc::new(Workers {
            context,
            lanes: PerLane::default(),
            shutdown,
            abort,
        })
    }

    /// Sets a lane's width: new workers start at once; workers above a
    /// lower width leave when their job is done.
    pub(super) fn set_width(self: &Arc<Self>, lane: Lane, width: usize) {
        let workers = &self.lanes[lane];
        let before = workers.width.swap(width, Ordering::AcqRel);
        if width < before {
            workers.narrowed.notify_waiters();
        }
        while workers.claim() {
            self.context.tracker().spawn(self.clone().work(lane));
        }
    }

    async fn work(self: Arc<Self>, lane: Lane) {
        let context = &self.context;
        let workers = &self.lanes[lane];
        loop {
            let narrowed = workers.narrowed.notified();
            tokio::pin!(narrowed);
            // Registered before the width is read, so a narrowing in between
            // still wakes this worker.
            narrowed.as_mut().enable();
            if workers.retire_if_over() {
                return;
            }
            let job = tokio::select! {
                job = context.destinations.take(lane) => job,
                _ = &mut narrowed => continue,
                _ = self.shutdown.cancelled() => return workers.leave(),
            };
            let key = job.destination.clone();
            // Dropped however the job ends, so the gauge cannot drift.
            let slot = context.handle.metrics.delivery_slot(lane);
            let again = tokio::select! {
                again = job::run(context, job) => again,
                _ = self.abort.cancelled() => return workers.leave(),
            };
            drop(slot);
            context.destinations.finished(&key);
            if let Some(job) = again {
                context.destinations.requeue(job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_start_up_to_the_width_and_leave_above_it() {
        let workers = LaneWorkers::default();
        workers.width.store(2, Ordering::Release);
        assert!(workers.claim() && workers.claim());
        assert!(!workers.claim(), "at the width");
        assert!(!workers.retire_if_over());
        workers.width.store(1, Ordering::Release);
        assert!(workers.retire_if_over(), "one too many leaves");
        assert!(!workers.retire_if_over(), "the rest stay");
        workers.width.store(3, Ordering::Release);
        assert!(workers.claim() && workers.claim());
        assert!(!workers.claim());
        assert_eq!(workers.running.load(Ordering::Acquire), 3);
    }
}
