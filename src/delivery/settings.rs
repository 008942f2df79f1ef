//! Delivery's part of the live settings: the resolver, the fleet's Redis,
//! the outbound client's timeouts and name, the routes, the MX port, TLS
//! policy and DANE, and the queue's part (the retry policy a pass records with).
//! Built with the other layers' parts and swapped with them by a reload
//! (`live`). A delivery pass takes the part in force when it starts and its
//! jobs keep it to the end.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;

use super::client::ClientSettings;
use super::cluster::Cluster;
use crate::config::{Config, Route, TlsPolicy};
use crate::dns::MxResolver;
use crate::metrics::Metrics;
use crate::queue::settings::QueueSettings;

pub struct DeliverySettings {
    /// The retry policy and host name of the same generation.
    pub queue: Arc<QueueSettings>,
    pub resolver: MxResolver,
    /// The Redis that destination rates are shared through, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Timeouts and the EHLO name of outbound connections.
    pub client: ClientSettings,
    /// `config.routes`, shared by the next hops that lead to them. A route
    /// a reload did not change keeps its `Arc` (next hops compare routes
    /// by identity).
    pub routes: Vec<Arc<Route>>,
    /// `delivery.port`: the remote port for MX delivery.
    pub port: u16,
    /// `delivery.tls`: STARTTLS for MX delivery.
    pub tls: TlsPolicy,
    /// `delivery.dane`: DANE (RFC 7672) for MX delivery; the resolver then
    /// validates DNSSEC.
    pub dane: bool,
}

impl DeliverySettings {
    /// Builds delivery's part for `config`. Stateful clients whose settings
    /// did not change (the resolver and its cache, the Redis connection)
    /// are taken over from `previous`; a new Redis client connects on a
    /// task of `tracker`.
    pub fn build(
        config: &Config,
        queue: Arc<QueueSettings>,
        previous: Option<(&Config, &DeliverySettings)>,
        metrics: &Arc<Metrics>,
        tracker: &TaskTracker,
    ) -> anyhow::Result<DeliverySettings> {
        let delivery = &config.delivery;
        let resolver = match previous {
            Some((previous_config, previous))
                if previous_config.dns == config.dns
                    && previous_config.delivery.ip_version == delivery.ip_version =>
            {
                previous.resolver.clone()
            }
            _ => MxResolver::new(&config.dns, delivery.ip_version).context("dns")?,
        };
        let cluster = match (&config.cluster.redis_url, previous) {
            (None, _) => None,
            (Some(_), Some((previous_config, previous)))
                if previous_config.cluster == config.cluster =>
            {
                previous.cluster.clone()
            }
            (Some(url), _) => Some(Cluster::new(url, metrics.clone(), tracker)?),
        };
        Ok(DeliverySettings {
            queue,
            resolver,
            cluster,
            client: ClientSettings {
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
                        .and_then(|(_, previous)| {
                            previous.routes.iter().find(|old| ***old == *route)
                        })
                        .cloned()
                        .unwrap_or_else(|| Arc::new(route.clone()))
                })
                .collect(),
            port: delivery.port,
            tls: delivery.tls,
            dane: delivery.dane,
        })
    }
}

/// Delivery's settings in force, replaced whole by a reload.
pub type CurrentDeliverySettings = Arc<ArcSwap<DeliverySettings>>;
