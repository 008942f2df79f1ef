//! Date formats used on the wire and in output: RFC 5322 (headers) and
//! RFC 3339 (JSON, logs).

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

/// `Mon, 23 Nov 2026 09:01:56 +0000`, for Date: and Received: (RFC 5322 §3.3).
pub fn rfc5322(when: SystemTime) -> String {
    OffsetDateTime::from(when)
        .format(&Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned())
}

/// `2026-11-23T09:01:56.123Z`.
pub fn rfc3339(when: SystemTime) -> String {
    OffsetDateTime::from(when)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
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
}
