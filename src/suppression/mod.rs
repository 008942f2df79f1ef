//! The suppression list (docs/suppression.md): recipients that bounced
//! with a hard class, and addresses an operator added, are refused at
//! `RCPT TO:` until an operator removes them (or `expire_after` lapses).
//!
//! - `entry`: an entry and its stored form; `csv`: the import/export lines;
//! - `set`: the in-memory set RCPT is checked against (hashes, no strings);
//! - `store`: the spool changes of adds and removes, and reading the table;
//! - `bounces`: the entries a transition's bounces add (the hooks in
//!   `QueueHandle::apply_all`);
//! - `stream`: the fleet's shared stream in Redis; `sweep`: lapsed entries.
//!
//! The spool's `suppression` table (key: the normalised address) is the
//! list; the set mirrors it and is rebuilt from it at every start. An
//! entry is committed before the set learns of it, so RCPT never refuses
//! an address that a crash could forget, and a bounce's entry is committed
//! with the bounce itself.
//!
//! Invariant: RCPT checks read only the in-memory set: no I/O, no await,
//! no Redis.

mod bounces;
pub mod csv;
pub mod entry;
pub mod set;
mod store;
pub mod stream;
pub mod sweep;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relayq_spool::{Change, RecordEdit, RecordTable, RecordUpdate, Spool, SpoolError};

use crate::bounce::BounceClass;
use crate::config::SuppressionSettings;
use crate::events::{Event, Events};
use crate::live::Settings;
use crate::metrics::Metrics;
pub use entry::{Entry, Source};
use set::{Mark, Set};

/// The entries, keyed by normalised address.
pub const ENTRIES: RecordTable = RecordTable::new("suppression");
/// This relay's id in the fleet and the position reached in the stream.
pub const META: RecordTable = RecordTable::new("suppression_meta");
/// Adds and removes not yet appended to the fleet's stream, in commit
/// order (only with `[cluster] redis_url`).
pub const OUTBOX: RecordTable = RecordTable::new("suppression_outbox");

/// Records read per spool read transaction while loading or listing.
pub const READ_CHUNK: usize = 4096;

/// The bounce class named `name` (an entry's class, a `--class` filter),
/// or why there is none.
pub fn class_named(name: &str) -> Result<BounceClass, String> {
    name.parse()
        .map_err(|error: crate::bounce::UnknownClass| error.to_string())
}

/// Why an address is refused at RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub class: BounceClass,
    pub since: SystemTime,
}

impl Hit {
    /// The text of the `550 5.1.1` reply to `RCPT TO:<address>`.
    pub fn reply_text(&self, address: &str) -> String {
        format!(
            "<{address}>: recipient is suppressed ({} since {}); see relayq suppression",
            self.class,
            crate::timefmt::rfc3339(self.since)
        )
    }
}

/// The set as loaded from the spool at start.
pub struct Loaded {
    set: Set,
    relay_id: String,
    /// Entries that did not decode (logged, left in the table).
    pub unreadable: usize,
}

impl Loaded {
    /// Addresses loaded.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Bytes the set's tables hold.
    pub fn table_bytes(&self) -> usize {
        self.set.table_bytes()
    }
}

/// The suppression list of one relay. Cheap to share (`Arc`).
pub struct Suppression {
    settings: Settings,
    spool: Spool,
    set: Set,
    events: Events,
    metrics: Arc<Metrics>,
    /// This relay's name in the fleet's stream (its own entries are not
    /// applied again when read back).
    relay_id: String,
    /// Woken after a commit that appended to the outbox.
    outbox_filled: tokio::sync::Notify,
    /// Serialises the operator's and the stream's writes, so the set
    /// follows the spool in commit order.
    writes: tokio::sync::Mutex<()>,
}

impl Suppression {
    /// Reads the table into a new set (on the blocking pool), and this
    /// relay's fleet id (created on first start).
    pub async fn load(spool: &Spool) -> Result<Loaded, SpoolError> {
        let reading = spool.clone();
        let mut loaded = tokio::task::spawn_blocking(move || {
            let loaded = store::load(&reading);
            // The chunks read are gone; what the allocator kept of them is
            // returned (src/memory.rs).
            crate::memory::release_free_memory();
            loaded
        })
        .await
        .map_err(|error| SpoolError::Io(std::io::Error::other(error)))??;
        if loaded.relay_id.is_empty() {
            loaded.relay_id = store::new_relay_id();
            spool
                .apply(vec![Change::PutRecord {
                    table: META,
                    key: store::RELAY_ID.to_vec(),
                    value: loaded.relay_id.as_bytes().to_vec(),
                }])
                .await?;
        }
        Ok(loaded)
    }

    pub fn new(
        loaded: Loaded,
        settings: Settings,
        spool: Spool,
        events: Events,
        metrics: Arc<Metrics>,
    ) -> Suppression {
        metrics.suppression.set_addresses(loaded.set.len());
        Suppression {
            settings,
            spool,
            set: loaded.set,
            events,
            metrics,
            relay_id: loaded.relay_id,
            outbox_filled: tokio::sync::Notify::new(),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether `RCPT TO:<address>` is refused, under the session's settings.
    /// Reads the in-memory set only: no I/O, no await.
    pub fn check(
        &self,
        settings: &SuppressionSettings,
        address: &str,
        now: SystemTime,
    ) -> Option<Hit> {
        if !settings.enabled || self.set.is_empty() {
            return None;
        }
        applying(self.set.get(self.set.key(address))?, settings, now)
    }

    /// A recipient was refused at RCPT because of `hit`: the log line, the
    /// `suppressed` event and the metric. The one place a refusal is
    /// announced (a durable webhook event is added here).
    pub fn refused_at_rcpt(&self, sender: &str, recipient: &str, hit: &Hit) {
        self.metrics.suppression.rcpt_refused();
        let since = crate::timefmt::rfc3339(hit.since);
        tracing::info!(
            "suppressed: from=<{sender}>, to=<{recipient}>, class={}, since={since}: refused at RCPT",
            hit.class
        );
        let reply = hit.reply_text(recipient);
        self.events
            .publish(Event::suppressed(sender, recipient, hit.class, reply));
    }

    /// The entry of `address`, if it is on the list (blocking read on the
    /// blocking pool).
    pub async fn get(&self, address: &str) -> Result<Option<Entry>, SpoolError> {
        let spool = self.spool.clone();
        let key = entry::normalize(address);
        tokio::task::spawn_blocking(move || store::get(&spool, &key))
            .await
            .map_err(|error| SpoolError::Io(std::io::Error::other(error)))?
    }

    /// Adds or replaces entries (an operator's add, a chunk of an import)
    /// in one commit, then in the set. With a cluster they are also queued
    /// for the fleet's stream.
    pub async fn put(&self, entries: Vec<Entry>) -> Result<(), SpoolError> {
        let publish = self.publishes();
        let mut changes = Vec::with_capacity(entries.len() * (1 + usize::from(publish)));
        for entry in &entries {
            store::put(&mut changes, entry, publish);
        }
        let _serial = self.writes.lock().await;
        self.spool.apply(changes).await?;
        for entry in &entries {
            self.insert(entry);
        }
        self.settled(publish);
        Ok(())
    }

    /// Removes `address`; `Ok(false)` when it was not on the list.
    pub async fn remove(&self, address: &str) -> Result<bool, SpoolError> {
        let address = entry::normalize(address);
        let publish = self.publishes();
        let existed = Arc::new(AtomicBool::new(false));
        let seen = existed.clone();
        let mut changes = vec![Change::EditRecord {
            table: ENTRIES,
            key: address.as_bytes().to_vec(),
            edit: RecordEdit::new(move |stored| {
                seen.store(stored.is_some(), Ordering::Relaxed);
                match stored {
                    Some(_) => RecordUpdate::Delete,
                    None => RecordUpdate::Keep,
                }
            }),
        }];
        if publish {
            changes.push(store::outbox_remove(&address));
        }
        let _serial = self.writes.lock().await;
        self.spool.apply(changes).await?;
        self.set
            .remove(self.set.key_of_normalized(address.as_bytes()));
        self.settled(publish);
        Ok(existed.load(Ordering::Relaxed))
    }

    /// Up to `limit` entries after `after` (from the first when `None`), in
    /// address order (blocking: for the blocking pool). Entries that do not
    /// decode are logged and left out.
    pub fn list_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, SpoolError> {
        let start = match after {
            Some(after) => Bound::Excluded(after.as_bytes()),
            None => Bound::Unbounded,
        };
        let records = self
            .spool
            .records(ENTRIES, start, Bound::Unbounded, limit)?;
        Ok(records
            .into_iter()
            .filter_map(|(key, value)| store::decoded(&key, &value))
            .collect())
    }

    /// Whether an entry of `time` has lapsed under `expire_after`.
    pub fn lapsed(settings: &SuppressionSettings, time: SystemTime, now: SystemTime) -> bool {
        settings
            .expire_after
            .is_some_and(|after| now.duration_since(time).is_ok_and(|age| age > after))
    }

    /// The live `[suppression]` settings.
    pub fn current_settings(&self) -> SuppressionSettings {
        self.settings.snapshot().config.suppression.clone()
    }

    /// Whether changes go to the fleet's stream: `[cluster] redis_url` is set.
    fn publishes(&self) -> bool {
        self.settings.snapshot().config.cluster.redis_url.is_some()
    }

    /// Puts a committed entry in the set.
    fn insert(&self, entry: &Entry) {
        let mark = Mark::new(store::since_seconds(entry.time), entry.class);
        self.set
            .insert(self.set.key_of_normalized(entry.address.as_bytes()), mark);
    }

    /// After a commit: the gauge, and the publisher if there is news for it.
    fn settled(&self, published: bool) {
        self.metrics.suppression.set_addresses(self.set.len());
        if published {
            self.outbox_filled.notify_one();
        }
    }
}

/// The refusal an entry's mark means under `settings` at `now`: none once
/// it is older than `expire_after` (pure).
fn applying(mark: Mark, settings: &SuppressionSettings, now: SystemTime) -> Option<Hit> {
    let since = UNIX_EPOCH + Duration::from_secs(u64::from(mark.since));
    if Suppression::lapsed(settings, since, now) {
        return None;
    }
    Some(Hit {
        class: mark.class(),
        since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_applies_until_it_is_older_than_expire_after() {
        let since = 1_795_424_516;
        let mark = Mark::new(since, BounceClass::BadDomain);
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(u64::from(since) + seconds);
        let never = SuppressionSettings::default();
        let hit = applying(mark, &never, at(10 * 365 * 86_400)).expect("never lapses");
        assert_eq!(hit.class, BounceClass::BadDomain);
        assert_eq!(hit.since, at(0));
        let day = SuppressionSettings {
            expire_after: Some(Duration::from_secs(86_400)),
            ..never
        };
        assert!(applying(mark, &day, at(86_400)).is_some());
        assert!(applying(mark, &day, at(86_401)).is_none());
        // A clock that went back: the entry still applies.
        assert!(applying(mark, &day, UNIX_EPOCH).is_some());
    }

    #[test]
    fn the_refusal_names_the_class_and_the_date() {
        let hit = Hit {
            class: BounceClass::InvalidRecipient,
            since: UNIX_EPOCH + Duration::from_secs(1_795_424_516),
        };
        assert_eq!(
            hit.reply_text("user@example.org"),
            "<user@example.org>: recipient is suppressed (invalid_recipient since 2026-11-23T09:01:56Z); see relayq suppression"
        );
    }
}
