//! Fleet-wide destination rates (`[cluster] redis_url`, docs/delivery.md,
//! "Fleet"): every relay naming the same Redis and destination `name`
//! takes its rate slots from one schedule kept in Redis, so together they
//! start at most `rate` transactions.
//!
//! Each relay spaces its own starts by the rate (its local slots) and,
//! right before a transaction's MAIL command, asks Redis with one atomic
//! Lua script (GCRA without burst: the key holds the earliest time of the
//! next start, in the Redis server's clock so relays need no clock
//! agreement) whether the start may happen now, or how long to wait.
//! Asking at the start itself, rather than before the connection is opened
//! or taken from the pool, keeps the fleet's starts an interval apart
//! whatever each connection took to set up. Only delivery asks Redis,
//! never the intake path.
//!
//! A delivery never waits for a Redis that does not answer: connecting
//! (and reconnecting, with a growing pause while Redis stays away) runs on
//! a task of its own, one at a time, and nobody waits for it; a connection
//! is used only once it answered a PING; and while a command has gone
//! unanswered for `SLOW_REPLY`, nobody else asks. So a Redis that hangs
//! holds back only the few starts already asking, for at most
//! `COMMAND_TIMEOUT`. Until Redis answers, and when a command fails or
//! times out, the local slots alone apply (the same rate per relay); a
//! warning is logged at most once a minute and the
//! `relayq_cluster_redis_up` gauge shows 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Each step of connecting: a Redis that does not answer this fast is
/// treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A start's command: a Redis that does not answer this fast is treated as
/// down (the transaction waits for it, with its connection open).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// A command unanswered this long makes other starts go by the local rate
/// instead of asking too.
const SLOW_REPLY: Duration = Duration::from_millis(100);
/// The first pause before connecting again after a failure; it doubles
/// while Redis stays away, up to `MAX_RETRY_AFTER`.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Warnings about an unreachable Redis are at most this frequent.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// KEYS[1]: the destination's key; ARGV[1]: the interval in microseconds.
/// Returns 0 when a start may happen now (and records it), else the
/// microseconds until one may. The key expires once the next start is
/// free, so idle destinations leave nothing behind. A next start more than
/// one interval ahead was written before the server's clock stepped back:
/// it becomes one interval from now, so the fleet waits at most that.
const TRY_START: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local expiry = math.floor(interval / 1000) + 1000
local next_start = tonumber(redis.call('GET', KEYS[1]) or '0')
if next_start > now_us + interval then
  next_start = now_us + interval
  redis.call('SET', KEYS[1], next_start, 'PX', expiry)
end
if next_start > now_us then
  return next_start - now_us
end
redis.call('SET', KEYS[1], now_us + interval, 'PX', expiry)
return 0
";

pub struct Cluster {
    client: redis::Client,
    script: redis::Script,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Connecting talks to a server: shutdown waits for it (briefly).
    tracker: TaskTracker,
}

#[derive(Default)]
struct State {
    /// A connection that answered a PING, until a command on it fails.
    connection: Option<MultiplexedConnection>,
    /// Counts connections, so that a command failing on one that was
    /// already replaced does not take the new one down.
    generation: u64,
    /// Commands sent and not answered yet, by ticket (oldest first), with
    /// when they were sent.
    unanswered: BTreeMap<u64, Instant>,
    next_ticket: u64,
    /// A connecting task is running: no second one.
    connecting: bool,
    /// While Redis is down: no new connection before this instant.
    retry_at: Option<Instant>,
    /// The pause after the next failure.
    retry_after: Option<Duration>,
    last_warning: Option<Instant>,
}

impl Cluster {
    /// `url` was checked by the configuration; an error here is still
    /// reported, not a panic. The first connection is made at once, in
    /// the background.
    pub fn new(
        url: &str,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(url)
            .map_err(|error| anyhow::anyhow!("cluster.redis_url {url:?}: {error}"))?;
        metrics.shaping.set_redis_up(false);
        let cluster = Arc::new(Cluster {
            client,
            script: redis::Script::new(TRY_START),
            state: Mutex::default(),
            metrics,
            tracker: tracker.clone(),
        });
        cluster.connect_if_due(&mut lock(&cluster.state));
        Ok(cluster)
    }

    /// Whether a transaction to destination `name` (one start per
    /// `interval` across the fleet) may start now: `Some(ZERO)` yes (the
    /// start is recorded), `Some(wait)` not before `wait` (at most one
    /// interval). `None` when Redis cannot be asked now: the caller's local
    /// rate alone applies. Waits for nothing but one command on a
    /// connection that answered, at most `COMMAND_TIMEOUT`, and not at all
    /// while another command is slow to be answered.
    pub async fn try_start(self: &Arc<Self>, name: &str, interval: Duration) -> Option<Duration> {
        let (mut connection, generation, ticket) = {
            let mut state = lock(&self.state);
            let Some(connection) = state.connection.clone() else {
                self.connect_if_due(&mut state);
                return None;
            };
            if state
                .unanswered
                .first_key_value()
                .is_some_and(|(_, sent)| sent.elapsed() >= SLOW_REPLY)
            {
                return None;
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.unanswered.insert(ticket, Instant::now());
            (
                connection,
                state.generation,
                Unanswered {
                    cluster: self,
                    ticket,
                },
            )
        };
        let key = format!("relayq:rate:{name}");
        let interval_us = interval.as_micros().max(1) as u64;
        let reply = tokio::time::timeout(
            COMMAND_TIMEOUT,
            self.script
                .key(key)
                .arg(interval_us)
                .invoke_async::<i64>(&mut connection),
        )
        .await;
        drop(ticket);
        match reply {
            Ok(Ok(wait_us)) => {
                self.up();
                // However the server's clock moved, never more than one
                // interval (the script says the same).
                Some(Duration::from_micros(wait_us.max(0) as u64).min(interval))
            }
            Ok(Err(error)) => {
                self.down(&error.to_string(), Some(generation));
                None
            }
            Err(_) => {
                self.down("no reply in time", Some(generation));
                None
            }
        }
    }

    /// Starts the connecting task unless one runs, a connection is open,
    /// or Redis is known to be down and it is not yet time to try again.
    fn connect_if_due(self: &Arc<Self>, state: &mut State) {
        if state.connection.is_some()
            || state.connecting
            || state.retry_at.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        state.connecting = true;
        let cluster = self.clone();
        self.tracker.spawn(async move {
            let connected = cluster.connect().await;
            let mut state = lock(&cluster.state);
            state.connecting = false;
            match connected {
                Ok(connection) => {
                    state.connection = Some(connection);
                    state.generation += 1;
                    drop(state);
                    cluster.up();
                }
                Err(reason) => {
                    drop(state);
                    cluster.down(&reason, None);
                }
            }
        });
    }

    /// A new connection that answers a PING.
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let mut connection = match connected {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("connection timed out".to_owned()),
        };
        let ping = tokio::time::timeout(
            CONNECT_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match ping {
            Ok(Ok(_)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no reply to PING in time".to_owned()),
        }
    }

    fn up(&self) {
        let mut state = lock(&self.state);
        state.retry_after = None;
        if state.retry_at.take().is_some() {
            tracing::info!("cluster: Redis answers again; destination rates are shared");
        }
        drop(state);
        self.metrics.shaping.set_redis_up(true);
    }

    /// Redis failed: a connection attempt (`failed_connection` `None`), or
    /// a command on connection number `failed_connection`. Concurrent
    /// commands failing on one connection count once.
    fn down(&self, reason: &str, failed_connection: Option<u64>) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        if let Some(generation) = failed_connection
            && (state.connection.is_none() || state.generation != generation)
        {
            return;
        }
        state.connection = None;
        let pause = state.retry_after.unwrap_or(RETRY_AFTER);
        state.retry_after = Some((pause * 2).min(MAX_RETRY_AFTER));
        state.retry_at = Some(now + pause);
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

/// A command on its way; dropped when its reply came, it timed out, or the
/// start asking was cancelled.
struct Unanswered<'a> {
    cluster: &'a Cluster,
    ticket: u64,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        lock(&self.cluster.state).unanswered.remove(&self.ticket);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
