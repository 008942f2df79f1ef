//! Message content as a client sends it after DATA (RFC 5321 §4.5.2):
//! dot-stuffing, and the end of data (`CRLF.CRLF`). One rule, applied by
//! [`DotStuffer`] chunk by chunk (so a body is never held in memory whole);
//! the whole-buffer forms are that stuffer given a single chunk.

/// Dot-stuffing state carried across chunks.
///
/// The rule: a `.` that starts a line gets another `.` before it. A line
/// starts at the beginning of the content and after every LF, bare or not:
/// a receiver that takes a bare LF for a line end must never see an
/// unstuffed `.` there (SMTP smuggling). Nothing else changes, line ends
/// included.
#[derive(Debug)]
pub(crate) struct DotStuffer {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The last two content bytes, to know whether the content ended with
    /// CRLF.
    tail: [u8; 2],
    empty: bool,
}

impl DotStuffer {
    pub(crate) fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            tail: [0; 2],
            empty: true,
        }
    }

    /// Appends `input`, dot-stuffed, to `output`. The delivery hot path: it
    /// runs once per body chunk, copies line by line, and allocates only
    /// when `output` must grow.
    pub(crate) fn stuff(&mut self, input: &[u8], output: &mut Vec<u8>) {
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
    pub(crate) fn finish(&self, output: &mut Vec<u8>) {
        if !self.empty && self.tail != *b"\r\n" {
            output.extend_from_slice(b"\r\n");
        }
        output.extend_from_slice(b".\r\n");
    }
}

/// `content` dot-stuffed, without the end of data: for a caller that sends
/// the final `.CRLF` itself.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut output = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    DotStuffer::new().stuff(content, &mut output);
    output
}

/// `content` as sent after DATA's 354: dot-stuffed and ended (a CRLF of its
/// own when the content does not end with one, then `.CRLF`).
pub(crate) fn dot_stuff_terminated(content: &[u8]) -> Vec<u8> {
    let mut output = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    let mut stuffer = DotStuffer::new();
    stuffer.stuff(content, &mut output);
    stuffer.finish(&mut output);
    output
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
        assert_eq!(
            dot_stuff_terminated(b".\r\n..x\r\na.\r\n"),
            b"..\r\n...x\r\na.\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"..\r\n.x\r\n"), b"...\r\n..x\r\n");
        assert_eq!(dot_stuff(b""), b"");
        assert_eq!(dot_stuff(b"."), b"..");
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
        assert_eq!(dot_stuff_terminated(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff_terminated(b""), b".\r\n");
        assert_eq!(
            dot_stuff_terminated(b"ends in CR\r"),
            b"ends in CR\r\r\n.\r\n"
        );
    }

    #[test]
    fn bare_lf_counts_as_line_end_and_bare_cr_does_not() {
        assert_eq!(stuffed(&[b"a\n.\r\n"]), b"a\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r.b\r\n"), b"a\r.b\r\n");
        assert_eq!(dot_stuff(b"\n\n.\n"), b"\n\n..\n");
    }

    /// Inputs whose every split point matters: dots at line starts and
    /// inside lines, CRLF, bare LF, bare CR, empty lines, a dot-only line,
    /// no final line end.
    const SAMPLES: &[&[u8]] = &[
        b"",
        b".",
        b"..",
        b"\r\n",
        b".\r\n",
        b"a\r\n.\r\n..\r\n",
        b".a\r\nb.c\r\n\r\n.\r\n.d",
        b"x\n.y\n\n..\r.\r\n.",
        b"\r\r\n\n.\r..\n\r.",
        b"Subject: t\r\n\r\n.leading\r\nmid.dle\r\n.\r\n",
    ];

    /// The whole-buffer forms give exactly what the stuffer gives for any
    /// chunking of the same content: for every split into two chunks, and
    /// for one-octet chunks.
    #[test]
    fn streaming_equals_whole_buffer_for_every_split() {
        for sample in SAMPLES {
            let whole = dot_stuff_terminated(sample);
            let mut plain = dot_stuff(sample);
            plain.extend_from_slice(b".\r\n");
            if sample.is_empty() || sample.ends_with(b"\r\n") {
                assert_eq!(plain, whole, "{sample:?}");
            }
            for split in 0..=sample.len() {
                let (head, tail) = sample.split_at(split);
                assert_eq!(stuffed(&[head, tail]), whole, "{sample:?} split at {split}");
            }
            let octets: Vec<&[u8]> = sample.chunks(1).collect();
            assert_eq!(stuffed(&octets), whole, "{sample:?} octet by octet");
        }
    }

    /// The same over every pair of split points (three chunks, the middle
    /// one possibly empty) of a longer mixed sample.
    #[test]
    fn streaming_equals_whole_buffer_for_every_pair_of_splits() {
        let sample: &[u8] = b".a\r\n.\r\nb\n..c\r\r\n.\n.d.\r\n";
        let whole = dot_stuff_terminated(sample);
        for first in 0..=sample.len() {
            for second in first..=sample.len() {
                let chunks = [&sample[..first], &sample[first..second], &sample[second..]];
                assert_eq!(stuffed(&chunks), whole, "splits at {first} and {second}");
            }
        }
    }

    /// Stuffing is undone by removing one leading dot from every line, so
    /// nothing but line-start dots changed; and no line of the output is a
    /// lone `.` before the end of data.
    #[test]
    fn stuffing_is_reversible_and_never_ends_data_early() {
        for sample in SAMPLES {
            let output = dot_stuff(sample);
            let unstuffed: Vec<u8> = output
                .split_inclusive(|&byte| byte == b'\n')
                .flat_map(|line| line.strip_prefix(b".").unwrap_or(line))
                .copied()
                .collect();
            assert_eq!(&unstuffed, sample);
            assert!(
                !output
                    .split_inclusive(|&byte| byte == b'\n')
                    .any(|line| line == b".\r\n" || line == b".\n"),
                "{sample:?}"
            );
        }
    }
}
