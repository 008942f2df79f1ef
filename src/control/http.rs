//! The small part of HTTP/1.1 the control API speaks (pure, no I/O):
//! request heads and query strings for the server, response heads and
//! chunk sizes for the client, and the response encoding. One request per
//! connection (`Connection: close`); request bodies only with
//! `Content-Length`.

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    pub content_length: usize,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request line")]
    RequestLine,
    #[error("unsupported HTTP version")]
    Version,
    #[error("malformed header line")]
    Header,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("request bodies must have a Content-Length")]
    Chunked,
    #[error("request body too large")]
    BodyTooLarge,
}

/// The end of the head in `buffer` (the index after the blank line), if
/// it is complete.
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    memchr::memmem::find(buffer, b"\r\n\r\n").map(|at| at + 4)
}

/// Parses a complete request head (up to and including the blank line).
pub fn parse_request(head: &[u8]) -> Result<Request, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::RequestLine)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(HeadError::RequestLine)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::RequestLine);
    };
    if method.is_empty() || !target.starts_with('/') {
        return Err(HeadError::RequestLine);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::Version);
    }
    let mut content_length = 0;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HeadError::Header)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| HeadError::ContentLength)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Chunked);
        }
    }
    if content_length > MAX_BODY {
        return Err(HeadError::BodyTooLarge);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_owned(),
        path: percent_decode_path(path),
        query: parse_query(query),
        content_length,
    })
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes stay as they are.
pub fn percent_decode(text: &str) -> String {
    decode(text, true)
}

/// Decodes `%XX` escapes of a path, where `+` is itself (RFC 3986: only a
/// form-encoded query makes it a space): `/suppression/user+tag@example.org`.
pub fn percent_decode_path(text: &str) -> String {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => match bytes.get(at + 1..at + 3).and_then(hex_pair) {
                Some(byte) => {
                    out.push(byte);
                    at += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The octet two hex digits stand for (RFC 3986 §2.1). Exactly two hex
/// digits: `u8::from_str_radix` would also take a sign (`%+1`).
fn hex_pair(digits: &[u8]) -> Option<u8> {
    let value = |digit: u8| char::from(digit).to_digit(16);
    match digits {
        [high, low] => Some((value(*high)? * 16 + value(*low)?) as u8),
        _ => None,
    }
}

/// Encodes a query value for the client.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A complete response with a body.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The head of a streamed (chunked) response.
pub fn streaming_head(content_type: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// One chunk of a chunked body (an empty `data` ends the body).
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:X}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response head as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
}

pub fn parse_response(head: &[u8]) -> Option<ResponseHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let mut head = ResponseHead {
        status,
        content_length: None,
        chunked: false,
    };
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    Some(head)
}

/// The size on a chunk-size line (extensions ignored).
pub fn parse_chunk_size(line: &str) -> Option<usize> {
    let size = line.trim().split(';').next()?.trim();
    usize::from_str_radix(size, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let head = b"POST /queue/hold?x=a%20b&y=1+2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(head_end(head), Some(head.len()));
        let request = parse_request(head).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/queue/hold");
        assert_eq!(request.param("x"), Some("a b"));
        assert_eq!(request.param("y"), Some("1 2"));
        assert_eq!(request.content_length, 12);
        assert_eq!(
            parse_request(b"GET / HTTP/2\r\n\r\n"),
            Err(HeadError::Version)
        );
        assert_eq!(parse_request(b"GET\r\n\r\n"), Err(HeadError::RequestLine));
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Chunked)
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(HeadError::BodyTooLarge)
        );
        assert_eq!(
            parse_request(b"POST / HTTP/1.1\r\nbroken\r\n\r\n"),
            Err(HeadError::Header)
        );
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
        let request = parse_request(b"GET /suppression/a+b%2Bc@x?q=1+2 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(request.path, "/suppression/a+b+c@x");
        assert_eq!(request.param("q"), Some("1 2"));
        assert_eq!(percent_decode(&percent_encode("x y&z=é")), "x y&z=é");
    }

    /// Found by the `control_request` fuzz target: a sign after `%` was
    /// taken as part of a hex number, so `%+2` decoded to the octet 2.
    #[test]
    fn an_escape_is_exactly_two_hex_digits() {
        // Not an escape: the `%` stays, the `+` is a space as anywhere else.
        assert_eq!(percent_decode("%+2"), "% 2");
        assert_eq!(percent_decode("%-1x"), "%-1x");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%4a%4A"), "JJ");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn responses() {
        let bytes = response(404, "application/json", b"{}");
        let end = head_end(&bytes).unwrap();
        let head = parse_response(&bytes[..end]).unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.content_length, Some(2));
        let head = parse_response(&streaming_head("application/x-ndjson")).unwrap();
        assert!(head.chunked);
        assert_eq!(chunk(b"hello"), b"5\r\nhello\r\n");
        assert_eq!(parse_chunk_size("1f;ext=1\r\n"), Some(31));
    }
}
