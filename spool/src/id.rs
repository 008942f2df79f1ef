//! Queue ids: their text form, and the allocator that keeps them unique across restarts.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The id of one queued message. Allocated from the clock (microseconds since the Unix
/// epoch), so ids sort by arrival, and never reused, not even across restarts.
///
/// Shown as 14 uppercase hex digits, zero padded (`0005F3A91C2B7E`), the form used in
/// `250 queued as …`, in logs and on the command line.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:014X}", self.0)
    }
}

/// The text was not 1 to 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id (1 to 16 hex digits): {0:?}")]
pub struct ParseQueueIdError(String);

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    /// Accepts 1 to 16 hex digits in either case and nothing else (no sign, no `0x`, no
    /// spaces).
    fn from_str(text: &str) -> Result<QueueId, ParseQueueIdError> {
        let well_formed =
            (1..=16).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_hexdigit());
        if !well_formed {
            return Err(ParseQueueIdError(text.to_owned()));
        }
        u64::from_str_radix(text, 16)
            .map(QueueId)
            .map_err(|_| ParseQueueIdError(text.to_owned()))
    }
}

/// Hands out queue ids: each one is above the last one used (in this process or persisted by
/// an earlier one) and no earlier than the clock, so ids are unique even if the clock steps
/// back.
#[derive(Debug)]
pub(crate) struct IdAllocator {
    last: AtomicU64,
}

impl IdAllocator {
    /// `last_used` is the highest id any earlier process persisted.
    pub(crate) fn new(last_used: u64) -> IdAllocator {
        IdAllocator {
            last: AtomicU64::new(last_used),
        }
    }

    pub(crate) fn allocate(&self) -> QueueId {
        self.allocate_at(now_micros())
    }

    fn allocate_at(&self, now: u64) -> QueueId {
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = last.saturating_add(1).max(now);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return QueueId(next),
                Err(current) => last = current,
            }
        }
    }

    /// The highest id handed out so far (or persisted before this process started). The
    /// committer persists it with every commit.
    pub(crate) fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_fourteen_uppercase_hex_digits() {
        assert_eq!(QueueId(0x5F3A91C2B7E).to_string(), "0005F3A91C2B7E");
        assert_eq!(QueueId(0).to_string(), "00000000000000");
        assert_eq!(QueueId(u64::MAX).to_string(), "FFFFFFFFFFFFFFFF");
    }

    #[test]
    fn parses_what_it_displays_in_either_case() {
        let id = QueueId(0x5F3A91C2B7E);
        assert_eq!(id.to_string().parse::<QueueId>(), Ok(id));
        assert_eq!("0005f3a91c2b7e".parse::<QueueId>(), Ok(id));
        assert_eq!("a".parse::<QueueId>(), Ok(QueueId(10)));
        assert_eq!("FFFFFFFFFFFFFFFF".parse::<QueueId>(), Ok(QueueId(u64::MAX)));
    }

    #[test]
    fn rejects_anything_else() {
        for text in [
            "",
            "+1",
            "-1",
            "0x1F",
            " 1F",
            "1F ",
            "G1",
            "10000000000000000",
            "é",
        ] {
            assert!(text.parse::<QueueId>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn allocation_follows_the_clock_but_never_repeats() {
        let ids = IdAllocator::new(100);
        assert_eq!(ids.allocate_at(50), QueueId(101));
        assert_eq!(ids.allocate_at(50), QueueId(102));
        assert_eq!(ids.allocate_at(1_000), QueueId(1_000));
        assert_eq!(ids.allocate_at(999), QueueId(1_001));
        assert_eq!(ids.last(), 1_001);
    }

    #[test]
    fn allocation_starts_at_the_clock() {
        let ids = IdAllocator::new(0);
        let id = ids.allocate();
        assert!(id.0 > 1_600_000_000_000_000, "{id} is not a recent time");
    }
}
