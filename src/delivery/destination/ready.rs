//! Ready tokens (KumoMTA's ready queues): a destination hands a lane one
//! token for each of its waiting jobs that could start under its limit;
//! a lane worker waits for a token, then takes a job of that destination.
//! Jobs beyond the limit wait at their destination holding no lane slot,
//! so one slow domain cannot occupy a lane.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::DestinationKey;
use super::lock;
use crate::queue::{Lane, PerLane};

/// The tokens a destination handed to the lanes and that were not taken
/// yet.
#[derive(Default)]
pub(super) struct Tokens(PerLane<usize>);

impl Tokens {
    /// Hands out tokens while the jobs `active` and the tokens out stay
    /// under `limit`, to the high lane's waiting jobs first. Returns how
    /// many to push per lane.
    pub(super) fn grant(
        &mut self,
        active: usize,
        limit: usize,
        waiting: PerLane<usize>,
    ) -> PerLane<usize> {
        let mut pushes = PerLane::default();
        loop {
            let in_use = active + self.0[Lane::High] + self.0[Lane::Low];
            if in_use >= limit {
                return pushes;
            }
            let lane = Lane::ALL
                .into_iter()
                .find(|&lane| waiting[lane] > self.0[lane]);
            let Some(lane) = lane else { return pushes };
            self.0[lane] += 1;
            pushes[lane] += 1;
        }
    }

    /// A worker of `lane` took one.
    pub(super) fn taken(&mut self, lane: Lane) {
        self.0[lane] = self.0[lane].saturating_sub(1);
    }

    /// Every token is void (the destination's jobs were given back).
    pub(super) fn clear(&mut self) {
        self.0 = PerLane::default();
    }
}

#[derive(Default)]
struct ReadyList {
    keys: Mutex<VecDeque<DestinationKey>>,
    notify: Notify,
}

/// Per lane, the destinations' tokens in the order they were handed out.
#[derive(Default)]
pub(super) struct ReadyLists(PerLane<ReadyList>);

impl ReadyLists {
    /// Puts `key`'s new tokens in the lanes' lists and wakes as many
    /// workers.
    pub(super) fn push(&self, key: &DestinationKey, pushes: PerLane<usize>) {
        for (lane, &count) in pushes.iter() {
            if count == 0 {
                continue;
            }
            let list = &self.0[lane];
            let mut keys = lock(&list.keys);
            for _ in 0..count {
                keys.push_back(key.clone());
            }
            drop(keys);
            for _ in 0..count {
                list.notify.notify_one();
            }
        }
    }

    /// Waits for a token of `lane`; returns its destination.
    pub(super) async fn next(&self, lane: Lane) -> DestinationKey {
        let list = &self.0[lane];
        loop {
            let notified = list.notify.notified();
            if let Some(key) = lock(&list.keys).pop_front() {
                return key;
            }
            notified.await;
        }
    }
}
