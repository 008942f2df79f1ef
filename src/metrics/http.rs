//! The metrics endpoint: a minimal HTTP/1.1 responder for `GET /metrics`
//! (Prometheus text) and `GET /healthz`. One request per connection, the
//! request head capped in size and in time, connections capped in number;
//! everything else is 404 (or 405 for another method on a known path).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use relayq_spool::Spool;

use super::health::{self, SpoolHealth};
use super::text::{CONTENT_TYPE, render};
use super::{DestinationConnections, Metrics};
use crate::queue::Queue;
use crate::storage::FreeSpace;

/// Largest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time for a client to send its request head, and separately to take the
/// response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// What the endpoint reads to answer.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub queue: Arc<Queue>,
    pub destinations: DestinationConnections,
    pub spool: Spool,
    pub free_space: FreeSpace,
    pub shutdown: CancellationToken,
}

impl Endpoint {
    /// Healthy: the SMTP listeners are up and not shutting down, the spool
    /// takes writes (committer running, database open: see
    /// `Spool::is_healthy`), and its file system has `spool.min_free_space`
    /// (below it new mail is refused).
    pub fn is_healthy(&self) -> bool {
        self.metrics.listeners_up()
            && !self.shutdown.is_cancelled()
            && self.spool.is_healthy()
            && self.free_space.is_sufficient()
    }

    fn respond(&self, request: &Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/metrics") => {
                let mut text = render(
                    &self.metrics,
                    &self.queue,
                    (self.destinations)(),
                    SystemTime::now(),
                );
                health::render(
                    &mut text,
                    &SpoolHealth {
                        takes_writes: self.spool.is_healthy(),
                        free_bytes: self.free_space.available().ok(),
                        min_free_bytes: self.free_space.minimum(),
                    },
                );
                Response::ok(CONTENT_TYPE, text)
            }
            ("GET", "/healthz") if self.is_healthy() => {
                Response::ok("text/plain; charset=utf-8", "ok\n".to_owned())
            }
            ("GET", "/healthz") => Response::status(503, "Service Unavailable", "unhealthy\n"),
            (_, "/metrics" | "/healthz") => {
                Response::status(405, "Method Not Allowed", "use GET\n")
            }
            _ => Response::status(404, "Not Found", "not found\n"),
        }
    }
}

/// Binds the endpoint; a failure names the address.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))
}

/// Serves scrapes until `endpoint.shutdown`.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>, tracker: TaskTracker) {
    let limit_connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = limit_connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = endpoint.shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = endpoint.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!("metrics accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tracker.spawn(async move {
            if let Err(error) = answer(stream, &endpoint).await {
                tracing::debug!("metrics request failed: {error}");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let head = match tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let response = match head {
        Head::Complete(bytes) => match parse_request(&bytes) {
            Some(request) => endpoint.respond(&request),
            None => Response::status(400, "Bad Request", "bad request\n"),
        },
        Head::TooLarge => Response::status(431, "Request Header Fields Too Large", "too large\n"),
        Head::Closed => return Ok(()),
    };
    let bytes = response.encode();
    match tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(written) => written,
        Err(_) => Ok(()),
    }
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(Head::Closed);
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find_end_of_head(&head) {
            head.truncate(end);
            return Ok(Head::Complete(head));
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

fn find_end_of_head(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"\r\n\r\n")
}

#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    /// Without the query string.
    path: String,
}

/// The request line (`GET /metrics HTTP/1.1`); headers are not needed.
fn parse_request(head: &[u8]) -> Option<Request> {
    let head = std::str::from_utf8(head).ok()?;
    let line = head.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

struct Response {
    code: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn ok(content_type: &'static str, body: String) -> Response {
        Response {
            code: 200,
            reason: "OK",
            content_type,
            body,
        }
    }

    fn status(code: u16, reason: &'static str, body: &str) -> Response {
        Response {
            code,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.code,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.code == 405 {
            bytes.push_str("Allow: GET\r\n");
        }
        bytes.push_str("\r\n");
        bytes.push_str(&self.body);
        bytes.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> (Endpoint, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(relayq_spool::SpoolOptions::new(dir.path().join("spool"))).unwrap();
        let endpoint = Endpoint {
            metrics: Arc::new(Metrics::new()),
            queue: Arc::new(Queue::default()),
            destinations: Arc::new(Vec::new),
            spool,
            free_space: FreeSpace::new(dir.path().to_owned(), 0),
            shutdown: CancellationToken::new(),
        };
        (endpoint, dir)
    }

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn request_line_parsing() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a"),
            Some(request("GET", "/metrics"))
        );
        assert_eq!(parse_request(b"GET /metrics"), None);
        assert_eq!(parse_request(b"GET /metrics SMTP/1.0"), None);
        assert_eq!(parse_request(b"\xff\xfe"), None);
    }

    #[test]
    fn routes() {
        let (endpoint, _dir) = endpoint();
        assert_eq!(endpoint.respond(&request("GET", "/nope")).code, 404);
        assert_eq!(endpoint.respond(&request("POST", "/metrics")).code, 405);
        let metrics = endpoint.respond(&request("GET", "/metrics"));
        assert_eq!(metrics.code, 200);
        assert!(
            metrics
                .content_type
                .starts_with("text/plain; version=0.0.4")
        );
    }

    #[test]
    fn healthy_once_listeners_are_up_while_the_spool_is_open() {
        let (endpoint, _dir) = endpoint();
        assert_eq!(endpoint.respond(&request("GET", "/healthz")).code, 503);
        endpoint.metrics.set_listeners_up();
        assert_eq!(endpoint.respond(&request("GET", "/healthz")).code, 200);
        endpoint.spool.close();
        assert_eq!(endpoint.respond(&request("GET", "/healthz")).code, 503);
    }

    #[test]
    fn unhealthy_while_shutting_down() {
        let (endpoint, _dir) = endpoint();
        endpoint.metrics.set_listeners_up();
        endpoint.shutdown.cancel();
        assert_eq!(endpoint.respond(&request("GET", "/healthz")).code, 503);
    }
}
