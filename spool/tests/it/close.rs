//! close() and dropping the last handle let the committer finish what is queued; what was
//! acknowledged is stored, what was refused is not.

use relayq_spool::{Body, SpoolError};

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_during_stores_loses_nothing_acknowledged() {
    let (dir, spool) = common::temp_spool();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let id = spool.allocate_id();
                let result = spool
                    .store(id, b"env".to_vec(), Body::from_bytes(vec![7; 1_000]))
                    .await;
                (id, result)
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let closer = spool.clone();
    tokio::task::spawn_blocking(move || closer.close())
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (_, Ok(stored)) => acknowledged.push(stored.id),
            (id, Err(SpoolError::Closed)) => refused.push(id),
            (id, Err(other)) => panic!("{id}: {other}"),
        }
    }
    drop(spool);

    let spool = common::open(dir.path());
    let stored = common::stored_ids(&spool);
    acknowledged.sort();
    assert_eq!(stored, acknowledged, "{} refused", refused.len());
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_database() {
    let (dir, spool) = common::temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, b"env".to_vec(), Body::from_bytes(b"body".to_vec()))
        .await
        .unwrap();
    let clone = spool.clone();
    drop(spool);
    assert!(
        clone.envelope(id).unwrap().is_some(),
        "a clone keeps it open"
    );
    drop(clone);
    let spool = common::open(dir.path());
    assert_eq!(spool.scan().unwrap(), vec![(id, b"env".to_vec())]);
}

#[test]
fn healthy_while_open_not_after_close() {
    let (_dir, spool) = common::temp_spool();
    assert!(spool.is_healthy());
    spool.close();
    assert!(!spool.is_healthy());
}
