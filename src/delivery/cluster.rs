//! Fleet-wide destination rates (`[cluster] redis_url`, README "Output
//! control"): every relay naming the same Redis and destination `name`
//! takes its rate slots from one schedule kept in Redis, so together they
//! start at most `rate` transactions.
//!
//! Each relay spaces its own starts by the rate (its local slots) and,
//! right before a transaction's MAIL command, asks Redis with one atomic Lua
//! script (GCRA without burst: the key holds the earliest time of the next
//! start, in the Redis server's clock so relays need no clock agreement)
//! whether the start may happen now, or how long to wait. Asking at the
//! start itself, rather than reserving slots ahead, keeps the fleet's starts
//! an interval apart even when a relay starts late. Only delivery asks
//! Redis, never the intake path. When it does not answer, the local slots
//! alone apply (the same rate per relay); a warning is logged at most once a
//! minute, the `relayq_cluster_redis_up` gauge shows 0, and a start after a
//! short pause tries Redis again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Connecting and each command: a Redis that does not answer this fast is
/// treated as down, so delivery never waits long for it.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// While Redis is down, how often a slot request tries it again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Warnings about an unreachable Redis are at most this frequent.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// KEYS[1]: the destination's key; ARGV[1]: the interval in microseconds.
/// Returns 0 when a start may happen now (and records it), else the
/// microseconds until one may. The key expires once the next start is
/// free, so idle destinations leave nothing behind.
const TRY_START: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local next_start = tonumber(redis.call('GET', KEYS[1]) or '0')
if next_start > now_us then
  return next_start - now_us
end
redis.call('SET', KEYS[1], now_us + interval, 'PX', math.floor(interval / 1000) + 1000)
return 0
";

pub struct Cluster {
    client: redis::Client,
    script: redis::Script,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    connection: Option<MultiplexedConnection>,
    /// While Redis is down: no request before this instant.
    retry_at: Option<Instant>,
    last_warning: Option<Instant>,
}

impl Cluster {
    /// `url` was checked by the configuration; an error here is still
    /// reported, not a panic.
    pub fn new(url: &str, metrics: Arc<Metrics>) -> anyhow::Result<Cluster> {
        let client = redis::Client::open(url)
            .map_err(|error| anyhow::anyhow!("cluster.redis_url {url:?}: {error}"))?;
        metrics.shaping.set_redis_up(false);
        Ok(Cluster {
            client,
            script: redis::Script::new(TRY_START),
            state: Mutex::default(),
            metrics,
        })
    }

    /// Whether a transaction to destination `name` (one start per
    /// `interval` across the fleet) may start now: `Some(ZERO)` yes (the
    /// start is recorded), `Some(wait)` not before `wait`. `None` when Redis
    /// cannot be asked: the caller's local rate alone applies.
    pub async fn try_start(&self, name: &str, interval: Duration) -> Option<Duration> {
        let connection = self.connection().await?;
        let mut connection = connection;
        let key = format!("relayq:rate:{name}");
        let interval_us = interval.as_micros().max(1) as u64;
        let reply = tokio::time::timeout(
            REDIS_TIMEOUT,
            self.script
                .key(key)
                .arg(interval_us)
                .invoke_async::<i64>(&mut connection),
        )
        .await;
        match reply {
            Ok(Ok(wait_us)) => {
                self.up();
                Some(Duration::from_micros(wait_us.max(0) as u64))
            }
            Ok(Err(error)) => {
                self.down(&error.to_string());
                None
            }
            Err(_) => {
                self.down("no reply in time");
                None
            }
        }
    }

    /// The open connection, or a new one unless Redis is known to be down
    /// and it is not yet time to try again.
    async fn connection(&self) -> Option<MultiplexedConnection> {
        {
            let state = lock(&self.state);
            if let Some(connection) = &state.connection {
                return Some(connection.clone());
            }
            if state.retry_at.is_some_and(|at| Instant::now() < at) {
                return None;
            }
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let connected = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                lock(&self.state).connection = Some(connection.clone());
                Some(connection)
            }
            Ok(Err(error)) => {
                self.down(&error.to_string());
                None
            }
            Err(_) => {
                self.down("connection timed out");
                None
            }
        }
    }

    fn up(&self) {
        let mut state = lock(&self.state);
        if state.retry_at.take().is_some() {
            tracing::info!("cluster: Redis answers again; destination rates are shared");
        }
        drop(state);
        self.metrics.shaping.set_redis_up(true);
    }

    fn down(&self, reason: &str) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        state.connection = None;
        state.retry_at = Some(now + RETRY_AFTER);
        let warn = state
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if warn {
            state.last_warning = Some(now);
        }
        drop(state);
        self.metrics.shaping.set_redis_up(false);
        if warn {
            tracing::warn!(
                "cluster: Redis unreachable ({reason}); destination rates fall back to each relay's own"
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
