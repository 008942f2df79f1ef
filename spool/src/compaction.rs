//! Giving disk space back. redb reuses freed pages but never shrinks its file by itself, so a
//! burst of large messages would leave the spool at its peak size for good. When the
//! committer has been idle for a while and most of a large file is free, it compacts the
//! database (redb moves the live pages to the front and truncates the file).
//!
//! Compaction holds the database exclusively: commits and reads wait for it. It only starts
//! after [`IDLE`] without a request and when at least half the file is free, so the live
//! data it moves is at most as large as the space it gives back. Finding out whether half
//! is free holds nothing exclusively: reads go on meanwhile.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use redb::Database;

use crate::database::FILE_NAME;
use crate::spool::Shared;

/// How long the committer waits without work before it considers compacting.
pub(crate) const IDLE: Duration = Duration::from_secs(5);

/// Files smaller than this are left alone.
const MIN_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A file that was found not worth compacting is looked at again only after this long (or
/// once it has grown by a quarter), since measuring walks every tree.
const RECHECK: Duration = Duration::from_secs(600);

/// What the last look found, to avoid walking the trees on every idle moment.
#[derive(Debug, Default)]
pub(crate) struct Compactor {
    last_look: Option<(Instant, u64)>,
}

impl Compactor {
    /// Compacts the database if it is worth it. Never fails: a compaction that cannot run now
    /// (an open read transaction, an I/O error) is logged and tried again later. `true` when
    /// it tried, and so may have committed.
    pub(crate) fn run_if_worth_it(&mut self, shared: &Shared) -> bool {
        let path = shared.options.path.join(FILE_NAME);
        let Ok(file_bytes) = std::fs::metadata(&path).map(|metadata| metadata.len()) else {
            return false;
        };
        if file_bytes < MIN_FILE_BYTES {
            return false;
        }
        if let Some((when, size)) = self.last_look
            && when.elapsed() < RECHECK
            && file_bytes < size + size / 4
        {
            return false;
        }
        self.last_look = Some((Instant::now(), file_bytes));

        // Measuring walks every tree (seconds with a million messages), in a
        // write transaction that readers do not wait for: only the shared
        // read lock is held, so `queue list` and delivery reads go on. Only
        // the committer (this thread, idle now) writes, so no commit waits.
        let live_bytes = {
            let guard = shared
                .database
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(database) = guard.as_ref() else {
                return false;
            };
            match live_bytes(database) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::debug!(%error, "spool compaction: cannot measure the database");
                    return false;
                }
            }
        };
        if live_bytes.saturating_mul(2) > file_bytes {
            return false;
        }
        let mut guard = shared
            .database
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(database) = guard.as_mut() else {
            return false;
        };
        let started = Instant::now();
        match database.compact() {
            Ok(_) => {
                let after = std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "spool compacted: {} MB -> {} MB",
                    file_bytes / 1_000_000,
                    after / 1_000_000,
                );
                self.last_look = Some((Instant::now(), after));
            }
            Err(error) => tracing::warn!(%error, "spool compaction failed; will try again later"),
        }
        true
    }
}

/// Bytes of the pages the database uses.
fn live_bytes(database: &Database) -> Result<u64, redb::Error> {
    let txn = database.begin_write()?;
    let stats = txn.stats()?;
    txn.abort()?;
    Ok(stats.allocated_pages() * stats.page_size() as u64)
}
