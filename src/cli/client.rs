//! A blocking client for the control API: one request per connection over
//! the daemon's Unix socket, and the chunked event stream of `queue tail`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::control::http;

/// How long the daemon may take to answer one request (or to send the next
/// part of a streamed answer).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers on the socket (missing, refused).
    #[error(
        "the relayq daemon is not available at {socket}: {reason} (is `relayq serve` running?)"
    )]
    Unavailable { socket: String, reason: String },
    /// The socket exists but we may not use it.
    #[error("no permission to use the control socket {socket}: {reason}")]
    Permission { socket: String, reason: String },
    /// The daemon answered with an error.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("talking to the relayq daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The sysexits code a command exits with: no daemon, no permission, a
    /// request the daemon refused as wrong (4xx), anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unavailable { .. } => super::EXIT_UNAVAILABLE,
            ClientError::Permission { .. } => super::EXIT_NOPERM,
            ClientError::Refused { status, .. } if (400..500).contains(status) => super::EXIT_USAGE,
            ClientError::Refused { .. } | ClientError::Protocol(_) => super::EXIT_SOFTWARE,
        }
    }
}

fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|error| {
        let socket = socket.display().to_string();
        let reason = error.to_string();
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::Permission { socket, reason }
        } else {
            ClientError::Unavailable { socket, reason }
        }
    })
}

fn protocol(error: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(error.to_string())
}

fn send(
    stream: &mut UnixStream,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> Result<(), ClientError> {
    let body = body.unwrap_or_default();
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(protocol)?;
    stream.write_all(body).map_err(protocol)
}

fn read_head(reader: &mut impl BufRead) -> Result<http::ResponseHead, ClientError> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        reader.read_until(b'\n', &mut head).map_err(protocol)?;
        if head.len() == before {
            return Err(protocol(
                "the daemon closed the connection without answering",
            ));
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            break;
        }
        if head.len() > http::MAX_HEAD {
            return Err(protocol("response head too large"));
        }
    }
    http::parse_response(&head).ok_or_else(|| protocol("malformed response"))
}

/// Sends one request and returns the response body of a 2xx answer.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, ClientError> {
    let mut stream = connect(socket)?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(protocol)?;
    send(&mut stream, method, target, body)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let mut content = Vec::new();
    match head.content_length {
        Some(length) => reader
            .take(length as u64)
            .read_to_end(&mut content)
            .map(|_| ())
            .map_err(protocol)?,
        None => reader
            .read_to_end(&mut content)
            .map(|_| ())
            .map_err(protocol)?,
    }
    if (200..300).contains(&head.status) {
        return Ok(content);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&content)
        .ok()
        .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&content).trim().to_owned());
    Err(ClientError::Refused {
        status: head.status,
        message,
    })
}

/// Opens a streamed (chunked) response and calls `line` for each line of
/// it until the stream ends. `Ok` when the daemon ended the stream,
/// `Err(Protocol)` when the connection broke.
pub fn stream_lines(
    socket: &Path,
    target: &str,
    line: impl FnMut(&[u8]) -> bool,
) -> Result<(), ClientError> {
    stream_request_lines(socket, "GET", target, None, None, line)
}

/// Sends one request whose answer is streamed (chunked) and calls `line`
/// for each line of it until the stream ends or `line` returns false.
pub fn stream_request_lines(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Option<Duration>,
    mut line: impl FnMut(&[u8]) -> bool,
) -> Result<(), ClientError> {
    let mut body = open_stream(socket, method, target, body, timeout)?;
    let mut pending = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = body.read(&mut buffer).map_err(protocol)?;
        if read == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buffer[..read]);
        while let Some(end) = memchr::memchr(b'\n', &pending) {
            let rest = pending.split_off(end + 1);
            let complete = std::mem::replace(&mut pending, rest);
            if !line(&complete[..end]) {
                return Ok(());
            }
        }
    }
}

/// Sends one request and returns its streamed (chunked) body as a reader,
/// after checking the status: an error answer is read whole and returned
/// as `Refused`. `timeout` bounds each read (`None`: an event stream, which
/// may be quiet for long).
pub fn open_stream(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<ChunkedBody, ClientError> {
    let mut stream = connect(socket)?;
    stream.set_read_timeout(timeout).map_err(protocol)?;
    send(&mut stream, method, target, body)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    if !(200..300).contains(&head.status) || !head.chunked {
        let mut content = Vec::new();
        let limit = head.content_length.unwrap_or(http::MAX_HEAD) as u64;
        reader
            .take(limit)
            .read_to_end(&mut content)
            .map_err(protocol)?;
        let message = serde_json::from_slice::<serde_json::Value>(&content)
            .ok()
            .and_then(|value| value.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "the daemon did not open a stream".to_owned());
        return Err(ClientError::Refused {
            status: head.status,
            message,
        });
    }
    Ok(ChunkedBody {
        reader,
        remaining: 0,
        done: false,
    })
}

/// The body of a chunked response, as a plain reader. A connection that
/// breaks before the last chunk is an error, not an end.
pub struct ChunkedBody {
    reader: BufReader<UnixStream>,
    /// Data octets left in the current chunk.
    remaining: usize,
    done: bool,
}

impl Read for ChunkedBody {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buffer.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut size_line = String::new();
            if self.reader.read_line(&mut size_line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let size = http::parse_chunk_size(&size_line)
                .ok_or_else(|| std::io::Error::other("bad chunk"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.remaining = size;
        }
        let wanted = buffer.len().min(self.remaining);
        let read = self.reader.read(&mut buffer[..wanted])?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.remaining -= read;
        if self.remaining == 0 {
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
        }
        Ok(read)
    }
}
