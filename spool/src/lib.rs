//! relayq's durable message store: envelopes and bodies in redb, written by one committer
//! thread in group commits, so a message is on stable storage before it is acknowledged.
//!
//! Invariant: the spool knows nothing about SMTP, DNS or lanes. Per message it stores an
//! opaque envelope (the caller's encoding of sender, recipients and their state) and a body;
//! beside the messages, keyed records whose bytes it does not interpret either.
//!
//! Code map:
//! - `spool`: the [`Spool`] handle (open, store/apply through the committer, blocking reads);
//! - `committer`: the writer thread and its batching; `batch`: one group commit;
//! - `change`: [`Change`], what a caller asks to commit;
//! - `records`: [`RecordTable`], keyed records beside the messages (the caller's own durable
//!   state, committed with the messages);
//! - `body`: [`BodyWriter`], [`Body`], [`BodyReader`] and the `bodies/` directory;
//! - `record`: the framed, checksummed value formats (pure);
//! - `database`: tables, opening and repair, orphan body files;
//! - `id`: [`QueueId`] and its allocator; `options`, `stats`, `error`.

#![forbid(unsafe_code)]

mod batch;
mod body;
mod change;
mod committer;
mod compaction;
mod database;
mod error;
mod id;
mod options;
mod record;
mod records;
mod spool;
mod stats;

pub use body::{Body, BodyReader, BodyWriter};
pub use change::{Change, EnvelopeEdit};
pub use error::SpoolError;
pub use id::{ParseQueueIdError, QueueId};
pub use options::SpoolOptions;
pub use records::{RecordEdit, RecordTable, RecordUpdate, StoredRecord, prefix_end};
pub use spool::{Spool, Stored};
pub use stats::SpoolStats;

/// The pure value formats, for the fuzz targets in `fuzz/` (hidden, not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::record::{
        BodyRecord, Quarantined, RecordError, decode_body, decode_envelope, decode_quarantine,
        encode_envelope, encode_file_body, encode_inline_body, encode_quarantine,
    };
}
