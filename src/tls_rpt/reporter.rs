//! The reporter: at the end of each window (and at start, for windows that
//! ended while relayq was down) it commits the counts in memory, then
//! turns each domain's stored counts of every ended window into a report
//! for the destinations of the domain's `_smtp._tls` TXT record.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mail_auth::report::tlsrpt::Policy;
use relayq_spool::{Body, Change};
use tokio_util::sync::CancellationToken;

use super::counts::{self, CountKey, Window};
use super::report::{self, Reporter};
use super::rua::{self, RuaError};
use super::{TlsRpt, https, message};
use crate::live::Live;

/// When a window whose report could not be made (a TXT lookup that timed
/// out, a spool that refused the commit) is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// A window still not reported this long after it ended is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// RFC 8460 §5.3: the report's own header fields "SHOULD be included in
/// the DKIM signature".
const REPORT_FIELDS: [&str; 2] = ["TLS-Report-Domain", "TLS-Report-Submitter"];
/// Past a window's end before its report is made: the clock the sleep
/// follows and the wall clock may differ a little.
const MARGIN: Duration = Duration::from_millis(50);

/// Reports every window as it ends, until `shutdown`.
pub(super) async fn run(tls_rpt: TlsRpt, shutdown: CancellationToken) {
    loop {
        let live = tls_rpt.shared.settings.snapshot();
        let settings = &live.config.tls_rpt;
        let retry = settings.enabled && !report_ended_windows(&tls_rpt, &live).await;
        let now = SystemTime::now();
        let next_end = Window::containing(now, settings.interval).end_time();
        let mut wait = next_end.duration_since(now).unwrap_or_default() + MARGIN;
        if retry {
            wait = wait.min(RETRY_AFTER);
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Reports every stored window that is over; `false` when some are left
/// to try again.
async fn report_ended_windows(tls_rpt: &TlsRpt, live: &Arc<Live>) -> bool {
    if let Err(error) = tls_rpt.flush().await {
        tracing::warn!("tls-rpt: cannot commit the session counts; reports wait: {error}");
        return false;
    }
    let spool = tls_rpt.shared.handle.spool.clone();
    let now = SystemTime::now();
    let read = tokio::task::spawn_blocking(move || counts::due(&spool, now)).await;
    let counts::Due {
        windows,
        undecodable,
    } = match read {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => {
            tracing::warn!("tls-rpt: cannot read the stored counts: {error}");
            return false;
        }
        Err(error) => {
            tracing::warn!("tls-rpt: cannot read the stored counts: {error}");
            return false;
        }
    };
    if !undecodable.is_empty()
        && let Err(error) = tls_rpt.shared.handle.spool.apply(undecodable).await
    {
        tracing::warn!("tls-rpt: cannot delete undecodable counts: {error}");
    }
    let mut all_done = true;
    for (key, policies) in windows {
        all_done &= report_window(tls_rpt, live, &key, policies).await;
    }
    all_done
}

/// Makes and sends (or queues) the report of `key`; `false` when it is to
/// be tried again later.
async fn report_window(
    tls_rpt: &TlsRpt,
    live: &Arc<Live>,
    key: &CountKey,
    policies: Vec<Policy>,
) -> bool {
    let domain = &key.domain;
    let gave_up = |reason: &str| {
        let late = SystemTime::now()
            .duration_since(key.window.end_time())
            .unwrap_or_default();
        (late > GIVE_UP_AFTER).then(|| {
            tracing::warn!(
                "tls-rpt: {domain}: giving up the report on {} ({reason})",
                period(key.window)
            );
            counts::delete_change(key)
        })
    };
    let rua = match live
        .delivery
        .resolver
        .txt_records(&format!("_smtp._tls.{domain}"))
        .await
        .map(|records| rua::parse(&records))
    {
        Ok(Ok(rua)) => rua,
        Ok(Err(error)) => {
            let level_info = matches!(error, RuaError::NoRecord);
            if level_info {
                tracing::info!(
                    "tls-rpt: {domain}: {error}; no report on {}",
                    period(key.window)
                );
            } else {
                tracing::warn!(
                    "tls-rpt: {domain}: {error}; no report on {}",
                    period(key.window)
                );
            }
            return commit(tls_rpt, vec![counts::delete_change(key)]).await;
        }
        Err(reason) => {
            let reason = format!("_smtp._tls TXT lookup: {reason}");
            return match gave_up(&reason) {
                Some(delete) => commit(tls_rpt, vec![delete]).await,
                None => {
                    tracing::info!("tls-rpt: {domain}: {reason}; trying again in {RETRY_AFTER:?}");
                    false
                }
            };
        }
    };

    let settings = &live.config.tls_rpt;
    let submitter = settings.submitter();
    let report = report::build(
        Reporter {
            organization: &settings.organization,
            contact: &settings.contact,
            submitter: &submitter,
        },
        key.window,
        domain,
        policies,
    );
    let compressed = report::gzip(&report);
    let now = SystemTime::now();
    let mut changes = Vec::with_capacity(rua.https.len() + 2);
    let mut queued = None;
    if !rua.mail.is_empty() {
        let text = message::build(
            &report,
            &compressed,
            domain,
            &submitter,
            &settings.from,
            &rua.mail,
        );
        let signed = match sign(tls_rpt, text).await {
            Ok(signed) => signed,
            Err(reason) => {
                return match gave_up(&reason) {
                    Some(delete) => commit(tls_rpt, vec![delete]).await,
                    None => {
                        tracing::warn!(
                            "tls-rpt: {domain}: {reason}; trying again in {RETRY_AFTER:?}"
                        );
                        false
                    }
                };
            }
        };
        let envelope = message::envelope(&settings.from, &rua.mail, now, signed.len() as u64);
        let id = tls_rpt.shared.handle.spool.allocate_id();
        changes.push(Change::Insert {
            id,
            envelope: envelope.encode(),
            body: Body::from_bytes(signed),
        });
        queued = Some((id, envelope));
    }
    for url in &rua.https {
        changes.push(https::store(key, url, &report.report_id, &compressed, now));
    }
    changes.push(counts::delete_change(key));
    if !commit(tls_rpt, changes).await {
        return false;
    }
    let (success, failure) = report::totals(&report);
    let mut destinations: Vec<String> = Vec::new();
    if let Some((id, envelope)) = &queued {
        tls_rpt.shared.handle.queue.insert(*id, envelope);
        destinations.push(format!("queued as {id} to {}", rua.mail.join(", ")));
    }
    if !rua.https.is_empty() {
        tls_rpt.shared.posts_waiting.notify_one();
        destinations.push(format!("posting to {}", rua.https.join(", ")));
    }
    tracing::info!(
        "tls-rpt: report {} on {domain} ({}): {success} successful sessions, {failure} failed; {}",
        report.report_id,
        period(key.window),
        destinations.join("; ")
    );
    true
}

/// `message` with the `DKIM-Signature:` fields of the `[[dkim]]` keys
/// that cover its From: domain in front (signed on the blocking pool, the
/// `TLS-Report-*` fields among the signed ones, as RFC 8460 §5.3 asks), or
/// as it is when none does. A key that fails to sign is an error: a report
/// is not sent unsigned when its domain's mail is signed.
async fn sign(tls_rpt: &TlsRpt, message: Vec<u8>) -> Result<Vec<u8>, String> {
    let Some(signers) = tls_rpt.shared.dkim.current() else {
        return Ok(message);
    };
    tokio::task::spawn_blocking(move || {
        match signers.sign_message(&message, &REPORT_FIELDS, SystemTime::now()) {
            None => Ok(message),
            Some(Err(error)) => Err(format!("cannot DKIM-sign the report: {error}")),
            Some(Ok(signed)) => {
                let mut whole = signed.fields.into_bytes();
                whole.extend_from_slice(&message);
                Ok(whole)
            }
        }
    })
    .await
    .map_err(|error| format!("cannot DKIM-sign the report: {error}"))?
}

/// Commits `changes`; `false` (logged) when the spool refused.
async fn commit(tls_rpt: &TlsRpt, changes: Vec<Change>) -> bool {
    match tls_rpt.shared.handle.spool.apply(changes).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!("tls-rpt: cannot commit a report: {error}");
            false
        }
    }
}

/// A window in log lines: its start and end, RFC 3339.
fn period(window: Window) -> String {
    format!(
        "{} to {}",
        crate::timefmt::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(window.start)),
        crate::timefmt::rfc3339(window.end_time())
    )
}
