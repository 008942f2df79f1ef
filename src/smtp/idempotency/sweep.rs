//! Forgetting claims once their window has passed: a background task that
//! walks the time index from its oldest entry and deletes expired claims in
//! chunks of [`CHUNK`], one spool commit each, so it never holds the
//! committer for long nor reads more than a chunk at a time.
//!
//! The window is read from the live settings at every round, so a reload
//! applies to the next one. A claim is deleted only if it still holds the
//! time its index entry names: one made again after an earlier claim of the
//! same key was forgotten belongs to its own, later, index entry.

use std::ops::Bound;
use std::time::{Duration, SystemTime};

use relayq_spool::{Change, RecordEdit, RecordUpdate, Spool, SpoolError};
use tokio_util::sync::CancellationToken;

use super::{CLAIMS, CLAIMS_BY_TIME, Kind, Remembered, index_key};
use crate::live::Settings;
use crate::queue::envelope::unix_ms;

/// Claims deleted per commit.
pub const CHUNK: usize = 1000;
/// The sweep runs every quarter of the window, at least every minute and at
/// most every second: a claim outlives its window by at most that.
const MAX_INTERVAL: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Time between two rounds for `window`.
pub fn interval(window: Duration) -> Duration {
    (window / 4).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Sweeps until `shutdown`, a round every [`interval`] of the window in
/// force (looked at every second, so a reload that shortens the window
/// applies within a second). The first round comes after the maildrop
/// importer's first pass has begun.
pub async fn run(spool: Spool, settings: Settings, shutdown: CancellationToken) {
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
        let window = settings.snapshot().config.smtp.idempotency_window;
        if last_round.elapsed() < interval(window) {
            continue;
        }
        last_round = tokio::time::Instant::now();
        match sweep(&spool, window, SystemTime::now(), &shutdown).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::debug!("forgot {forgotten} idempotency keys"),
            Err(error) => tracing::warn!("idempotency key sweep stopped: {error}"),
        }
    }
}

/// Deletes every claim whose retention ended by `now`; returns how many
/// index entries it removed. Stops between two chunks at `shutdown`.
pub async fn sweep(
    spool: &Spool,
    window: Duration,
    now: SystemTime,
    shutdown: &CancellationToken,
) -> Result<usize, SpoolError> {
    let now_ms = unix_ms(now);
    let mut forgotten = 0;
    for kind in Kind::ALL {
        let retention_ms = u64::try_from(kind.retention(window).as_millis()).unwrap_or(u64::MAX);
        let Some(cutoff_ms) = now_ms.checked_sub(retention_ms) else {
            continue;
        };
        // Every entry of this kind made at or before the cutoff.
        let from = vec![kind as u8];
        let to = index_key(kind, cutoff_ms.saturating_add(1), b"");
        loop {
            let reading = spool.clone();
            let (start, end) = (from.clone(), to.clone());
            let expired = tokio::task::spawn_blocking(move || {
                reading.records(
                    CLAIMS_BY_TIME,
                    Bound::Included(&start),
                    Bound::Excluded(&end),
                    CHUNK,
                )
            })
            .await
            .map_err(|error| SpoolError::Database(format!("sweep read task: {error}")))??;
            let (Some((first, _)), Some((last, _))) = (expired.first(), expired.last()) else {
                break;
            };
            let mut changes = Vec::with_capacity(expired.len() + 1);
            for (entry, _) in &expired {
                if entry.len() < 9 {
                    continue;
                }
                let mut time = [0; 8];
                time.copy_from_slice(&entry[1..9]);
                let accepted_ms = u64::from_be_bytes(time);
                changes.push(Change::EditRecord {
                    table: CLAIMS,
                    key: entry[9..].to_vec(),
                    edit: RecordEdit::new(move |stored| {
                        match stored.and_then(Remembered::decode) {
                            Some(claim) if claim.accepted_ms == accepted_ms => RecordUpdate::Delete,
                            _ => RecordUpdate::Keep,
                        }
                    }),
                });
            }
            let mut past_last = last.clone();
            past_last.push(0);
            changes.push(Change::DeleteRecords {
                table: CLAIMS_BY_TIME,
                from: first.clone(),
                to: past_last,
            });
            spool.apply(changes).await?;
            forgotten += expired.len();
            if expired.len() < CHUNK || shutdown.is_cancelled() {
                break;
            }
        }
    }
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use relayq_spool::{QueueId, SpoolOptions};

    use super::super::{Claim, Scope, claim_changes, lookup};
    use super::*;

    const SECOND: u64 = 1000;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn index_len(spool: &Spool) -> usize {
        spool
            .records(
                CLAIMS_BY_TIME,
                Bound::Unbounded,
                Bound::Unbounded,
                usize::MAX,
            )
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn expired_claims_are_forgotten_and_live_ones_kept() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let start = 1_800_000_000 * SECOND;
        let old = Claim::key(Scope::Local, "old");
        let young = Claim::key(Scope::Local, "young");
        let file = Claim::maildrop_file("1.2.3");
        let again = Claim::key(Scope::User("alice"), "again");
        spool
            .apply(claim_changes(
                &[old.clone(), file.clone()],
                1,
                QueueId(1),
                start,
            ))
            .await
            .unwrap();
        spool
            .apply(claim_changes(
                std::slice::from_ref(&again),
                2,
                QueueId(2),
                start,
            ))
            .await
            .unwrap();
        spool
            .apply(claim_changes(
                std::slice::from_ref(&young),
                3,
                QueueId(3),
                start + 50 * SECOND,
            ))
            .await
            .unwrap();
        // `again` was forgotten once and claimed anew later: the new claim
        // comes with its own index entry, and the stale entry must not take
        // it along.
        spool
            .apply(vec![Change::DeleteRecord {
                table: CLAIMS,
                key: again.key.clone(),
            }])
            .await
            .unwrap();
        spool
            .apply(claim_changes(
                std::slice::from_ref(&again),
                4,
                QueueId(4),
                start + 90 * SECOND,
            ))
            .await
            .unwrap();

        let window = Duration::from_secs(60);
        let shutdown = CancellationToken::new();
        let swept = sweep(&spool, window, at(start + 60 * SECOND), &shutdown)
            .await
            .unwrap();
        assert_eq!(swept, 2, "old and the stale entry of again");
        assert_eq!(lookup(&spool, &old).unwrap(), None);
        assert_eq!(
            lookup(&spool, &young).unwrap().unwrap().original,
            QueueId(3)
        );
        assert_eq!(
            lookup(&spool, &again).unwrap().unwrap().original,
            QueueId(4)
        );
        // A maildrop file is remembered for a week whatever the window.
        assert!(lookup(&spool, &file).unwrap().is_some());
        assert_eq!(index_len(&spool), 3);

        let week_later = start + super::super::MAILDROP_RETENTION.as_millis() as u64;
        sweep(&spool, window, at(week_later), &shutdown)
            .await
            .unwrap();
        assert_eq!(lookup(&spool, &file).unwrap(), None);
        assert_eq!(spool.record_count(CLAIMS).unwrap(), 0);
        assert_eq!(index_len(&spool), 0);
        spool.close();
    }

    #[tokio::test]
    async fn a_large_backlog_goes_in_chunks() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let claims: Vec<Claim> = (0..CHUNK * 2 + 5)
            .map(|n| Claim::key(Scope::Local, &format!("k{n}")))
            .collect();
        spool
            .apply(claim_changes(&claims, 1, QueueId(1), SECOND))
            .await
            .unwrap();
        let swept = sweep(
            &spool,
            Duration::from_secs(1),
            at(10 * SECOND),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(swept, claims.len());
        assert_eq!(spool.record_count(CLAIMS).unwrap(), 0);
        spool.close();
    }

    #[test]
    fn rounds_come_every_quarter_window_within_bounds() {
        assert_eq!(interval(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_secs(120)), Duration::from_secs(30));
        assert_eq!(
            interval(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
    }
}
