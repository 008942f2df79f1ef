//! The in-memory suppression set that every `RCPT TO:` is checked against:
//! no address strings, only a 128-bit keyed hash of the normalised address
//! and, packed beside it, what the RCPT reply needs (class and since).
//!
//! Budget (ARCHITECTURE.md, "Suppression"): a million entries in well under
//! 120 MB and a check in well under 2 µs. An entry is 24 bytes (16 of key,
//! 8 of mark) plus hashbrown's control byte; with the table between 44 %
//! and 87 % full that is 29 to 57 bytes per address (the `suppression`
//! benchmark prints it). The hash is `keyed_hash`'s: keys drawn at start,
//! so a client cannot choose addresses that collide.
//!
//! Sixteen shards, each behind its own lock: a bulk import's writes do not
//! hold up RCPT checks on the other shards, and a shard that grows
//! reallocates a sixteenth of the table, not all of it at once.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::entry::normalize;
use crate::bounce::BounceClass;
use crate::keyed_hash::{Hash128, Keyed128, PassThrough};

const SHARDS: usize = 16;
/// Addresses up to this length (RFC 5321's path limit) are lower-cased on
/// the stack; longer or non-ASCII ones through a `String`.
const STACK_ADDRESS: usize = 256;

/// The 128-bit keyed hash of a normalised address.
pub type AddressKey = Hash128;

/// What the RCPT reply needs of an entry, in 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Seconds since the Unix epoch (good until 2106).
    pub since: u32,
    /// The entry's bounce class (`BounceClass::index`).
    pub class: u8,
}

impl Mark {
    pub fn new(since: u32, class: BounceClass) -> Mark {
        Mark {
            since,
            class: class.index() as u8,
        }
    }

    pub fn class(self) -> BounceClass {
        BounceClass::ALL
            .get(usize::from(self.class))
            .copied()
            .unwrap_or(BounceClass::Unclassified)
    }
}

type Shard = HashMap<AddressKey, Mark, BuildHasherDefault<PassThrough>>;

pub struct Set {
    hash: Keyed128,
    shards: Box<[RwLock<Shard>]>,
    len: AtomicUsize,
}

impl Default for Set {
    fn default() -> Self {
        Set::new()
    }
}

impl Set {
    pub fn new() -> Set {
        Set {
            hash: Keyed128::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// The key of `address`, compared case-insensitively (see
    /// [`normalize`]). No allocation for an ASCII address.
    pub fn key(&self, address: &str) -> AddressKey {
        if address.is_ascii() && address.len() <= STACK_ADDRESS {
            let mut lower = [0u8; STACK_ADDRESS];
            let lower = &mut lower[..address.len()];
            lower.copy_from_slice(address.as_bytes());
            lower.make_ascii_lowercase();
            self.key_of_normalized(lower)
        } else {
            self.key_of_normalized(normalize(address).as_bytes())
        }
    }

    /// The key of an address already normalised (a stored entry's key).
    pub fn key_of_normalized(&self, normalized: &[u8]) -> AddressKey {
        self.hash.hash(normalized)
    }

    /// The mark of a suppressed address. No allocation, one shared lock.
    pub fn get(&self, key: AddressKey) -> Option<Mark> {
        self.read(key).get(&key).copied()
    }

    /// Adds or replaces an entry.
    pub fn insert(&self, key: AddressKey, mark: Mark) {
        if self.write(key).insert(key, mark).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn remove(&self, key: AddressKey) -> bool {
        let removed = self.write(key).remove(&key).is_some();
        if removed {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes the entry only if it is still `mark` (an expiry sweep must
    /// not remove an entry that was added again since it looked).
    pub fn remove_if(&self, key: AddressKey, mark: Mark) -> bool {
        let mut shard = self.write(key);
        if shard.get(&key) != Some(&mark) {
            return false;
        }
        shard.remove(&key);
        self.len.fetch_sub(1, Ordering::Relaxed);
        true
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for `total` entries in all, spread over the shards, so a
    /// load at start grows no table step by step.
    pub fn reserve(&self, total: usize) {
        let per_shard = total / SHARDS + total / SHARDS / 16 + 1;
        for shard in self.shards.iter() {
            let mut shard = shard
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let wanted = per_shard.saturating_sub(shard.len());
            shard.reserve(wanted);
        }
    }

    /// Bytes the tables hold (buckets and control bytes), for the benchmark.
    pub fn table_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(AddressKey, Mark)>() + 1;
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                // hashbrown keeps capacity at 7/8 of a power-of-two bucket count.
                let capacity = shard.capacity();
                let buckets = if capacity == 0 {
                    0
                } else {
                    (capacity * 8 / 7).next_power_of_two()
                };
                buckets * bucket
            })
            .sum()
    }

    fn shard(&self, key: AddressKey) -> &RwLock<Shard> {
        &self.shards[(key.0[1] as usize) % SHARDS]
    }

    fn read(&self, key: AddressKey) -> RwLockReadGuard<'_, Shard> {
        // A panic while holding the lock leaves a map that is still whole
        // (no operation here panics half-way): keep using it.
        self.shard(key)
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, key: AddressKey) -> RwLockWriteGuard<'_, Shard> {
        self.shard(key)
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_case_insensitively() {
        let set = Set::new();
        let mark = Mark::new(1_700_000_000, BounceClass::InvalidRecipient);
        set.insert(set.key("User@Example.ORG"), mark);
        assert_eq!(set.get(set.key("user@example.org")), Some(mark));
        assert_eq!(set.get(set.key("USER@EXAMPLE.ORG")), Some(mark));
        assert_eq!(set.get(set.key("other@example.org")), None);
        assert_eq!(
            set.key("user@example.org"),
            set.key_of_normalized(b"user@example.org")
        );
        // Non-ASCII: Unicode lower case, the same as the stored key.
        set.insert(set.key("Ölaf@Bücher.example"), mark);
        assert_eq!(set.get(set.key("ölaf@bücher.example")), Some(mark));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn replace_remove_and_conditional_remove() {
        let set = Set::new();
        let key = set.key("a@example.org");
        let old = Mark::new(1, BounceClass::InvalidRecipient);
        let new = Mark::new(2, BounceClass::BadDomain);
        set.insert(key, old);
        set.insert(key, new);
        assert_eq!(set.len(), 1);
        assert!(!set.remove_if(key, old), "re-added since: kept");
        assert_eq!(set.get(key), Some(new));
        assert!(set.remove_if(key, new));
        assert!(set.is_empty());
        assert!(!set.remove(key));
    }

    /// The RCPT check's cost and the set's bytes per entry, with
    /// `SUPPRESSION_N` entries (default a million). Run by
    /// tests/bench/suppression.sh:
    /// `cargo test --release -p relayq --lib suppression::set::tests::check_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark; run in release mode by tests/bench/suppression.sh"]
    fn check_cost() {
        use std::time::Instant;
        let n: usize = std::env::var("SUPPRESSION_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let addresses: Vec<String> = (0..n)
            .map(|i| format!("user.{i}@domain{}.example", i % 1000))
            .collect();
        let mark = Mark::new(1_795_424_516, BounceClass::InvalidRecipient);
        for (how, reserve) in [
            ("grown by inserts (import)", false),
            ("reserved (load at start)", true),
        ] {
            let set = Set::new();
            if reserve {
                set.reserve(n);
            }
            let started = Instant::now();
            for address in &addresses {
                set.insert(set.key(address), mark);
            }
            let insert_ns = started.elapsed().as_nanos() as f64 / n as f64;
            let bytes = set.table_bytes();
            println!(
                "set of {n} entries, {how}: {:.1} MB of tables, {:.1} bytes per entry, insert {insert_ns:.0} ns",
                bytes as f64 / 1e6,
                bytes as f64 / n as f64
            );
        }
        let set = Set::new();
        for address in &addresses {
            set.insert(set.key(address), mark);
        }
        // Hits, then misses; the key is computed from the address each time,
        // as at RCPT. The addresses are read in order (at RCPT the address
        // is in the session's buffer, in cache), and their hashes scatter the
        // lookups over the whole table (a cache miss each, as RCPTs are).
        // Wall time, and this thread's CPU time (a busy machine stretches
        // the first, not the second).
        let per_check = |checks: &mut dyn FnMut() -> usize, expected: usize| {
            let started = Instant::now();
            let cpu = thread_cpu_ns();
            assert_eq!(checks(), expected);
            let cpu = thread_cpu_ns().saturating_sub(cpu);
            format!(
                "{:.0} ns ({:.0} ns of CPU)",
                started.elapsed().as_nanos() as f64 / n as f64,
                cpu as f64 / n as f64
            )
        };
        let hit = per_check(
            &mut || {
                addresses
                    .iter()
                    .filter(|address| set.get(set.key(address)).is_some())
                    .count()
            },
            n,
        );
        let strangers: Vec<String> = (0..n)
            .map(|i| format!("other.{i}@elsewhere.example"))
            .collect();
        let miss = per_check(
            &mut || {
                strangers
                    .iter()
                    .filter(|address| set.get(set.key(address)).is_some())
                    .count()
            },
            0,
        );
        println!(
            "RCPT check (hash + lookup): {hit} per suppressed address, {miss} per other address"
        );
    }

    /// Nanoseconds this thread has run on a CPU (Linux schedstat; 0 where
    /// there is none).
    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn an_entry_takes_24_bytes_and_reserve_sizes_the_tables() {
        assert_eq!(std::mem::size_of::<(AddressKey, Mark)>(), 24);
        let set = Set::new();
        set.reserve(100_000);
        let bytes = set.table_bytes();
        assert!(
            (100_000 * 25..=100_000 * 25 * 3).contains(&bytes),
            "{bytes}"
        );
    }
}
