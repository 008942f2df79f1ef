//! Message content on the wire (RFC 5321 §4.5.2): dot-stuffing and the
//! terminating `CRLF.CRLF`, applied chunk by chunk so a body is never held
//! in memory whole.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::ClientError;
use super::transport::Transport;

/// How much of the stored message is read and written at a time.
const CHUNK: usize = 64 * 1024;

/// Dot-stuffing state carried across chunks.
#[derive(Debug)]
pub(super) struct DotStuffer {
    /// The next byte starts a line. A line starts after every LF, bare or
    /// not: a receiver that treats a bare LF as a line end must never see
    /// an unstuffed `.` there (SMTP smuggling).
    at_line_start: bool,
    /// The last two content bytes, to know whether the content ended with
    /// CRLF.
    tail: [u8; 2],
    empty: bool,
}

impl DotStuffer {
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            tail: [0; 2],
            empty: true,
        }
    }

    /// Appends `input`, dot-stuffed, to `output`.
    pub fn stuff(&mut self, input: &[u8], output: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        let mut rest = input;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                output.push(b'.');
            }
            match memchr::memchr(b'\n', rest) {
                Some(newline) => {
                    output.extend_from_slice(&rest[..=newline]);
                    rest = &rest[newline + 1..];
                    self.at_line_start = true;
                }
                None => {
                    output.extend_from_slice(rest);
                    rest = &[];
                    self.at_line_start = false;
                }
            }
        }
        self.tail = match input {
            [.., before, last] => [*before, *last],
            [only] => [self.tail[1], *only],
            [] => self.tail,
        };
        self.empty = false;
    }

    /// Appends the end of data: CRLF first unless the content already ended
    /// with one (or was empty), then `.CRLF`.
    pub fn finish(&self, output: &mut Vec<u8>) {
        if !self.empty && self.tail != *b"\r\n" {
            output.extend_from_slice(b"\r\n");
        }
        output.extend_from_slice(b".\r\n");
    }
}

/// Streams `body` to the server, dot-stuffed and terminated; each write
/// must complete within `limit`.
pub(super) async fn send_body<R: AsyncRead + Unpin>(
    transport: &mut Transport,
    mut body: R,
    limit: Duration,
) -> Result<(), ClientError> {
    const STAGE: &str = "writing message data";
    let mut stuffer = DotStuffer::new();
    let mut input = vec![0; CHUNK];
    // At most CHUNK bytes wait here (plus their stuffing); the last of the
    // content goes out in one write with the terminator, so a small message
    // is one write.
    let mut output = Vec::with_capacity(2 * CHUNK + CHUNK / 4);
    loop {
        let read = body.read(&mut input).await.map_err(ClientError::Body)?;
        if read == 0 {
            break;
        }
        stuffer.stuff(&input[..read], &mut output);
        if output.len() >= CHUNK {
            transport.send(&output, limit, STAGE).await?;
            output.clear();
        }
    }
    stuffer.finish(&mut output);
    transport.send(&output, limit, STAGE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut output = Vec::new();
        for chunk in chunks {
            stuffer.stuff(chunk, &mut output);
        }
        stuffer.finish(&mut output);
        output
    }

    #[test]
    fn stuffs_dots_at_line_starts() {
        assert_eq!(stuffed(&[b".a\r\nb\r\n.\r\n"]), b"..a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(stuffed(&[b"a.b\r\n"]), b"a.b\r\n.\r\n");
    }

    #[test]
    fn line_starts_across_chunks() {
        assert_eq!(stuffed(&[b"a\r\n", b".b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\r", b"\n", b".", b"b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(&[b"x.", b"y\r\n"]), b"x.y\r\n.\r\n");
    }

    #[test]
    fn terminator() {
        assert_eq!(stuffed(&[]), b".\r\n");
        assert_eq!(stuffed(&[b"no newline"]), b"no newline\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\r\n", b"b\r", b"\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuffed(&[b"a\r", b"\n"]), b"a\r\n.\r\n");
        assert_eq!(stuffed(&[b"bare\n"]), b"bare\n\r\n.\r\n");
    }

    #[test]
    fn bare_lf_counts_as_line_end() {
        assert_eq!(stuffed(&[b"a\n.\r\n"]), b"a\n..\r\n.\r\n");
    }
}
