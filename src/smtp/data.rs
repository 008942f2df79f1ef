//! DATA and BDAT content framing: end-of-data detection, dot-unstuffing and
//! line-ending normalisation, pure (bytes in, bytes out).
//!
//! End of data is `CRLF.CRLF` and nothing else (RFC 5321 §4.1.1.4): no SMTP
//! smuggling through `LF.LF`, `CR.CR`, `CRLF.LF` or `CRLF.CR CR LF`, each of
//! which other receivers may read differently. The CRLF before the dot may be
//! the one that ended the DATA command, so an empty body (`.` first) is
//! recognised. A line that starts with a dot after a CRLF loses that dot
//! (RFC 5321 §4.5.2). Bare LF line endings are turned into CRLF only *after*
//! that detection, and a line that a bare LF starts is no line start for
//! either rule.

/// Where the reader is relative to the line structure of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// After a CRLF (or at the start of the content).
    LineStart,
    /// After CRLF and a dot; the dot is removed, whatever follows.
    Dot,
    /// After CRLF, a dot and a CR, which is held back: only an LF next ends
    /// the data, anything else makes it content.
    DotCr,
    /// Inside a line; `after_cr` says whether the last octet was a CR.
    Text { after_cr: bool },
    /// The end of data was seen.
    Finished,
}

/// Reads DATA content.
pub struct DataReader {
    position: Position,
}

impl Default for DataReader {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReader {
    pub fn new() -> DataReader {
        DataReader {
            position: Position::LineStart,
        }
    }

    /// Consumes bytes from `input`, appending message content to `out`
    /// (CRLF line endings, dots unstuffed). Returns how many input bytes were
    /// consumed and whether the end of data was reached; then the bytes after
    /// it are the next commands. Until the end, all of `input` is consumed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            self.position = match self.position {
                Position::Finished => break,
                Position::LineStart if byte == b'.' => Position::Dot,
                Position::Dot if byte == b'\r' => Position::DotCr,
                Position::DotCr if byte == b'\n' => {
                    self.position = Position::Finished;
                    return (at + 1, true);
                }
                Position::DotCr => {
                    out.push(b'\r');
                    text(byte, true, out)
                }
                Position::LineStart | Position::Dot => text(byte, false, out),
                Position::Text { after_cr } => {
                    // Runs without line-ending octets are copied whole.
                    let run =
                        memchr::memchr2(b'\r', b'\n', &input[at..]).unwrap_or(input.len() - at);
                    if run > 0 {
                        out.extend_from_slice(&input[at..at + run]);
                        at += run;
                        self.position = Position::Text { after_cr: false };
                        continue;
                    }
                    text(byte, after_cr, out)
                }
            };
            at += 1;
        }
        (at, self.position == Position::Finished)
    }
}

/// Appends one octet of a line's content; `after_cr` says whether the octet
/// before it was a CR. A bare LF becomes CRLF and does not start a line.
fn text(byte: u8, after_cr: bool, out: &mut Vec<u8>) -> Position {
    match byte {
        b'\n' if after_cr => {
            out.push(b'\n');
            Position::LineStart
        }
        b'\n' => {
            out.extend_from_slice(b"\r\n");
            Position::Text { after_cr: false }
        }
        _ => {
            out.push(byte);
            Position::Text {
                after_cr: byte == b'\r',
            }
        }
    }
}

/// Turns bare LF into CRLF; tracks the previous byte across chunks.
#[derive(Default)]
pub struct LineEndings {
    last_was_cr: bool,
}

impl LineEndings {
    pub fn normalise(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', chunk) {
            let previous = if newline == 0 {
                self.last_was_cr
            } else {
                chunk[newline - 1] == b'\r'
            };
            if !previous {
                out.extend_from_slice(&chunk[start..newline]);
                out.extend_from_slice(b"\r\n");
                start = newline + 1;
            }
        }
        out.extend_from_slice(&chunk[start..]);
        if let Some(&last) = chunk.last() {
            self.last_was_cr = last == b'\r';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and returns the message, or None if no end was seen.
    fn receive(chunks: &[&[u8]]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut reader = DataReader::new();
        let mut out = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            let (consumed, finished) = reader.feed(chunk, &mut out);
            if finished {
                let mut rest = chunk[consumed..].to_vec();
                for later in &chunks[index + 1..] {
                    rest.extend_from_slice(later);
                }
                return Some((out, rest));
            }
            assert_eq!(consumed, chunk.len());
        }
        None
    }

    #[test]
    fn empty_body() {
        assert_eq!(
            receive(&[b".\r\nQUIT\r\n"]),
            Some((Vec::new(), b"QUIT\r\n".to_vec()))
        );
    }

    #[test]
    fn dot_unstuffing_including_first_line() {
        let (message, _) = receive(&[b"..first\r\nx\r\n..\r\n.\r\n"]).unwrap();
        assert_eq!(message, b".first\r\nx\r\n.\r\n");
    }

    #[test]
    fn smuggling_attempts_do_not_end_data() {
        for fake_end in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r\n", b"\r\n.\n"] {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(fake_end);
            input.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\n");
            let (message, rest) = receive(&[&input, b"\r\n.\r\n"]).unwrap();
            assert!(rest.is_empty(), "{fake_end:?}");
            assert!(
                message.windows(10).any(|w| w == b"MAIL FROM:"),
                "{fake_end:?}"
            );
        }
    }

    /// Found by the `data_reader` fuzz target: smtp-proto's receiver, used
    /// until then, ended the data at `CRLF . CR CR LF` (any number of CRs),
    /// so text after it became commands here while another receiver would
    /// have read it as content.
    #[test]
    fn dot_with_extra_carriage_returns_does_not_end_data() {
        for fake_end in [&b"\r\n.\r\r\n"[..], b"\r\n.\r\r\r\n", b"\r\n.\rx\r\n"] {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(fake_end);
            input.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\n");
            let (message, rest) = receive(&[&input, b".\r\n"]).unwrap();
            assert!(rest.is_empty(), "{fake_end:?}");
            assert!(message.ends_with(b"MAIL FROM:<evil@example.com>\r\n"));
        }
        let (message, _) = receive(&[b".\r\r\nx\r\n.\r\n"]).unwrap();
        assert_eq!(message, b"\r\r\nx\r\n");
        let (message, _) = receive(&[b"a\r\n.\r", b"\r", b"\n.\r\n"]).unwrap();
        assert_eq!(message, b"a\r\n\r\r\n");
    }

    #[test]
    fn nothing_is_consumed_after_the_end() {
        let mut reader = DataReader::new();
        let mut out = Vec::new();
        assert_eq!(reader.feed(b"x\r\n.\r\nQUIT\r\n", &mut out), (6, true));
        assert_eq!(reader.feed(b"QUIT\r\n", &mut out), (0, true));
        assert_eq!(out, b"x\r\n");
    }

    #[test]
    fn bare_lf_normalised_after_detection() {
        let (message, _) = receive(&[b"a\nb\r\nc\n", b"\r\n.\r\n"]).unwrap();
        assert_eq!(message, b"a\r\nb\r\nc\r\n\r\n");
    }

    #[test]
    fn end_split_across_chunks_keeps_cr_right() {
        let whole = b"line one\r\nline two\r\n.\r\n";
        for split in 1..whole.len() {
            let (message, rest) = receive(&[&whole[..split], &whole[split..]]).unwrap();
            assert_eq!(message, b"line one\r\nline two\r\n", "split at {split}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn byte_at_a_time() {
        let whole = b"x\r\n..y\r\nz\rw\r\n.\r\nNOOP\r\n";
        let chunks: Vec<&[u8]> = whole.chunks(1).collect();
        let (message, rest) = receive(&chunks).unwrap();
        assert_eq!(message, b"x\r\n.y\r\nz\rw\r\n");
        assert_eq!(rest, b"NOOP\r\n");
    }
}
