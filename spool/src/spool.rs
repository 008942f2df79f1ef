//! The `Spool` handle: opening the store, asking the committer for changes, and short
//! blocking reads.
//!
//! Reads run one short read transaction each and end it before returning, so no read
//! transaction is ever held across an `.await` (redb reuses freed pages only after the oldest
//! read transaction ends).

use std::fmt;
use std::fs::File;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTableMetadata};

use crate::body::{BodyDir, BodyReader, BodyWriter};
use crate::change::{Change, Work};
use crate::committer::{self, Answer, Message, Reply, Request};
use crate::database::{self, BODIES, ENVELOPES};
use crate::id::IdAllocator;
use crate::record::{BodyRecord, decode_body, decode_envelope};
use crate::records::{self, RecordTable, StoredRecord};
use crate::stats::{SpoolStats, StatsCounters};
use crate::{Body, QueueId, SpoolError, SpoolOptions};

/// What the handle and the committer thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: SpoolOptions,
    /// `None` after `close`, or while a failed commit could not reopen the database. Readers
    /// hold the read lock for one short operation; reopening takes the write lock.
    pub(crate) database: RwLock<Option<Database>>,
    pub(crate) bodies: Arc<BodyDir>,
    pub(crate) ids: IdAllocator,
    pub(crate) stats: StatsCounters,
}

/// A message stored by [`Spool::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub id: QueueId,
    /// How many requests the commit that stored it held (1 at low load).
    pub batch_size: usize,
}

/// The durable message store. Cheap to clone; all clones share one database and one
/// committer. Dropping the last clone stops the committer as [`Spool::close`] does.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    committer_inbox: Sender<Message>,
    committer: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.inner.shared.options.path)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens or creates the spool (blocking): repairs the database if the last process did
    /// not close it, deletes body files no record owns, and starts the committer thread.
    pub fn open(options: SpoolOptions) -> Result<Spool, SpoolError> {
        let bodies_path = options.path.join("bodies");
        std::fs::create_dir_all(&bodies_path)
            .map_err(|error| SpoolError::io(&bodies_path, error))?;
        let database = database::open(&options.path)?;
        // The database file and `bodies/` must survive a crash as entries of the spool
        // directory.
        File::open(&options.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| SpoolError::io(&options.path, error))?;
        let last_used = database::last_used_id(&database)?;
        let bodies = Arc::new(BodyDir::new(bodies_path));
        let orphans = database::sweep_orphan_bodies(&database, &bodies)?;
        tracing::info!(
            path = %options.path.display(),
            last_id = %QueueId(last_used),
            orphan_body_files_deleted = orphans,
            "spool open"
        );

        let shared = Arc::new(Shared {
            options,
            database: RwLock::new(Some(database)),
            bodies,
            ids: IdAllocator::new(last_used),
            stats: StatsCounters::default(),
        });
        let (committer_inbox, inbox) = mpsc::channel();
        let committer = committer::spawn(Arc::clone(&shared), inbox).map_err(|error| {
            SpoolError::Io(std::io::Error::new(
                error.kind(),
                format!("starting the spool committer: {error}"),
            ))
        })?;
        Ok(Spool {
            inner: Arc::new(Inner {
                shared,
                committer_inbox,
                committer: Mutex::new(Some(committer)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Allocates a queue id now, before the message is stored (it appears in the Received
    /// header). Unique across restarts, never reused, increasing.
    pub fn allocate_id(&self) -> QueueId {
        self.inner.shared.ids.allocate()
    }

    /// The highest queue id handed out so far, or stored before this process started. Read
    /// right after [`Spool::open`], before anything allocates, it bounds every message stored
    /// by an earlier process: ids allocated later are higher.
    pub fn last_allocated_id(&self) -> QueueId {
        QueueId(self.inner.shared.ids.last())
    }

    /// How many messages the spool holds (blocking; one short read transaction, no scan).
    pub fn message_count(&self) -> Result<u64, SpoolError> {
        self.read(|database| {
            let txn = database.begin_read()?;
            Ok(txn.open_table(ENVELOPES)?.len()?)
        })
    }

    /// A writer for a new message body. Small bodies stay in memory; a body that grows past
    /// `large_body_threshold` moves to its own file.
    pub fn body_writer(&self) -> BodyWriter {
        let shared = &self.inner.shared;
        BodyWriter::new(
            Arc::clone(&shared.bodies),
            shared.options.large_body_threshold,
        )
    }

    /// Stores a new message under `id` (from [`Spool::allocate_id`]). Resolves only after the
    /// commit holding it returned from fsync: when this returns `Ok`, the message survives a
    /// crash.
    pub async fn store(
        &self,
        id: QueueId,
        envelope: Vec<u8>,
        body: Body,
    ) -> Result<Stored, SpoolError> {
        self.store_with(id, envelope, body, Vec::new()).await
    }

    /// Stores a new message as [`Spool::store`] does, with `more` changes (records it
    /// implies, such as a key that must be free) in the same atomic commit: if any of them
    /// cannot be applied, the message is not stored either.
    pub async fn store_with(
        &self,
        id: QueueId,
        envelope: Vec<u8>,
        body: Body,
        more: Vec<Change>,
    ) -> Result<Stored, SpoolError> {
        let mut changes = Vec::with_capacity(1 + more.len());
        changes.push(Change::Insert { id, envelope, body });
        changes.extend(more);
        let batch_size = self.submit(Work::Changes(changes)).await?;
        Ok(Stored { id, batch_size })
    }

    /// Makes several changes in one atomic, durable commit (for example: mark recipients
    /// bounced and insert the bounce). If any change cannot be applied, none is.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<(), SpoolError> {
        self.submit(Work::Changes(changes)).await.map(drop)
    }

    /// Replaces a message's envelope. `NotFound` if there is no such message.
    pub async fn update_envelope(&self, id: QueueId, envelope: Vec<u8>) -> Result<(), SpoolError> {
        self.apply(vec![Change::UpdateEnvelope { id, envelope }])
            .await
    }

    /// Deletes a message: its records, and its body file once the commit is durable.
    /// `NotFound` if there is no such message.
    pub async fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        self.apply(vec![Change::Remove { id }]).await
    }

    /// Every stored message's id and envelope, in id order (blocking). A record that does not
    /// verify is logged and moved to the quarantine table instead of being returned.
    pub fn scan(&self) -> Result<Vec<(QueueId, Vec<u8>)>, SpoolError> {
        self.scan_from(None, usize::MAX)
    }

    /// Up to `limit` stored messages' ids and envelopes after `after` (from the first when
    /// `None`), in id order (blocking): one short read transaction, so a walk over a large
    /// spool never holds one for long. A record that does not verify is logged and moved to
    /// the quarantine table instead of being returned.
    pub fn scan_from(
        &self,
        after: Option<QueueId>,
        limit: usize,
    ) -> Result<Vec<(QueueId, Vec<u8>)>, SpoolError> {
        let mut messages = Vec::new();
        let mut corrupt = Vec::new();
        self.read(|database| {
            let txn = database.begin_read()?;
            let table = txn.open_table(ENVELOPES)?;
            let range = match after {
                Some(id) => {
                    table.range((std::ops::Bound::Excluded(id.0), std::ops::Bound::Unbounded))?
                }
                None => table.range::<u64>(..)?,
            };
            for entry in range.take(limit) {
                let (key, value) = entry?;
                let id = QueueId(key.value());
                match decode_envelope(value.value()) {
                    Ok(envelope) => messages.push((id, envelope.to_vec())),
                    Err(error) => corrupt.push((id, format!("envelope: {error}"))),
                }
            }
            Ok(())
        })?;
        // The read transaction has ended: quarantining goes through the committer.
        for (id, reason) in corrupt {
            tracing::error!(queue_id = %id, %reason, "spool record does not verify; quarantining it");
            if let Err(error) = self.quarantine(id, &reason) {
                tracing::error!(queue_id = %id, %error, "could not quarantine spool record");
            }
        }
        Ok(messages)
    }

    /// The envelopes of `ids` (blocking), in one read transaction; `None` for an id that is
    /// not stored or whose record does not verify (the single read, [`Spool::envelope`],
    /// reports the latter).
    pub fn envelopes(&self, ids: &[QueueId]) -> Result<Vec<Option<Vec<u8>>>, SpoolError> {
        self.read(|database| {
            let txn = database.begin_read()?;
            let table = txn.open_table(ENVELOPES)?;
            let mut envelopes = Vec::with_capacity(ids.len());
            for id in ids {
                let envelope = match table.get(id.0)? {
                    Some(value) => decode_envelope(value.value()).ok().map(<[u8]>::to_vec),
                    None => None,
                };
                envelopes.push(envelope);
            }
            Ok(envelopes)
        })
    }

    /// One message's envelope (blocking), or `None` if it is not stored.
    pub fn envelope(&self, id: QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        self.read(|database| {
            let txn = database.begin_read()?;
            let Some(value) = txn.open_table(ENVELOPES)?.get(id.0)? else {
                return Ok(None);
            };
            decode_envelope(value.value())
                .map(|envelope| Some(envelope.to_vec()))
                .map_err(|error| corrupt(id, format!("envelope: {error}")))
        })
    }

    /// Opens a message's body for reading (blocking). An inline body is copied out; a file
    /// body is opened and streamed, its checksum checked at the end.
    pub fn read_body(&self, id: QueueId) -> Result<BodyReader, SpoolError> {
        let found = self.read(|database| {
            let txn = database.begin_read()?;
            let Some(value) = txn.open_table(BODIES)?.get(id.0)? else {
                return Err(if txn.open_table(ENVELOPES)?.get(id.0)?.is_some() {
                    corrupt(id, "body record missing".to_owned())
                } else {
                    SpoolError::NotFound(id)
                });
            };
            match decode_body(value.value()) {
                Ok(BodyRecord::Inline(bytes)) => Ok(Found::Inline(bytes.to_vec())),
                Ok(BodyRecord::File { len, crc }) => Ok(Found::File { len, crc }),
                Err(error) => Err(corrupt(id, format!("body: {error}"))),
            }
        })?;
        let (len, crc) = match found {
            Found::Inline(bytes) => return Ok(BodyReader::inline(bytes)),
            Found::File { len, crc } => (len, crc),
        };
        let path = self.inner.shared.bodies.stored_path(id);
        let file = match File::open(&path) {
            Ok(file) => file,
            // The message may have been removed since the record was read.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(match self.envelope(id)? {
                    None => SpoolError::NotFound(id),
                    Some(_) => corrupt(id, format!("body file {} missing", path.display())),
                });
            }
            Err(error) => return Err(SpoolError::io(&path, error)),
        };
        let actual = file
            .metadata()
            .map_err(|error| SpoolError::io(&path, error))?
            .len();
        if actual != len {
            return Err(corrupt(
                id,
                format!(
                    "body file {} has {actual} bytes, recorded {len}",
                    path.display()
                ),
            ));
        }
        Ok(BodyReader::file(file, path, len, crc))
    }

    /// The record under `key` (blocking), or `None`. A value that does not verify is logged
    /// and reads as absent.
    pub fn record(&self, table: RecordTable, key: &[u8]) -> Result<Option<Vec<u8>>, SpoolError> {
        self.read(|database| {
            let txn = database.begin_read()?;
            let opened = match txn.open_table(table.definition()) {
                Ok(opened) => opened,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(error) => return Err(error.into()),
            };
            Ok(opened
                .get(key)?
                .and_then(|value| records::verified(table, key, value.value()).map(<[u8]>::to_vec)))
        })
    }

    /// Up to `limit` records of `table` between `start` and `end`, in key order (blocking):
    /// one short read transaction, so a walk over a large table is done in calls of a few
    /// thousand. Values that do not verify are logged and left out.
    pub fn records(
        &self,
        table: RecordTable,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, SpoolError> {
        let range = records::bounds(start, end);
        self.read(|database| {
            let txn = database.begin_read()?;
            let opened = match txn.open_table(table.definition()) {
                Ok(opened) => opened,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(error.into()),
            };
            let mut found = Vec::new();
            let bounds = (
                range.0.as_ref().map(Vec::as_slice),
                range.1.as_ref().map(Vec::as_slice),
            );
            for entry in opened.range::<&[u8]>(bounds)?.take(limit) {
                let (key, value) = entry?;
                if let Some(payload) = records::verified(table, key.value(), value.value()) {
                    found.push((key.value().to_vec(), payload.to_vec()));
                }
            }
            Ok(found)
        })
    }

    /// How many records `table` holds (blocking).
    pub fn record_count(&self, table: RecordTable) -> Result<u64, SpoolError> {
        self.read(|database| {
            let txn = database.begin_read()?;
            match txn.open_table(table.definition()) {
                Ok(opened) => Ok(opened.len()?),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// Sets a message aside (blocking): its records move, as they are, to the quarantine
    /// table, where they are kept but no longer scanned. For an envelope the caller cannot
    /// decode. `NotFound` if there is no such message.
    pub fn quarantine(&self, id: QueueId, reason: &str) -> Result<(), SpoolError> {
        let work = Work::Quarantine {
            id,
            reason: reason.to_owned(),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(work, Reply::Blocking(reply))?;
        self.answered(answer.recv().ok()).map(drop)
    }

    /// Counters since the spool was opened.
    pub fn stats(&self) -> SpoolStats {
        self.inner.shared.stats.snapshot()
    }

    /// Whether the spool can take writes now: not closed, the committer thread running, and
    /// the database open (after a failed commit it is reopened; until that succeeds every
    /// write fails). Never blocks: while a reopen holds the database, the answer is no.
    pub fn is_healthy(&self) -> bool {
        if self.inner.closed.load(Ordering::Acquire) {
            return false;
        }
        let committer_running = self
            .inner
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|committer| !committer.is_finished());
        committer_running
            && self
                .inner
                .shared
                .database
                .try_read()
                .is_ok_and(|database| database.is_some())
    }

    /// Stops the committer once it has committed what was already queued, then closes the
    /// database (blocking). Later calls return [`SpoolError::Closed`].
    pub fn close(&self) {
        self.inner.close();
    }

    async fn submit(&self, work: Work) -> Result<usize, SpoolError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(work, Reply::Async(reply))?;
        self.answered(answer.await.ok())
    }

    fn send(&self, work: Work, reply: Reply) -> Result<(), SpoolError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SpoolError::Closed);
        }
        self.inner
            .committer_inbox
            .send(Message::Request(Request { work, reply }))
            .map_err(|_| self.stopped())
    }

    /// The committer's answer, or why there is none.
    fn answered(&self, answer: Option<Answer>) -> Result<usize, SpoolError> {
        answer.unwrap_or_else(|| Err(self.stopped()))
    }

    fn stopped(&self) -> SpoolError {
        if self.inner.closed.load(Ordering::Acquire) {
            SpoolError::Closed
        } else {
            SpoolError::Database("the spool committer stopped unexpectedly".to_owned())
        }
    }

    /// Runs a short blocking read against the database.
    fn read<T>(
        &self,
        operation: impl FnOnce(&Database) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SpoolError::Closed);
        }
        let database = self
            .inner
            .shared
            .database
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match database.as_ref() {
            Some(database) => operation(database),
            None if self.inner.closed.load(Ordering::Acquire) => Err(SpoolError::Closed),
            None => Err(SpoolError::Database(
                "the spool database is unavailable after a failed commit".to_owned(),
            )),
        }
    }
}

/// A body record as found, copied out of the read transaction.
enum Found {
    Inline(Vec<u8>),
    File { len: u64, crc: u32 },
}

fn corrupt(id: QueueId, reason: String) -> SpoolError {
    SpoolError::Corrupt { id, reason }
}

impl Inner {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let committer = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(committer) = committer else { return };
        // The committer answers everything queued before this, then exits.
        let _ = self.committer_inbox.send(Message::Shutdown);
        if committer.join().is_err() {
            tracing::error!("the spool committer panicked");
        }
        // Dropping the database closes it cleanly and releases its file lock.
        self.shared
            .database
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        tracing::info!(path = %self.shared.options.path.display(), "spool closed");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}
