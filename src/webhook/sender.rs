//! One webhook's sender: takes the oldest events of its outbox range, posts
//! them as one batch, and deletes them once the receiver answered `2xx`.
//! Anything else is retried, the same batch again, after a back-off of 1 s
//! doubling to 5 minutes (jittered), so the receiver sees its events in
//! commit order, at least once. Events older than `retry_for`, and the
//! oldest beyond `max_backlog`, are dropped (logged and counted).
//!
//! The sender keeps its own count of the backlog: counted once from the
//! spool when it starts, then plus what commits report (`arrived`), minus
//! what it deletes; an empty read sets it to zero.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use relayq_spool::{Spool, SpoolError, StoredRecord};
use tokio_util::sync::CancellationToken;

use super::Hook;
use super::event;
use super::outbox::Queue;
use crate::wire::text::one_line;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Events dropped per commit when the backlog is over `max_backlog`.
const DROP_CHUNK: usize = 10_000;
/// How long a sender waits before reading again after a spool error.
const SPOOL_RETRY: Duration = Duration::from_secs(5);

/// `{"events":[E1,E2,…]}` from the events' JSON.
pub(super) fn batch_body<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::with_capacity(4096);
    body.extend_from_slice(b"{\"events\":[");
    for (index, json) in events.into_iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.extend_from_slice(b"]}");
    body
}

pub(super) async fn run(hook: Arc<Hook>, spool: Spool, shutdown: CancellationToken) {
    let name = hook.settings.name.clone();
    let mut backoff = Backoff::new(&name);
    // Commits from now on are counted in `arrived`; the walk counts what is
    // stored (including, at worst, the events of commits during the walk twice).
    hook.counts.arrived.swap(0, Ordering::Relaxed);
    match blocking(&spool, {
        let queue = hook.queue.clone();
        move |spool| queue.count(spool)
    })
    .await
    {
        Ok(count) => {
            hook.counts.backlog.store(count as i64, Ordering::Relaxed);
            if count > 0 {
                tracing::info!("webhook {name}: {count} events waiting from before the start");
            }
        }
        Err(error) => tracing::error!("webhook {name}: cannot count its events: {error}"),
    }
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let arrived = hook.counts.arrived.swap(0, Ordering::Relaxed);
        hook.counts
            .backlog
            .fetch_add(arrived as i64, Ordering::Relaxed);
        if let Err(error) = drop_over_backlog(&hook, &spool).await {
            tracing::error!("webhook {name}: cannot drop events over max_backlog: {error}");
        }
        let head = match read_head(&hook, &spool).await {
            Ok(head) => head,
            Err(error) => {
                tracing::error!("webhook {name}: cannot read its events: {error}");
                if sleep_or_shutdown(SPOOL_RETRY, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let Some(oldest) = head.first().and_then(|(_, stored)| event::decode(stored)) else {
            hook.counts.backlog.store(0, Ordering::Relaxed);
            hook.counts.oldest_ms.store(0, Ordering::Relaxed);
            tokio::select! {
                () = hook.wake.notified() => continue,
                () = shutdown.cancelled() => return,
            }
        };
        hook.counts
            .oldest_ms
            .store(event::unix_ms(oldest.0).max(1), Ordering::Relaxed);

        // Expired events at the head go, then the batch is formed again.
        let now = SystemTime::now();
        let expired = head
            .iter()
            .take_while(|(_, stored)| {
                event::decode(stored).is_some_and(|(at, _)| {
                    now.duration_since(at).unwrap_or_default() > hook.settings.retry_for
                })
            })
            .count();
        if expired > 0 {
            let last = head[expired - 1].0.clone();
            if let Err(error) = delete_through(&hook, &spool, &last, expired).await {
                tracing::error!("webhook {name}: cannot drop expired events: {error}");
                if sleep_or_shutdown(SPOOL_RETRY, &shutdown).await {
                    return;
                }
                continue;
            }
            hook.counts
                .dropped
                .fetch_add(expired as u64, Ordering::Relaxed);
            tracing::warn!(
                "webhook {name}: {expired} events dropped: not taken within retry_for ({})",
                humantime::format_duration(hook.settings.retry_for)
            );
            continue;
        }

        // A partial batch waits up to batch_wait from its oldest event for
        // more, unless enough arrive sooner.
        if head.len() < hook.settings.batch_max {
            let deadline = oldest.0 + hook.settings.batch_wait;
            if let Ok(wait) = deadline.duration_since(now)
                && !wait.is_zero()
            {
                let missing = (hook.settings.batch_max - head.len()) as u64;
                if wait_for_more(&hook, missing, wait, &shutdown).await {
                    return;
                }
                continue;
            }
        }

        let body = batch_body(
            head.iter()
                .filter_map(|(_, stored)| event::decode(stored).map(|(_, json)| json)),
        );
        let first = Queue::sequence(&head[0].0);
        let last_key = head[head.len() - 1].0.clone();
        let batch = format!("{first:x}-{:x}", Queue::sequence(&last_key));
        match post_until_taken(&hook, &body, &batch, oldest.0, &mut backoff, &shutdown).await {
            Posting::Taken => {
                if let Err(error) = delete_through(&hook, &spool, &last_key, head.len()).await {
                    // Posted but not deleted: posted again later (at least once).
                    tracing::error!("webhook {name}: cannot delete the events it posted: {error}");
                    if sleep_or_shutdown(SPOOL_RETRY, &shutdown).await {
                        return;
                    }
                }
            }
            Posting::Reform => {}
            Posting::Shutdown => return,
        }
    }
}

/// How posting one batch ended.
enum Posting {
    /// A receiver answered 2xx.
    Taken,
    /// While retrying, the oldest event passed `retry_for` or the backlog
    /// went over `max_backlog`: drop what must go, form the batch again.
    Reform,
    Shutdown,
}

/// Posts `body` until the receiver takes it, retrying with back-off.
async fn post_until_taken(
    hook: &Hook,
    body: &[u8],
    batch: &str,
    oldest: SystemTime,
    backoff: &mut Backoff<'_>,
    shutdown: &CancellationToken,
) -> Posting {
    loop {
        let error = match hook.post(body, batch).await {
            Ok(response) if (200..300).contains(&response.status) => {
                hook.counts.posts_ok.fetch_add(1, Ordering::Relaxed);
                lock_last(hook).success = Some(SystemTime::now());
                backoff.reset();
                return Posting::Taken;
            }
            Ok(response) => {
                let text = String::from_utf8_lossy(&response.body);
                let text = one_line(&text);
                let text: String = text.chars().take(200).collect();
                format!("HTTP {} {text}", response.status)
            }
            Err(error) => error.to_string(),
        };
        hook.counts.posts_failed.fetch_add(1, Ordering::Relaxed);
        let wait = backoff.next(&error);
        lock_last(hook).error = Some((SystemTime::now(), error));
        if sleep_or_shutdown(wait, shutdown).await {
            return Posting::Shutdown;
        }
        let age = SystemTime::now().duration_since(oldest).unwrap_or_default();
        let backlog = hook.counts.backlog.load(Ordering::Relaxed).max(0) as u64
            + hook.counts.arrived.load(Ordering::Relaxed);
        if age > hook.settings.retry_for || backlog > hook.settings.max_backlog {
            return Posting::Reform;
        }
    }
}

fn lock_last(hook: &Hook) -> std::sync::MutexGuard<'_, super::LastPost> {
    hook.counts
        .last
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Waits until `missing` more events arrived, `wait` passed, or shutdown
/// (then `true`). Arrivals are left in `arrived` for the loop to count.
async fn wait_for_more(
    hook: &Hook,
    missing: u64,
    wait: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if hook.counts.arrived.load(Ordering::Relaxed) >= missing {
            return false;
        }
        tokio::select! {
            () = hook.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => return false,
            () = shutdown.cancelled() => return true,
        }
    }
}

async fn read_head(hook: &Arc<Hook>, spool: &Spool) -> Result<Vec<StoredRecord>, SpoolError> {
    let queue = hook.queue.clone();
    let limit = hook.settings.batch_max;
    blocking(spool, move |spool| queue.head(spool, None, limit)).await
}

async fn delete_through(
    hook: &Hook,
    spool: &Spool,
    last: &[u8],
    count: usize,
) -> Result<(), SpoolError> {
    spool.apply(vec![hook.queue.delete_through(last)]).await?;
    hook.counts
        .backlog
        .fetch_sub(count as i64, Ordering::Relaxed);
    Ok(())
}

/// Drops the oldest events while the backlog is over `max_backlog`.
async fn drop_over_backlog(hook: &Arc<Hook>, spool: &Spool) -> Result<(), SpoolError> {
    let name = &hook.settings.name;
    loop {
        let backlog = hook.counts.backlog.load(Ordering::Relaxed).max(0) as u64;
        let over = backlog.saturating_sub(hook.settings.max_backlog);
        if over == 0 {
            return Ok(());
        }
        let take = (over as usize).min(DROP_CHUNK);
        let queue = hook.queue.clone();
        let oldest = blocking(spool, move |spool| queue.head(spool, None, take)).await?;
        let Some((last, _)) = oldest.last() else {
            hook.counts.backlog.store(0, Ordering::Relaxed);
            return Ok(());
        };
        delete_through(hook, spool, last, oldest.len()).await?;
        hook.counts
            .dropped
            .fetch_add(oldest.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            "webhook {name}: {} oldest events dropped: backlog over max_backlog ({})",
            oldest.len(),
            hook.settings.max_backlog
        );
    }
}

async fn blocking<T: Send + 'static>(
    spool: &Spool,
    read: impl FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || read(&spool))
        .await
        .map_err(|error| SpoolError::Database(format!("webhook outbox read: {error}")))?
}

/// Sleeps `wait`; `true` when shutdown came first.
async fn sleep_or_shutdown(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = shutdown.cancelled() => true,
    }
}

/// 1 s doubling to 5 minutes, each wait between 80 % and 120 % of its
/// step, so receivers that come back are not hit by every relay at once.
struct Backoff<'a> {
    name: &'a str,
    failures: u32,
    /// xorshift state for the jitter.
    state: u64,
}

impl<'a> Backoff<'a> {
    fn new(name: &'a str) -> Backoff<'a> {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |since| since.as_nanos() as u64)
            | 1;
        Backoff {
            name,
            failures: 0,
            state: seed,
        }
    }

    fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!("webhook {}: receiver takes events again", self.name);
        }
        self.failures = 0;
    }

    fn next(&mut self, error: &str) -> Duration {
        let step = FIRST_BACKOFF
            .saturating_mul(1u32 << self.failures.min(16))
            .min(MAX_BACKOFF);
        self.failures += 1;
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let factor = 0.8 + (self.state % 4001) as f64 / 10_000.0;
        let wait = step.mul_f64(factor);
        // The first failure and then one in ten: a dead receiver under
        // load must not flood the log.
        if self.failures == 1 || self.failures.is_multiple_of(10) {
            tracing::warn!(
                "webhook {}: post failed ({} in a row): {error}; next try in {:.1}s",
                self.name,
                self.failures,
                wait.as_secs_f64()
            );
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_the_events_in_order() {
        assert_eq!(
            batch_body([&b"{\"a\":1}"[..], b"{\"b\":2}"]),
            b"{\"events\":[{\"a\":1},{\"b\":2}]}"
        );
        assert_eq!(batch_body(std::iter::empty()), b"{\"events\":[]}");
    }

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        let mut backoff = Backoff::new("test");
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next("down")).collect();
        assert!(waits[0] >= Duration::from_millis(800) && waits[0] <= Duration::from_millis(1200));
        assert!(waits[1] >= Duration::from_millis(1600) && waits[1] <= Duration::from_millis(2400));
        assert!(waits[11] >= Duration::from_secs(240) && waits[11] <= Duration::from_secs(360));
        backoff.reset();
        assert!(backoff.next("down") <= Duration::from_millis(1200));
    }
}
