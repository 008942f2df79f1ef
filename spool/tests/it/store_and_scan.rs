//! Stored messages come back from scan, envelope and read_body; updates and removals stick.

use crate::common;
use crate::common::{body, content, read_all, temp_spool};
use relayq_spool::{Body, SpoolError};

#[tokio::test]
async fn store_then_scan_returns_every_message_in_id_order() {
    let (dir, spool) = temp_spool();
    let mut expected = Vec::new();
    for n in 0..10u8 {
        let id = spool.allocate_id();
        let envelope = format!("envelope {n}").into_bytes();
        let stored = spool
            .store(
                id,
                envelope.clone(),
                body(&spool, &content(1_000 + usize::from(n), n)),
            )
            .await
            .unwrap();
        assert_eq!(stored.id, id);
        assert_eq!(stored.batch_size, 1);
        expected.push((id, envelope));
    }
    assert_eq!(spool.scan().unwrap(), expected);
    for (n, (id, envelope)) in expected.iter().enumerate() {
        assert_eq!(spool.envelope(*id).unwrap().as_ref(), Some(envelope));
        let reader = spool.read_body(*id).unwrap();
        assert_eq!(reader.len(), 1_000 + n as u64);
        assert_eq!(read_all(reader), content(1_000 + n, n as u8));
    }

    // And after a restart.
    spool.close();
    drop(spool);
    let spool = common::open(dir.path());
    assert_eq!(spool.scan().unwrap(), expected);
    assert_eq!(spool.stats().commits, 0);
}

#[tokio::test]
async fn update_and_remove() {
    let (_dir, spool) = temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, b"v1".to_vec(), Body::from_bytes(b"hello\r\n".to_vec()))
        .await
        .unwrap();
    spool.update_envelope(id, b"v2".to_vec()).await.unwrap();
    assert_eq!(spool.envelope(id).unwrap(), Some(b"v2".to_vec()));
    assert_eq!(read_all(spool.read_body(id).unwrap()), b"hello\r\n");

    spool.remove(id).await.unwrap();
    assert_eq!(spool.envelope(id).unwrap(), None);
    assert!(spool.scan().unwrap().is_empty());
    assert!(matches!(spool.read_body(id), Err(SpoolError::NotFound(missing)) if missing == id));
    assert!(matches!(
        spool.remove(id).await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        spool.update_envelope(id, b"v3".to_vec()).await,
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_id_cannot_be_stored_twice() {
    let (_dir, spool) = temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, b"first".to_vec(), Body::from_bytes(b"1".to_vec()))
        .await
        .unwrap();
    let again = spool
        .store(id, b"second".to_vec(), Body::from_bytes(b"2".to_vec()))
        .await;
    assert!(matches!(again, Err(SpoolError::AlreadyExists(taken)) if taken == id));
    assert_eq!(spool.envelope(id).unwrap(), Some(b"first".to_vec()));
}

#[tokio::test]
async fn a_closed_spool_refuses_everything() {
    let (_dir, spool) = temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, b"kept".to_vec(), Body::from_bytes(Vec::new()))
        .await
        .unwrap();
    let other_handle = spool.clone();
    spool.close();
    let refused = other_handle
        .store(
            other_handle.allocate_id(),
            Vec::new(),
            Body::from_bytes(Vec::new()),
        )
        .await;
    assert!(matches!(refused, Err(SpoolError::Closed)));
    assert!(matches!(other_handle.scan(), Err(SpoolError::Closed)));
    assert!(matches!(other_handle.envelope(id), Err(SpoolError::Closed)));
    assert!(matches!(
        other_handle.quarantine(id, "test"),
        Err(SpoolError::Closed)
    ));
    assert!(SpoolError::Closed.is_transient());
    spool.close();
}
