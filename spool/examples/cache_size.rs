//! Measures what redb's page cache size does to a large spool: the repair after a crash, a
//! scan of every envelope, random reads of envelope and body, and the CPU of commits.
//!
//! ```text
//! cargo run --release -p relayq-spool --example cache_size -- [DIR] [MESSAGES] [MB,MB,...]
//! ```
//!
//! Defaults: the current directory (not /tmp, which may be a tmpfs), 1,000,000 messages,
//! cache sizes 128,16,0 MB. A child process writes MESSAGES records laid out as the spool
//! lays them out (a 130 B envelope and a 2.3 KB body per message) and aborts without closing
//! the database, so every open below starts with a real repair. The page cache of the OS
//! stays warm: the repair times are what a crashed daemon on a busy host sees, not a cold boot.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const ENVELOPE: usize = 130;
const BODY: usize = 2300;
const RANDOM_READS: u64 = 200_000;
const COMMITTED: u64 = 20_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child-fill") => child_fill(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("--child-measure") => {
            child_measure(
                Path::new(&args[2]),
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
            );
            return;
        }
        _ => {}
    }
    let base = args.get(1).map_or(".", String::as_str);
    let messages: u64 = args
        .get(2)
        .map_or(1_000_000, |value| value.parse().unwrap());
    let sizes: Vec<usize> = args
        .get(3)
        .map_or("128,16,0", String::as_str)
        .split(',')
        .map(|mb| mb.parse().unwrap())
        .collect();
    let dir = tempfile::Builder::new()
        .prefix("cache_size")
        .tempdir_in(base)
        .unwrap();
    let crashed = dir.path().join("crashed.redb");
    let status = Command::new(std::env::current_exe().unwrap())
        .arg("--child-fill")
        .arg(&crashed)
        .arg(messages.to_string())
        .status()
        .unwrap();
    assert!(!status.success(), "the filling child was meant to abort");
    println!(
        "{messages} messages, file {:.2} GB, in {}",
        std::fs::metadata(&crashed).unwrap().len() as f64 / 1e9,
        dir.path().display()
    );

    // Each size in a process of its own, so that its resident memory is its own.
    let work = dir.path().join("work.redb");
    for mb in sizes {
        std::fs::copy(&crashed, &work).unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .arg("--child-measure")
            .arg(&work)
            .arg(messages.to_string())
            .arg(mb.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn child_measure(path: &Path, messages: u64, mb: usize) {
    let started = Instant::now();
    let database = open(path, mb * 1024 * 1024);
    let repair = started.elapsed().as_secs_f64();
    let (scan, random) = reads(&database, messages);
    let rss = rss_kb();
    let single = commits(&database, messages, 1);
    let grouped = commits(&database, messages, 32);
    println!(
        "cache {mb:>4} MB  repair open {repair:6.3} s  scan envelopes {scan:6.3} s  \
         {RANDOM_READS} random reads {random:6.3} s  RSS then {:>4} MB  \
         commit CPU per message: 1/commit {single:6.1} µs, 32/commit {grouped:6.1} µs",
        rss / 1024
    );
}

fn open(path: &Path, cache: usize) -> Database {
    redb::Builder::new()
        .set_cache_size(cache)
        .create(path)
        .unwrap()
}

/// Writes the records in large non-durable commits, makes them durable, and aborts.
fn child_fill(path: &Path, messages: u64) -> ! {
    let database = open(path, 16 * 1024 * 1024);
    let envelope = vec![b'e'; ENVELOPE];
    let body = vec![b'b'; BODY];
    let mut key = 0;
    while key < messages {
        let mut txn = database.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        {
            let mut envelopes = txn.open_table(ENVELOPES).unwrap();
            let mut bodies = txn.open_table(BODIES).unwrap();
            for _ in 0..1000.min(messages - key) {
                key += 1;
                envelopes.insert(key, envelope.as_slice()).unwrap();
                bodies.insert(key, body.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let mut txn = database.begin_write().unwrap();
    txn.set_durability(Durability::Immediate).unwrap();
    txn.commit().unwrap();
    std::process::abort();
}

/// Seconds to scan every envelope, and to read RANDOM_READS random envelopes with bodies.
fn reads(database: &Database, messages: u64) -> (f64, f64) {
    let txn = database.begin_read().unwrap();
    let envelopes = txn.open_table(ENVELOPES).unwrap();
    let bodies = txn.open_table(BODIES).unwrap();
    let started = Instant::now();
    let mut bytes = 0;
    for entry in envelopes.iter().unwrap() {
        bytes += entry.unwrap().1.value().len();
    }
    assert_eq!(bytes, messages as usize * ENVELOPE);
    let scan = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut state = 1u64;
    for _ in 0..RANDOM_READS {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let key = 1 + (state >> 33) % messages;
        assert!(envelopes.get(key).unwrap().is_some());
        assert_eq!(bodies.get(key).unwrap().unwrap().value().len(), BODY);
    }
    (scan, started.elapsed().as_secs_f64())
}

/// Durable commits of `per_commit` new messages each, every new message matched by the
/// removal of an old one (as deliveries do); returns CPU microseconds per message.
fn commits(database: &Database, messages: u64, per_commit: u64) -> f64 {
    let envelope = vec![b'e'; ENVELOPE];
    let body = vec![b'b'; BODY];
    let first_new = 10 * messages + per_commit * 1_000_000;
    let cpu = cpu_seconds();
    for commit in 0..COMMITTED / per_commit {
        let mut txn = database.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        {
            let mut envelopes = txn.open_table(ENVELOPES).unwrap();
            let mut bodies = txn.open_table(BODIES).unwrap();
            for n in 0..per_commit {
                let key = first_new + commit * per_commit + n;
                envelopes.insert(key, envelope.as_slice()).unwrap();
                bodies.insert(key, body.as_slice()).unwrap();
                let old = 1 + (key * 37) % messages;
                envelopes.remove(old).unwrap();
                bodies.remove(old).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    (cpu_seconds() - cpu) * 1e6 / COMMITTED as f64
}

/// User plus system CPU of this process, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
