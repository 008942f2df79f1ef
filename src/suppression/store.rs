//! The suppression list in the spool: the changes that add and remove
//! entries (and queue them for the fleet's stream), and the reads of the
//! table: the load at start, one entry, the stream position.

use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use relayq_spool::{Change, Spool, SpoolError};

use super::entry::Entry;
use super::set::{Mark, Set};
use super::{ENTRIES, Loaded, META, OUTBOX, READ_CHUNK};

/// `META` key: this relay's id in the fleet's stream.
pub const RELAY_ID: &[u8] = b"relay_id";
/// `META` key: the id of the last stream entry applied.
pub const STREAM_POSITION: &[u8] = b"stream_position";

/// What an outbox record asks the publisher to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Add(Entry),
    Remove(String),
}

const OUTBOX_ADD: u8 = b'+';
const OUTBOX_REMOVE: u8 = b'-';

/// Adds the changes that store `entry` (replacing any entry of its
/// address), and with `publish` queue it for the stream.
pub fn put(changes: &mut Vec<Change>, entry: &Entry, publish: bool) {
    let value = entry.encode();
    if publish {
        let mut record = Vec::with_capacity(3 + entry.address.len() + value.len());
        record.push(OUTBOX_ADD);
        record.extend_from_slice(&(entry.address.len() as u16).to_be_bytes());
        record.extend_from_slice(entry.address.as_bytes());
        record.extend_from_slice(&value);
        changes.push(Change::AppendRecord {
            table: OUTBOX,
            prefix: Vec::new(),
            value: record,
        });
    }
    changes.push(Change::PutRecord {
        table: ENTRIES,
        key: entry.address.as_bytes().to_vec(),
        value,
    });
}

/// The outbox record of the removal of (normalised) `address`.
pub fn outbox_remove(address: &str) -> Change {
    let mut record = Vec::with_capacity(1 + address.len());
    record.push(OUTBOX_REMOVE);
    record.extend_from_slice(address.as_bytes());
    Change::AppendRecord {
        table: OUTBOX,
        prefix: Vec::new(),
        value: record,
    }
}

/// An outbox record read back; `None` (logged) if it is damaged.
pub fn published(record: &[u8]) -> Option<Published> {
    let decoded = match record.split_first() {
        Some((&OUTBOX_ADD, rest)) if rest.len() >= 2 => {
            let length = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let rest = &rest[2..];
            (rest.len() >= length)
                .then(|| Entry::decode(&rest[..length], &rest[length..]).ok())
                .flatten()
                .map(Published::Add)
        }
        Some((&OUTBOX_REMOVE, address)) => std::str::from_utf8(address)
            .ok()
            .map(|address| Published::Remove(address.to_owned())),
        _ => None,
    };
    if decoded.is_none() {
        tracing::error!("suppression outbox: a damaged record; not published");
    }
    decoded
}

/// Seconds since the epoch as the set keeps them (saturating in 2106).
pub fn since_seconds(time: SystemTime) -> u32 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u32::try_from(since.as_secs()).unwrap_or(u32::MAX)
    })
}

/// A stored record as an entry; `None` (logged) if it does not decode.
pub fn decoded(key: &[u8], value: &[u8]) -> Option<Entry> {
    match Entry::decode(key, value) {
        Ok(entry) => Some(entry),
        Err(error) => {
            tracing::error!(
                "suppression entry {}: {error}; ignoring it",
                String::from_utf8_lossy(key)
            );
            None
        }
    }
}

/// The entry of a normalised address (blocking).
pub fn get(spool: &Spool, address: &str) -> Result<Option<Entry>, SpoolError> {
    Ok(spool
        .record(ENTRIES, address.as_bytes())?
        .and_then(|value| decoded(address.as_bytes(), &value)))
}

/// The last stream id applied, if any (blocking).
pub fn stream_position(spool: &Spool) -> Result<Option<String>, SpoolError> {
    Ok(spool
        .record(META, STREAM_POSITION)?
        .and_then(|value| String::from_utf8(value).ok()))
}

/// Reads the whole table into a new set, a chunk per read transaction, and
/// this relay's fleet id (empty when there is none yet). Blocking.
pub fn load(spool: &Spool) -> Result<Loaded, SpoolError> {
    let set = Set::new();
    set.reserve(usize::try_from(spool.record_count(ENTRIES)?).unwrap_or(usize::MAX));
    let mut unreadable = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let start = match &after {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        let chunk = spool.records(ENTRIES, start, Bound::Unbounded, READ_CHUNK)?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, value) in &chunk {
            match Entry::decode_mark(value) {
                Ok((time, class)) => set.insert(
                    set.key_of_normalized(key),
                    Mark::new(since_seconds(time), class),
                ),
                Err(error) => {
                    unreadable += 1;
                    tracing::error!(
                        "suppression entry {}: {error}; ignoring it",
                        String::from_utf8_lossy(key)
                    );
                }
            }
        }
    }
    let relay_id = spool
        .record(META, RELAY_ID)?
        .and_then(|value| String::from_utf8(value).ok())
        .unwrap_or_default();
    Ok(Loaded {
        set,
        relay_id,
        unreadable,
    })
}

/// A new fleet id: 64 random bits in hex (the keys of `RandomState` come
/// from the operating system's random source).
pub fn new_relay_id() -> String {
    let random = RandomState::new().hash_one(std::process::id());
    format!("{random:016x}")
}
