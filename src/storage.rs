//! Free-space guard for the spool's file system (`spool.min_free_space`):
//! below it new mail is refused with a 4xx, before any byte is written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one statvfs reading is trusted; keeps the check off the hot path.
const RECHECK_AFTER: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct FreeSpace {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `spool.min_free_space`; a reload changes it.
    minimum: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last reading, and its verdict.
    checked_at_ms: AtomicU64,
    sufficient: std::sync::atomic::AtomicBool,
}

impl FreeSpace {
    pub fn new(path: PathBuf, minimum: u64) -> FreeSpace {
        let guard = FreeSpace {
            inner: Arc::new(Inner {
                path,
                minimum: AtomicU64::new(minimum),
                started: Instant::now(),
                checked_at_ms: AtomicU64::new(0),
                sufficient: std::sync::atomic::AtomicBool::new(true),
            }),
        };
        guard.refresh();
        guard
    }

    /// Applies a reloaded `spool.min_free_space`, checked at once.
    pub fn set_minimum(&self, minimum: u64) {
        self.inner.minimum.store(minimum, Ordering::Relaxed);
        self.refresh();
    }

    /// `spool.min_free_space` as it is now.
    pub fn minimum(&self) -> u64 {
        self.inner.minimum.load(Ordering::Relaxed)
    }

    /// Bytes available to unprivileged writers on the spool's file system.
    pub fn available(&self) -> std::io::Result<u64> {
        let stats = rustix::fs::statvfs(&self.inner.path)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    pub fn is_sufficient(&self) -> bool {
        let elapsed = self.inner.started.elapsed().as_millis() as u64;
        let checked = self.inner.checked_at_ms.load(Ordering::Relaxed);
        if elapsed.saturating_sub(checked) >= RECHECK_AFTER.as_millis() as u64 {
            self.refresh();
        }
        self.inner.sufficient.load(Ordering::Relaxed)
    }

    fn refresh(&self) {
        let sufficient = match self.available() {
            Ok(available) => available >= self.inner.minimum.load(Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(path = %self.inner.path.display(), "cannot read free space: {error}");
                true
            }
        };
        if !sufficient {
            tracing::warn!(path = %self.inner.path.display(), "spool file system below min_free_space; refusing new mail");
        }
        let elapsed = self.inner.started.elapsed().as_millis() as u64;
        self.inner.checked_at_ms.store(elapsed, Ordering::Relaxed);
        self.inner.sufficient.store(sufficient, Ordering::Relaxed);
    }
}
