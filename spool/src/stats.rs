//! Counters the committer keeps about its work, for metrics and tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What the spool has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Messages inserted by those commits.
    pub messages_stored: u64,
    /// Requests (stores, applies, quarantines) in the latest commit.
    pub last_batch_size: usize,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    commits: AtomicU64,
    messages_stored: AtomicU64,
    last_batch_size: AtomicUsize,
}

impl StatsCounters {
    pub(crate) fn record_commit(&self, requests: usize, messages_stored: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.messages_stored
            .fetch_add(messages_stored as u64, Ordering::Relaxed);
        self.last_batch_size.store(requests, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SpoolStats {
        SpoolStats {
            commits: self.commits.load(Ordering::Relaxed),
            messages_stored: self.messages_stored.load(Ordering::Relaxed),
            last_batch_size: self.last_batch_size.load(Ordering::Relaxed),
        }
    }
}
