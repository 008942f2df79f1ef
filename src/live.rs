//! Live settings: everything a reload may change, as one generation of
//! snapshots (ARCHITECTURE.md, "Invariants").
//!
//! Each layer reads its own part: the queue [`QueueSettings`] (host name,
//! retry policy, bounce classifier), delivery [`DeliverySettings`] (resolver, Redis, client
//! timeouts, routes), intake the whole [`Live`] (the configuration and the
//! lanes' admission caps). [`Live::build`] does all the fallible work of
//! turning a validated [`Config`] into the parts, so a reload that fails
//! changes nothing; [`Settings::replace`] swaps the parts together. A new
//! component that loads something at start and again on reload (keys,
//! certificates, a users file) adds one field and one line there.
//!
//! Readers take their part once per unit of work — a session at connect,
//! a delivery pass when it starts — and keep it to the end, so a reload
//! never changes the settings of work in flight, and the hot paths pay one
//! atomic load per session or pass, no lock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;

use anyhow::Context as _;

use crate::bounce::BuiltinRules;
use crate::config::Config;
use crate::delivery::settings::{CurrentDeliverySettings, DeliverySettings};
use crate::metrics::Metrics;
use crate::queue::PerLane;
use crate::queue::settings::{CurrentQueueSettings, QueueSettings};
use crate::smtp::admission::LaneAdmission;

/// One generation of live settings.
pub struct Live {
    /// The configuration this snapshot was built from. Keys that need a
    /// restart (listeners, spool path, control socket, metrics address, log
    /// format) keep their values from the start: see `reload::changes`.
    pub config: Config,
    /// The queue's part.
    pub queue: Arc<QueueSettings>,
    /// Delivery's part.
    pub delivery: Arc<DeliverySettings>,
    /// The lanes' `max_queued` caps, checked by intake; kept across a
    /// reload that does not change them (with its log rate limit).
    pub admission: Arc<LaneAdmission>,
}

impl Live {
    /// Builds the generation for `config`. Stateful clients whose settings
    /// did not change (the resolver and its cache, the Redis connection,
    /// the admission caps) are taken over from `previous`; a new Redis
    /// client connects on a task of `tracker`.
    pub fn build(
        config: Config,
        previous: Option<&Live>,
        metrics: &Arc<Metrics>,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Live> {
        // The built-in bounce rules never change: compiled once, then shared.
        let builtin = match previous {
            Some(previous) => previous.queue.classifier.builtin().clone(),
            None => Arc::new(
                BuiltinRules::compile().context("cannot compile the built-in bounce rules")?,
            ),
        };
        let queue = Arc::new(QueueSettings::new(&config, builtin));
        let delivery = DeliverySettings::build(
            &config,
            queue.clone(),
            previous.map(|previous| (&previous.config, &*previous.delivery)),
            metrics,
            tracker,
        )?;
        let max_queued = PerLane::from_fn(|lane| config.lanes.get(lane).max_queued);
        let admission = match previous {
            Some(previous) if *previous.admission.max_queued() == max_queued => {
                previous.admission.clone()
            }
            _ => Arc::new(LaneAdmission::new(max_queued)),
        };
        Ok(Live {
            queue,
            delivery: Arc::new(delivery),
            admission,
            config,
        })
    }
}

/// The live settings in force, shared by every component; cheap to clone.
#[derive(Clone)]
pub struct Settings {
    current: Arc<ArcSwap<Live>>,
    queue: CurrentQueueSettings,
    delivery: CurrentDeliverySettings,
}

impl Settings {
    pub fn new(live: Live) -> Settings {
        Settings {
            queue: Arc::new(ArcSwap::new(live.queue.clone())),
            delivery: Arc::new(ArcSwap::new(live.delivery.clone())),
            current: Arc::new(ArcSwap::new(Arc::new(live))),
        }
    }

    /// The generation in force now, to keep for one unit of work.
    pub fn snapshot(&self) -> Arc<Live> {
        self.current.load_full()
    }

    /// The queue's part, for the queue handle.
    pub fn queue(&self) -> CurrentQueueSettings {
        self.queue.clone()
    }

    /// Delivery's part, for the delivery engine.
    pub fn delivery(&self) -> CurrentDeliverySettings {
        self.delivery.clone()
    }

    /// Makes `live` the generation new work takes, every part of it; work
    /// in flight keeps its own.
    pub(crate) fn replace(&self, live: Live) {
        self.queue.store(live.queue.clone());
        self.delivery.store(live.delivery.clone());
        self.current.store(Arc::new(live));
    }
}
