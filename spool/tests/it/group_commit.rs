//! Concurrent stores share commits; a lone store is committed alone, without waiting.

use relayq_spool::Body;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_share_commits() {
    let (_dir, spool) = common::temp_spool();
    let tasks: Vec<_> = (0..200)
        .map(|n: u32| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let id = spool.allocate_id();
                let body = Body::from_bytes(vec![b'x'; 2_000]);
                spool.store(id, n.to_be_bytes().to_vec(), body).await
            })
        })
        .collect();
    let mut largest_batch = 0;
    for task in tasks {
        let stored = task.await.unwrap().unwrap();
        largest_batch = largest_batch.max(stored.batch_size);
    }
    let stats = spool.stats();
    assert_eq!(stats.messages_stored, 200);
    assert!(stats.commits < 200, "{stats:?}");
    assert!(largest_batch > 1);
    assert_eq!(spool.scan().unwrap().len(), 200);

    let lone = spool
        .store(
            spool.allocate_id(),
            Vec::new(),
            Body::from_bytes(Vec::new()),
        )
        .await
        .unwrap();
    assert_eq!(lone.batch_size, 1);
    assert_eq!(spool.stats().last_batch_size, 1);
    assert_eq!(spool.stats().commits, stats.commits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_respect_the_message_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = relayq_spool::SpoolOptions::new(dir.path());
    options.max_batch_messages = 8;
    let spool = relayq_spool::Spool::open(options).unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let id = spool.allocate_id();
                spool
                    .store(id, Vec::new(), Body::from_bytes(vec![0; 100]))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().batch_size <= 8);
    }
    assert!(spool.stats().commits >= 13);
}
