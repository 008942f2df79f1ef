//! The changes a caller asks the committer to make, alone or several in one atomic commit.

use crate::records::{RecordEdit, RecordTable};
use crate::{Body, QueueId};

/// One change to the spool. A `Vec<Change>` given to [`crate::Spool::apply`] is committed
/// atomically: all of it or none of it.
#[derive(Debug)]
pub enum Change {
    /// Store a new message under an id from [`crate::Spool::allocate_id`]. Fails with
    /// `AlreadyExists` if the id is taken.
    Insert {
        id: QueueId,
        envelope: Vec<u8>,
        body: Body,
    },
    /// Replace a stored message's envelope. Fails with `NotFound` if there is none.
    UpdateEnvelope { id: QueueId, envelope: Vec<u8> },
    /// Rewrite a stored message's envelope from its bytes as stored when the commit applies
    /// it (not as the caller last saw them), so edits that commute can land in any order.
    /// `None` from the edit leaves the envelope as it is. Fails with `NotFound` if there is
    /// none.
    EditEnvelope { id: QueueId, edit: EnvelopeEdit },
    /// Delete a message, its body and its body file. Fails with `NotFound` if there is none.
    Remove { id: QueueId },
    /// Store a record, replacing any stored under the key.
    PutRecord {
        table: RecordTable,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Store a record under a key that must be free. Fails with `RecordExists`, carrying the
    /// stored value, if it is taken (by an earlier commit, or by an earlier request of the
    /// same batch).
    InsertRecord {
        table: RecordTable,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Rewrite a record from its value as stored when the commit applies it.
    EditRecord {
        table: RecordTable,
        key: Vec<u8>,
        edit: RecordEdit,
    },
    /// Delete a record; nothing happens if there is none.
    DeleteRecord { table: RecordTable, key: Vec<u8> },
    /// Delete every record with `from <= key < to`.
    DeleteRecords {
        table: RecordTable,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Store a record under `prefix` followed by the table's next sequence number (8 bytes,
    /// big-endian), assigned at commit: the keys of a table's appends follow commit order.
    AppendRecord {
        table: RecordTable,
        prefix: Vec<u8>,
        value: Vec<u8>,
    },
}

/// The function of a [`Change::EditEnvelope`]: stored envelope bytes in, new bytes out (or
/// `None`: unchanged). It runs on the committer thread inside the write transaction, so it
/// must be quick and must not block.
pub struct EnvelopeEdit(Box<EditFn>);

type EditFn = dyn Fn(&[u8]) -> Option<Vec<u8>> + Send;

impl EnvelopeEdit {
    pub fn new(edit: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> EnvelopeEdit {
        EnvelopeEdit(Box::new(edit))
    }

    pub(crate) fn apply(&self, stored: &[u8]) -> Option<Vec<u8>> {
        (self.0)(stored)
    }
}

impl std::fmt::Debug for EnvelopeEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvelopeEdit")
    }
}

/// What one request asks of the committer.
#[derive(Debug)]
pub(crate) enum Work {
    Changes(Vec<Change>),
    /// Move a message's records, as they are, to the quarantine table.
    Quarantine {
        id: QueueId,
        reason: String,
    },
}

impl Work {
    /// Bytes this work adds to a commit, for the batch byte cap.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Work::Changes(changes) => changes
                .iter()
                .map(|change| match change {
                    Change::Insert { envelope, body, .. } => envelope.len() + body.inline_len(),
                    Change::UpdateEnvelope { envelope, .. } => envelope.len(),
                    Change::PutRecord { key, value, .. }
                    | Change::InsertRecord { key, value, .. } => key.len() + value.len(),
                    Change::AppendRecord { prefix, value, .. } => prefix.len() + 8 + value.len(),
                    Change::EditEnvelope { .. }
                    | Change::Remove { .. }
                    | Change::EditRecord { .. }
                    | Change::DeleteRecord { .. }
                    | Change::DeleteRecords { .. } => 0,
                })
                .sum(),
            Work::Quarantine { .. } => 0,
        }
    }

    /// How many messages this work stores.
    pub(crate) fn inserts(&self) -> usize {
        match self {
            Work::Changes(changes) => changes
                .iter()
                .filter(|change| matches!(change, Change::Insert { .. }))
                .count(),
            Work::Quarantine { .. } => 0,
        }
    }

    /// Settles the bodies of this work's inserts once the commit's outcome is known: a body
    /// whose message is stored keeps its file; any other body is dropped, deleting its file.
    pub(crate) fn settle_bodies(self, is_stored: impl Fn(QueueId) -> bool) {
        let Work::Changes(changes) = self else { return };
        for change in changes {
            if let Change::Insert { id, body, .. } = change
                && body.is_file()
                && is_stored(id)
            {
                body.keep();
            }
        }
    }
}
