//! The HTTPS GET of a policy file (RFC 8461 §3.3): one HTTP/1.1 request
//! with `Connection: close` over tokio-rustls, the certificate verified for
//! `mta-sts.DOMAIN`, no redirects followed, the response bounded in size and
//! time. [`parse_response`] is pure: it reads a response as far as it has
//! arrived (Content-Length, chunked, or up to the close).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// RFC 8461 §3.3 suggests senders limit policy bodies to 64 KiB.
pub const MAX_BODY: usize = 64 * 1024;
/// Status line and headers.
const MAX_HEAD: usize = 16 * 1024;
/// Chunk-size lines on top of the body.
const MAX_CHUNK_OVERHEAD: usize = 8 * 1024;
const HTTPS_PORT: u16 = 443;
/// Each address of the policy host gets this long to accept the
/// connection, so one that drops packets leaves time for the next within
/// the fetch's whole limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The path of the policy file (RFC 8461 §3.3).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// Why a policy file could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("connecting to {0}")]
    Connect(String),
    #[error("TLS with {host}: {detail}")]
    Tls { host: String, detail: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("reading the response: {0}")]
    Io(String),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("response larger than {MAX_BODY} octets")]
    TooLarge,
    #[error("HTTP status {0} (redirects are not followed)")]
    Redirect(u16),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("Content-Type {0:?} is not text/plain")]
    ContentType(String),
    #[error("policy is not UTF-8")]
    NotText,
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// As sent, empty when absent.
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What [`parse_response`] made of the octets received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Complete(Response),
    /// More is needed; `closed` responses without a length end at the close.
    Incomplete,
}

/// Reads a response from `raw`; `closed` says the server closed the
/// connection after sending `raw` (which ends a body without a length).
pub fn parse_response(raw: &[u8], closed: bool) -> Result<Parsed, FetchError> {
    let malformed = |reason: &str| Err(FetchError::Malformed(reason.to_owned()));
    let Some(head_end) = find(raw, b"\r\n\r\n") else {
        if raw.len() > MAX_HEAD {
            return Err(FetchError::TooLarge);
        }
        return if closed {
            malformed("connection closed before the end of the headers")
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let Ok(head) = std::str::from_utf8(&raw[..head_end]) else {
        return malformed("headers are not text");
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return malformed("no status line");
    };
    if !version.starts_with("HTTP/1.") {
        return malformed("not HTTP/1.x");
    }
    let status = match code.parse::<u16>() {
        Ok(status) if (100..1000).contains(&status) && code.len() == 3 => status,
        _ => return malformed("bad status code"),
    };
    let mut content_type = String::new();
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return malformed("header line without ':'");
        };
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-type") {
            content_type = value.to_owned();
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(length) if content_length.is_none_or(|known| known == length) => {
                    content_length = Some(length)
                }
                _ => return malformed("bad Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return malformed("unsupported Transfer-Encoding");
            }
            chunked = true;
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None if closed => return malformed("connection closed inside a chunked body"),
            None => return Ok(Parsed::Incomplete),
        }
    } else if let Some(length) = content_length {
        if length > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        if rest.len() < length {
            return if closed {
                malformed("connection closed before Content-Length octets arrived")
            } else {
                Ok(Parsed::Incomplete)
            };
        }
        rest[..length].to_vec()
    } else if closed {
        rest.to_vec()
    } else {
        if rest.len() > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        return Ok(Parsed::Incomplete);
    };
    if body.len() > MAX_BODY {
        return Err(FetchError::TooLarge);
    }
    Ok(Parsed::Complete(Response {
        status,
        content_type,
        body,
    }))
}

/// The body of a chunked message, `None` while the last chunk has not
/// arrived. Trailers are skipped.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, FetchError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| FetchError::Malformed("chunk size is not text".into()))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|_| !size_text.is_empty() && size_text.len() <= 8)
            .ok_or_else(|| FetchError::Malformed("bad chunk size".into()))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(rest, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(body));
                }
                rest = &rest[end + 2..];
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(FetchError::Malformed("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// GETs the policy file from `host` (`mta-sts.DOMAIN`) at the first of
/// `addresses` that accepts a connection, all within `limit`, and returns
/// its text once the status (200) and media type (text/plain) are right.
pub async fn fetch(
    host: &str,
    addresses: &[IpAddr],
    tls: Arc<ClientConfig>,
    limit: Duration,
) -> Result<String, FetchError> {
    let work = async {
        let stream = connect(host, addresses).await?;
        let name = ServerName::try_from(host.to_owned()).map_err(|error| FetchError::Tls {
            host: host.to_owned(),
            detail: error.to_string(),
        })?;
        let mut stream = TlsConnector::from(tls)
            .connect(name, stream)
            .await
            .map_err(|error| FetchError::Tls {
                host: host.to_owned(),
                detail: error.to_string(),
            })?;
        let request = format!(
            "GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: relayq\r\n\
             Accept: text/plain\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| FetchError::Io(error.to_string()))?;
        let mut raw = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let read = match stream.read(&mut buffer).await {
                Ok(read) => read,
                // A close without close_notify: whatever was framed
                // (Content-Length, chunked) is complete or not by itself;
                // a body ending at the close is not trusted then.
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return match parse_response(&raw, false)? {
                        Parsed::Complete(response) => Ok(response),
                        Parsed::Incomplete => Err(FetchError::Io(error.to_string())),
                    };
                }
                Err(error) => return Err(FetchError::Io(error.to_string())),
            };
            raw.extend_from_slice(&buffer[..read]);
            if raw.len() > MAX_HEAD + MAX_BODY + MAX_CHUNK_OVERHEAD {
                return Err(FetchError::TooLarge);
            }
            if let Parsed::Complete(response) = parse_response(&raw, read == 0)? {
                return Ok(response);
            }
        }
    };
    let response = tokio::time::timeout(limit, work)
        .await
        .map_err(|_| FetchError::Timeout(limit))??;
    check(response)
}

/// A 200 response with a text/plain body, as text.
fn check(response: Response) -> Result<String, FetchError> {
    match response.status {
        200 => {}
        status @ 300..=399 => return Err(FetchError::Redirect(status)),
        status => return Err(FetchError::Status(status)),
    }
    let media_type = response.content_type.split(';').next().unwrap_or_default();
    if !media_type.trim().eq_ignore_ascii_case("text/plain") {
        return Err(FetchError::ContentType(response.content_type));
    }
    String::from_utf8(response.body).map_err(|_| FetchError::NotText)
}

async fn connect(host: &str, addresses: &[IpAddr]) -> Result<TcpStream, FetchError> {
    let mut problems = Vec::new();
    for address in addresses {
        let address = SocketAddr::new(*address, HTTPS_PORT);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => problems.push(format!("{address}: {error}")),
            Err(_) => problems.push(format!("{address}: no answer within {CONNECT_TIMEOUT:?}")),
        }
    }
    Err(FetchError::Connect(format!(
        "{host} ({})",
        problems.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &str, closed: bool) -> Response {
        match parse_response(raw.as_bytes(), closed).unwrap() {
            Parsed::Complete(response) => response,
            Parsed::Incomplete => panic!("incomplete: {raw:?}"),
        }
    }

    #[test]
    fn content_length_bodies() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
                   Content-Length: 5\r\n\r\nhello";
        let response = complete(raw, false);
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        assert_eq!(check(response).unwrap(), "hello");
        assert_eq!(
            parse_response(&raw.as_bytes()[..raw.len() - 1], false).unwrap(),
            Parsed::Incomplete
        );
        assert!(parse_response(&raw.as_bytes()[..raw.len() - 1], true).is_err());
    }

    #[test]
    fn chunked_bodies() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4\r\nvers\r\n3;ext=1\r\nion\r\n0\r\nX-Trailer: a\r\n\r\n";
        assert_eq!(complete(raw, false).body, b"version");
        for cut in 60..raw.len() {
            assert_eq!(
                parse_response(&raw.as_bytes()[..cut], false).unwrap(),
                Parsed::Incomplete,
                "cut at {cut}"
            );
        }
        let bad = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_response(bad.as_bytes(), false).is_err());
    }

    #[test]
    fn bodies_ending_at_the_close() {
        let raw = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nmode: none";
        assert_eq!(
            parse_response(raw.as_bytes(), false).unwrap(),
            Parsed::Incomplete
        );
        assert_eq!(complete(raw, true).body, b"mode: none");
    }

    #[test]
    fn limits_and_refusals() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse_response(big.as_bytes(), false),
            Err(FetchError::TooLarge)
        );
        let redirect = complete(
            "HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(check(redirect), Err(FetchError::Redirect(301)));
        let html = complete(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(matches!(check(html), Err(FetchError::ContentType(_))));
        let missing = complete("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!(check(missing), Err(FetchError::Status(404)));
        for bad in [
            "SMTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(bad.as_bytes(), true),
                    Err(FetchError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
