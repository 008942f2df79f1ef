//! The redb database: its tables, how it is opened (and repaired after a crash), and the
//! startup chores that need it (the highest id used, orphan body files).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// quick repair. A crash is rare and costs about a second per GB of spool once, while every
/// commit would pay for quick repair; so it is off.
pub(crate) const QUICK_REPAIR: bool = false;

/// redb's page cache. Recent records are what the spool reads back; older bodies come from
/// the OS page cache or the disk.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Opens or creates the database, repairing it if the last process did not close it, and
/// creates the tables.
pub(crate) fn open(dir: &Path) -> Result<Database, SpoolError> {
    let path = dir.join(FILE_NAME);
    let repairing = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let database = {
        let repairing = Arc::clone(&repairing);
        let path_shown = path.display().to_string();
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(move |session| {
                if !repairing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        path = %path_shown,
                        "spool database was not closed cleanly; repairing it"
                    );
                }
                tracing::debug!(progress = session.progress(), "spool repair");
            })
            .create(&path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => SpoolError::Database(format!(
                    "{} is already open (another relayq running on this spool?)",
                    path.display()
                )),
                other => SpoolError::database(&path.display().to_string(), other),
            })?
    };
    if repairing.load(Ordering::Relaxed) {
        tracing::warn!(
            path = %path.display(),
            seconds = started.elapsed().as_secs_f64(),
            "spool database repaired"
        );
    }

    let txn = begin_write(&database)?;
    txn.open_table(ENVELOPES)?;
    txn.open_table(BODIES)?;
    txn.open_table(QUARANTINE)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(database)
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
