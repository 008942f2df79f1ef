//! Bodies above the threshold live in their own file, which the spool owns and cleans up.

use crate::common;
use crate::common::{body, body_files, content, read_all, temp_spool};
use relayq_spool::{Spool, SpoolError, SpoolOptions};

const LARGE: usize = 3 * 1024 * 1024 + 17;

#[tokio::test]
async fn a_large_body_goes_to_a_file_and_comes_back_byte_for_byte() {
    let (dir, spool) = temp_spool();
    let bytes = content(LARGE, 3);
    let id = spool.allocate_id();
    let large = body(&spool, &bytes);
    assert_eq!(large.len(), LARGE as u64);
    assert_eq!(body_files(dir.path()).len(), 1, "spilled while written");
    spool.store(id, b"env".to_vec(), large).await.unwrap();
    assert_eq!(
        body_files(dir.path()),
        vec![dir.path().join("bodies").join(id.to_string())]
    );

    let reader = spool.read_body(id).unwrap();
    assert_eq!(reader.len(), LARGE as u64);
    assert!(read_all(reader) == bytes, "body differs");

    spool.remove(id).await.unwrap();
    assert!(
        body_files(dir.path()).is_empty(),
        "body file left after remove"
    );
}

#[tokio::test]
async fn a_body_at_the_threshold_stays_inline() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SpoolOptions::new(dir.path());
    options.large_body_threshold = 1_000;
    let spool = Spool::open(options).unwrap();
    let id = spool.allocate_id();
    spool
        .store(id, Vec::new(), body(&spool, &content(1_000, 1)))
        .await
        .unwrap();
    assert!(body_files(dir.path()).is_empty());
    let mut writer = spool.body_writer();
    writer.write_all(&content(1_000, 1)).unwrap();
    writer.write_all(b"!").unwrap();
    assert_eq!(body_files(dir.path()).len(), 1);
}

#[test]
fn unfinished_or_unstored_bodies_leave_no_file() {
    let (dir, spool) = temp_spool();
    let mut writer = spool.body_writer();
    writer.write_all(&content(LARGE, 1)).unwrap();
    assert_eq!(body_files(dir.path()).len(), 1);
    drop(writer);
    assert!(
        body_files(dir.path()).is_empty(),
        "dropped writer left its file"
    );

    let finished = body(&spool, &content(LARGE, 2));
    assert_eq!(body_files(dir.path()).len(), 1);
    drop(finished);
    assert!(
        body_files(dir.path()).is_empty(),
        "dropped body left its file"
    );
}

#[tokio::test]
async fn a_failed_insert_deletes_its_file() {
    let (dir, spool) = temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, Vec::new(), body(&spool, b"small"))
        .await
        .unwrap();
    let duplicate = spool
        .store(id, Vec::new(), body(&spool, &content(LARGE, 4)))
        .await;
    assert!(matches!(duplicate, Err(SpoolError::AlreadyExists(_))));
    assert!(body_files(dir.path()).is_empty());
    assert_eq!(common::read_all(spool.read_body(id).unwrap()), b"small");
}

#[tokio::test]
async fn open_deletes_body_files_no_record_owns() {
    let (dir, spool) = temp_spool();
    let kept = spool.allocate_id();
    spool
        .store(kept, Vec::new(), body(&spool, &content(LARGE, 5)))
        .await
        .unwrap();
    let gone = spool.allocate_id();
    spool.close();
    drop(spool);

    let bodies = dir.path().join("bodies");
    std::fs::write(bodies.join("7.tmp"), b"a crashed session's body").unwrap();
    std::fs::write(bodies.join(gone.to_string()), b"a removed message's body").unwrap();
    std::fs::write(bodies.join("README"), b"not the spool's").unwrap();

    let spool = common::open(dir.path());
    assert_eq!(
        body_files(dir.path()),
        vec![bodies.join(kept.to_string()), bodies.join("README")]
    );
    assert_eq!(read_all(spool.read_body(kept).unwrap()), content(LARGE, 5));
}

#[tokio::test]
async fn a_damaged_body_file_is_reported() {
    let (dir, spool) = temp_spool();
    let id = spool.allocate_id();
    spool
        .store(id, Vec::new(), body(&spool, &content(LARGE, 6)))
        .await
        .unwrap();
    let path = dir.path().join("bodies").join(id.to_string());

    let mut damaged = content(LARGE, 6);
    damaged[LARGE / 2] ^= 0x20;
    std::fs::write(&path, &damaged).unwrap();
    let mut reader = spool.read_body(id).unwrap();
    let error = std::io::Read::read_to_end(&mut reader, &mut Vec::new()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);

    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        spool.read_body(id),
        Err(SpoolError::Corrupt { .. })
    ));

    std::fs::remove_file(&path).unwrap();
    let missing = spool.read_body(id);
    assert!(matches!(missing, Err(SpoolError::Corrupt { id: bad, .. }) if bad == id));
}

#[tokio::test]
async fn a_prefix_goes_in_front_of_a_file_or_inline_body() {
    let (dir, spool) = temp_spool();
    let prefix = b"Signature: computed from the rest\r\n";
    for size in [100, LARGE] {
        let bytes = content(size, 5);
        let mut writer = spool.body_writer();
        writer.write_all(&bytes).unwrap();
        let prefixed = writer.finish_with_prefix(prefix).unwrap();
        assert_eq!(prefixed.len(), (prefix.len() + size) as u64);
        let id = spool.allocate_id();
        spool.store(id, Vec::new(), prefixed).await.unwrap();
        let files = body_files(dir.path());
        assert_eq!(
            files.len(),
            usize::from(size == LARGE),
            "only the copy is left"
        );
        // The reader checks the recorded checksum of a file body at its end.
        let mut expected = prefix.to_vec();
        expected.extend_from_slice(&bytes);
        assert!(
            read_all(spool.read_body(id).unwrap()) == expected,
            "body differs"
        );
        spool.remove(id).await.unwrap();
    }
}
