//! A record that does not verify is set aside in the quarantine table, never returned and
//! never a panic; the rest of the spool carries on.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use relayq_spool::{Body, QueueId, SpoolError};

use crate::common;

const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");

#[tokio::test]
async fn corrupt_envelopes_are_quarantined_and_the_rest_is_scanned() {
    let (dir, spool) = common::temp_spool();
    let mut ids = Vec::new();
    for n in 0..4u8 {
        let id = spool.allocate_id();
        spool
            .store(id, vec![n; 10], Body::from_bytes(vec![n; 100]))
            .await
            .unwrap();
        ids.push(id);
    }
    spool.close();
    drop(spool);

    // Damage one record's payload and plant one that is garbage from the first byte.
    let garbage = QueueId(ids[3].0 + 1);
    {
        let database = Database::open(dir.path().join("queue.redb")).unwrap();
        let txn = database.begin_write().unwrap();
        {
            let mut table = txn.open_table(ENVELOPES).unwrap();
            let mut damaged = table.get(ids[1].0).unwrap().unwrap().value().to_vec();
            *damaged.last_mut().unwrap() ^= 0xFF;
            table.insert(ids[1].0, damaged.as_slice()).unwrap();
            table.insert(garbage.0, &b"\x07not a record"[..]).unwrap();
        }
        txn.commit().unwrap();
    }

    let spool = common::open(dir.path());
    let scanned = common::stored_ids(&spool);
    assert_eq!(scanned, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(
        spool.scan().unwrap().len(),
        3,
        "quarantined records stay out"
    );
    assert!(spool.envelope(ids[1]).unwrap().is_none());
    assert!(matches!(
        spool.read_body(ids[1]),
        Err(SpoolError::NotFound(_))
    ));

    // The caller can quarantine what it cannot decode.
    spool
        .quarantine(ids[2], "envelope does not decode")
        .unwrap();
    assert!(matches!(
        spool.quarantine(ids[2], "again"),
        Err(SpoolError::NotFound(_))
    ));
    assert_eq!(spool.scan().unwrap().len(), 2);

    // A new id never collides with a quarantined one.
    assert!(spool.allocate_id() > garbage);
    spool.close();
    drop(spool);

    let database = Database::open(dir.path().join("queue.redb")).unwrap();
    let txn = database.begin_read().unwrap();
    let quarantine = txn.open_table(QUARANTINE).unwrap();
    let set_aside: Vec<u64> = quarantine
        .iter()
        .unwrap()
        .map(|entry| entry.unwrap().0.value())
        .collect();
    assert_eq!(set_aside, vec![ids[1].0, ids[2].0, garbage.0]);
}

#[tokio::test]
async fn a_corrupt_envelope_read_directly_is_an_error() {
    let (dir, spool) = common::temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, b"envelope".to_vec(), Body::from_bytes(b"body".to_vec()))
        .await
        .unwrap();
    spool.close();
    drop(spool);
    {
        let database = Database::open(dir.path().join("queue.redb")).unwrap();
        let txn = database.begin_write().unwrap();
        txn.open_table(ENVELOPES)
            .unwrap()
            .insert(id.0, &[2u8, 0, 0, 0, 0][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let spool = common::open(dir.path());
    let error = spool.envelope(id).unwrap_err();
    assert!(
        matches!(error, SpoolError::Corrupt { id: bad, .. } if bad == id),
        "{error}"
    );
    assert!(!error.is_transient());
}
