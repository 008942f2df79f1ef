//! Reports for `https:` destinations (RFC 8460 §5.2): each is stored (a
//! record of the `tls_rpt_outbox` table, in the commit that consumed the
//! counts) and posted as `application/tlsrpt+gzip` by one task, retried
//! with a growing delay until the receiver answers `2xx`, or dropped (and
//! logged) [`RETRY_FOR`] after it was made.

use std::collections::HashMap;
use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use relayq_spool::{Change, RecordTable, Spool, SpoolError, StoredRecord};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TlsRpt;
use super::counts::CountKey;
use super::report::MEDIA_TYPE;

/// The posts still to make.
pub const OUTBOX: RecordTable = RecordTable::new("tls_rpt_outbox");
/// How long a report is offered to a receiver that does not take it.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// The first delay after a failed post; each next one doubles, up to
/// [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_secs(5);
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// One post, connecting included.
const POST_TIMEOUT: Duration = Duration::from_secs(60);
/// The receiver's answer is read up to this, for the log line.
const MAX_ANSWER: usize = 64 * 1024;
/// Posts read per blocking call.
const CHUNK: usize = 256;

/// One stored post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub url: String,
    pub domain: String,
    pub report_id: String,
    /// When the report was made (ms since the Unix epoch).
    pub made_ms: u64,
    /// The gzip of the JSON report, base64.
    pub report: String,
}

/// The change that stores the post of a report (`compressed`, its gzip)
/// to `url`; one per window, domain and URL.
pub fn store(
    key: &CountKey,
    url: &str,
    report_id: &str,
    compressed: &[u8],
    now: SystemTime,
) -> Change {
    let mut record_key = key.encode();
    record_key.push(0);
    record_key.extend_from_slice(url.as_bytes());
    let post = Post {
        url: url.to_owned(),
        domain: key.domain.clone(),
        report_id: report_id.to_owned(),
        made_ms: now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64),
        report: BASE64.encode(compressed),
    };
    Change::PutRecord {
        table: OUTBOX,
        key: record_key,
        value: serde_json::to_vec(&post).expect("a post serializes"),
    }
}

/// The delay after the `failures`th failed post of a report (from 1).
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Every stored post (blocking).
fn read_all(spool: &Spool) -> Result<Vec<StoredRecord>, SpoolError> {
    let mut all = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let start = match &after {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        let chunk = spool.records(OUTBOX, start, Bound::Unbounded, CHUNK)?;
        let full = chunk.len() == CHUNK;
        after = chunk.last().map(|(key, _)| key.clone());
        all.extend(chunk);
        if !full {
            return Ok(all);
        }
    }
}

/// Failed posts of each stored report while the daemon runs: how many,
/// and when the next try is due.
type Backoff = HashMap<Vec<u8>, (u32, Instant)>;

/// Makes the stored posts until `shutdown`: at start, whenever the
/// reporter stores new ones, and when a retry is due.
pub(super) async fn run(tls_rpt: TlsRpt, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let spool = tls_rpt.shared.handle.spool.clone();
        let stored = match tokio::task::spawn_blocking(move || read_all(&spool)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(error)) => {
                tracing::warn!("tls-rpt: cannot read the reports to post: {error}");
                Vec::new()
            }
            Err(error) => {
                tracing::warn!("tls-rpt: cannot read the reports to post: {error}");
                Vec::new()
            }
        };
        backoff.retain(|key, _| stored.iter().any(|(stored_key, _)| stored_key == key));
        let mut next: Option<Instant> = None;
        for (key, value) in stored {
            if let Some((_, due)) = backoff.get(&key)
                && *due > Instant::now()
            {
                next = Some(next.map_or(*due, |next| next.min(*due)));
                continue;
            }
            let attempt = post(&tls_rpt, &key, &value, &mut backoff);
            let retry_at = tokio::select! {
                retry_at = attempt => retry_at,
                _ = shutdown.cancelled() => return,
            };
            if let Some(due) = retry_at {
                next = Some(next.map_or(due, |next| next.min(due)));
            }
        }
        let wait = next.map_or(Duration::from_secs(24 * 3600), |due| {
            due.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tls_rpt.shared.posts_waiting.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Posts one stored report; deletes it when taken (or undecodable, or
/// past [`RETRY_FOR`]); returns when it is to be tried again otherwise.
async fn post(
    tls_rpt: &TlsRpt,
    key: &[u8],
    value: &[u8],
    backoff: &mut Backoff,
) -> Option<Instant> {
    let delete = Change::DeleteRecord {
        table: OUTBOX,
        key: key.to_vec(),
    };
    let decoded = serde_json::from_slice::<Post>(value)
        .map_err(|error| error.to_string())
        .and_then(|post| {
            let body = BASE64
                .decode(&post.report)
                .map_err(|error| error.to_string())?;
            Ok((post, body))
        });
    let (post, body) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::error!(
                "tls-rpt: a stored report to post does not decode ({error}); deleting it"
            );
            settle(tls_rpt, delete).await;
            return None;
        }
    };
    let answer = tls_rpt
        .shared
        .http
        .post(&post.url, MEDIA_TYPE, &[], body, POST_TIMEOUT, MAX_ANSWER)
        .await;
    let failure = match answer {
        Ok(response) if (200..300).contains(&response.status) => {
            tracing::info!(
                "tls-rpt: report {} on {} posted to {}: {}",
                post.report_id,
                post.domain,
                post.url,
                response.status
            );
            backoff.remove(key);
            settle(tls_rpt, delete).await;
            return None;
        }
        Ok(response) => {
            let mut text = crate::wire::text::one_line(&String::from_utf8_lossy(&response.body));
            if let Some((cut, _)) = text.char_indices().nth(200) {
                text.truncate(cut);
            }
            format!("{} {text}", response.status)
        }
        Err(error) => error.to_string(),
    };
    let made = UNIX_EPOCH + Duration::from_millis(post.made_ms);
    let age = SystemTime::now().duration_since(made).unwrap_or_default();
    if age >= RETRY_FOR {
        tracing::warn!(
            "tls-rpt: report {} on {}: {} did not take it for {}; dropped (last answer: {failure})",
            post.report_id,
            post.domain,
            post.url,
            humantime::format_duration(RETRY_FOR)
        );
        backoff.remove(key);
        settle(tls_rpt, delete).await;
        return None;
    }
    let failures = backoff.get(key).map_or(0, |(failures, _)| *failures) + 1;
    let delay = retry_delay(failures);
    let due = Instant::now() + delay;
    backoff.insert(key.to_vec(), (failures, due));
    tracing::warn!(
        "tls-rpt: report {} on {}: post to {} failed: {failure}; trying again in {}",
        post.report_id,
        post.domain,
        post.url,
        humantime::format_duration(delay)
    );
    Some(due)
}

/// Commits the deletion of a post; a failure is logged (the post is made
/// again, and its receiver sees the same `report-id`).
async fn settle(tls_rpt: &TlsRpt, delete: Change) {
    if let Err(error) = tls_rpt.shared.handle.spool.apply(vec![delete]).await {
        tracing::warn!("tls-rpt: cannot delete a posted report: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_rpt::counts::Window;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(3), Duration::from_secs(20));
        assert_eq!(retry_delay(10), Duration::from_secs(2560));
        assert_eq!(retry_delay(11), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn a_stored_post_keeps_the_report_as_made() {
        let key = CountKey {
            window: Window { start: 10, end: 20 },
            domain: "example.com".into(),
        };
        let Change::PutRecord {
            table,
            key: record_key,
            value,
        } = store(
            &key,
            "https://r.example/v1",
            "10.20.example.com@relay",
            b"\x1f\x8bgz",
            UNIX_EPOCH + Duration::from_secs(21),
        )
        else {
            panic!("a put");
        };
        assert_eq!(table, OUTBOX);
        assert!(record_key.starts_with(&key.encode()));
        assert!(record_key.ends_with(b"\0https://r.example/v1"));
        let post: Post = serde_json::from_slice(&value).unwrap();
        assert_eq!(post.made_ms, 21_000);
        assert_eq!(post.domain, "example.com");
        assert_eq!(BASE64.decode(&post.report).unwrap(), b"\x1f\x8bgz");
    }
}
