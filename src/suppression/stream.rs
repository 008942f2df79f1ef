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
//! `connection`: a Redis connection with its timeouts, and the log of
//! whether Redis answers; `reply`: the stream's entries as Redis returns
//! them (pure). Connection handling mirrors `delivery::cluster` (connect and
//! command timeouts, a warning at most once a minute while Redis is down);
//! the two could share one client type. Two connections here: the
//! follower's blocking XREAD would hold up commands queued behind it on a
//! shared one.

mod connection;
mod reply;

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use relayq_spool::{Change, SpoolError};
use tokio_util::sync::CancellationToken;

use super::entry::unix_ms;
use super::store::{self, Published, STREAM_POSITION};
use super::{ENTRIES, META, OUTBOX, Suppression};
use connection::{Connection, Health, wait};
use reply::{field, parse_id, remote_change, stream_entries, text};

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
