//! The startup rebuild, in the background: the daemon opens the spool,
//! notes its boundary (the highest queue id stored or allocated so far,
//! [`Spool::last_allocated_id`]) and the number of messages it holds, and
//! starts listening at once; this scan then reads the envelopes with ids up
//! to the boundary, in chunks, and places each chunk in the live schedule
//! (so delivery of a chunk starts as soon as it is scanned). Messages
//! stored after the open have higher ids and enter the schedule through
//! intake as usual: the scan never meets them, so no message is scheduled
//! twice or missed.
//!
//! While it runs:
//! - the messages not scanned yet count in every lane's occupancy (a lane
//!   cap cannot be overfilled by a restart: their lane is unknown until
//!   they are read);
//! - an operator operation on a message waits (bounded) until the scan has
//!   passed its id ([`Queue::wait_scanned`]), a bulk one until the scan is
//!   done ([`Queue::wait_rebuilt`]): before that the message is not in the
//!   schedule, and an operation could not claim it;
//! - [`Queue::rebuild_progress`] says how far it got (stats, metrics,
//!   systemd's `STATUS=`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use relayq_spool::{QueueId, Spool, SpoolError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Clock, Envelope, Lane, Phase, Queue, Recovery, Schedule};

/// Envelopes read per spool read transaction when the schedule is rebuilt.
pub(super) const REBUILD_CHUNK: usize = 4096;

/// Scanned messages placed in the schedule per lock: intake and delivery,
/// which take the same lock, wait for at most this many inserts.
const PLACE_CHUNK: usize = 1024;

/// The running scan, kept in the schedule (under its lock), so that
/// "is this id in the schedule, or will it be" is answered atomically.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scan {
    /// The highest id the scan covers; every message stored later has a
    /// higher one.
    boundary: QueueId,
    /// The last id the scan has placed (or dropped: completed, unreadable).
    scanned_to: Option<QueueId>,
}

impl Scan {
    /// Whether the scan is done with `id`: it placed it, dropped it, or will
    /// never meet it (a message stored after the start).
    fn passed(&self, id: QueueId) -> bool {
        id > self.boundary || self.scanned_to.is_some_and(|to| id <= to)
    }
}

/// The scan's progress, read without the schedule's lock.
#[derive(Default)]
pub(super) struct Progress {
    in_progress: AtomicBool,
    /// Messages the spool held at the start.
    total: AtomicUsize,
    scanned: AtomicUsize,
    /// Messages at or below the boundary not read yet: counted in every
    /// lane's occupancy. Lowered only after the chunk's messages were
    /// counted in their lanes, so the sum never falls below the truth.
    pub(super) unscanned: AtomicUsize,
    /// Woken after each chunk and at the end.
    advanced: Notify,
}

/// How far the startup rebuild is (`queue stats`, metrics, systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RebuildProgress {
    pub in_progress: bool,
    /// Messages read so far.
    pub scanned: usize,
    /// Messages the spool held at the start (the completed and unreadable
    /// ones among them are dropped as they are read).
    pub total: usize,
}

impl RebuildProgress {
    /// Scanned of total, in whole percent (100 when there is nothing).
    pub fn percent(&self) -> usize {
        if self.total == 0 {
            return 100;
        }
        (self.scanned.min(self.total) * 100) / self.total
    }
}

impl std::fmt::Display for RebuildProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.in_progress {
            write!(
                f,
                "queue is being rebuilt: {} of {} messages scanned ({}%)",
                self.scanned,
                self.total,
                self.percent()
            )
        } else {
            write!(f, "queue rebuilt")
        }
    }
}

impl Queue {
    /// An empty schedule that [`Queue::scan`] fills from the spool: the
    /// messages with ids up to `boundary` (`total` of them, as the spool
    /// counted them at open) are not known yet, and count in every lane's
    /// occupancy until they are read.
    pub fn rebuilding(boundary: QueueId, total: usize) -> Queue {
        let queue = Queue::default();
        queue.lock().scan = Some(Scan {
            boundary,
            scanned_to: None,
        });
        queue.rebuild.total.store(total, Ordering::Release);
        queue.rebuild.unscanned.store(total, Ordering::Release);
        queue.rebuild.in_progress.store(true, Ordering::Release);
        queue
    }

    /// Reads the messages up to the boundary into the schedule, one chunk
    /// per spool read transaction, on one blocking-pool thread (decoding
    /// and the schedule's long-lived entries share its allocator arena);
    /// removes completed messages and sets aside unreadable ones. Stops
    /// between two chunks at `shutdown` (what is not read stays in the
    /// spool, for the next start). Returns what it found.
    pub async fn scan(
        self: &Arc<Self>,
        spool: &Spool,
        shutdown: CancellationToken,
    ) -> Result<Recovery, SpoolError> {
        let queue = self.clone();
        let spool = spool.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let scanned = queue.scan_blocking(&spool, &runtime, &shutdown);
            // The decoded envelopes are gone; what the allocator kept of
            // them is returned (src/memory.rs).
            crate::memory::release_free_memory();
            scanned
        })
        .await
        .map_err(|error| SpoolError::Io(std::io::Error::other(error)))?
    }

    fn scan_blocking(
        &self,
        spool: &Spool,
        runtime: &tokio::runtime::Handle,
        shutdown: &CancellationToken,
    ) -> Result<Recovery, SpoolError> {
        let mut recovery = Recovery::default();
        let Some(boundary) = self.lock().scan.map(|scan| scan.boundary) else {
            return Ok(recovery);
        };
        let mut after = None;
        loop {
            if shutdown.is_cancelled() {
                return Ok(recovery);
            }
            let chunk = spool.scan_from(after, REBUILD_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            let mut read = 0;
            let mut last = None;
            let mut past_boundary = false;
            let mut envelopes = Vec::with_capacity(chunk.len());
            let mut completed = Vec::new();
            for (id, bytes) in chunk {
                if id > boundary {
                    past_boundary = true;
                    break;
                }
                read += 1;
                last = Some(id);
                let envelope = match Envelope::decode(&bytes) {
                    Ok(envelope) => envelope,
                    Err(error) => {
                        tracing::error!(queue_id = %id, "{id}: setting aside unreadable envelope: {error}");
                        spool.quarantine(id, &error.to_string())?;
                        recovery.quarantined += 1;
                        continue;
                    }
                };
                if envelope.is_complete() {
                    completed.push(relayq_spool::Change::Remove { id });
                    continue;
                }
                match envelope.lane {
                    Lane::High => recovery.high += 1,
                    Lane::Low => recovery.low += 1,
                }
                envelopes.push((id, envelope));
            }
            // Not in the schedule, so nothing else can touch them meanwhile.
            recovery.completed += completed.len();
            if !completed.is_empty() {
                runtime.block_on(spool.apply(completed))?;
            }
            self.place_scanned(&envelopes, last, read);
            if past_boundary {
                break;
            }
            after = last;
        }
        self.finish_scan();
        Ok(recovery)
    }

    /// Places a scanned chunk's messages (ids above any placed before, at or
    /// below the boundary) in the schedule, then marks the scan as past
    /// `last` and lowers the unscanned count by `read`.
    fn place_scanned(&self, envelopes: &[(QueueId, Envelope)], last: Option<QueueId>, read: usize) {
        let clock = Clock::now();
        for part in envelopes.chunks(PLACE_CHUNK) {
            let mut guard = self.lock();
            let state = &mut *guard;
            for (id, envelope) in part {
                place_new(self, state, *id, envelope, &clock);
            }
            drop(guard);
            for lane in Lane::ALL {
                self.wake[lane].notify_one();
            }
        }
        if let Some(last) = last
            && let Some(scan) = self.lock().scan.as_mut()
        {
            scan.scanned_to = Some(last);
        }
        let _ =
            self.rebuild
                .unscanned
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |unscanned| {
                    Some(unscanned.saturating_sub(read))
                });
        self.rebuild.scanned.fetch_add(read, Ordering::AcqRel);
        self.rebuild.advanced.notify_waiters();
    }

    fn finish_scan(&self) {
        self.lock().scan = None;
        // Records the spool's scan set aside were counted but never read.
        self.rebuild.unscanned.store(0, Ordering::Release);
        self.rebuild.in_progress.store(false, Ordering::Release);
        self.rebuild.advanced.notify_waiters();
    }

    /// How far the startup rebuild is.
    pub fn rebuild_progress(&self) -> RebuildProgress {
        RebuildProgress {
            in_progress: self.rebuild.in_progress.load(Ordering::Acquire),
            scanned: self.rebuild.scanned.load(Ordering::Acquire),
            total: self.rebuild.total.load(Ordering::Acquire),
        }
    }

    /// Whether the schedule knows of message `id` as the spool does: the
    /// rebuild is done, or its scan has passed `id`.
    pub fn scanned(&self, id: QueueId) -> bool {
        self.lock().scan.is_none_or(|scan| scan.passed(id))
    }

    /// Waits, at most `limit`, until the rebuild's scan has passed `id`
    /// (at once when it has, or when the rebuild is done): from then on the
    /// schedule has the message if the spool does. `Err` with the progress
    /// when the time ran out.
    pub async fn wait_scanned(&self, id: QueueId, limit: Duration) -> Result<(), RebuildProgress> {
        self.wait_until(|scan| scan.passed(id), limit).await
    }

    /// Waits, at most `limit`, until the rebuild is done. `Err` with the
    /// progress when the time ran out.
    pub async fn wait_rebuilt(&self, limit: Duration) -> Result<(), RebuildProgress> {
        self.wait_until(|_| false, limit).await
    }

    async fn wait_until(
        &self,
        done: impl Fn(&Scan) -> bool,
        limit: Duration,
    ) -> Result<(), RebuildProgress> {
        let deadline = Instant::now() + limit;
        loop {
            let advanced = self.rebuild.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.lock().scan.is_none_or(|scan| done(&scan)) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return if self.lock().scan.is_none_or(|scan| done(&scan)) {
                    Ok(())
                } else {
                    Err(self.rebuild_progress())
                };
            }
        }
    }
}

/// Puts a scanned message in the schedule, counted in its lane. The scan
/// is the only way a message at or below the boundary enters it, so the id
/// is new; one that is not is left as it is.
fn place_new(queue: &Queue, state: &mut Schedule, id: QueueId, envelope: &Envelope, clock: &Clock) {
    if state.entries.contains_key(&id) {
        return;
    }
    let entry = super::Entry::for_envelope(envelope, clock, &mut state.domain_sets);
    state.entries.insert(id, entry);
    state.queued[entry.lane] += 1;
    queue.occupancy[entry.lane].fetch_add(1, Ordering::AcqRel);
    if let Phase::Waiting { due } = entry.phase {
        state.waiting[entry.lane].insert((due, id));
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use relayq_spool::{Body, Change, SpoolOptions};

    use super::*;
    use crate::queue::envelope::Recipient;

    fn envelope(lane: Lane, n: usize) -> Envelope {
        let recipients = vec![Recipient::new(format!("user{n}@d{}.test", n % 3))];
        Envelope::new(String::new(), recipients, lane, SystemTime::now(), 100)
    }

    /// Stores `count` messages, alternately high and low; returns their ids.
    async fn fill(spool: &Spool, count: usize) -> Vec<QueueId> {
        let mut ids = Vec::new();
        let mut changes = Vec::new();
        for n in 0..count {
            let id = spool.allocate_id();
            let lane = if n % 2 == 0 { Lane::High } else { Lane::Low };
            changes.push(Change::Insert {
                id,
                envelope: envelope(lane, n).encode(),
                body: Body::from_bytes(b"x".to_vec()),
            });
            ids.push(id);
        }
        spool.apply(changes).await.unwrap();
        ids
    }

    fn open(dir: &tempfile::TempDir) -> Spool {
        Spool::open(SpoolOptions::new(dir.path())).unwrap()
    }

    /// The daemon's start: boundary and count right after the open.
    fn rebuilding(spool: &Spool) -> Arc<Queue> {
        Arc::new(Queue::rebuilding(
            spool.last_allocated_id(),
            spool.message_count().unwrap() as usize,
        ))
    }

    /// Messages stored before the start are scheduled by the scan, those
    /// stored after it by intake: each exactly once, whichever comes first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_boundary_splits_the_scan_from_intake() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        let old = fill(&spool, REBUILD_CHUNK + 300).await;
        spool.close();
        let spool = open(&dir);
        let queue = rebuilding(&spool);
        // Intake stores and schedules two messages before the scan starts
        // (and would during it): their ids are above the boundary.
        let new = fill(&spool, 2).await;
        for id in &new {
            queue.insert(*id, &envelope(Lane::Low, 1));
        }
        assert!(new.iter().all(|id| queue.scanned(*id)));
        assert!(!queue.scanned(old[0]), "not read yet");
        // Not scanned yet: counted in both lanes, whichever they are in.
        let stored = old.len();
        assert_eq!(queue.occupancy(Lane::High), stored);
        assert_eq!(queue.occupancy(Lane::Low), stored + 2);

        let recovery = queue.scan(&spool, CancellationToken::new()).await.unwrap();
        assert_eq!(recovery.high + recovery.low, stored);
        assert_eq!(queue.len(), stored + 2);
        for id in old.iter().chain(&new) {
            assert!(queue.get(*id).is_some(), "{id} scheduled");
        }
        let progress = queue.rebuild_progress();
        assert!(!progress.in_progress);
        assert_eq!((progress.scanned, progress.total), (stored, stored));
        assert_eq!(queue.occupancy(Lane::High), stored.div_ceil(2));
        assert_eq!(queue.occupancy(Lane::Low), stored / 2 + 2);
        assert_eq!(
            queue.count(Lane::High) + queue.count(Lane::Low),
            queue.len()
        );
    }

    /// A restart cannot overfill a lane: until the scan has read them, the
    /// stored messages count against every lane's cap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unscanned_messages_count_against_every_lane_cap() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        fill(&spool, 4).await;
        let queue = rebuilding(&spool);
        assert!(queue.try_reserve(Lane::High, 4).is_none());
        assert!(queue.try_reserve(Lane::Low, 4).is_none());
        let high = queue.try_reserve(Lane::High, 5).expect("room for one");
        assert!(queue.try_reserve(Lane::High, 5).is_none());
        queue.scan(&spool, CancellationToken::new()).await.unwrap();
        // Two of the four are high: with the reservation, three of five.
        assert_eq!(queue.occupancy(Lane::High), 3);
        assert_eq!(queue.occupancy(Lane::Low), 2);
        assert!(queue.try_reserve(Lane::High, 4).is_some());
        drop(high);
    }

    /// An operation on a message waits until the scan has passed it; one on
    /// a message stored after the start does not wait at all.
    #[tokio::test(start_paused = true)]
    async fn waits_end_when_the_scan_passes_the_message() {
        let queue = Arc::new(Queue::rebuilding(QueueId(10), 3));
        assert_eq!(
            queue.wait_scanned(QueueId(11), Duration::ZERO).await,
            Ok(())
        );
        let progress = queue
            .wait_scanned(QueueId(5), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(
            progress,
            RebuildProgress {
                in_progress: true,
                scanned: 0,
                total: 3
            }
        );
        assert_eq!(
            progress.to_string(),
            "queue is being rebuilt: 0 of 3 messages scanned (0%)"
        );
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let waited = queue
                    .wait_scanned(QueueId(5), Duration::from_secs(60))
                    .await;
                (waited, queue.get(QueueId(5)).is_some())
            })
        };
        let rebuilt = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.wait_rebuilt(Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        // One chunk: message 4 (completed, dropped) and 5.
        queue.place_scanned(
            &[(QueueId(5), envelope(Lane::High, 5))],
            Some(QueueId(5)),
            2,
        );
        assert_eq!(waiter.await.unwrap(), (Ok(()), true));
        assert!(queue.scanned(QueueId(4)), "dropped: not found from now on");
        assert!(!queue.scanned(QueueId(6)));
        assert_eq!(queue.rebuild_progress().percent(), 66);
        assert!(!rebuilt.is_finished());
        queue.finish_scan();
        assert_eq!(rebuilt.await.unwrap(), Ok(()));
        assert!(queue.scanned(QueueId(6)));
        assert_eq!(queue.occupancy(Lane::Low), 0, "no unscanned message left");
    }

    /// Shutdown stops the scan between two chunks: the rest stays in the
    /// spool, and the rebuild still shows as in progress.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        fill(&spool, 3).await;
        let queue = rebuilding(&spool);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        queue.scan(&spool, shutdown).await.unwrap();
        assert!(queue.rebuild_progress().in_progress);
        assert!(queue.is_empty());
        assert_eq!(spool.message_count().unwrap(), 3);
    }
}
