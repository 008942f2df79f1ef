//! Date formats used on the wire and in output: RFC 5322 (headers) and
//! RFC 3339 (JSON, logs).

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

/// `Mon, 23 Nov 2026 09:01:56 +0000`, for Date: and Received: (RFC 5322 §3.3).
/// A time the format cannot express gives the Unix epoch.
pub fn rfc5322(when: SystemTime) -> String {
    date_time(when)
        .and_then(|date_time| date_time.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

/// `2026-11-23T09:01:56.123Z`. A time the format cannot express gives the
/// Unix epoch.
pub fn rfc3339(when: SystemTime) -> String {
    date_time(when)
        .and_then(|date_time| date_time.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// `when` in UTC, or `None` outside the years the `time` crate represents
/// (its `From<SystemTime>` panics there instead). Times come from stored
/// envelopes and configured durations, so they can be far off.
fn date_time(when: SystemTime) -> Option<OffsetDateTime> {
    let nanos = match when.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok()?,
        Err(before) => -i128::try_from(before.duration().as_nanos()).ok()?,
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats() {
        let when = UNIX_EPOCH + Duration::from_secs(1_795_424_516);
        assert_eq!(rfc5322(when), "Mon, 23 Nov 2026 09:01:56 +0000");
        assert_eq!(rfc3339(when), "2026-11-23T09:01:56Z");
    }

    /// Found by the `dsn` fuzz target: a time past the year 9999 (an
    /// arrival time or retry deadline far in the future) panicked inside
    /// the `time` crate's conversion from `SystemTime`.
    #[test]
    fn times_out_of_range_give_the_epoch() {
        let far = UNIX_EPOCH + Duration::from_millis(u64::MAX);
        assert_eq!(rfc5322(far), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc3339(far), "1970-01-01T00:00:00Z");
        let before = UNIX_EPOCH - Duration::from_secs(400 * 365 * 24 * 3600 * 100);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00Z");
    }
}
