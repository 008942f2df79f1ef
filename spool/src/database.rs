//! The redb database: its tables, how it is opened (and repaired after a crash), and the
//! startup chores that need it (the highest id used, orphan body files).

use std::path::Path;
use std::time::Instant;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::body::BodyDir;
use crate::record::{BodyRecord, decode_body};
use crate::{QueueId, SpoolError};

/// Message id → framed envelope (see `record`).
pub(crate) const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
/// Message id → framed body record: the body itself, or a reference to `bodies/<id>`.
pub(crate) const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// Message id → a message set aside because its records did not verify or decode.
pub(crate) const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");
/// Spool-wide values, such as [`META_LAST_ID`].
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The highest queue id allocated before the latest commit, so ids are never reused.
pub(crate) const META_LAST_ID: &str = "last_id";

/// The database file inside the spool directory.
pub(crate) const FILE_NAME: &str = "queue.redb";

/// Whether commits record the allocator state so that opening after a crash skips the full
/// repair. It costs a second fsync per commit. Measured with `examples/commit_rate.rs` (2
/// cores, ext4 on virtio, disk shared with other load, so medians of alternating rounds):
/// one 2 KB message per commit, 690–1,160 commits/s without, 380–780/s with (about −35%, so
/// the latency of a `250` at low load goes up by half); 32 per commit, 13–17k messages/s
/// without, 10–14.5k/s with; 256 per commit, about −10%. Opening a 1.06 GB database after
/// its writer was killed with SIGKILL: 0.55–1.3 s with the full repair, under 0.04 s with
/// quick repair. A crash is rare and costs the full repair once (about 0.6 s per GB of
/// spool, see [`REPAIR_CACHE_BYTES`]), while every commit would pay for quick repair; so it
/// is off.
pub(crate) const QUICK_REPAIR: bool = false;

/// redb's page cache. Small on purpose: the spool reads a record back once or twice (a
/// delivery attempt, a listing) and rarely again soon, so a large cache mostly adds the work
/// of inserting and evicting pages, and holds memory for nothing; the OS page cache keeps
/// what is hot. Measured with `examples/cache_size.rs` on 1,000,000 messages of 2.3 KB (a
/// 4.4 GB file; tests/bench/results/cache-size-2026-12-02.txt): with 32 MB instead of
/// 128 MB, commits cost the same or less CPU, a scan of every envelope and random reads take
/// about the same time, and the process holds 36 MB instead of 136 MB. Below that the
/// delivery benchmark's drain (a queue of 20,000 read back after a restart) costs a few
/// percent more CPU per message at 16 MB, and without a cache commits cost 1.6–1.9 times the
/// CPU (pages are written and read back within the transaction).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The cache while repairing after a crash. The repair reads every page once, and with no
/// cache it runs two to three times faster (same measurement: 2.4 s, against 4.2 s with
/// 16 MB and 8.1 s with 128 MB).
const REPAIR_CACHE_BYTES: usize = 0;

/// Opens or creates the database, repairing it if the last process did not close it, and
/// creates the tables.
///
/// A repair is done by a separate open without a cache, which is then closed (cleanly, so the
/// next open is quick) and opened again with the cache.
pub(crate) fn open(dir: &Path) -> Result<Database, SpoolError> {
    let path = dir.join(FILE_NAME);
    let opened = match open_file(&path, CACHE_BYTES, Repair::Decline) {
        Err(redb::DatabaseError::RepairAborted) => {
            tracing::warn!(
                path = %path.display(),
                "spool database was not closed cleanly; repairing it"
            );
            let started = Instant::now();
            let repaired = open_file(&path, REPAIR_CACHE_BYTES, Repair::Run);
            drop(repaired.map_err(|error| open_error(&path, error))?);
            tracing::warn!(
                path = %path.display(),
                seconds = started.elapsed().as_secs_f64(),
                "spool database repaired"
            );
            // Closed cleanly just now, so this open does not repair (unless another process
            // crashed on the file in between, and then it does).
            open_file(&path, CACHE_BYTES, Repair::Run)
        }
        opened => opened,
    };
    let database = opened.map_err(|error| open_error(&path, error))?;

    let txn = begin_write(&database)?;
    txn.open_table(ENVELOPES)?;
    txn.open_table(BODIES)?;
    txn.open_table(QUARANTINE)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(database)
}

/// What an open does when the file needs a repair.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repair {
    /// Stops before repairing: the open fails with `RepairAborted`, the file untouched.
    Decline,
    Run,
}

fn open_file(
    path: &Path,
    cache_bytes: usize,
    repair: Repair,
) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |session| match repair {
            Repair::Decline => session.abort(),
            Repair::Run => tracing::debug!(progress = session.progress(), "spool repair"),
        })
        .create(path)
}

fn open_error(path: &Path, error: redb::DatabaseError) -> SpoolError {
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::Database(format!(
            "{} is already open (another relayq running on this spool?)",
            path.display()
        )),
        other => SpoolError::database(&path.display().to_string(), other),
    }
}

/// A write transaction with the spool's commit settings (durable on return from commit).
pub(crate) fn begin_write(database: &Database) -> Result<WriteTransaction, SpoolError> {
    let mut txn = database.begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|error| SpoolError::database("set durability", error))?;
    txn.set_quick_repair(QUICK_REPAIR);
    Ok(txn)
}

/// The highest id any earlier process used: the persisted counter, or a stored key above it
/// (belt and braces: the counter is written by every commit that stores a message).
pub(crate) fn last_used_id(database: &Database) -> Result<u64, SpoolError> {
    let txn = database.begin_read()?;
    let mut last = txn
        .open_table(META)?
        .get(META_LAST_ID)?
        .map_or(0, |value| value.value());
    for table in [ENVELOPES, BODIES, QUARANTINE] {
        if let Some((key, _)) = txn.open_table(table)?.last()? {
            last = last.max(key.value());
        }
    }
    Ok(last)
}

/// Deletes files in `bodies/` that no record owns: temporary files of bodies that were never
/// stored, and stored-name files whose message is gone. A quarantined message keeps its file.
/// Files with other names are left alone. Returns how many files were deleted.
pub(crate) fn sweep_orphan_bodies(database: &Database, dir: &BodyDir) -> Result<usize, SpoolError> {
    let entries =
        std::fs::read_dir(dir.path()).map_err(|error| SpoolError::io(dir.path(), error))?;
    let txn = database.begin_read()?;
    let bodies = txn.open_table(BODIES)?;
    let quarantine = txn.open_table(QUARANTINE)?;
    let mut deleted = 0;
    for entry in entries {
        let entry = entry.map_err(|error| SpoolError::io(dir.path(), error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let owned = if let Some(temp) = name.strip_suffix(".tmp") {
            if temp.parse::<u64>().is_err() {
                continue;
            }
            false
        } else if let Ok(id) = name.parse::<QueueId>() {
            let referenced = match bodies.get(id.0)? {
                // A record that does not verify keeps its file: it may be the file's only owner.
                Some(value) => !matches!(decode_body(value.value()), Ok(BodyRecord::Inline(_))),
                None => false,
            };
            referenced || quarantine.get(id.0)?.is_some()
        } else {
            continue;
        };
        if owned {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "deleted orphan body file");
                deleted += 1;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(SpoolError::io(&path, error)),
        }
    }
    Ok(deleted)
}
