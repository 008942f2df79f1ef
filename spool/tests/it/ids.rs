//! Queue ids are unique and increasing, within a process and across restarts.

use std::collections::HashSet;

use redb::{Database, ReadableTable, TableDefinition};
use relayq_spool::{Body, QueueId};

use crate::common;

#[tokio::test]
async fn ids_increase_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut previous = QueueId(0);
    for round in 0..3 {
        let spool = common::open(dir.path());
        for _ in 0..3 {
            let id = spool.allocate_id();
            assert!(id > previous, "round {round}: {id} after {previous}");
            spool
                .store(id, Vec::new(), Body::from_bytes(Vec::new()))
                .await
                .unwrap();
            previous = id;
        }
        spool.close();
    }
}

#[tokio::test]
async fn the_persisted_counter_wins_over_the_clock() {
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let spool = common::open(dir.path());
    let stored = spool.allocate_id();
    spool
        .store(stored, Vec::new(), Body::from_bytes(Vec::new()))
        .await
        .unwrap();
    let allocated_later = spool.allocate_id();
    spool.remove(stored).await.unwrap();
    spool.close();
    drop(spool);

    // Every commit persists the highest id allocated so far, stored or not.
    let future = {
        let database = Database::open(dir.path().join("queue.redb")).unwrap();
        let txn = database.begin_write().unwrap();
        let future = {
            let mut meta = txn.open_table(META).unwrap();
            let last = meta.get("last_id").unwrap().unwrap().value();
            assert!(last >= allocated_later.0, "{last} < {allocated_later}");
            // As if an earlier process had run with a clock far ahead.
            let future = last + 3_600_000_000_000;
            meta.insert("last_id", future).unwrap();
            future
        };
        txn.commit().unwrap();
        future
    };
    let spool = common::open(dir.path());
    assert_eq!(spool.allocate_id(), QueueId(future + 1));
}

#[test]
fn ids_from_many_threads_are_unique() {
    let (_dir, spool) = common::temp_spool();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || (0..10_000).map(|_| spool.allocate_id()).collect::<Vec<_>>())
        })
        .collect();
    let mut seen = HashSet::new();
    for handle in handles {
        let ids = handle.join().unwrap();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        for id in ids {
            assert!(seen.insert(id), "{id} allocated twice");
        }
    }
}

/// What the daemon reads right after the open, as the boundary of its
/// rebuild: every stored message is at or below the last allocated id, and
/// ids allocated later are above it; the count is the stored messages.
#[tokio::test]
async fn the_last_allocated_id_bounds_every_stored_message() {
    let dir = tempfile::tempdir().unwrap();
    let spool = common::open(dir.path());
    assert_eq!(spool.message_count().unwrap(), 0);
    let mut stored = Vec::new();
    for _ in 0..3 {
        let id = spool.allocate_id();
        spool
            .store(id, Vec::new(), Body::from_bytes(Vec::new()))
            .await
            .unwrap();
        stored.push(id);
    }
    spool.close();
    drop(spool);

    let spool = common::open(dir.path());
    let boundary = spool.last_allocated_id();
    assert_eq!(spool.message_count().unwrap(), 3);
    assert!(stored.iter().all(|id| *id <= boundary));
    assert!(spool.allocate_id() > boundary);
    spool.close();
}
