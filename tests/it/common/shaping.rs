//! Output control test helpers: `relayq queue … --json`, the metrics
//! endpoint, bounded polling, and a private `redis-server` on a spare
//! loopback port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestRelay, WAIT};

/// `relayq queue ARGS --json`, which must succeed, parsed.
pub fn queue_json(relay: &TestRelay, args: &[&str]) -> serde_json::Value {
    try_queue_json(relay, args).unwrap_or_else(|error| panic!("relayq queue {args:?}: {error}"))
}

/// `relayq queue ARGS --json` parsed, or its error output (e.g. `show` of
/// a message that has just left the queue).
pub fn try_queue_json(relay: &TestRelay, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut args = args.to_vec();
    args.push("--json");
    let output = super::queue(relay, &args);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|error| error.to_string())
}

/// `relayq queue ARGS` (text), which must succeed.
pub use super::queue_ok as queue_text;

/// Polls `condition` every 50 ms until it holds, failing after `within`.
pub fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting until {what}");
}

/// The metrics endpoint's address, from the "metrics on ADDR" log line.
pub fn metrics_address(relay: &TestRelay) -> SocketAddr {
    let line = relay.wait_for_log("metrics on ");
    let rest = line.split("metrics on ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The body of `GET /metrics`.
pub fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The value of the sample line starting with `series` (name and labels).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A `redis-server` of our own on 127.0.0.1 and a spare port, without
/// persistence; stopped on drop. Starting it fails the test (no skip):
/// CI installs Debian's `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a spare port")
            .port();
        RedisServer::start_on(port)
    }

    /// Starts (or restarts) on a given port.
    pub fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server (CI installs it; apt-get install redis-server): {error}")
            });
        let server = RedisServer {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends one command; returns the first line of the reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send to Redis");
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            stream.read_exact(&mut byte).expect("Redis reply");
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    }

    /// Freezes the server (SIGSTOP): connections stay open and new ones
    /// are accepted by the kernel, but nothing is answered, as with a hung
    /// server.
    pub fn freeze(&self) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args(["-STOP", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -STOP failed");
    }

    /// Stops the server (as if it crashed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether, in every window between two of `times`, at most `rate` × T + 1
/// starts happened (T in seconds, with `slack` added for timer jitter).
/// Returns the first offending window as (starts, seconds).
pub fn rate_violation(times: &[Instant], rate: f64, slack: Duration) -> Option<(usize, f64)> {
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let window = (times[j] - times[i] + slack).as_secs_f64();
            let starts = j - i + 1;
            if starts as f64 > rate * window + 1.0 {
                return Some((starts, window));
            }
        }
    }
    None
}
