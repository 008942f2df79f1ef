//! apply() commits several changes atomically, and a bad request fails only itself.

use relayq_spool::{Body, Change, SpoolError};

use crate::common;

#[tokio::test]
async fn insert_and_update_commit_together() {
    let (_dir, spool) = common::temp_spool();
    let original = spool.allocate_id();
    spool
        .store(
            original,
            b"pending".to_vec(),
            Body::from_bytes(b"msg".to_vec()),
        )
        .await
        .unwrap();
    let bounce = spool.allocate_id();
    spool
        .apply(vec![
            Change::UpdateEnvelope {
                id: original,
                envelope: b"bounced".to_vec(),
            },
            Change::Insert {
                id: bounce,
                envelope: b"to the sender".to_vec(),
                body: Body::from_bytes(b"delivery failed".to_vec()),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        spool.scan().unwrap(),
        vec![
            (original, b"bounced".to_vec()),
            (bounce, b"to the sender".to_vec())
        ]
    );
    assert_eq!(spool.stats().commits, 2);
}

#[tokio::test]
async fn one_bad_change_fails_the_whole_apply() {
    let (dir, spool) = common::temp_spool();
    let missing = spool.allocate_id();
    let bounce = spool.allocate_id();
    let result = spool
        .apply(vec![
            Change::Insert {
                id: bounce,
                envelope: b"bounce".to_vec(),
                body: common::body(&spool, &common::content(1 << 20, 9)),
            },
            Change::UpdateEnvelope {
                id: missing,
                envelope: b"x".to_vec(),
            },
        ])
        .await;
    assert!(matches!(result, Err(SpoolError::NotFound(id)) if id == missing));
    assert!(spool.scan().unwrap().is_empty());
    assert!(common::body_files(dir.path()).is_empty());
}

#[tokio::test]
async fn insert_then_update_then_remove_in_one_apply() {
    let (_dir, spool) = common::temp_spool();
    let id = spool.allocate_id();
    spool
        .apply(vec![
            Change::Insert {
                id,
                envelope: b"a".to_vec(),
                body: Body::from_bytes(Vec::new()),
            },
            Change::UpdateEnvelope {
                id,
                envelope: b"b".to_vec(),
            },
            Change::Remove { id },
        ])
        .await
        .unwrap();
    assert!(spool.scan().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_update_does_not_fail_its_batch() {
    let (_dir, spool) = common::temp_spool();
    for _round in 0..5 {
        let commits_before = spool.stats().commits;
        let mut tasks = Vec::new();
        for n in 0..40u8 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                if n % 10 == 5 {
                    let missing = spool.allocate_id();
                    let result = spool.update_envelope(missing, vec![n]).await;
                    assert!(matches!(result, Err(SpoolError::NotFound(_))), "{result:?}");
                    false
                } else {
                    let id = spool.allocate_id();
                    spool
                        .store(id, vec![n], Body::from_bytes(vec![n; 500]))
                        .await
                        .unwrap();
                    true
                }
            }));
        }
        let mut stored = 0;
        for task in tasks {
            stored += usize::from(task.await.unwrap());
        }
        assert_eq!(stored, 36);
        assert!(spool.stats().commits - commits_before < 40);
    }
    assert_eq!(spool.scan().unwrap().len(), 5 * 36);
}
