//! Live settings: everything a reload may change, as one immutable snapshot
//! (ARCHITECTURE.md, "Live settings and reload").
//!
//! [`Live::build`] does all the fallible work of turning a validated
//! [`Config`] into the objects the daemon runs with (resolver, Redis client,
//! retry policy, lane caps, bounce classifier). A new component that loads something at start
//! and again on reload (keys, certificates, a users file) adds one field and
//! one line there; an error from it makes the reload change nothing.
//!
//! Readers take the snapshot once per unit of work — a session at connect,
//! a delivery pass when it starts — and keep it to the end, so a reload
//! never changes the settings of work in flight, and the hot paths pay one
//! atomic load per session or pass, no lock.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::bounce::{BuiltinRules, Classifier};
use crate::config::{Config, Route};
use crate::delivery::client::ClientSettings;
use crate::delivery::cluster::Cluster;
use crate::dns::MxResolver;
use crate::metrics::Metrics;
use crate::queue::PerLane;
use crate::queue::retry::RetryPolicy;
use crate::smtp::admission::LaneAdmission;

/// One generation of live settings.
pub struct Live {
    /// The configuration this snapshot was built from. Keys that need a
    /// restart (listeners, spool path, control socket, metrics address, log
    /// format) keep their values from the start: see `reload::changes`.
    pub config: Config,
    pub retry: RetryPolicy,
    /// The lanes' `max_queued` caps, checked by intake; kept across a
    /// reload that does not change them (with its log rate limit).
    pub admission: Arc<LaneAdmission>,
    pub resolver: MxResolver,
    /// The Redis that destination rates are shared through, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Timeouts and the EHLO name of outbound connections.
    pub client_settings: ClientSettings,
    /// `config.routes`, shared by the next hops that lead to them. A route
    /// a reload did not change keeps its `Arc` (next hops compare routes
    /// by identity).
    pub routes: Vec<Arc<Route>>,
    /// Bounce classes: the operator's rules (`bounce.rules_file`, as read
    /// with this configuration) before the built-in ones.
    pub classifier: Classifier,
}

impl Live {
    /// Builds the snapshot for `config`. Stateful clients whose settings did
    /// not change (the resolver and its cache, the Redis connection) are
    /// taken over from `previous`.
    pub fn build(
        config: Config,
        previous: Option<&Live>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Live> {
        let delivery = &config.delivery;
        let resolver = match previous {
            Some(previous)
                if previous.config.dns == config.dns
                    && previous.config.delivery.ip_version == delivery.ip_version =>
            {
                previous.resolver.clone()
            }
            _ => MxResolver::new(&config.dns, delivery.ip_version).context("dns")?,
        };
        let cluster = match (&config.cluster.redis_url, previous) {
            (None, _) => None,
            (Some(_), Some(previous)) if previous.config.cluster == config.cluster => {
                previous.cluster.clone()
            }
            (Some(url), _) => Some(Arc::new(Cluster::new(url, metrics.clone())?)),
        };
        let max_queued = PerLane::from_fn(|lane| config.lanes.get(lane).max_queued);
        // The built-in rules never change: compiled once, then shared.
        let builtin = match previous {
            Some(previous) => previous.classifier.builtin().clone(),
            None => Arc::new(
                BuiltinRules::compile().context("cannot compile the built-in bounce rules")?,
            ),
        };
        let classifier = Classifier::new(config.bounce.rules.clone(), builtin);
        let admission = match previous {
            Some(previous) if *previous.admission.max_queued() == max_queued => {
                previous.admission.clone()
            }
            _ => Arc::new(LaneAdmission::new(max_queued)),
        };
        Ok(Live {
            retry: RetryPolicy::new(&config.retry),
            admission,
            resolver,
            cluster,
            client_settings: ClientSettings {
                helo_name: config.hostname.clone(),
                connect_timeout: delivery.connect_timeout,
                greeting_timeout: delivery.greeting_timeout,
                command_timeout: delivery.command_timeout,
                data_timeout: delivery.data_timeout,
                final_timeout: delivery.final_timeout,
            },
            routes: config
                .routes
                .iter()
                .map(|route| {
                    previous
                        .and_then(|previous| previous.routes.iter().find(|old| ***old == *route))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(route.clone()))
                })
                .collect(),
            classifier,
            config,
        })
    }
}

/// The current live settings, shared by every component; cheap to clone.
#[derive(Clone)]
pub struct Settings {
    current: Arc<ArcSwap<Live>>,
}

impl Settings {
    pub fn new(live: Live) -> Settings {
        Settings {
            current: Arc::new(ArcSwap::new(Arc::new(live))),
        }
    }

    /// The snapshot in force now, to keep for one unit of work.
    pub fn snapshot(&self) -> Arc<Live> {
        self.current.load_full()
    }

    /// Makes `live` the snapshot new work takes; work in flight keeps its own.
    pub(crate) fn replace(&self, live: Live) {
        self.current.store(Arc::new(live));
    }
}
