//! The claims in memory: every claim the spool holds, by a keyed hash of
//! its key, and the claims being committed right now.
//!
//! Intake checks and takes a message's claims here, before its commit, and
//! the spool keeps them only in one table ordered by time (`CLAIMS`): a
//! commit appends to that table's end instead of inserting at a random
//! place of a table keyed by claim, which had doubled the pages every
//! intake commit writes (docs/idempotency.md, "Cost"). The map is read back
//! from the table at start, behind open listeners: a keyed message that
//! arrives before it is whole waits for it (`LOAD_WAIT`, then a 451).
//!
//! Single flight: a message whose claim is being committed by another
//! session waits for that commit; then the claim is held (the repeat is
//! judged against it) or free again (the first commit failed, and the
//! waiting message makes its own).
//!
//! An entry is 64 bytes (16 of hash, 48 of slot) plus hashbrown's control
//! byte; with the table between 44 % and 87 % full, a million claims take
//! 75 to 150 MB.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use relayq_spool::{Change, Spool, SpoolError};
use tokio::sync::watch;

use super::{CLAIMS, Claim, Kind, OLD_CLAIMS, Remembered, Repeat, index_key, parse_index_key};
use crate::keyed_hash::{Hash128, Keyed128, PassThrough};
use crate::records;

/// How long a keyed message waits for the claims to be loaded at start
/// before it is answered with a 451.
pub const LOAD_WAIT: Duration = Duration::from_secs(30);
/// Records read per read transaction while loading.
const READ_CHUNK: usize = 4096;

enum Slot {
    Held(Remembered),
    /// Being committed; the sender is dropped when the commit is over.
    Committing(watch::Receiver<()>),
}

type Slots = HashMap<Hash128, Slot, BuildHasherDefault<PassThrough>>;

pub struct Claims {
    hash: Keyed128,
    slots: Mutex<Slots>,
    loaded: watch::Sender<bool>,
}

/// What taking a message's claims found.
pub enum Taken {
    /// A claim is held by an earlier message.
    Repeat(Repeat),
    /// Every claim was free and is now this message's, until its commit
    /// is over.
    Free(Pending),
}

/// The claims have not been loaded within [`LOAD_WAIT`].
#[derive(Debug)]
pub struct StillLoading;

/// What the load at start found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub claims: usize,
    /// Claims moved from the table of an earlier version.
    pub migrated: usize,
    pub unreadable: usize,
}

impl Default for Claims {
    fn default() -> Self {
        Claims::new()
    }
}

impl Claims {
    /// An empty map, not yet loaded: [`Claims::take`] waits until
    /// [`Claims::load`] has run.
    pub fn new() -> Claims {
        Claims {
            hash: Keyed128::new(),
            slots: Mutex::default(),
            loaded: watch::channel(false).0,
        }
    }

    /// Takes `claims` for a message with `fingerprint`, or finds the
    /// message that holds one of them. Waits while another message
    /// commits one of them, and while the map is being loaded.
    pub async fn take(
        self: &Arc<Self>,
        claims: &[Claim],
        fingerprint: u128,
    ) -> Result<Taken, StillLoading> {
        let mut loaded = self.loaded.subscribe();
        match tokio::time::timeout(LOAD_WAIT, loaded.wait_for(|loaded| *loaded)).await {
            Ok(Ok(_)) => {}
            _ => return Err(StillLoading),
        }
        let hashes: Vec<(Hash128, Kind)> = claims
            .iter()
            .map(|claim| (self.hash.hash(&claim.key), claim.kind))
            .collect();
        loop {
            let mut committing = {
                let mut slots = self.lock();
                let mut committing = None;
                for (hash, _) in &hashes {
                    match slots.get(hash) {
                        Some(Slot::Held(remembered)) => {
                            return Ok(Taken::Repeat(Repeat::of(remembered, fingerprint)));
                        }
                        Some(Slot::Committing(done)) => {
                            committing = Some(done.clone());
                            break;
                        }
                        None => {}
                    }
                }
                match committing {
                    Some(done) => done,
                    None => {
                        let (done, receiver) = watch::channel(());
                        for (hash, _) in &hashes {
                            slots.insert(*hash, Slot::Committing(receiver.clone()));
                        }
                        return Ok(Taken::Free(Pending {
                            claims: self.clone(),
                            taken: hashes,
                            _done: done,
                        }));
                    }
                }
            };
            // Returns once the other commit is over (its sender dropped).
            let _ = committing.changed().await;
        }
    }

    /// Reads the claims the spool holds, and marks the map loaded. Claims
    /// left by an earlier version in its table keyed by claim are moved
    /// into the time-ordered one first.
    pub async fn load(&self, spool: &Spool) -> Result<Loaded, SpoolError> {
        let mut loaded = Loaded {
            migrated: migrate(spool).await?,
            ..Loaded::default()
        };
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = records::chunk_after(spool, CLAIMS, after.as_deref(), READ_CHUNK).await?;
            let Some((last, _)) = chunk.last() else {
                break;
            };
            after = Some(last.clone());
            let mut slots = self.lock();
            for (key, value) in &chunk {
                // Entries of one claim come in time order: the last one is
                // the claim in force.
                match (parse_index_key(key), Remembered::decode(value)) {
                    (Some((_, claim)), Some(remembered)) => {
                        slots.insert(self.hash.hash(claim), Slot::Held(remembered));
                    }
                    // An index entry of an earlier version whose claim was
                    // already gone: the sweep removes it.
                    _ if value.is_empty() => {}
                    _ => loaded.unreadable += 1,
                }
            }
        }
        loaded.claims = self.len();
        self.loaded.send_replace(true);
        Ok(loaded)
    }

    /// Marks the map loaded without reading anything.
    #[cfg(test)]
    pub fn loaded_empty(&self) {
        self.loaded.send_replace(true);
    }

    /// Whether the load at start is done.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Forgets the claim of `claim_key` made at `accepted_ms`, once its
    /// record is deleted; a claim made again later is kept.
    pub fn forget(&self, claim_key: &[u8], accepted_ms: u64) {
        let hash = self.hash.hash(claim_key);
        let mut slots = self.lock();
        if let Some(Slot::Held(remembered)) = slots.get(&hash)
            && remembered.accepted_ms == accepted_ms
        {
            slots.remove(&hash);
        }
    }

    /// Bytes the table holds (buckets and control bytes).
    pub fn table_bytes(&self) -> usize {
        let capacity = self.lock().capacity();
        // hashbrown keeps capacity at 7/8 of a power-of-two bucket count.
        let buckets = if capacity == 0 {
            0
        } else {
            (capacity * 8 / 7).next_power_of_two()
        };
        buckets * (std::mem::size_of::<(Hash128, Slot)>() + 1)
    }

    /// Claims held, and being committed.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // No operation on the map panics half-way: a poisoned one is whole.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A message's claims while it commits. [`Pending::committed`] makes them
/// held; dropped without it (the commit failed, or the message was refused
/// before it), it frees them. Either way a message waiting on one of them
/// goes on.
pub struct Pending {
    claims: Arc<Claims>,
    /// Emptied once the claims are held: the drop then frees nothing.
    taken: Vec<(Hash128, Kind)>,
    _done: watch::Sender<()>,
}

impl Pending {
    /// The message `original` with `fingerprint`, accepted at
    /// `accepted_ms`, is committed: its claims are held.
    pub fn committed(
        mut self,
        fingerprint: u128,
        original: relayq_spool::QueueId,
        accepted_ms: u64,
    ) {
        let mut slots = self.claims.lock();
        for (hash, kind) in std::mem::take(&mut self.taken) {
            slots.insert(
                hash,
                Slot::Held(Remembered {
                    kind,
                    fingerprint,
                    original,
                    accepted_ms,
                }),
            );
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut slots = self.claims.lock();
        for (hash, _) in &self.taken {
            if let Some(Slot::Committing(_)) = slots.get(hash) {
                slots.remove(hash);
            }
        }
    }
}

/// Moves the claims of the table keyed by claim (written by earlier
/// versions, beside an index with empty values) into the time-ordered
/// table, a chunk per commit; returns how many.
async fn migrate(spool: &Spool) -> Result<usize, SpoolError> {
    let mut moved = 0;
    loop {
        let chunk = records::chunk_after(spool, OLD_CLAIMS, None, READ_CHUNK).await?;
        if chunk.is_empty() {
            return Ok(moved);
        }
        let mut changes = Vec::with_capacity(2 * chunk.len());
        for (key, value) in &chunk {
            if let Some(remembered) = Remembered::decode(value) {
                changes.push(Change::PutRecord {
                    table: CLAIMS,
                    key: index_key(remembered.kind, remembered.accepted_ms, key),
                    value: value.clone(),
                });
                moved += 1;
            }
            changes.push(Change::DeleteRecord {
                table: OLD_CLAIMS,
                key: key.clone(),
            });
        }
        spool.apply(changes).await?;
    }
}

#[cfg(test)]
mod tests {
    use relayq_spool::{QueueId, SpoolOptions};

    use super::super::{Scope, claim_changes};
    use super::*;

    fn loaded() -> Arc<Claims> {
        let claims = Arc::new(Claims::new());
        claims.loaded_empty();
        claims
    }

    async fn take(claims: &Arc<Claims>, claim: &Claim, fingerprint: u128) -> Taken {
        claims
            .take(std::slice::from_ref(claim), fingerprint)
            .await
            .expect("loaded")
    }

    fn repeat(taken: Taken) -> Option<Repeat> {
        match taken {
            Taken::Repeat(repeat) => Some(repeat),
            Taken::Free(_) => None,
        }
    }

    #[tokio::test]
    async fn a_committed_claim_judges_repeats_and_a_failed_one_is_free_again() {
        let claims = loaded();
        let key = Claim::key(Scope::Local, "k");
        let Taken::Free(pending) = take(&claims, &key, 7).await else {
            panic!("a fresh claim is free");
        };
        pending.committed(7, QueueId(1), 1000);
        assert_eq!(
            repeat(take(&claims, &key, 7).await),
            Some(Repeat::Duplicate(QueueId(1)))
        );
        assert_eq!(
            repeat(take(&claims, &key, 8).await),
            Some(Repeat::Conflict(QueueId(1)))
        );
        // The same key in another scope is another claim.
        let other = Claim::key(Scope::User("alice"), "k");
        let Taken::Free(failed) = take(&claims, &other, 7).await else {
            panic!("another scope's key is free");
        };
        drop(failed);
        assert!(repeat(take(&claims, &other, 7).await).is_none());
    }

    #[tokio::test]
    async fn a_repeat_during_the_commit_waits_for_its_outcome() {
        let claims = loaded();
        let key = Claim::key(Scope::Local, "k");
        let Taken::Free(first) = take(&claims, &key, 7).await else {
            panic!("free");
        };
        let waiting = {
            let claims = claims.clone();
            let key = key.clone();
            tokio::spawn(async move { repeat(take(&claims, &key, 7).await) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the repeat waits for the commit");
        first.committed(7, QueueId(9), 1000);
        assert_eq!(waiting.await.unwrap(), Some(Repeat::Duplicate(QueueId(9))));

        // A first commit that fails leaves the claim to the waiting one.
        let key = Claim::key(Scope::Local, "failing");
        let Taken::Free(first) = take(&claims, &key, 7).await else {
            panic!("free");
        };
        let waiting = {
            let claims = claims.clone();
            let key = key.clone();
            tokio::spawn(async move { matches!(take(&claims, &key, 7).await, Taken::Free(_)) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert!(waiting.await.unwrap(), "free after the failed commit");
    }

    #[test]
    fn an_entry_takes_64_bytes() {
        assert_eq!(std::mem::size_of::<(Hash128, Slot)>(), 64);
    }

    #[tokio::test]
    async fn take_waits_for_the_load() {
        let claims = Arc::new(Claims::new());
        let key = Claim::key(Scope::Local, "k");
        let waiting = {
            let claims = claims.clone();
            tokio::spawn(async move { claims.take(&[key], 1).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        claims.loaded_empty();
        assert!(waiting.await.unwrap());
    }

    async fn commit(spool: &Spool, claim: &Claim, original: u64, accepted_ms: u64) {
        let changes = claim_changes(
            std::slice::from_ref(claim),
            original as u128,
            QueueId(original),
            accepted_ms,
        );
        spool.apply(changes).await.unwrap();
    }

    #[tokio::test]
    async fn the_load_reads_the_spool_and_moves_the_old_table() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let kept = Claim::key(Scope::Local, "kept");
        let again = Claim::key(Scope::Local, "again");
        commit(&spool, &kept, 1, 1000).await;
        // Claimed twice (the first forgotten in memory, its entry not yet
        // swept): the later one is in force.
        commit(&spool, &again, 2, 1000).await;
        commit(&spool, &again, 3, 2000).await;
        // An earlier version's layout: the claim keyed by itself, an index
        // entry with an empty value.
        let old = Claim::maildrop_file("1.2.3");
        let remembered = Remembered {
            kind: Kind::MaildropFile,
            fingerprint: 4,
            original: QueueId(4),
            accepted_ms: 1500,
        };
        spool
            .apply(vec![
                Change::PutRecord {
                    table: OLD_CLAIMS,
                    key: old.key.clone(),
                    value: remembered.encode(),
                },
                Change::PutRecord {
                    table: CLAIMS,
                    key: index_key(Kind::MaildropFile, 1500, &old.key),
                    value: Vec::new(),
                },
            ])
            .await
            .unwrap();

        let claims = Arc::new(Claims::new());
        let loaded = claims.load(&spool).await.unwrap();
        assert_eq!(
            (loaded.claims, loaded.migrated, loaded.unreadable),
            (3, 1, 0)
        );
        assert_eq!(
            repeat(take(&claims, &kept, 1).await),
            Some(Repeat::Duplicate(QueueId(1)))
        );
        assert_eq!(
            repeat(take(&claims, &again, 3).await),
            Some(Repeat::Duplicate(QueueId(3)))
        );
        assert_eq!(
            repeat(take(&claims, &old, 4).await),
            Some(Repeat::Duplicate(QueueId(4)))
        );
        assert_eq!(spool.record_count(OLD_CLAIMS).unwrap(), 0);

        // Forgetting the stale entry keeps the claim made again.
        claims.forget(&again.key, 1000);
        assert!(repeat(take(&claims, &again, 3).await).is_some());
        claims.forget(&again.key, 2000);
        assert!(repeat(take(&claims, &again, 3).await).is_none());
        spool.close();
    }

    /// The load at start with many claims, and the memory they take:
    /// `IDEMPOTENCY_N=1000000 cargo test --release -p relayq --lib
    /// smtp::idempotency::claims::tests::load_cost -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "benchmark; run by hand in release mode (docs/performance.md)"]
    async fn load_cost() {
        let n: usize = std::env::var("IDEMPOTENCY_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let start_ms = 1_800_000_000_000;
        for chunk in 0..n.div_ceil(10_000) {
            let keys: Vec<Claim> = (chunk * 10_000..n.min((chunk + 1) * 10_000))
                .map(|i| Claim::key(Scope::Local, &format!("{i:08x}-order-confirmation")))
                .collect();
            let at = start_ms + chunk as u64 * 1000;
            spool
                .apply(claim_changes(&keys, 1, QueueId(chunk as u64 + 1), at))
                .await
                .unwrap();
        }
        let claims = Claims::new();
        let started = std::time::Instant::now();
        let loaded = claims.load(&spool).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(loaded.claims, n);
        println!(
            "claims load: {n} keys in {} ms, {:.1} MB of tables ({:.0} bytes per key)",
            elapsed.as_millis(),
            claims.table_bytes() as f64 / 1e6,
            claims.table_bytes() as f64 / n as f64,
        );
        spool.close();
    }
}
