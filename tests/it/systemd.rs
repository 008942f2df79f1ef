//! systemd integration: with `NOTIFY_SOCKET` set (as `Type=notify` does),
//! relayq says READY=1 once it listens, pings the watchdog when
//! `WATCHDOG_USEC` asks for it, says RELOADING=1 then READY=1 around a
//! reload, and STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::{TestRelay, WAIT};

/// Reads notifications until one contains `wanted`; returns all read.
fn read_until(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(length) = socket.recv(&mut buffer) else {
            break;
        };
        let datagram = String::from_utf8_lossy(&buffer[..length]).into_owned();
        let done = datagram.lines().any(|line| line == wanted);
        seen.push(datagram);
        if done {
            return seen;
        }
    }
    panic!("no {wanted:?} among the notifications {seen:?}");
}

/// Reads until `READY=1` and then until the status that says the queue is
/// rebuilt (`queued` messages found), which comes with `READY=1` or after it;
/// returns all read.
fn read_until_started(socket: &UnixDatagram, queued: usize) -> Vec<String> {
    let rebuilt = format!("STATUS=accepting mail; {queued} messages queued at start");
    let mut seen = read_until(socket, "READY=1");
    if !seen
        .last()
        .is_some_and(|ready| ready.lines().any(|line| line == rebuilt))
    {
        seen.extend(read_until(socket, &rebuilt));
    }
    seen
}

/// A datagram socket in a temporary directory, as systemd's NOTIFY_SOCKET.
fn notify_socket() -> (tempfile::TempDir, UnixDatagram) {
    let directory = tempfile::tempdir().unwrap();
    let socket = UnixDatagram::bind(directory.path().join("notify")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    (directory, socket)
}

#[test]
fn ready_watchdog_and_stopping_are_notified() {
    let (directory, socket) = notify_socket();
    let path = directory.path().join("notify");
    let mut relay = TestRelay::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    let first = read_until_started(&socket, 0);
    assert!(
        first[0].contains("READY=1"),
        "READY=1 comes first: {first:?}"
    );
    assert!(first[0].contains("STATUS=accepting mail; "), "{first:?}");
    // Every 100 ms (half of WATCHDOG_USEC) while the spool is healthy.
    let pings = read_until(&socket, "WATCHDOG=1");
    assert_eq!(pings, ["WATCHDOG=1"]);
    read_until(&socket, "WATCHDOG=1");

    relay.stop();
    let last = read_until(&socket, "STOPPING=1");
    assert!(last.last().unwrap().contains("STATUS=stopping"), "{last:?}");
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let (directory, socket) = notify_socket();
    let path = directory.path().join("notify");
    let _relay = TestRelay::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    read_until_started(&socket, 0);
    let mut buffer = [0u8; 256];
    assert!(
        socket.recv(&mut buffer).is_err(),
        "no WATCHDOG=1 when WATCHDOG_PID names another process"
    );
}

#[test]
fn a_reload_is_notified_as_reloading_then_ready() {
    let (directory, socket) = notify_socket();
    let path = directory.path().join("notify");
    let relay = TestRelay::start_with_env("", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    read_until_started(&socket, 0);
    let output = relay.reload();
    assert!(output.status.success(), "{output:?}");
    let reloading = read_until(&socket, "RELOADING=1");
    assert_eq!(reloading.len(), 1, "{reloading:?}");
    let ready = read_until(&socket, "READY=1");
    assert_eq!(ready.len(), 1, "READY=1 right after RELOADING=1: {ready:?}");
}

/// With a full spool READY=1 comes once the listeners are open, before or
/// while the queue is rebuilt; `STATUS=` then says how far the rebuild is,
/// and at its end how many messages it found.
#[test]
fn ready_comes_before_the_end_of_a_rebuild_and_status_follows_it() {
    const STORED: usize = 5_000;
    let (directory, socket) = notify_socket();
    let path = directory.path().join("notify");
    let mut relay = TestRelay::start_with_env("", &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    read_until_started(&socket, 0);
    relay.stop();
    read_until(&socket, "STOPPING=1");
    crate::queue_rebuild::store_messages(&relay.spool_path(), STORED, |_| true);

    relay.launch_listening();
    let started = read_until_started(&socket, STORED);
    assert!(started[0].contains("READY=1"), "{started:?}");
    for status in started.iter().skip(1) {
        assert!(
            status.starts_with("STATUS=accepting mail; queue is being rebuilt: ")
                || status.starts_with("STATUS=accepting mail; 5000 messages queued at start"),
            "{started:?}"
        );
    }
}
