//! How a spool is configured: where it lives and how large its commits and inline bodies get.

use std::path::PathBuf;

/// Settings for [`crate::Spool::open`]. Build with [`SpoolOptions::new`] and change fields as
/// needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// The spool directory, created (with parents) if missing. Holds `queue.redb` and
    /// `bodies/`.
    pub path: PathBuf,
    /// Most requests in one commit. Default 256.
    pub max_batch_messages: usize,
    /// Most bytes (envelopes plus inline bodies) in one commit, unless a single request is
    /// larger by itself. Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Bodies longer than this are spilled to their own file. Default 128 KiB.
    pub large_body_threshold: usize,
}

impl SpoolOptions {
    pub fn new(path: impl Into<PathBuf>) -> SpoolOptions {
        SpoolOptions {
            path: path.into(),
            max_batch_messages: 256,
            max_batch_bytes: 16 * 1024 * 1024,
            large_body_threshold: 128 * 1024,
        }
    }
}
