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

    let first = read_until(&socket, "READY=1");
    assert_eq!(first.len(), 1, "READY=1 comes first: {first:?}");
    assert!(
        first[0].contains("STATUS=accepting mail; 0 messages queued at start"),
        "{first:?}"
    );
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
    read_until(&socket, "READY=1");
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
    read_until(&socket, "READY=1");
    let output = relay.reload();
    assert!(output.status.success(), "{output:?}");
    let reloading = read_until(&socket, "RELOADING=1");
    assert_eq!(reloading.len(), 1, "{reloading:?}");
    let ready = read_until(&socket, "READY=1");
    assert_eq!(ready.len(), 1, "READY=1 right after RELOADING=1: {ready:?}");
}
