//! The fleet's suppression list (`[cluster] redis_url`): every add and
//! remove of every relay is appended to the Redis stream
//! `relayq:suppression` (capped, `MAXLEN ~ 1000000`), and each relay applies
//! the other relays' entries to its own table (source `cluster`).
//!
//! Both directions go through the spool, so neither is lost while Redis is
//! away: a local change is committed with an outbox record in the same
//! commit, and the publisher appends the outbox to the stream and then
//! deletes what it appended (a crash in between appends it twice, which
//! applying twice does not mind). The follower commits the entries it read
//! with the id of the last one, and resumes from that id. RCPT never waits
//! on any of this: it reads the in-memory set.
//!
//! Connection handling mirrors `delivery::cluster` (connect and command
//! timeouts, a warning at most once a minute while Redis is down); the two
//! could share one client type. Two connections here: the follower's
//! blocking XREAD would hold up commands queued behind it on a shared one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use redis::Value;
use redis::aio::MultiplexedConnection;
use relayq_spool::{Change, SpoolError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::entry::{Entry, Source, normalize, unix_ms};
use super::store::{self, Published, STREAM_POSITION};
use super::{ENTRIES, META, OUTBOX, Suppression};
use crate::bounce::BounceClass;

/// The stream every relay of the fleet appends to and reads.
pub const STREAM: &str = "relayq:suppression";
/// The stream's approximate cap (`XADD … MAXLEN ~`).
const MAX_LEN: u64 = 1_000_000;
/// Outbox records appended per pipeline, stream entries read per XREAD.
const BATCH: usize = 1000;
/// How long one XREAD waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Without a `redis_url`, or with a quiet outbox, how often to look again.
const POLL: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Publishes this relay's changes and applies the others' until `shutdown`.
pub async fn run(suppression: Arc<Suppression>, shutdown: CancellationToken) {
    let health = Health::default();
    tokio::join!(
        publish(&suppression, &health, &shutdown),
        follow(&suppression, &health, &shutdown),
    );
}

/// Appends the outbox to the stream, oldest first.
async fn publish(suppression: &Suppression, health: &Health, shutdown: &CancellationToken) {
    let mut connection = Connection::new(CONNECT_TIMEOUT + COMMAND_TIMEOUT);
    let mut backoff = RETRY_MIN;
    while !shutdown.is_cancelled() {
        let Some(url) = suppression.redis_url() else {
            wait(shutdown, POLL).await;
            continue;
        };
        let spool = suppression.spool.clone();
        let read = tokio::task::spawn_blocking(move || {
            spool.records(
                OUTBOX,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                BATCH,
            )
        })
        .await;
        let records = match read {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => {
                tracing::warn!("suppression outbox: cannot read: {error}");
                wait(shutdown, POLL).await;
                continue;
            }
            Err(_) => return,
        };
        let (Some((first, _)), Some((last, _))) = (records.first(), records.last()) else {
            tokio::select! {
                _ = suppression.outbox_filled.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        };
        let mut pipeline = redis::pipe();
        for (_, record) in &records {
            if let Some(published) = store::published(record) {
                pipeline
                    .add_command(xadd(&suppression.relay_id, &published))
                    .ignore();
            }
        }
        let sent = match connection.get(&url, health).await {
            Some(mut redis) => {
                let sent =
                    tokio::time::timeout(COMMAND_TIMEOUT, pipeline.query_async::<()>(&mut redis))
                        .await;
                match sent {
                    Ok(Ok(())) => true,
                    Ok(Err(error)) => connection.failed(health, &error.to_string()),
                    Err(_) => connection.failed(health, "no reply in time"),
                }
            }
            None => false,
        };
        if !sent {
            wait(shutdown, backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
            continue;
        }
        health.up();
        backoff = RETRY_MIN;
        let mut end = last.clone();
        end.push(0);
        let deleted = suppression
            .spool
            .apply(vec![Change::DeleteRecords {
                table: OUTBOX,
                from: first.clone(),
                to: end,
            }])
            .await;
        if let Err(error) = deleted {
            tracing::warn!("suppression outbox: cannot delete what was published: {error}");
            wait(shutdown, POLL).await;
        }
    }
}

/// Reads the stream from the stored position and applies what the other
/// relays appended.
async fn follow(suppression: &Suppression, health: &Health, shutdown: &CancellationToken) {
    let mut connection = Connection::new(BLOCK + COMMAND_TIMEOUT);
    let mut backoff = RETRY_MIN;
    let mut position: Option<String> = None;
    let mut checked_gap = false;
    while !shutdown.is_cancelled() {
        let Some(url) = suppression.redis_url() else {
            wait(shutdown, POLL).await;
            continue;
        };
        let from = match &position {
            Some(position) => position.clone(),
            None => match suppression.stored_position().await {
                Ok(stored) => stored.unwrap_or_else(|| "0".to_owned()),
                Err(error) => {
                    tracing::warn!("suppression stream: cannot read the stored position: {error}");
                    wait(shutdown, POLL).await;
                    continue;
                }
            },
        };
        let Some(mut redis) = connection.get(&url, health).await else {
            wait(shutdown, backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
            continue;
        };
        if !checked_gap {
            checked_gap = true;
            warn_if_trimmed(&mut redis, &from).await;
        }
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(&from);
        let read = tokio::select! {
            read = tokio::time::timeout(BLOCK + COMMAND_TIMEOUT, command.query_async::<Value>(&mut redis)) => read,
            _ = shutdown.cancelled() => return,
        };
        let reply = match read {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                connection.failed(health, &error.to_string());
                checked_gap = false;
                wait(shutdown, backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
            Err(_) => {
                connection.failed(health, "no reply in time");
                checked_gap = false;
                continue;
            }
        };
        health.up();
        backoff = RETRY_MIN;
        let entries = stream_entries(&reply);
        let Some((last, _)) = entries.last() else {
            position = Some(from);
            continue;
        };
        let last = last.clone();
        let changes: Vec<Published> = entries
            .into_iter()
            .filter(|(_, fields)| field(fields, "relay") != Some(suppression.relay_id.as_str()))
            .filter_map(|(id, fields)| remote_change(&id, &fields))
            .collect();
        match suppression.apply_remote(changes, &last).await {
            Ok(()) => position = Some(last),
            Err(error) => {
                tracing::warn!("suppression stream: cannot store what was read: {error}");
                wait(shutdown, POLL).await;
            }
        }
    }
}

impl Suppression {
    /// `[cluster] redis_url`, as the live settings have it now.
    fn redis_url(&self) -> Option<String> {
        self.settings.snapshot().config.cluster.redis_url.clone()
    }

    async fn stored_position(&self) -> Result<Option<String>, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || store::stream_position(&spool))
            .await
            .map_err(|error| SpoolError::Io(std::io::Error::other(error)))?
    }

    /// Commits the other relays' changes with the stream position reached,
    /// then updates the set. Nothing goes back to the outbox.
    async fn apply_remote(
        &self,
        changes: Vec<Published>,
        position: &str,
    ) -> Result<(), SpoolError> {
        let mut spool_changes = Vec::with_capacity(changes.len() + 1);
        for change in &changes {
            match change {
                Published::Add(entry) => store::put(&mut spool_changes, entry, false),
                Published::Remove(address) => spool_changes.push(Change::DeleteRecord {
                    table: ENTRIES,
                    key: address.as_bytes().to_vec(),
                }),
            }
        }
        spool_changes.push(Change::PutRecord {
            table: META,
            key: STREAM_POSITION.to_vec(),
            value: position.as_bytes().to_vec(),
        });
        let _serial = self.writes.lock().await;
        self.spool.apply(spool_changes).await?;
        for change in &changes {
            match change {
                Published::Add(entry) => self.insert(entry),
                Published::Remove(address) => {
                    self.set
                        .remove(self.set.key_of_normalized(address.as_bytes()));
                }
            }
        }
        if !changes.is_empty() {
            tracing::info!(
                "suppression: {} changes from other relays applied (stream at {position})",
                changes.len()
            );
        }
        self.settled(false);
        Ok(())
    }
}

/// `XADD` of one change, with this relay's id.
fn xadd(relay_id: &str, published: &Published) -> redis::Cmd {
    let mut command = redis::cmd("XADD");
    command
        .arg(STREAM)
        .arg("MAXLEN")
        .arg("~")
        .arg(MAX_LEN)
        .arg("*")
        .arg("relay")
        .arg(relay_id);
    match published {
        Published::Add(entry) => {
            command
                .arg("op")
                .arg("add")
                .arg("address")
                .arg(&entry.address)
                .arg("class")
                .arg(entry.class.as_str())
                .arg("reply")
                .arg(&entry.reply)
                .arg("time")
                .arg(unix_ms(entry.time))
                .arg("source")
                .arg(entry.source.as_str());
        }
        Published::Remove(address) => {
            command.arg("op").arg("remove").arg("address").arg(address);
        }
    }
    command
}

/// One stream entry's fields, as text.
type Fields = Vec<(String, String)>;

/// The entries of an XREAD reply for [`STREAM`] (RESP2 arrays or a RESP3
/// map), in order; nothing for a timeout (nil).
fn stream_entries(reply: &Value) -> Vec<(String, Fields)> {
    let streams: Vec<(&Value, &Value)> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|stream| match stream {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(key, value)| (key, value)).collect(),
        _ => Vec::new(),
    };
    let mut entries = Vec::new();
    for (_, items) in streams {
        let Value::Array(items) = items else { continue };
        for item in items {
            let Value::Array(pair) = item else { continue };
            let (Some(id), Some(Value::Array(values))) = (pair.first().and_then(text), pair.get(1))
            else {
                continue;
            };
            let values: Vec<String> = values.iter().filter_map(text).collect();
            let fields = values
                .chunks_exact(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            entries.push((id, fields));
        }
    }
    entries
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Another relay's change as this relay applies it (source `cluster`); a
/// malformed entry is logged and skipped.
fn remote_change(id: &str, fields: &Fields) -> Option<Published> {
    let address = field(fields, "address").filter(|address| !address.is_empty());
    let change = match (field(fields, "op"), address) {
        (Some("add"), Some(address)) => Some(Published::Add(Entry {
            address: normalize(address),
            class: field(fields, "class")
                .and_then(|class| class.parse().ok())
                .unwrap_or(BounceClass::Unclassified),
            reply: field(fields, "reply").unwrap_or_default().to_owned(),
            time: field(fields, "time")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map_or_else(std::time::SystemTime::now, |ms| {
                    UNIX_EPOCH + Duration::from_millis(ms)
                }),
            source: Source::Cluster,
        })),
        (Some("remove"), Some(address)) => Some(Published::Remove(normalize(address))),
        _ => None,
    };
    if change.is_none() {
        tracing::warn!(
            "suppression stream: entry {id} is not a change relayq understands; skipped"
        );
    }
    change
}

/// Stream ids compare as (milliseconds, sequence).
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, sequence) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, sequence.parse().ok()?))
}

/// Says so when entries after `position` were trimmed from the stream
/// before this relay read them (it was away while more than the cap went
/// by): those changes are missing here.
async fn warn_if_trimmed(redis: &mut MultiplexedConnection, position: &str) {
    if position == "0" {
        return;
    }
    let first = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async::<Value>(redis),
    )
    .await;
    let Ok(Ok(Value::Array(items))) = first else {
        return;
    };
    let first_id = items.first().and_then(|item| match item {
        Value::Array(pair) => pair.first().and_then(text),
        _ => None,
    });
    if let (Some(first), Some(seen)) = (first_id.as_deref().and_then(parse_id), parse_id(position))
        && first > seen
    {
        tracing::warn!(
            "suppression stream: entries after {position} were trimmed before this relay read them; changes of other relays from that time are missing here"
        );
    }
}

/// One Redis connection, opened when needed, dropped after a failure.
struct Connection {
    response_timeout: Duration,
    open: Option<(String, MultiplexedConnection)>,
    retry_at: Option<Instant>,
}

impl Connection {
    fn new(response_timeout: Duration) -> Connection {
        Connection {
            response_timeout,
            open: None,
            retry_at: None,
        }
    }

    async fn get(&mut self, url: &str, health: &Health) -> Option<MultiplexedConnection> {
        if let Some((open_url, connection)) = &self.open
            && open_url == url
        {
            return Some(connection.clone());
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let client = match redis::Client::open(url) {
            Ok(client) => client,
            Err(error) => {
                self.failed(health, &error.to_string());
                return None;
            }
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.response_timeout));
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                self.open = Some((url.to_owned(), connection.clone()));
                Some(connection)
            }
            Ok(Err(error)) => {
                self.failed(health, &error.to_string());
                None
            }
            Err(_) => {
                self.failed(health, "connection timed out");
                None
            }
        }
    }

    /// Drops the connection after a failure; always `false` (nothing sent).
    fn failed(&mut self, health: &Health, reason: &str) -> bool {
        self.open = None;
        self.retry_at = Some(Instant::now() + RETRY_MIN);
        health.down(reason);
        false
    }
}

/// Whether Redis answers, for the log: a warning at most once a minute
/// while it does not, a line when it does again.
#[derive(Default)]
struct Health {
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    down: bool,
    last_warning: Option<Instant>,
}

impl Health {
    fn up(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut state.down) {
            tracing::info!("suppression stream: Redis answers again; catching up");
        }
    }

    fn down(&self, reason: &str) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.down = true;
        if state
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            state.last_warning = Some(now);
            tracing::warn!(
                "suppression stream: cannot reach Redis ({reason}); this relay keeps its own list and catches up later"
            );
        }
    }
}

async fn wait(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn xread_replies_in_both_protocols() {
        let items = Value::Array(vec![
            entry(
                "1-0",
                &[
                    "relay",
                    "a",
                    "op",
                    "add",
                    "address",
                    "X@Example.org",
                    "class",
                    "bad_domain",
                    "time",
                    "1000",
                ],
            ),
            entry(
                "1-1",
                &["relay", "a", "op", "remove", "address", "y@example.org"],
            ),
            entry("2-0", &["op", "frobnicate"]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(STREAM), items.clone()])]);
        let resp3 = Value::Map(vec![(bulk(STREAM), items)]);
        for reply in [resp2, resp3] {
            let entries = stream_entries(&reply);
            assert_eq!(entries.len(), 3);
            let changes: Vec<_> = entries
                .iter()
                .filter_map(|(id, fields)| remote_change(id, fields))
                .collect();
            assert_eq!(changes.len(), 2, "the unknown op is skipped");
            let Published::Add(added) = &changes[0] else {
                panic!()
            };
            assert_eq!(added.address, "x@example.org");
            assert_eq!(added.class, BounceClass::BadDomain);
            assert_eq!(added.source, Source::Cluster);
            assert_eq!(added.time, UNIX_EPOCH + Duration::from_secs(1));
            assert_eq!(changes[1], Published::Remove("y@example.org".into()));
        }
        assert!(stream_entries(&Value::Nil).is_empty());
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(parse_id("10-2") > parse_id("10-1"));
        assert!(parse_id("11-0") > parse_id("10-99"));
        assert_eq!(parse_id("5"), Some((5, 0)));
        assert_eq!(parse_id("x-1"), None);
    }
}
