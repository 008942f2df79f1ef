//! Lapsed entries (`suppression.expire_after`) leave the list: RCPT stops
//! applying them at once (the check compares times), and this sweep later
//! deletes them from the spool and the set, a chunk per commit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relayq_spool::{Change, RecordEdit, RecordUpdate};
use tokio_util::sync::CancellationToken;

use super::entry::Entry;
use super::set::Mark;
use super::store::{self, since_seconds};
use super::{ENTRIES, READ_CHUNK, Suppression};
use crate::records;

/// The longest time between two sweeps; without `expire_after`, how often
/// the sweep looks whether a reload set it.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps now and then until `shutdown`.
pub async fn run(suppression: Arc<Suppression>, shutdown: CancellationToken) {
    loop {
        let expire_after = suppression.current_settings().expire_after;
        let interval = expire_after.map_or(MAX_INTERVAL, |after| {
            (after / 2).clamp(MIN_INTERVAL, MAX_INTERVAL)
        });
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(after) = suppression.current_settings().expire_after else {
            continue;
        };
        match suppression.sweep(after, &shutdown).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(
                "suppression: {swept} entries older than {} removed",
                humantime::format_duration(after)
            ),
            Err(error) => tracing::warn!("suppression: sweeping lapsed entries failed: {error}"),
        }
    }
}

impl Suppression {
    /// Deletes the entries older than `after`; returns how many. An entry
    /// added again since the walk read it is kept (the delete compares the
    /// stored time).
    pub async fn sweep(
        &self,
        after: Duration,
        shutdown: &CancellationToken,
    ) -> Result<usize, relayq_spool::SpoolError> {
        let mut swept = 0;
        let mut last: Option<String> = None;
        while !shutdown.is_cancelled() {
            let chunk = records::chunk_after(
                &self.spool,
                ENTRIES,
                last.as_ref().map(String::as_bytes),
                READ_CHUNK,
            )
            .await?;
            let Some((key, _)) = chunk.last() else {
                break;
            };
            last = Some(String::from_utf8_lossy(key).into_owned());
            let now = SystemTime::now();
            let lapsed: Vec<Entry> = chunk
                .iter()
                .filter_map(|(key, value)| store::decoded(key, value))
                .filter(|entry| now.duration_since(entry.time).is_ok_and(|age| age > after))
                .collect();
            if lapsed.is_empty() {
                continue;
            }
            let changes = lapsed.iter().map(delete_unchanged).collect();
            let _serial = self.writes.lock().await;
            self.spool.apply(changes).await?;
            for entry in &lapsed {
                let mark = Mark::new(since_seconds(entry.time), entry.class);
                let key = self.set.key_of_normalized(entry.address.as_bytes());
                self.set.remove_if(key, mark);
            }
            swept += lapsed.len();
            self.settled(false);
        }
        Ok(swept)
    }
}

/// Deletes `entry` if it is still stored with the time it was read with
/// (an entry added again has a new time).
fn delete_unchanged(entry: &Entry) -> Change {
    let seen = entry.time;
    Change::EditRecord {
        table: ENTRIES,
        key: entry.address.as_bytes().to_vec(),
        edit: RecordEdit::new(move |stored| match stored.map(Entry::decode_mark) {
            Some(Ok((time, _))) if time == seen => RecordUpdate::Delete,
            _ => RecordUpdate::Keep,
        }),
    }
}
