//! An HTTPS receiver of TLS reports for tests: listens on port 443 of its
//! own 127.0.0.0/8 address with a certificate from the test CA (trusted by
//! the relay through `delivery.tls_ca_file`), keeps every request (method,
//! path, headers, body) and answers with the status the test sets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::policy_server::{acceptor, identity};
use super::webhook_receiver::Post;

/// Requests larger than this are cut off (a report is a few kilobytes).
const MAX_REQUEST: usize = 1024 * 1024;

pub struct ReportReceiver {
    requests: Arc<Mutex<Vec<Post>>>,
    status: Arc<AtomicU16>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ReportReceiver {
    /// Serves `https://HOST/…` on `ip`:443; answers 200 until told
    /// otherwise.
    pub fn start(ip: &str, host: &str) -> ReportReceiver {
        let address: SocketAddr = format!("{ip}:443").parse().expect("address");
        let listener = std::net::TcpListener::bind(address)
            .unwrap_or_else(|error| panic!("bind {address} (tests run as root): {error}"));
        listener.set_nonblocking(true).unwrap();
        let acceptor = acceptor(&identity(host));
        let requests: Arc<Mutex<Vec<Post>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let (stop, stopped) = oneshot::channel::<()>();
        let kept = requests.clone();
        let answer = status.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        let kept = kept.clone();
                        let answer = answer.clone();
                        tokio::spawn(async move {
                            let Ok(mut stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let reading =
                                tokio::time::timeout(Duration::from_secs(10), read(&mut stream));
                            let Ok(Some(post)) = reading.await else {
                                return;
                            };
                            kept.lock().unwrap().push(post);
                            let code = answer.load(Ordering::SeqCst);
                            let response = format!(
                                "HTTP/1.1 {code} Status\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                            );
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        ReportReceiver {
            requests,
            status,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The status later requests get.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Every request so far, answered or not.
    pub fn requests(&self) -> Vec<Post> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits for `count` requests.
    pub fn wait_for_requests(&self, count: usize, within: Duration) -> Vec<Post> {
        let deadline = Instant::now() + within;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} requests, got {}",
                requests.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ReportReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request: the head, then a body of its Content-Length.
async fn read(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Post> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || received.len() > MAX_REQUEST {
            return None;
        }
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split_whitespace();
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&buffer[..read]);
    }
    body.truncate(length);
    Some(Post {
        method,
        path,
        headers,
        body,
    })
}
