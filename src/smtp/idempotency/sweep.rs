//! Forgetting claims once their window has passed: a background task that
//! walks the time index from its oldest entry and deletes expired claims in
//! chunks of [`CHUNK`], one spool commit each, so it never holds the
//! committer for long nor reads more than a chunk at a time.
//!
//! The window is read from the live settings at every round, so a reload
//! applies to the next one. A claim is forgotten in memory only if it
//! still holds the time of the record deleted: one made again after an
//! earlier claim of the same key was forgotten has its own, later, record.

use std::ops::Bound;
use std::time::{Duration, SystemTime};

use relayq_spool::{Change, Spool, SpoolError};
use tokio_util::sync::CancellationToken;

use super::claims::Claims;
use super::{CLAIMS, Kind, index_key, parse_index_key};
use crate::live::Settings;
use crate::queue::envelope::unix_ms;
use crate::records;

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
/// applies within a second). Rounds begin once the claims are loaded.
pub async fn run(
    spool: Spool,
    claims: std::sync::Arc<Claims>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let mut last_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(MIN_INTERVAL) => {}
        }
        let window = settings.snapshot().config.smtp.idempotency_window;
        if !claims.is_loaded() || last_round.elapsed() < interval(window) {
            continue;
        }
        last_round = tokio::time::Instant::now();
        match sweep(&spool, &claims, window, SystemTime::now(), &shutdown).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::debug!("forgot {forgotten} idempotency keys"),
            Err(error) => tracing::warn!("idempotency key sweep stopped: {error}"),
        }
    }
}

/// Deletes every claim whose retention ended by `now`; returns how many
/// records it removed. Stops between two chunks at `shutdown`.
pub async fn sweep(
    spool: &Spool,
    claims: &Claims,
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
            let expired = records::chunk(
                spool,
                CLAIMS,
                Bound::Included(from.clone()),
                Bound::Excluded(to.clone()),
                CHUNK,
            )
            .await?;
            let (Some((first, _)), Some((last, _))) = (expired.first(), expired.last()) else {
                break;
            };
            let mut past_last = last.clone();
            past_last.push(0);
            spool
                .apply(vec![Change::DeleteRecords {
                    table: CLAIMS,
                    from: first.clone(),
                    to: past_last,
                }])
                .await?;
            for (entry, _) in &expired {
                if let Some((accepted_ms, claim)) = parse_index_key(entry) {
                    claims.forget(claim, accepted_ms);
                }
            }
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
    use std::sync::Arc;

    use relayq_spool::{QueueId, SpoolOptions};

    use super::super::claims::Taken;
    use super::super::{Claim, Scope, claim_changes};
    use super::*;

    const SECOND: u64 = 1000;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Whether `claim` is held (taking it when it is free, then letting go).
    async fn held(claims: &Arc<Claims>, claim: &Claim) -> Option<QueueId> {
        match claims.take(std::slice::from_ref(claim), 0).await.unwrap() {
            Taken::Repeat(super::super::Repeat::Conflict(original)) => Some(original),
            Taken::Repeat(super::super::Repeat::Duplicate(original)) => Some(original),
            Taken::Free(_) => None,
        }
    }

    async fn commit(spool: &Spool, claims: &[Claim], original: u64, accepted_ms: u64) {
        spool
            .apply(claim_changes(claims, 1, QueueId(original), accepted_ms))
            .await
            .unwrap();
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
        commit(&spool, &[old.clone(), file.clone()], 1, start).await;
        commit(&spool, std::slice::from_ref(&again), 2, start).await;
        commit(&spool, std::slice::from_ref(&young), 3, start + 50 * SECOND).await;
        // `again` was forgotten once and claimed anew later: the new claim
        // comes with its own record, and the stale record must not take it
        // along.
        commit(&spool, std::slice::from_ref(&again), 4, start + 90 * SECOND).await;
        let claims = Arc::new(Claims::new());
        claims.load(&spool).await.unwrap();
        assert_eq!(held(&claims, &again).await, Some(QueueId(4)));

        let window = Duration::from_secs(60);
        let shutdown = CancellationToken::new();
        let swept = sweep(&spool, &claims, window, at(start + 60 * SECOND), &shutdown)
            .await
            .unwrap();
        assert_eq!(swept, 2, "old and the stale record of again");
        assert_eq!(held(&claims, &old).await, None);
        assert_eq!(held(&claims, &young).await, Some(QueueId(3)));
        assert_eq!(held(&claims, &again).await, Some(QueueId(4)));
        // A maildrop file is remembered for a week whatever the window.
        assert_eq!(held(&claims, &file).await, Some(QueueId(1)));
        assert_eq!(spool.record_count(CLAIMS).unwrap(), 3);

        let week_later = start + super::super::MAILDROP_RETENTION.as_millis() as u64;
        sweep(&spool, &claims, window, at(week_later), &shutdown)
            .await
            .unwrap();
        assert_eq!(held(&claims, &file).await, None);
        assert_eq!(spool.record_count(CLAIMS).unwrap(), 0);
        assert!(claims.is_empty());
        // What a restart reads back agrees.
        let restarted = Arc::new(Claims::new());
        assert_eq!(restarted.load(&spool).await.unwrap().claims, 0);
        spool.close();
    }

    #[tokio::test]
    async fn a_large_backlog_goes_in_chunks() {
        let directory = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(directory.path())).unwrap();
        let keys: Vec<Claim> = (0..CHUNK * 2 + 5)
            .map(|n| Claim::key(Scope::Local, &format!("k{n}")))
            .collect();
        commit(&spool, &keys, 1, SECOND).await;
        let claims = Arc::new(Claims::new());
        assert_eq!(claims.load(&spool).await.unwrap().claims, keys.len());
        let swept = sweep(
            &spool,
            &claims,
            Duration::from_secs(1),
            at(10 * SECOND),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(swept, keys.len());
        assert_eq!(spool.record_count(CLAIMS).unwrap(), 0);
        assert!(claims.is_empty());
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
