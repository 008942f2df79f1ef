//! A file left large by a burst that has since been delivered shrinks once the committer
//! has been idle for a while; the messages still queued survive it.

use std::time::{Duration, Instant};

use relayq_spool::{Body, Change};

use crate::common;

const BODY: usize = 100 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_spool_gives_freed_space_back() {
    let (dir, spool) = common::temp_spool();
    let file = dir.path().join("queue.redb");
    // 800 inline bodies of 100 KiB: about 80 MB, in batches of 50 per commit.
    let mut ids = Vec::new();
    for batch in 0..16u8 {
        let changes: Vec<Change> = (0..50)
            .map(|_| {
                let id = spool.allocate_id();
                ids.push(id);
                Change::Insert {
                    id,
                    envelope: b"envelope".to_vec(),
                    body: Body::from_bytes(vec![b'a' + batch % 26; BODY]),
                }
            })
            .collect();
        spool.apply(changes).await.unwrap();
    }
    let kept = ids[10];
    let removals = ids
        .iter()
        .filter(|&&id| id != kept)
        .map(|&id| Change::Remove { id })
        .collect();
    spool.apply(removals).await.unwrap();
    let peak = std::fs::metadata(&file).unwrap().len();
    assert!(peak > 64_000_000, "the burst made a large file: {peak}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut size = peak;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        size = std::fs::metadata(&file).unwrap().len();
        if size < peak / 4 {
            break;
        }
    }
    assert!(
        size < peak / 4,
        "compacted after 5 s idle: {peak} -> {size} bytes"
    );
    assert_eq!(spool.scan().unwrap(), vec![(kept, b"envelope".to_vec())]);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut spool.read_body(kept).unwrap(), &mut body).unwrap();
    assert_eq!(body, vec![b'a'; BODY]);
    // Still writable afterwards.
    let id = spool.allocate_id();
    spool
        .store(id, b"after".to_vec(), Body::from_bytes(b"x".to_vec()))
        .await
        .unwrap();
}
