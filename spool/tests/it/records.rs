//! Keyed records: committed with messages or alone, conditional inserts, edits, range
//! deletes, appends in commit order, and all of it across a reopen.

use std::ops::Bound;

use relayq_spool::{
    Body, Change, RecordEdit, RecordTable, RecordUpdate, Spool, SpoolError, prefix_end,
};

use crate::common;

const KEYS: RecordTable = RecordTable::new("test_keys");
const LOG: RecordTable = RecordTable::new("test_log");

fn put(key: &[u8], value: &[u8]) -> Change {
    Change::PutRecord {
        table: KEYS,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn insert(key: &[u8], value: &[u8]) -> Change {
    Change::InsertRecord {
        table: KEYS,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

fn all(spool: &Spool, table: RecordTable) -> Vec<(Vec<u8>, Vec<u8>)> {
    spool
        .records(table, Bound::Unbounded, Bound::Unbounded, usize::MAX)
        .unwrap()
}

#[tokio::test]
async fn a_record_commits_with_its_message_or_not_at_all() {
    let (_dir, spool) = common::temp_spool();
    assert_eq!(spool.record(KEYS, b"k").unwrap(), None);
    assert_eq!(spool.record_count(KEYS).unwrap(), 0);
    let id = spool.allocate_id();
    spool
        .apply(vec![
            Change::Insert {
                id,
                envelope: b"e".to_vec(),
                body: Body::from_bytes(b"b".to_vec()),
            },
            put(b"k", b"v"),
        ])
        .await
        .unwrap();
    assert_eq!(spool.record(KEYS, b"k").unwrap(), Some(b"v".to_vec()));

    // The update of a missing message fails the request, and its record with it.
    let missing = spool.allocate_id();
    let failed = spool
        .apply(vec![
            put(b"other", b"v"),
            Change::UpdateEnvelope {
                id: missing,
                envelope: b"x".to_vec(),
            },
        ])
        .await;
    assert!(matches!(failed, Err(SpoolError::NotFound(_))));
    assert_eq!(spool.record(KEYS, b"other").unwrap(), None);
    assert_eq!(spool.record_count(KEYS).unwrap(), 1);
}

#[tokio::test]
async fn an_insert_of_a_taken_key_fails_with_the_stored_value() {
    let (_dir, spool) = common::temp_spool();
    spool.apply(vec![insert(b"key", b"first")]).await.unwrap();
    let id = spool.allocate_id();
    let again = spool
        .apply(vec![
            Change::Insert {
                id,
                envelope: b"e".to_vec(),
                body: Body::from_bytes(b"b".to_vec()),
            },
            insert(b"key", b"second"),
        ])
        .await;
    match again {
        Err(SpoolError::RecordExists { table, existing }) => {
            assert_eq!(table, KEYS.name());
            assert_eq!(existing, b"first");
        }
        other => panic!("expected RecordExists, got {other:?}"),
    }
    // Nothing of the refused request was stored: not the message, not the record.
    assert!(spool.scan().unwrap().is_empty());
    assert_eq!(spool.record(KEYS, b"key").unwrap(), Some(b"first".to_vec()));

    // Within one request, an insert sees the request's own earlier put and delete.
    let same_request = spool
        .apply(vec![put(b"fresh", b"1"), insert(b"fresh", b"2")])
        .await;
    assert!(matches!(
        same_request,
        Err(SpoolError::RecordExists { ref existing, .. }) if existing == b"1"
    ));
    spool
        .apply(vec![
            Change::DeleteRecord {
                table: KEYS,
                key: b"key".to_vec(),
            },
            insert(b"key", b"replaced"),
        ])
        .await
        .unwrap();
    assert_eq!(
        spool.record(KEYS, b"key").unwrap(),
        Some(b"replaced".to_vec())
    );
}

#[tokio::test]
async fn concurrent_inserts_of_one_key_store_exactly_one() {
    let (_dir, spool) = common::temp_spool();
    let mut tasks = Vec::new();
    for writer in 0..16u8 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            spool.apply(vec![insert(b"once", &[writer])]).await
        }));
    }
    let mut stored = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => stored.push(()),
            Err(SpoolError::RecordExists { existing, .. }) => refused.push(existing),
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(stored.len(), 1);
    assert_eq!(refused.len(), 15);
    let winner = spool.record(KEYS, b"once").unwrap().unwrap();
    assert!(refused.iter().all(|existing| *existing == winner));
}

#[tokio::test]
async fn edits_and_range_deletes_apply_to_the_stored_records() {
    let (_dir, spool) = common::temp_spool();
    let count = |key: &[u8]| Change::EditRecord {
        table: KEYS,
        key: key.to_vec(),
        edit: RecordEdit::new(|stored| {
            let next = stored.map_or(0, |value| value[0]) + 1;
            RecordUpdate::Put(vec![next])
        }),
    };
    spool
        .apply(vec![count(b"a"), count(b"a"), count(b"b")])
        .await
        .unwrap();
    spool.apply(vec![count(b"a")]).await.unwrap();
    assert_eq!(spool.record(KEYS, b"a").unwrap(), Some(vec![3]));
    spool
        .apply(vec![Change::EditRecord {
            table: KEYS,
            key: b"b".to_vec(),
            edit: RecordEdit::new(|_| RecordUpdate::Delete),
        }])
        .await
        .unwrap();
    assert_eq!(spool.record(KEYS, b"b").unwrap(), None);

    for key in [&b"p1"[..], b"p2", b"p3", b"q1"] {
        spool.apply(vec![put(key, b"x")]).await.unwrap();
    }
    spool
        .apply(vec![Change::DeleteRecords {
            table: KEYS,
            from: b"p".to_vec(),
            to: prefix_end(b"p").unwrap(),
        }])
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = all(&spool, KEYS).into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"q1".to_vec()]);
}

#[tokio::test]
async fn appends_follow_commit_order_and_survive_a_reopen() {
    let (dir, spool) = common::temp_spool();
    let append = |prefix: &[u8], value: &[u8]| Change::AppendRecord {
        table: LOG,
        prefix: prefix.to_vec(),
        value: value.to_vec(),
    };
    spool
        .apply(vec![append(b"x", b"1"), append(b"y", b"2")])
        .await
        .unwrap();
    spool.apply(vec![append(b"x", b"3")]).await.unwrap();
    let sequence = |key: &[u8]| u64::from_be_bytes(key[1..].try_into().unwrap());
    let stored = all(&spool, LOG);
    let order: Vec<(u8, u64, Vec<u8>)> = stored
        .iter()
        .map(|(key, value)| (key[0], sequence(key), value.clone()))
        .collect();
    assert_eq!(
        order,
        vec![
            (b'x', 1, b"1".to_vec()),
            (b'x', 3, b"3".to_vec()),
            (b'y', 2, b"2".to_vec()),
        ]
    );

    // One prefix's records, from a key on.
    let after_first = spool
        .records(
            LOG,
            Bound::Excluded(&stored[0].0),
            Bound::Excluded(&prefix_end(b"x").unwrap()),
            10,
        )
        .unwrap();
    assert_eq!(after_first, vec![stored[1].clone()]);

    // The sequence continues after a reopen, even once every record is deleted.
    spool
        .apply(vec![Change::DeleteRecords {
            table: LOG,
            from: Vec::new(),
            to: vec![0xff],
        }])
        .await
        .unwrap();
    spool.close();
    drop(spool);
    let spool = common::open(dir.path());
    assert_eq!(spool.record_count(LOG).unwrap(), 0);
    spool.apply(vec![append(b"x", b"4")]).await.unwrap();
    let stored = all(&spool, LOG);
    assert_eq!(stored.len(), 1);
    assert_eq!(sequence(&stored[0].0), 4);
}

#[tokio::test]
async fn store_with_commits_the_message_with_its_records_or_neither() {
    let (_dir, spool) = common::temp_spool();
    let first = spool.allocate_id();
    let stored = spool
        .store_with(
            first,
            b"e".to_vec(),
            Body::from_bytes(b"b".to_vec()),
            vec![insert(b"claim", b"first")],
        )
        .await
        .unwrap();
    assert_eq!((stored.id, stored.batch_size), (first, 1));
    let second = spool.allocate_id();
    let refused = spool
        .store_with(
            second,
            b"e".to_vec(),
            Body::from_bytes(b"b".to_vec()),
            vec![insert(b"claim", b"second")],
        )
        .await;
    assert!(matches!(
        refused,
        Err(SpoolError::RecordExists { ref existing, .. }) if existing == b"first"
    ));
    let ids: Vec<_> = spool
        .scan()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [first]);
}
