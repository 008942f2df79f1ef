//! One group commit: checks each request of a batch, writes the valid ones in a single write
//! transaction and commits it once.
//!
//! A request that cannot be applied (an update of a missing id, an insert of a taken id, a
//! body file that cannot be synced) is rejected before any of it is written, so it fails
//! alone; the rest of the batch commits. An error of the transaction itself fails the whole
//! batch, and nothing of it is committed.

use redb::{Database, ReadableTable, Table};

use crate::body::BodyDir;
use crate::change::{Change, Work};
use crate::database::{self, BODIES, ENVELOPES, META, META_LAST_ID, QUARANTINE};
use crate::id::IdAllocator;
use crate::record::{BodyRecord, decode_body, decode_envelope, encode_envelope, encode_quarantine};
use crate::records::{RecordTable, RecordTables};
use crate::{QueueId, SpoolError};

/// A request's work in the batch, and its rejection if it was not applied.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) work: Work,
    pub(crate) rejection: Option<SpoolError>,
}

/// What a written batch leaves for the committer to do.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// Whether a transaction was committed (not when every request was rejected).
    pub(crate) committed: bool,
    /// Body files of removed messages, to delete now that the commit is durable.
    pub(crate) unlink: Vec<QueueId>,
}

struct Tables<'txn> {
    envelopes: Table<'txn, u64, &'static [u8]>,
    bodies: Table<'txn, u64, &'static [u8]>,
    quarantine: Table<'txn, u64, &'static [u8]>,
}

/// Writes the batch in one transaction and commits it (durable when this returns `Ok`).
/// Rejected requests get their `rejection` set. On `Err` nothing of the batch is committed,
/// unless the commit itself failed part way, which redb cannot rule out; the committer then
/// checks after reopening.
pub(crate) fn write(
    database: &Database,
    dir: &BodyDir,
    ids: &IdAllocator,
    slots: &mut [Slot],
) -> Result<Committed, SpoolError> {
    let txn = database::begin_write(database)?;
    let mut committed = Committed::default();
    {
        let mut tables = Tables {
            envelopes: txn.open_table(ENVELOPES)?,
            bodies: txn.open_table(BODIES)?,
            quarantine: txn.open_table(QUARANTINE)?,
        };
        let mut records = RecordTables::new(&txn);
        let mut files_renamed = false;
        let mut accepted = 0;
        for slot in slots.iter_mut() {
            if let Err(rejection) = check(&slot.work, &tables, &mut records) {
                slot.rejection = Some(rejection);
                continue;
            }
            match persist_bodies(&mut slot.work, dir) {
                Ok(renamed) => files_renamed |= renamed,
                Err(rejection) => {
                    slot.rejection = Some(rejection);
                    continue;
                }
            }
            apply(&slot.work, &mut tables, &mut records, &mut committed.unlink)?;
            accepted += 1;
        }
        records.finish()?;
        if accepted == 0 {
            // Nothing to make durable: dropping the transaction aborts it.
            return Ok(committed);
        }
        if files_renamed {
            dir.sync()
                .map_err(|error| SpoolError::io(dir.path(), error))?;
        }
        // Every id allocated so far, stored or not, stays used after a restart.
        txn.open_table(META)?.insert(META_LAST_ID, ids.last())?;
    }
    txn.commit()?;
    committed.committed = true;
    Ok(committed)
}

/// Checks that every change of the request can be applied, in order, to the state the
/// transaction has reached (which includes the requests before it in this batch).
fn check(
    work: &Work,
    tables: &Tables<'_>,
    records: &mut RecordTables<'_>,
) -> Result<(), SpoolError> {
    // Ids this request has inserted (true) or removed (false) so far.
    let mut touched: Vec<(QueueId, bool)> = Vec::new();
    // Record keys this request has stored (`Some`) or deleted (`None`) so far, which an
    // `InsertRecord` after them sees. (Edits and range deletes are not followed: no caller
    // inserts a key it has edited in the same request.)
    let mut stored_records: Vec<RecordWrite<'_>> = Vec::new();
    let exists = |id: QueueId, touched: &[(QueueId, bool)]| -> Result<bool, SpoolError> {
        match touched
            .iter()
            .rev()
            .find(|(touched_id, _)| *touched_id == id)
        {
            Some(&(_, exists)) => Ok(exists),
            None => Ok(tables.envelopes.get(id.0)?.is_some()),
        }
    };
    match work {
        Work::Changes(changes) => {
            for change in changes {
                match change {
                    Change::Insert { id, .. } => {
                        if exists(*id, &touched)? || tables.quarantine.get(id.0)?.is_some() {
                            return Err(SpoolError::AlreadyExists(*id));
                        }
                        touched.push((*id, true));
                    }
                    Change::UpdateEnvelope { id, .. } | Change::EditEnvelope { id, .. } => {
                        if !exists(*id, &touched)? {
                            return Err(SpoolError::NotFound(*id));
                        }
                    }
                    Change::Remove { id } => {
                        if !exists(*id, &touched)? {
                            return Err(SpoolError::NotFound(*id));
                        }
                        touched.push((*id, false));
                    }
                    Change::InsertRecord { table, key, value } => {
                        let earlier =
                            stored_records
                                .iter()
                                .rev()
                                .find(|(stored_table, stored_key, _)| {
                                    stored_table == table && stored_key == key
                                });
                        let existing = match earlier {
                            Some((_, _, value)) => value.map(<[u8]>::to_vec),
                            None => records.get(*table, key)?,
                        };
                        if let Some(existing) = existing {
                            return Err(SpoolError::RecordExists {
                                table: table.name(),
                                existing,
                            });
                        }
                        stored_records.push((*table, key, Some(value)));
                    }
                    Change::PutRecord { table, key, value } => {
                        stored_records.push((*table, key, Some(value)));
                    }
                    Change::DeleteRecord { table, key } => {
                        stored_records.push((*table, key, None));
                    }
                    Change::EditRecord { .. }
                    | Change::DeleteRecords { .. }
                    | Change::AppendRecord { .. } => {}
                }
            }
        }
        Work::Quarantine { id, .. } => {
            if !exists(*id, &touched)? {
                return Err(SpoolError::NotFound(*id));
            }
        }
    }
    Ok(())
}

/// A record key a request has stored (`Some` value) or deleted (`None`), as its later
/// changes see it.
type RecordWrite<'a> = (RecordTable, &'a [u8], Option<&'a [u8]>);

/// Syncs the request's body files and gives them their stored names; returns whether any was
/// renamed (the directory then needs a sync before the commit).
fn persist_bodies(work: &mut Work, dir: &BodyDir) -> Result<bool, SpoolError> {
    let Work::Changes(changes) = work else {
        return Ok(false);
    };
    let mut renamed = false;
    for change in changes {
        if let Change::Insert { id, body, .. } = change {
            renamed |= body.persist(dir, *id).map_err(SpoolError::Io)?;
        }
    }
    Ok(renamed)
}

/// Writes a checked request. An error here is an error of the transaction.
fn apply(
    work: &Work,
    tables: &mut Tables<'_>,
    records: &mut RecordTables<'_>,
    unlink: &mut Vec<QueueId>,
) -> Result<(), SpoolError> {
    match work {
        Work::Changes(changes) => {
            for change in changes {
                match change {
                    Change::Insert { id, envelope, body } => {
                        tables
                            .envelopes
                            .insert(id.0, encode_envelope(envelope).as_slice())?;
                        tables.bodies.insert(id.0, body.record().as_slice())?;
                    }
                    Change::UpdateEnvelope { id, envelope } => {
                        tables
                            .envelopes
                            .insert(id.0, encode_envelope(envelope).as_slice())?;
                    }
                    Change::EditEnvelope { id, edit } => {
                        let edited = match tables.envelopes.get(id.0)? {
                            Some(stored) => match decode_envelope(stored.value()) {
                                Ok(envelope) => edit.apply(envelope),
                                // A damaged record is left for the reader to quarantine.
                                Err(_) => None,
                            },
                            None => None,
                        };
                        if let Some(envelope) = edited {
                            tables
                                .envelopes
                                .insert(id.0, encode_envelope(&envelope).as_slice())?;
                        }
                    }
                    Change::Remove { id } => {
                        tables.envelopes.remove(id.0)?;
                        if let Some(old) = tables.bodies.remove(id.0)?
                            && !matches!(decode_body(old.value()), Ok(BodyRecord::Inline(_)))
                        {
                            unlink.push(*id);
                        }
                    }
                    Change::PutRecord { table, key, value }
                    | Change::InsertRecord { table, key, value } => {
                        records.put(*table, key, value)?;
                    }
                    Change::EditRecord { table, key, edit } => records.edit(*table, key, edit)?,
                    Change::DeleteRecord { table, key } => records.delete(*table, key)?,
                    Change::DeleteRecords { table, from, to } => {
                        records.delete_range(*table, from, to)?;
                    }
                    Change::AppendRecord {
                        table,
                        prefix,
                        value,
                    } => records.append(*table, prefix, value)?,
                }
            }
        }
        Work::Quarantine { id, reason } => {
            let envelope = tables
                .envelopes
                .remove(id.0)?
                .map(|old| old.value().to_vec());
            let body = tables.bodies.remove(id.0)?.map(|old| old.value().to_vec());
            let value = encode_quarantine(reason, envelope.as_deref(), body.as_deref());
            tables.quarantine.insert(id.0, value.as_slice())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Body;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    fn insert(id: u64) -> Slot {
        slot(Work::Changes(vec![Change::Insert {
            id: QueueId(id),
            envelope: vec![1],
            body: Body::from_bytes(vec![2]),
        }]))
    }

    fn slot(work: Work) -> Slot {
        Slot {
            work,
            rejection: None,
        }
    }

    #[test]
    fn a_bad_request_fails_alone_and_later_requests_see_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = BodyDir::new(dir.path().join("bodies"));
        std::fs::create_dir_all(bodies.path()).unwrap();
        let database = database::open(dir.path()).unwrap();
        let ids = IdAllocator::new(0);
        let mut slots = vec![
            insert(1),
            slot(Work::Changes(vec![Change::UpdateEnvelope {
                id: QueueId(9),
                envelope: vec![],
            }])),
            insert(2),
            // Valid only because the insert before it in the batch was applied.
            slot(Work::Changes(vec![Change::Remove { id: QueueId(2) }])),
            insert(1),
            slot(Work::Quarantine {
                id: QueueId(1),
                reason: "test".to_owned(),
            }),
        ];
        write(&database, &bodies, &ids, &mut slots).unwrap();
        let rejected: Vec<Option<String>> = slots
            .iter()
            .map(|slot| slot.rejection.as_ref().map(ToString::to_string))
            .collect();
        assert_eq!(
            rejected,
            vec![
                None,
                Some(SpoolError::NotFound(QueueId(9)).to_string()),
                None,
                None,
                Some(SpoolError::AlreadyExists(QueueId(1)).to_string()),
                None,
            ]
        );
        let txn = database.begin_read().unwrap();
        assert_eq!(txn.open_table(ENVELOPES).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(BODIES).unwrap().len().unwrap(), 0);
        assert!(
            txn.open_table(QUARANTINE)
                .unwrap()
                .get(1)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn an_edit_applies_to_the_envelope_as_stored_then() {
        let dir = tempfile::tempdir().unwrap();
        let bodies = BodyDir::new(dir.path().join("bodies"));
        std::fs::create_dir_all(bodies.path()).unwrap();
        let database = database::open(dir.path()).unwrap();
        let ids = IdAllocator::new(0);
        let append = |byte: u8| {
            crate::change::EnvelopeEdit::new(move |stored: &[u8]| {
                let mut edited = stored.to_vec();
                edited.push(byte);
                Some(edited)
            })
        };
        let mut slots = vec![
            insert(1),
            slot(Work::Changes(vec![Change::EditEnvelope {
                id: QueueId(1),
                edit: append(7),
            }])),
            slot(Work::Changes(vec![Change::EditEnvelope {
                id: QueueId(1),
                edit: crate::change::EnvelopeEdit::new(|_| None),
            }])),
            slot(Work::Changes(vec![Change::EditEnvelope {
                id: QueueId(1),
                edit: append(8),
            }])),
            slot(Work::Changes(vec![Change::EditEnvelope {
                id: QueueId(5),
                edit: append(9),
            }])),
        ];
        write(&database, &bodies, &ids, &mut slots).unwrap();
        assert!(slots[..4].iter().all(|slot| slot.rejection.is_none()));
        assert_eq!(
            slots[4].rejection.as_ref().map(ToString::to_string),
            Some(SpoolError::NotFound(QueueId(5)).to_string())
        );
        let txn = database.begin_read().unwrap();
        let envelopes = txn.open_table(ENVELOPES).unwrap();
        let stored = envelopes.get(1).unwrap().unwrap();
        assert_eq!(decode_envelope(stored.value()).unwrap(), &[1, 7, 8]);
    }
}
