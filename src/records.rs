//! Reading the spool's record tables from async code: one chunk per call,
//! on the blocking pool (the spool's reads block).

use std::ops::Bound;

use relayq_spool::{RecordTable, Spool, SpoolError, StoredRecord};

/// Up to `limit` records of `table` between `start` and `end`, in key order.
pub async fn chunk(
    spool: &Spool,
    table: RecordTable,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    limit: usize,
) -> Result<Vec<StoredRecord>, SpoolError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        spool.records(
            table,
            start.as_ref().map(Vec::as_slice),
            end.as_ref().map(Vec::as_slice),
            limit,
        )
    })
    .await
    .map_err(|error| SpoolError::Io(std::io::Error::other(error)))?
}

/// The chunk after `after` (from the table's start when `None`) to the end.
pub async fn chunk_after(
    spool: &Spool,
    table: RecordTable,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<StoredRecord>, SpoolError> {
    let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.to_vec()));
    chunk(spool, table, start, Bound::Unbounded, limit).await
}
