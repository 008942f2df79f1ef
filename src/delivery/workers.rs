//! Lane widths: each lane runs as many workers as its `concurrency`, and a
//! reload changes the number while the engine runs (README "Reloading").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::DeliveryContext;
use crate::queue::Lane;

/// The workers of one lane: as many as its width. Narrowing lets the
/// workers above the new width finish the job in hand and leave; widening
/// starts new ones.
#[derive(Default)]
pub(super) struct LaneWorkers {
    width: AtomicUsize,
    running: AtomicUsize,
    /// Wakes idle workers when the width falls.
    pub(super) narrowed: Notify,
}

impl LaneWorkers {
    /// Takes a place for a new worker if the lane is below its width.
    pub(super) fn claim(&self) -> bool {
        let width = self.width.load(Ordering::Acquire);
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < width).then_some(running + 1)
            })
            .is_ok()
    }

    /// Gives up a worker's place if the lane is above its width.
    pub(super) fn retire_if_over(&self) -> bool {
        let width = self.width.load(Ordering::Acquire);
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running > width).then(|| running - 1)
            })
            .is_ok()
    }

    pub(super) fn leave(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running engine: what a reload changes in it.
pub struct Engine {
    context: Arc<DeliveryContext>,
    shutdown: CancellationToken,
    abort: CancellationToken,
}

impl Engine {
    pub(super) fn new(
        context: Arc<DeliveryContext>,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> Engine {
        Engine {
            context,
            shutdown,
            abort,
        }
    }

    /// Sets a lane's width (`lanes.*.concurrency`): new workers start at
    /// once; workers above a lower width leave when their job is done.
    pub fn set_width(&self, lane: Lane, width: usize) {
        let workers = &self.context.workers[lane];
        let before = workers.width.swap(width, Ordering::AcqRel);
        if width < before {
            workers.narrowed.notify_waiters();
        }
        while workers.claim() {
            self.context.tracker().spawn(super::engine::work(
                self.context.clone(),
                lane,
                self.shutdown.clone(),
                self.abort.clone(),
            ));
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
