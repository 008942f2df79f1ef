//! DATA and BDAT content framing: end-of-data detection, dot-unstuffing and
//! line-ending normalisation, pure (bytes in, bytes out).
//!
//! End of data is `CRLF.CRLF` and nothing else (no SMTP smuggling through
//! `LF.LF` or `CR.CR`): that is smtp-proto's `DataReceiver`. Bare LF line
//! endings are turned into CRLF only *after* that detection. Two of the
//! receiver's edges are handled here: it is primed with a CRLF so that an
//! empty body (`.` first) and a leading `..` are recognised, and a trailing CR
//! of its output is held back because the receiver removes it again when the
//! terminating `.CRLF` follows.

use smtp_proto::request::receiver::DataReceiver;

/// Reads DATA content.
pub struct DataReader {
    receiver: DataReceiver,
    unstuffed: Vec<u8>,
    line_endings: LineEndings,
}

impl Default for DataReader {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReader {
    pub fn new() -> DataReader {
        let mut receiver = DataReceiver::new();
        let mut discarded = Vec::new();
        receiver.ingest(&mut b"\r\n".iter(), &mut discarded);
        DataReader {
            receiver,
            unstuffed: Vec::new(),
            line_endings: LineEndings::default(),
        }
    }

    /// Consumes bytes from `input`, appending message content to `out`.
    /// Returns how many input bytes were consumed and whether the end of data
    /// was reached (then the bytes after it are the next commands).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut bytes = input.iter();
        let finished = self.receiver.ingest(&mut bytes, &mut self.unstuffed);
        let consumed = input.len() - bytes.as_slice().len();
        let ready = if !finished && self.unstuffed.last() == Some(&b'\r') {
            self.unstuffed.len() - 1
        } else {
            self.unstuffed.len()
        };
        self.line_endings.normalise(&self.unstuffed[..ready], out);
        self.unstuffed.drain(..ready);
        (consumed, finished)
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
