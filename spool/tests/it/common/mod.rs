//! Helpers shared by the spool's integration tests: temporary spools and body plumbing.

use std::io::Read;
use std::path::{Path, PathBuf};

use relayq_spool::{Body, BodyReader, QueueId, Spool, SpoolOptions};
use tempfile::TempDir;

pub fn open(dir: &Path) -> Spool {
    Spool::open(SpoolOptions::new(dir)).expect("open spool")
}

/// A fresh spool in a temporary directory (kept alive by the returned `TempDir`).
pub fn temp_spool() -> (TempDir, Spool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = open(dir.path());
    (dir, spool)
}

/// A body written through the spool's writer, in chunks, as a session would.
pub fn body(spool: &Spool, bytes: &[u8]) -> Body {
    let mut writer = spool.body_writer();
    for chunk in bytes.chunks(7_919) {
        writer.write_all(chunk).expect("write body");
    }
    writer.finish().expect("finish body")
}

/// Deterministic, non-repeating-looking content of `len` bytes.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

pub fn read_all(mut reader: BodyReader) -> Vec<u8> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).expect("read body");
    bytes
}

/// The files in the spool's `bodies/` directory, sorted.
pub fn body_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("bodies"))
        .expect("bodies dir")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    files.sort();
    files
}

/// The ids of every stored message, in id order.
pub fn stored_ids(spool: &Spool) -> Vec<QueueId> {
    spool
        .scan()
        .expect("scan")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}
