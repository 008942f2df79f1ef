//! The outbox: events waiting for a webhook, in the spool (a record table),
//! written in the same commit as the change they announce and deleted only
//! once the receiver took them.
//!
//! Keys are the webhook's 8-octet prefix (from its name) followed by the
//! table's append sequence, so one webhook's events are one key range, in
//! commit order. Reads and deletes are blocking spool calls: callers run
//! them on the blocking pool.

use std::ops::Bound;

use relayq_spool::{Change, RecordTable, Spool, SpoolError, StoredRecord, prefix_end};
use sha2::{Digest, Sha256};

/// The events of every webhook.
pub const OUTBOX: RecordTable = RecordTable::new("webhook_outbox");

/// Records read per blocking call when counting or dropping.
const CHUNK: usize = 4096;

/// Where one webhook's events live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    prefix: [u8; 8],
    /// The first key after the range.
    end: Vec<u8>,
}

impl Queue {
    /// A webhook's range: the first 8 octets of SHA-256 of its name, so a
    /// restart (or a reload) finds the same events under the same name.
    pub fn for_name(name: &str) -> Queue {
        let digest = Sha256::digest(name.as_bytes());
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&digest[..8]);
        // All 0xff is the one prefix without an end; nudge it (harmlessly:
        // the prefix only has to be stable and distinct).
        if prefix == [0xff; 8] {
            prefix[7] = 0xfe;
        }
        let end = prefix_end(&prefix).unwrap_or_else(|| unreachable!("prefix is not all 0xff"));
        Queue { prefix, end }
    }

    /// The change that appends `stored` (an encoded event) to this queue.
    pub fn append(&self, stored: Vec<u8>) -> Change {
        Change::AppendRecord {
            table: OUTBOX,
            prefix: self.prefix.to_vec(),
            value: stored,
        }
    }

    /// The first `limit` events, oldest first, after `after` if given.
    pub fn head(
        &self,
        spool: &Spool,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, SpoolError> {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included(&self.prefix[..]),
        };
        spool.records(OUTBOX, start, Bound::Excluded(&self.end), limit)
    }

    /// How many events wait (a walk over the range, in chunks).
    pub fn count(&self, spool: &Spool) -> Result<u64, SpoolError> {
        let mut count = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = self.head(spool, after.as_deref(), CHUNK)?;
            count += chunk.len() as u64;
            match chunk.last() {
                Some((key, _)) if chunk.len() == CHUNK => after = Some(key.clone()),
                _ => return Ok(count),
            }
        }
    }

    /// The change that deletes every event up to and including `last`.
    pub fn delete_through(&self, last: &[u8]) -> Change {
        let mut to = last.to_vec();
        to.push(0);
        Change::DeleteRecords {
            table: OUTBOX,
            from: self.prefix.to_vec(),
            to,
        }
    }

    /// The change that deletes the whole range (a webhook no longer configured).
    pub fn delete_all(&self) -> Change {
        Change::DeleteRecords {
            table: OUTBOX,
            from: self.prefix.to_vec(),
            to: self.end.clone(),
        }
    }

    /// Whether `key` is one of this queue's.
    pub fn holds(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
    }

    /// The append sequence number in `key`.
    pub fn sequence(key: &[u8]) -> u64 {
        key.last_chunk::<8>()
            .map_or(0, |tail| u64::from_be_bytes(*tail))
    }
}

/// Prefixes of every event in the outbox that no configured webhook owns:
/// what a webhook left behind when it was removed from the configuration.
pub fn orphans(spool: &Spool, owned: &[Queue]) -> Result<Vec<Queue>, SpoolError> {
    let mut found = Vec::new();
    let mut start: Vec<u8> = Vec::new();
    loop {
        let next = spool.records(
            OUTBOX,
            Bound::Included(start.as_slice()),
            Bound::Unbounded,
            1,
        )?;
        let Some((key, _)) = next.first() else {
            return Ok(found);
        };
        let Some(prefix) = key.first_chunk::<8>() else {
            return Ok(found);
        };
        let queue = Queue {
            prefix: *prefix,
            end: prefix_end(prefix).unwrap_or_default(),
        };
        if queue.end.is_empty() {
            return Ok(found);
        }
        start = queue.end.clone();
        if !owned.contains(&queue) {
            found.push(queue);
        }
    }
}
