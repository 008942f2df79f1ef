//! Measures what redb's quick repair costs and buys: commits per second with and without it,
//! and the time to open a ~1 GB spool database after the writing process was killed.
//!
//! Run on the disk the spool will live on (the default is a temporary directory under the
//! current directory, not /tmp, which may be a tmpfs):
//!
//! ```text
//! cargo run --release -p relayq-spool --example commit_rate -- [DIR] [GIB]
//! ```
//!
//! The database is written the way the spool writes it (same tables, 2 KB bodies plus a
//! small envelope per message, durable commits). The crash is real: a child process fills the
//! database, keeps committing, and is killed with SIGKILL. The page cache stays warm, so the
//! reopen times are lower bounds for a cold start after a power loss.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use relayq_spool::{Body, Spool, SpoolOptions};

const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const CACHE_BYTES: usize = 128 * 1024 * 1024;
const ENVELOPE: usize = 200;
const BODY: usize = 2 * 1024;
const ROUNDS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child-fill") {
        child_fill(
            Path::new(&args[2]),
            args[3] == "quick",
            args[4].parse().unwrap(),
        );
        return;
    }
    let base = args
        .get(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let gib: f64 = args.get(2).map_or(1.0, |value| value.parse().unwrap());
    let dir = tempfile::Builder::new()
        .prefix("commit_rate")
        .tempdir_in(&base)
        .unwrap();
    println!("directory: {}", dir.path().display());

    println!("\n# commits per second (durable commits, {BODY} B body + {ENVELOPE} B envelope)");
    // The two modes alternate over several rounds, so that other load on the disk hits both.
    for per_commit in [1, 32, 256] {
        let commits = match per_commit {
            1 => 500,
            32 => 150,
            _ => 40,
        };
        let mut rates = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            for quick in [false, true] {
                let path = dir
                    .path()
                    .join(format!("rate-{per_commit}-{quick}-{round}.redb"));
                rates[usize::from(quick)].push(commit_rate(&path, quick, per_commit, commits));
                std::fs::remove_file(&path).unwrap();
            }
        }
        for quick in [false, true] {
            let rates = &mut rates[usize::from(quick)];
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            println!(
                "messages/commit {per_commit:>3}  quick_repair {quick:<5}  median {median:>6.0} commits/s = {:>6.0} messages/s  (rounds: {})",
                median * per_commit as f64,
                rates
                    .iter()
                    .map(|rate| format!("{rate:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    println!("\n# open after kill -9 of a writer, {gib} GiB database");
    for quick in [false, true] {
        let path = dir.path().join(format!("crash-{quick}.redb"));
        let bytes = (gib * 1024.0 * 1024.0 * 1024.0) as u64;
        crash_while_writing(&path, quick, bytes);
        let size = std::fs::metadata(&path).unwrap().len();
        // A copy of the crashed file, evicted from the page cache, for a cold open.
        let cold_path = dir.path().join(format!("crash-{quick}-cold.redb"));
        std::fs::copy(&path, &cold_path).unwrap();
        let evicted = evict_from_page_cache(&cold_path);
        let (repair_calls, warm_open) = open_timed(&path);
        let (_, cold_open) = open_timed(&cold_path);
        let (_, clean_open) = open_timed(&path);
        println!(
            "quick_repair {quick:<5}  file {:.2} GiB  open after crash: warm cache {:.3} s, {} {:.3} s (repair callback calls: {repair_calls})  clean open {:.3} s",
            size as f64 / (1024.0 * 1024.0 * 1024.0),
            warm_open.as_secs_f64(),
            if evicted {
                "cold cache"
            } else {
                "cold cache (eviction failed, warm)"
            },
            cold_open.as_secs_f64(),
            clean_open.as_secs_f64()
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&cold_path).unwrap();
    }

    println!("\n# through the spool API (quick repair as the spool sets it), {BODY} B bodies");
    for callers in [1, 32] {
        spool_rate(&dir.path().join(format!("spool-{callers}")), callers);
    }
}

/// Stores messages from `callers` concurrent tasks for a few seconds and reports the rate.
fn spool_rate(path: &Path, callers: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let spool = Spool::open(SpoolOptions::new(path)).unwrap();
    let duration = Duration::from_secs(5);
    let started = Instant::now();
    let stored: usize = runtime.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    let mut stored = 0;
                    while started.elapsed() < duration {
                        let body = Body::from_bytes(vec![b'b'; BODY]);
                        let id = spool.allocate_id();
                        spool.store(id, vec![b'e'; ENVELOPE], body).await.unwrap();
                        stored += 1;
                    }
                    stored
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = spool.stats();
    println!(
        "callers {callers:>3}  {:>8.0} messages/s  {:>6.0} commits/s  average batch {:.1}",
        stored as f64 / elapsed,
        stats.commits as f64 / elapsed,
        stats.messages_stored as f64 / stats.commits as f64
    );
    spool.close();
}

/// Flushes the file and asks the kernel to drop its cached pages (GNU dd's `nocache`, which
/// calls posix_fadvise(DONTNEED)). Returns whether that ran.
fn evict_from_page_cache(path: &Path) -> bool {
    std::fs::File::open(path).unwrap().sync_all().unwrap();
    Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|status| status.success())
}

fn open(path: &Path) -> Database {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .unwrap()
}

/// Writes `per_commit` messages per durable commit; returns commits per second.
fn commit_rate(path: &Path, quick: bool, per_commit: usize, commits: usize) -> f64 {
    let database = open(path);
    let envelope = vec![b'e'; ENVELOPE];
    let body = vec![b'b'; BODY];
    let mut key = 0u64;
    let started = Instant::now();
    for _ in 0..commits {
        write_messages(&database, quick, &mut key, per_commit, &envelope, &body);
    }
    commits as f64 / started.elapsed().as_secs_f64()
}

fn write_messages(
    database: &Database,
    quick: bool,
    key: &mut u64,
    count: usize,
    envelope: &[u8],
    body: &[u8],
) {
    let mut txn = database.begin_write().unwrap();
    txn.set_quick_repair(quick);
    {
        let mut envelopes = txn.open_table(ENVELOPES).unwrap();
        let mut bodies = txn.open_table(BODIES).unwrap();
        for _ in 0..count {
            *key += 1;
            envelopes.insert(*key, envelope).unwrap();
            bodies.insert(*key, body).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Runs a child that fills the database to `bytes` and keeps committing, and kills it.
fn crash_while_writing(path: &Path, quick: bool, bytes: u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--child-fill")
        .arg(path)
        .arg(if quick { "quick" } else { "full" })
        .arg(bytes.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "filled");
    // Let it commit for a while, so the kill lands in the middle of a commit or close to it.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
}

fn child_fill(path: &Path, quick: bool, bytes: u64) {
    let database = open(path);
    let envelope = vec![b'e'; ENVELOPE];
    // Larger bodies fill the file faster; the repair cost depends on the pages, not the count.
    let body = vec![b'b'; 16 * 1024];
    let mut key = 0u64;
    while std::fs::metadata(path).unwrap().len() < bytes {
        write_messages(&database, quick, &mut key, 256, &envelope, &body);
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "filled").unwrap();
    stdout.flush().unwrap();
    let small = vec![b'b'; BODY];
    loop {
        write_messages(&database, quick, &mut key, 1, &envelope, &small);
    }
}

/// Opens the database; returns how often the repair callback ran and how long the open took.
fn open_timed(path: &Path) -> (usize, Duration) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let started = Instant::now();
    let database = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .create(path)
        .unwrap();
    let elapsed = started.elapsed();
    drop(database);
    (calls.load(Ordering::Relaxed), elapsed)
}
