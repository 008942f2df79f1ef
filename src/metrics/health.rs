//! The spool's health as gauges, read when scraped: whether it takes writes
//! and how much room its file system has against `spool.min_free_space`, so
//! that an alert fires before new mail is refused, not after.

use super::text::{family, sample};

/// What the endpoint read for one scrape.
pub struct SpoolHealth {
    /// The spool takes writes (committer running, database open).
    pub takes_writes: bool,
    /// Bytes available to the daemon on the spool's file system; `None`
    /// when it cannot be read (no sample is written then).
    pub free_bytes: Option<u64>,
    /// `spool.min_free_space`, as live after reloads.
    pub min_free_bytes: u64,
}

/// Appends `relayq_spool_healthy`, `relayq_spool_free_bytes` and
/// `relayq_spool_min_free_bytes`.
pub fn render(out: &mut String, health: &SpoolHealth) {
    family(
        out,
        "relayq_spool_healthy",
        "gauge",
        "1 while the spool takes writes (its committer runs, its database is open), else 0: new mail is refused with 4xx.",
    );
    sample(
        out,
        "relayq_spool_healthy",
        &[],
        u8::from(health.takes_writes),
    );
    family(
        out,
        "relayq_spool_free_bytes",
        "gauge",
        "Bytes available on the spool's file system.",
    );
    if let Some(free) = health.free_bytes {
        sample(out, "relayq_spool_free_bytes", &[], free);
    }
    family(
        out,
        "relayq_spool_min_free_bytes",
        "gauge",
        "spool.min_free_space: below this much free space new mail is refused (452 at MAIL, 421 at connect).",
    );
    sample(
        out,
        "relayq_spool_min_free_bytes",
        &[],
        health.min_free_bytes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_three_gauges() {
        let mut out = String::new();
        render(
            &mut out,
            &SpoolHealth {
                takes_writes: false,
                free_bytes: Some(1234),
                min_free_bytes: 268435456,
            },
        );
        assert!(out.contains("\nrelayq_spool_healthy 0\n"), "{out}");
        assert!(out.contains("\nrelayq_spool_free_bytes 1234\n"), "{out}");
        assert!(
            out.contains("\nrelayq_spool_min_free_bytes 268435456\n"),
            "{out}"
        );
    }

    #[test]
    fn an_unreadable_file_system_writes_no_free_space_sample() {
        let mut out = String::new();
        render(
            &mut out,
            &SpoolHealth {
                takes_writes: true,
                free_bytes: None,
                min_free_bytes: 1,
            },
        );
        assert!(out.contains("\nrelayq_spool_healthy 1\n"), "{out}");
        assert!(!out.contains("\nrelayq_spool_free_bytes "), "{out}");
    }
}
