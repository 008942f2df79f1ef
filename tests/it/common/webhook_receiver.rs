//! A webhook receiver for tests: an HTTP/1.1 server on 127.0.0.1 that keeps
//! every POST (headers and body) and answers with the status the test sets
//! (200 by default; another status makes relayq retry).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Post {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Post {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.json()["events"]
            .as_array()
            .expect("events array")
            .clone()
    }
}

pub struct Receiver {
    pub address: SocketAddr,
    status: Arc<AtomicU16>,
    posts: Arc<Mutex<Vec<Post>>>,
    /// Requests answered with something else than 2xx.
    refused: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let address = listener.local_addr().expect("address");
        let receiver = Receiver {
            address,
            status: Arc::new(AtomicU16::new(200)),
            posts: Arc::default(),
            refused: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let status = receiver.status.clone();
        let posts = receiver.posts.clone();
        let refused = receiver.refused.clone();
        let stop = receiver.stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let status = status.clone();
                let posts = posts.clone();
                let refused = refused.clone();
                std::thread::spawn(move || serve(stream, &status, &posts, &refused));
            }
        });
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/events", self.address)
    }

    /// The status later requests get (200: taken).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Posts answered 2xx so far (the ones relayq counts as taken).
    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    pub fn refused(&self) -> usize {
        *self.refused.lock().unwrap()
    }

    /// Every event taken so far, in the order received (with repeats, if
    /// relayq posted something twice).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.posts().iter().flat_map(Post::events).collect()
    }

    /// Waits until `count` distinct events (by `id`) were taken.
    pub fn wait_for_events(&self, count: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let events = distinct(&self.events());
            if events.len() >= count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} webhook events, got {}: {events:#?}",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `count` requests were refused.
    pub fn wait_for_refusals(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.refused() < count {
            assert!(Instant::now() < deadline, "expected {count} refused posts");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address);
    }
}

/// Events with repeats removed (the first of each `id`), in order.
pub fn distinct(events: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|event| seen.insert(event["id"].as_str().unwrap_or_default().to_owned()))
        .cloned()
        .collect()
}

fn serve(stream: TcpStream, status: &AtomicU16, posts: &Mutex<Vec<Post>>, refused: &Mutex<usize>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        if (200..300).contains(&code) {
            posts.lock().unwrap().push(Post {
                method,
                path,
                headers,
                body,
            });
        } else {
            *refused.lock().unwrap() += 1;
        }
        let answer = format!("HTTP/1.1 {code} Status\r\nContent-Length: 2\r\n\r\nok");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
