//! A spool whose process died without closing it is repaired at the next open, and keeps
//! every message it acknowledged.

use std::path::Path;
use std::process::{Command, Stdio};

use relayq_spool::QueueId;

use crate::common;

/// Set in the child process: the spool directory to fill before aborting.
const CHILD_DIR: &str = "RELAYQ_SPOOL_TEST_CRASH_DIR";
const MESSAGES: u64 = 400;

fn body_of(id: QueueId) -> Vec<u8> {
    // Every 50th body is larger than the inline threshold and goes to a file.
    let len = if id.0.is_multiple_of(50) {
        300_000
    } else {
        2_500
    };
    common::content(len, id.0 as u8)
}

#[test]
fn a_spool_left_open_by_a_crash_is_repaired_with_everything_it_acknowledged() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        fill_and_abort(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::a_spool_left_open_by_a_crash_is_repaired_with_everything_it_acknowledged",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child was meant to abort");
    let mut acknowledged: Vec<QueueId> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("stored "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(acknowledged.len() as u64, MESSAGES);
    acknowledged.sort();

    let file = dir.path().join("queue.redb");
    assert!(needs_repair(&file), "the child closed the database");
    let spool = common::open(dir.path());
    assert_eq!(common::stored_ids(&spool), acknowledged);
    for &id in &acknowledged {
        assert_eq!(
            spool.envelope(id).unwrap().unwrap(),
            id.to_string().into_bytes()
        );
        assert_eq!(common::read_all(spool.read_body(id).unwrap()), body_of(id));
    }
    spool.close();
    drop(spool);
    assert!(
        !needs_repair(&file),
        "closed after the repair, yet not clean"
    );
}

/// Whether opening `file` would repair it (the open is declined, the file left as it is).
fn needs_repair(file: &Path) -> bool {
    match redb::Builder::new()
        .set_repair_callback(|session| session.abort())
        .create(file)
    {
        Ok(_) => false,
        Err(redb::DatabaseError::RepairAborted) => true,
        Err(other) => panic!("{}: {other}", file.display()),
    }
}

/// The child: stores MESSAGES messages, prints each id once its store is acknowledged, and
/// aborts with the database open.
fn fill_and_abort(dir: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let spool = common::open(dir);
    runtime.block_on(async {
        for _ in 0..MESSAGES / 20 {
            let stores: Vec<_> = (0..20)
                .map(|_| {
                    let spool = spool.clone();
                    tokio::spawn(async move {
                        let id = spool.allocate_id();
                        let body = common::body(&spool, &body_of(id));
                        spool
                            .store(id, id.to_string().into_bytes(), body)
                            .await
                            .unwrap();
                        id
                    })
                })
                .collect();
            for store in stores {
                println!("stored {}", store.await.unwrap());
            }
        }
    });
    std::process::abort();
}
