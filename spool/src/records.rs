//! Keyed records beside the messages: tables of the caller's own durable state (an outbox of
//! events, a list of addresses, keys with a time index, counters), written by the same
//! committer and in the same transactions as the messages, so a state change and the records
//! it implies are committed together or not at all.
//!
//! The spool gives the bytes no meaning: a table maps byte keys, ordered bytewise, to byte
//! values. Values are framed and checksummed like envelopes (`record`), so a damaged value is
//! detected when read. Appends get their key from a per-table sequence number assigned at
//! commit, so the keys of a table's appends follow commit order.

use std::collections::HashMap;
use std::ops::Bound;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::SpoolError;
use crate::database::META;
use crate::record::{decode_envelope, encode_envelope};

/// A table of keyed records, named by the caller. The name is the database's table name: it
/// must not be one of the spool's own (`envelopes`, `bodies`, `quarantine`, `meta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordTable(&'static str);

impl RecordTable {
    pub const fn new(name: &'static str) -> RecordTable {
        RecordTable(name)
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    pub(crate) fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.0)
    }

    /// The `meta` key of this table's append sequence.
    fn sequence_key(self) -> String {
        format!("sequence:{}", self.0)
    }
}

/// What a [`RecordEdit`] does with the record it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordUpdate {
    /// Leave the record as it is (or absent).
    Keep,
    Put(Vec<u8>),
    Delete,
}

/// The function of a [`crate::Change::EditRecord`]: the stored value (or `None`) in, what to
/// do out. It runs on the committer thread inside the write transaction: quick, no blocking.
pub struct RecordEdit(Box<EditFn>);

type EditFn = dyn Fn(Option<&[u8]>) -> RecordUpdate + Send;

impl RecordEdit {
    pub fn new(edit: impl Fn(Option<&[u8]>) -> RecordUpdate + Send + 'static) -> RecordEdit {
        RecordEdit(Box::new(edit))
    }

    fn apply(&self, stored: Option<&[u8]>) -> RecordUpdate {
        (self.0)(stored)
    }
}

impl std::fmt::Debug for RecordEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordEdit")
    }
}

/// A record as read: its key and its value.
pub type StoredRecord = (Vec<u8>, Vec<u8>);

type RawTable<'txn> = Table<'txn, &'static [u8], &'static [u8]>;

/// The record tables one write transaction has opened, and the append sequences it has
/// advanced (written back to `meta` before the commit).
pub(crate) struct RecordTables<'txn> {
    txn: &'txn WriteTransaction,
    open: Vec<(RecordTable, RawTable<'txn>)>,
    sequences: HashMap<RecordTable, u64>,
}

impl<'txn> RecordTables<'txn> {
    pub(crate) fn new(txn: &'txn WriteTransaction) -> RecordTables<'txn> {
        RecordTables {
            txn,
            open: Vec::new(),
            sequences: HashMap::new(),
        }
    }

    fn table(&mut self, table: RecordTable) -> Result<&mut RawTable<'txn>, SpoolError> {
        let index = match self.open.iter().position(|(open, _)| *open == table) {
            Some(index) => index,
            None => {
                let opened = self.txn.open_table(table.definition())?;
                self.open.push((table, opened));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[index].1)
    }

    /// The stored value under `key`, unframed; a value that does not verify reads as absent
    /// (and is logged), so that it can be replaced.
    pub(crate) fn get(
        &mut self,
        table: RecordTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, SpoolError> {
        let stored = self.table(table)?.get(key)?;
        Ok(stored.and_then(|value| verified(table, key, value.value()).map(<[u8]>::to_vec)))
    }

    pub(crate) fn put(
        &mut self,
        table: RecordTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), SpoolError> {
        self.table(table)?
            .insert(key, encode_envelope(value).as_slice())?;
        Ok(())
    }

    pub(crate) fn delete(&mut self, table: RecordTable, key: &[u8]) -> Result<(), SpoolError> {
        self.table(table)?.remove(key)?;
        Ok(())
    }

    pub(crate) fn edit(
        &mut self,
        table: RecordTable,
        key: &[u8],
        edit: &RecordEdit,
    ) -> Result<(), SpoolError> {
        let stored = self.get(table, key)?;
        match edit.apply(stored.as_deref()) {
            RecordUpdate::Keep => Ok(()),
            RecordUpdate::Put(value) => self.put(table, key, &value),
            RecordUpdate::Delete => self.delete(table, key),
        }
    }

    /// Deletes every record with `from <= key < to`.
    pub(crate) fn delete_range(
        &mut self,
        table: RecordTable,
        from: &[u8],
        to: &[u8],
    ) -> Result<(), SpoolError> {
        if from >= to {
            return Ok(());
        }
        self.table(table)?
            .retain_in::<&[u8], _>(from..to, |_, _| false)?;
        Ok(())
    }

    /// Stores `value` under `prefix` followed by the table's next sequence number (8 bytes,
    /// big-endian, so keys sort in append order).
    pub(crate) fn append(
        &mut self,
        table: RecordTable,
        prefix: &[u8],
        value: &[u8],
    ) -> Result<(), SpoolError> {
        let next = match self.sequences.get(&table) {
            Some(last) => last + 1,
            None => {
                let stored = self
                    .txn
                    .open_table(META)?
                    .get(table.sequence_key().as_str())?
                    .map_or(0, |last| last.value());
                stored + 1
            }
        };
        self.sequences.insert(table, next);
        let mut key = Vec::with_capacity(prefix.len() + 8);
        key.extend_from_slice(prefix);
        key.extend_from_slice(&next.to_be_bytes());
        self.put(table, &key, value)
    }

    /// Writes the advanced sequences back to `meta`.
    pub(crate) fn finish(self) -> Result<(), SpoolError> {
        if self.sequences.is_empty() {
            return Ok(());
        }
        drop(self.open);
        let mut meta = self.txn.open_table(META)?;
        for (table, last) in self.sequences {
            meta.insert(table.sequence_key().as_str(), last)?;
        }
        Ok(())
    }
}

/// A stored value's payload, or `None` (logged) when it does not verify.
pub(crate) fn verified<'a>(table: RecordTable, key: &[u8], value: &'a [u8]) -> Option<&'a [u8]> {
    match decode_envelope(value) {
        Ok(payload) => Some(payload),
        Err(error) => {
            tracing::error!(
                table = table.name(),
                key = %String::from_utf8_lossy(key),
                %error,
                "spool record does not verify; ignoring it"
            );
            None
        }
    }
}

/// The bounds of a scan, as owned keys.
pub(crate) fn bounds(start: Bound<&[u8]>, end: Bound<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec))
}

/// The first key after every key that starts with `prefix` (for a scan of one prefix), or
/// `None` when there is none (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
