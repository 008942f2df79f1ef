//! What a job needs to run, shared by the engine's tasks: the queue
//! handle, the destinations, the outbound TLS configurations, MTA-STS, the
//! shutdown tracker, and delivery's settings in force, of which each pass
//! takes the snapshot when it starts ([`Pass::settings`]) and its jobs keep
//! it.
//!
//! [`Pass::settings`]: crate::delivery::pass::Pass::settings

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::Job;
use crate::config::Config;
use crate::delivery::destination::{DestinationKey, Destinations};
use crate::delivery::settings::CurrentDeliverySettings;
use crate::metrics::{ActiveConnections, Throttle};
use crate::mta_sts::MtaSts;
use crate::queue::handle::QueueHandle;
use crate::tls::TlsConfigs;
use crate::tls_rpt::TlsRpt;

/// How long a destination whose hosts all refused connections is skipped.
const DEAD_DESTINATION_FOR: Duration = Duration::from_secs(60);

pub struct DeliveryContext {
    /// The spool, schedule, events and metrics, through which every change
    /// of a message goes.
    pub handle: QueueHandle,
    /// Shared with the queue handle, which gives back what a message held
    /// at its destinations when it leaves the queue.
    pub destinations: Arc<Destinations<Job>>,
    pub tls_configs: TlsConfigs,
    /// `None` when `delivery.mta_sts` is off. Built at start, with the
    /// start's trust anchors; each pass looks policies up with its own
    /// resolver.
    pub mta_sts: Option<Arc<MtaSts>>,
    /// Delivery's settings in force (a reload replaces them): new passes
    /// take them.
    pub settings: CurrentDeliverySettings,
    /// Where sessions under a policy are counted for TLS reports.
    pub tls_rpt: TlsRpt,
    /// Tasks that commit or talk to a server are tracked, so shutdown waits
    /// for them.
    tracker: TaskTracker,
}

impl DeliveryContext {
    /// The destinations of `config`, before the context: the queue handle
    /// the context is built with refers to them too.
    pub fn destinations(config: &Config) -> Arc<Destinations<Job>> {
        Arc::new(Destinations::new(
            config.delivery.destination_concurrency,
            DEAD_DESTINATION_FOR,
            &config.destinations,
        ))
    }

    pub fn new(
        config: &Config,
        handle: QueueHandle,
        destinations: Arc<Destinations<Job>>,
        settings: CurrentDeliverySettings,
        tls_rpt: TlsRpt,
        tracker: TaskTracker,
    ) -> anyhow::Result<DeliveryContext> {
        let tls_configs = TlsConfigs::with_trust_anchors(&config.delivery.extra_trust_anchors)?;
        let mta_sts = config.delivery.mta_sts.then(|| {
            Arc::new(MtaSts::new(
                tls_configs.verifying(),
                &config.spool.path,
                tracker.clone(),
                tls_rpt.clone(),
            ))
        });
        Ok(DeliveryContext {
            handle,
            destinations,
            tls_configs,
            mta_sts,
            settings,
            tls_rpt,
            tracker,
        })
    }

    /// The tracker of tasks shutdown waits for.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Per destination, the connections in use now.
    pub fn active_connections(&self) -> Vec<ActiveConnections> {
        self.destinations.active_connections()
    }

    /// Counts a job that its destination held back
    /// (`relayq_destination_throttled_total`).
    pub fn throttled(&self, key: &DestinationKey, reason: Throttle) {
        self.handle
            .metrics
            .shaping
            .throttled(&key.label(), key.is_rule(), reason);
    }
}
