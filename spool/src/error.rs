//! The spool's error type, and which of its errors are worth retrying.

use std::fmt::Display;
use std::io;
use std::path::Path;

use crate::QueueId;

/// Everything the spool can fail with.
///
/// The edge (the SMTP session) classifies these once: [`SpoolError::is_transient`] errors
/// become a 4xx reply ("try again later"), the others are programming or data errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed. The message names the path it was about.
    #[error("spool I/O: {0}")]
    Io(io::Error),
    /// The database refused or failed an operation (including a failed commit).
    #[error("spool database: {0}")]
    Database(String),
    /// A stored record does not verify (format version or checksum), or its body is missing.
    #[error("spool record {id} is corrupt: {reason}")]
    Corrupt { id: QueueId, reason: String },
    /// No message is stored under this id.
    #[error("no message {0} in the spool")]
    NotFound(QueueId),
    /// An insert named an id that is already stored (or quarantined). Ids come from
    /// `Spool::allocate_id` and are never reused, so this is a caller bug.
    #[error("message {0} is already in the spool")]
    AlreadyExists(QueueId),
    /// An `InsertRecord` named a key that is already stored; `existing` is the stored value.
    #[error("a record with this key is already in table {table}")]
    RecordExists {
        table: &'static str,
        existing: Vec<u8>,
    },
    /// The spool was closed; nothing more is accepted.
    #[error("the spool is closed")]
    Closed,
}

impl SpoolError {
    /// Whether the same request may succeed later (disk full, I/O error, database trouble,
    /// shutting down), as opposed to a request that is wrong in itself.
    pub fn is_transient(&self) -> bool {
        match self {
            SpoolError::Io(_) | SpoolError::Database(_) | SpoolError::Closed => true,
            SpoolError::Corrupt { .. }
            | SpoolError::NotFound(_)
            | SpoolError::AlreadyExists(_)
            | SpoolError::RecordExists { .. } => false,
        }
    }

    /// An I/O error whose message names the path it happened on; the error kind is kept.
    pub(crate) fn io(path: &Path, error: io::Error) -> SpoolError {
        SpoolError::Io(io::Error::new(
            error.kind(),
            format!("{}: {error}", path.display()),
        ))
    }

    pub(crate) fn database(context: &str, error: impl Display) -> SpoolError {
        SpoolError::Database(format!("{context}: {error}"))
    }

    /// A copy of this error for another caller of the same failed commit (`io::Error` is not
    /// `Clone`; the kind and the message are kept).
    pub(crate) fn duplicate(&self) -> SpoolError {
        match self {
            SpoolError::Io(error) => {
                SpoolError::Io(io::Error::new(error.kind(), error.to_string()))
            }
            SpoolError::Database(message) => SpoolError::Database(message.clone()),
            SpoolError::Corrupt { id, reason } => SpoolError::Corrupt {
                id: *id,
                reason: reason.clone(),
            },
            SpoolError::NotFound(id) => SpoolError::NotFound(*id),
            SpoolError::AlreadyExists(id) => SpoolError::AlreadyExists(*id),
            SpoolError::RecordExists { table, existing } => SpoolError::RecordExists {
                table,
                existing: existing.clone(),
            },
            SpoolError::Closed => SpoolError::Closed,
        }
    }
}

macro_rules! from_redb {
    ($($error:ty => $context:literal),* $(,)?) => {
        $(impl From<$error> for SpoolError {
            fn from(error: $error) -> SpoolError {
                SpoolError::database($context, error)
            }
        })*
    };
}

from_redb! {
    redb::DatabaseError => "open",
    redb::TransactionError => "begin transaction",
    redb::TableError => "open table",
    redb::StorageError => "storage",
    redb::CommitError => "commit",
}
