//! The session counts of one reporting window, per policy domain: what
//! they are (mail-auth's report `Policy` values, summary and failure
//! details included), how they add up, and how they are stored in the
//! spool (one record per window and domain, in the `tls_rpt_counts`
//! table). Pure apart from [`due`], a blocking spool read.
//!
//! A record's key is the window's start and end (Unix seconds, 8 octets
//! big-endian each, so keys sort by window) followed by the domain. Its
//! value is the JSON of the policies' counts: the report's own `policies`
//! array, so a report is the stored counts with a header.

use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail_auth::report::tlsrpt::{FailureDetails, Policy, PolicyDetails, Summary};
use relayq_spool::{Change, RecordEdit, RecordTable, RecordUpdate, Spool, SpoolError};

/// The counts of every window not reported yet.
pub const COUNTS: RecordTable = RecordTable::new("tls_rpt_counts");

/// Distinct failure details kept per policy; further kinds of failure are
/// still counted in the summary. Bounds a record whose failures all differ
/// (each with its own additional information).
pub const MAX_FAILURE_DETAILS: usize = 100;
/// Distinct policies kept per domain and window (a domain that changes its
/// policy all day long); sessions under further ones are not counted.
pub const MAX_POLICIES: usize = 32;

/// Records read per blocking call.
const CHUNK: usize = 512;

/// What one session under a policy came to (RFC 8460 §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionResult {
    /// The policy was satisfied: TLS negotiated as the policy asks.
    Success,
    /// The session failed the policy. `failed_session_count` is ignored:
    /// each call counts one session.
    Failure(FailureDetails),
}

/// A reporting period: `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    /// The window of length `interval` (whole seconds, at least one)
    /// that holds `now`; windows are aligned to multiples of `interval`
    /// since the Unix epoch, so a day is 0000-2400 UTC.
    pub fn containing(now: SystemTime, interval: Duration) -> Window {
        let length = interval.as_secs().max(1);
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let start = now - now % length;
        Window {
            start,
            end: start.saturating_add(length),
        }
    }

    /// When the window ends.
    pub fn end_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.end)
    }

    /// Whether the window is over at `now`.
    pub fn is_over(self, now: SystemTime) -> bool {
        self.end_time() <= now
    }
}

/// Which record counts a domain's sessions in a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountKey {
    pub window: Window,
    /// The policy domain, lowercase, without a trailing dot.
    pub domain: String,
}

impl CountKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(16 + self.domain.len());
        key.extend_from_slice(&self.window.start.to_be_bytes());
        key.extend_from_slice(&self.window.end.to_be_bytes());
        key.extend_from_slice(self.domain.as_bytes());
        key
    }

    /// `None` for a key this version did not write.
    pub fn decode(key: &[u8]) -> Option<CountKey> {
        let (start, rest) = key.split_first_chunk::<8>()?;
        let (end, domain) = rest.split_first_chunk::<8>()?;
        let domain = std::str::from_utf8(domain).ok()?;
        if domain.is_empty() {
            return None;
        }
        Some(CountKey {
            window: Window {
                start: u64::from_be_bytes(*start),
                end: u64::from_be_bytes(*end),
            },
            domain: domain.to_owned(),
        })
    }
}

/// Counts one session under `policy` into `policies`. Allocates only for
/// a policy or a failure not seen before in the window.
pub fn add(policies: &mut Vec<Policy>, policy: &PolicyDetails, result: &SessionResult) {
    let Some(target) = slot(policies, policy) else {
        return;
    };
    match result {
        SessionResult::Success => {
            target.summary.total_success = target.summary.total_success.saturating_add(1);
        }
        SessionResult::Failure(details) => {
            target.summary.total_failure = target.summary.total_failure.saturating_add(1);
            add_failure(&mut target.failure_details, details, 1);
        }
    }
}

/// Adds the counts of `more` to `into`: per policy (the same policy
/// details), the summaries add up and equal failure details (all fields
/// but the count) add their counts.
pub fn merge(into: &mut Vec<Policy>, more: Vec<Policy>) {
    for policy in more {
        let Some(target) = slot(into, &policy.policy) else {
            continue;
        };
        let summary = &mut target.summary;
        summary.total_success = summary
            .total_success
            .saturating_add(policy.summary.total_success);
        summary.total_failure = summary
            .total_failure
            .saturating_add(policy.summary.total_failure);
        for detail in &policy.failure_details {
            add_failure(
                &mut target.failure_details,
                detail,
                detail.failed_session_count,
            );
        }
    }
}

/// The counts of `policy` in `policies`, added when there is room.
fn slot<'a>(policies: &'a mut Vec<Policy>, policy: &PolicyDetails) -> Option<&'a mut Policy> {
    let position = match policies
        .iter()
        .position(|existing| existing.policy == *policy)
    {
        Some(position) => position,
        None if policies.len() < MAX_POLICIES => {
            policies.push(Policy {
                policy: policy.clone(),
                summary: Summary {
                    total_success: 0,
                    total_failure: 0,
                },
                failure_details: Vec::new(),
            });
            policies.len() - 1
        }
        None => return None,
    };
    Some(&mut policies[position])
}

/// Adds `count` sessions failed as `detail` says.
fn add_failure(details: &mut Vec<FailureDetails>, detail: &FailureDetails, count: u32) {
    match details
        .iter()
        .position(|existing| same_failure(existing, detail))
    {
        Some(same) => {
            let same = &mut details[same];
            same.failed_session_count = same.failed_session_count.saturating_add(count);
        }
        None if details.len() < MAX_FAILURE_DETAILS => details.push(FailureDetails {
            failed_session_count: count,
            ..detail.clone()
        }),
        None => {}
    }
}

/// Whether two failure details describe the same failure (everything but
/// the count is equal).
fn same_failure(a: &FailureDetails, b: &FailureDetails) -> bool {
    a.result_type == b.result_type
        && a.sending_mta_ip == b.sending_mta_ip
        && a.receiving_mx_hostname == b.receiving_mx_hostname
        && a.receiving_mx_helo == b.receiving_mx_helo
        && a.receiving_ip == b.receiving_ip
        && a.additional_information == b.additional_information
        && a.failure_reason_code == b.failure_reason_code
}

/// The stored form of a record's counts.
pub fn encode(policies: &[Policy]) -> Vec<u8> {
    serde_json::to_vec(policies).expect("report policies serialize")
}

pub fn decode(value: &[u8]) -> Result<Vec<Policy>, serde_json::Error> {
    serde_json::from_slice(value)
}

/// The change that adds `more` to the record of `key` as stored when the
/// commit applies it, so that flushes may commit in any order.
pub fn add_change(key: &CountKey, more: Vec<Policy>) -> Change {
    let name = key.domain.clone();
    Change::EditRecord {
        table: COUNTS,
        key: key.encode(),
        edit: RecordEdit::new(move |stored| {
            let mut policies = match stored.map(decode) {
                None => Vec::new(),
                Some(Ok(policies)) => policies,
                Some(Err(error)) => {
                    tracing::error!(
                        "tls-rpt: stored counts of {name} do not decode ({error}); starting again"
                    );
                    Vec::new()
                }
            };
            merge(&mut policies, more.clone());
            RecordUpdate::Put(encode(&policies))
        }),
    }
}

/// The change that deletes the record of `key` (reported, or given up).
pub fn delete_change(key: &CountKey) -> Change {
    Change::DeleteRecord {
        table: COUNTS,
        key: key.encode(),
    }
}

/// What [`due`] found.
#[derive(Debug, Default)]
pub struct Due {
    /// The counts of windows that are over, oldest window first.
    pub windows: Vec<(CountKey, Vec<Policy>)>,
    /// The deletions of records that do not decode (logged).
    pub undecodable: Vec<Change>,
}

/// Every stored record whose window is over at `now` (blocking).
pub fn due(spool: &Spool, now: SystemTime) -> Result<Due, SpoolError> {
    let mut found = Vec::new();
    let mut undecodable = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let start = match &after {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        let chunk = spool.records(COUNTS, start, Bound::Unbounded, CHUNK)?;
        for (raw_key, value) in &chunk {
            let decoded = CountKey::decode(raw_key)
                .ok_or_else(|| "malformed key".to_owned())
                .and_then(|key| Ok((key, decode(value).map_err(|error| error.to_string())?)));
            match decoded {
                Ok((key, policies)) if key.window.is_over(now) => found.push((key, policies)),
                Ok(_) => {}
                Err(reason) => {
                    tracing::error!(
                        "tls-rpt: a stored count record does not decode ({reason}); deleting it"
                    );
                    undecodable.push(Change::DeleteRecord {
                        table: COUNTS,
                        key: raw_key.clone(),
                    });
                }
            }
        }
        match chunk.last() {
            Some((key, _)) if chunk.len() == CHUNK => after = Some(key.clone()),
            _ => {
                return Ok(Due {
                    windows: found,
                    undecodable,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use mail_auth::report::tlsrpt::{PolicyType, ResultType};

    use super::*;

    fn sts(domain: &str, mode: &str) -> PolicyDetails {
        PolicyDetails {
            policy_type: PolicyType::Sts,
            policy_string: vec!["version: STSv1".into(), format!("mode: {mode}")],
            policy_domain: domain.into(),
            mx_host: vec!["mx.example.com".into()],
        }
    }

    fn failure(result_type: ResultType, host: &str) -> SessionResult {
        SessionResult::Failure(FailureDetails::new(result_type).with_receiving_mx_hostname(host))
    }

    #[test]
    fn windows_are_aligned_to_the_interval() {
        let day = Duration::from_secs(86_400);
        let noon = UNIX_EPOCH + Duration::from_secs(19_000 * 86_400 + 43_200);
        let window = Window::containing(noon, day);
        assert_eq!(window.start, 19_000 * 86_400);
        assert_eq!(window.end, 19_001 * 86_400);
        assert!(!window.is_over(noon));
        assert!(window.is_over(window.end_time()));
        let ten = Window::containing(
            UNIX_EPOCH + Duration::from_secs(1_234_567),
            Duration::from_secs(10),
        );
        assert_eq!((ten.start, ten.end), (1_234_560, 1_234_570));
    }

    #[test]
    fn keys_round_trip_and_sort_by_window() {
        let key = CountKey {
            window: Window { start: 20, end: 30 },
            domain: "example.com".into(),
        };
        assert_eq!(CountKey::decode(&key.encode()), Some(key.clone()));
        let earlier = CountKey {
            window: Window { start: 10, end: 20 },
            domain: "z.example".into(),
        };
        assert!(earlier.encode() < key.encode());
        assert_eq!(CountKey::decode(b"short"), None);
        assert_eq!(CountKey::decode(&[0; 16]), None);
    }

    #[test]
    fn sessions_add_up_per_policy_and_failure() {
        let mut policies = Vec::new();
        let enforce = sts("example.com", "enforce");
        add(&mut policies, &enforce, &SessionResult::Success);
        add(&mut policies, &enforce, &SessionResult::Success);
        add(
            &mut policies,
            &enforce,
            &failure(ResultType::CertificateExpired, "mx1.example.com"),
        );
        add(
            &mut policies,
            &enforce,
            &failure(ResultType::CertificateExpired, "mx1.example.com"),
        );
        add(
            &mut policies,
            &enforce,
            &failure(ResultType::StartTlsNotSupported, "mx2.example.com"),
        );
        let testing = sts("example.com", "testing");
        add(&mut policies, &testing, &SessionResult::Success);

        assert_eq!(policies.len(), 2);
        assert_eq!(policies[0].summary.total_success, 2);
        assert_eq!(policies[0].summary.total_failure, 3);
        let details = &policies[0].failure_details;
        assert_eq!(details.len(), 2);
        assert_eq!(details[0].result_type, ResultType::CertificateExpired);
        assert_eq!(details[0].failed_session_count, 2);
        assert_eq!(details[1].failed_session_count, 1);
        assert_eq!(policies[1].summary.total_success, 1);

        // A flush merges into what is stored the same way.
        let stored = decode(&encode(&policies)).unwrap();
        let mut merged = stored.clone();
        merge(&mut merged, stored);
        assert_eq!(merged[0].summary.total_success, 4);
        assert_eq!(merged[0].failure_details[0].failed_session_count, 4);
    }

    #[test]
    fn failure_details_and_policies_are_bounded() {
        let mut policies = Vec::new();
        let policy = sts("example.com", "enforce");
        for n in 0..MAX_FAILURE_DETAILS + 5 {
            add(
                &mut policies,
                &policy,
                &failure(ResultType::ValidationFailure, &format!("mx{n}.example.com")),
            );
        }
        assert_eq!(policies[0].failure_details.len(), MAX_FAILURE_DETAILS);
        assert_eq!(
            policies[0].summary.total_failure as usize,
            MAX_FAILURE_DETAILS + 5
        );
        for n in 0..MAX_POLICIES + 3 {
            add(
                &mut policies,
                &sts("example.com", &format!("m{n}")),
                &SessionResult::Success,
            );
        }
        assert_eq!(policies.len(), MAX_POLICIES);
    }
}
