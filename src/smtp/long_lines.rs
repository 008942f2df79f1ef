//! Breaks message lines longer than 998 octets, the limit of RFC 5322 §2.1.1
//! (and RFC 5321 §4.5.3.1.6's 1000 with CRLF), as content streams in: pure,
//! chunk boundaries anywhere, holding at most one line's first 999 octets.
//!
//! A conforming MX refuses a message with a longer line (`500 Line too
//! long`), and the sender gets a bounce for mail relayq accepted. So such a
//! line is broken here, before the message is stored (and before anything
//! that signs it), the way Postfix breaks it: a CRLF is inserted. The break
//! goes before the last whitespace within the limit, so that in the header
//! section (and in MIME part headers) it is a fold (RFC 5322 §2.2.3: the
//! continuation starts with whitespace and unfolds to the same field), in
//! HTML it is whitespace as before, and in text it is a line break where a
//! space was. A line with no such whitespace is cut at 998 octets; in the
//! header section the continuation then starts with an inserted space, so it
//! stays part of the same field.
//!
//! Input is message content after dot-unstuffing and line-ending
//! normalisation (`super::data`), so DATA and BDAT framing is not affected.
//! The header section ends at the first empty line, as in RFC 5322.

/// The longest line allowed, without its CRLF.
pub const MAX_LINE: usize = 998;

#[derive(Debug)]
pub struct LineBreaker {
    /// The current line's octets not yet written (it has no LF yet): at most
    /// `MAX_LINE` octets, or `MAX_LINE + 1` when the last is a CR that may
    /// start the line's CRLF.
    held: Vec<u8>,
    in_header_section: bool,
    /// Breaks inserted so far.
    breaks: u64,
}

impl Default for LineBreaker {
    fn default() -> Self {
        LineBreaker::new()
    }
}

impl LineBreaker {
    pub fn new() -> LineBreaker {
        LineBreaker {
            held: Vec::new(),
            in_header_section: true,
            breaks: 0,
        }
    }

    /// How many line breaks were inserted.
    pub fn breaks(&self) -> u64 {
        self.breaks
    }

    /// Appends `input`, with over-long lines broken, to `out`. The tail of
    /// an unfinished line is held until its end or its 999th octet arrives.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(newline) = memchr::memchr(b'\n', input) {
            let (line, rest) = input.split_at(newline + 1);
            input = rest;
            let content = line.len() - 1 - usize::from(line.ends_with(b"\r\n"));
            if self.held.is_empty() && content <= MAX_LINE {
                // The common case: a whole line within this chunk, short.
                self.end_of_line(content == 0);
                out.extend_from_slice(line);
            } else {
                self.append(&line[..newline], out);
                let empty = self.held.is_empty() || self.held == b"\r";
                self.end_of_line(empty);
                out.extend_from_slice(&self.held);
                out.push(b'\n');
                self.held.clear();
            }
        }
        self.append(input, out);
    }

    /// Writes what is held (content that does not end with a line ending).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.held.len() > MAX_LINE {
            self.break_line(out);
        }
        out.extend_from_slice(&self.held);
        self.held.clear();
    }

    fn end_of_line(&mut self, empty: bool) {
        if empty {
            self.in_header_section = false;
        }
    }

    /// Holds `octets` (no LF among them), breaking the line each time more
    /// than `MAX_LINE` octets of it are certain.
    fn append(&mut self, mut octets: &[u8], out: &mut Vec<u8>) {
        loop {
            if self.held.len() > MAX_LINE {
                if octets.is_empty() && self.held.last() == Some(&b'\r') {
                    // A CR as octet 999 may be the start of this line's
                    // CRLF: wait for the next octet.
                    return;
                }
                self.break_line(out);
                continue;
            }
            if octets.is_empty() {
                return;
            }
            let take = (MAX_LINE + 1 - self.held.len()).min(octets.len());
            self.held.extend_from_slice(&octets[..take]);
            octets = &octets[take..];
        }
    }

    /// Writes the first part of the held line (which has `MAX_LINE + 1`
    /// content octets) and a CRLF, keeping the rest as the start of the next
    /// line.
    fn break_line(&mut self, out: &mut Vec<u8>) {
        let is_whitespace = |octet: &u8| matches!(octet, b' ' | b'\t');
        // Before the last whitespace within the limit that has something
        // other than whitespace before it (no line of only whitespace).
        let fold = self
            .held
            .iter()
            .position(|octet| !is_whitespace(octet))
            .and_then(|first| {
                (first + 1..=MAX_LINE)
                    .rev()
                    .find(|&index| is_whitespace(&self.held[index]))
            });
        self.breaks += 1;
        match fold {
            Some(at) => {
                out.extend_from_slice(&self.held[..at]);
                out.extend_from_slice(b"\r\n");
                self.held.drain(..at);
            }
            None => {
                out.extend_from_slice(&self.held[..MAX_LINE]);
                out.extend_from_slice(b"\r\n");
                self.held.drain(..MAX_LINE);
                if self.in_header_section {
                    self.held.insert(0, b' ');
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::data::DataReader;

    fn break_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        let mut breaker = LineBreaker::new();
        let mut out = Vec::new();
        for chunk in chunks {
            breaker.push(chunk, &mut out);
        }
        breaker.finish(&mut out);
        out
    }

    fn break_whole(input: &[u8]) -> Vec<u8> {
        break_chunks(&[input])
    }

    /// Every line of `output` is at most `MAX_LINE` octets plus CRLF.
    fn assert_lines_fit(output: &[u8]) {
        for line in output.split(|&octet| octet == b'\n') {
            let content = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(content.len() <= MAX_LINE, "line of {}", content.len());
        }
    }

    /// Unfolds a header section the way RFC 5322 §2.2.3 does.
    fn unfold(text: &[u8]) -> Vec<u8> {
        let text = String::from_utf8(text.to_vec()).unwrap();
        text.replace("\r\n ", " ")
            .replace("\r\n\t", "\t")
            .into_bytes()
    }

    /// A message with long lines of every kind: a header with words, a
    /// header that is one token, a body with words, a body with none (like
    /// base64 without line breaks), a body line of exactly 998 octets and
    /// one of 999 with a bare CR as its last octet.
    fn awkward_message() -> Vec<u8> {
        let mut message = b"Subject: ".to_vec();
        for word in 0..300 {
            message.extend_from_slice(format!("word{word} ").as_bytes());
        }
        message.extend_from_slice(b"\r\nX-Token: ");
        message.extend_from_slice(&[b't'; 1500]);
        message.extend_from_slice(b"\r\nX-Short: yes\r\n\r\n");
        for word in 0..150 {
            message.extend_from_slice(format!("<p>text {word}</p> ").as_bytes());
        }
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(&[b'Q'; 2100]);
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(&[b'e'; 998]);
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(&[b'c'; 998]);
        message.extend_from_slice(b"\r\r\n.leading dot\r\n");
        message
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let message = awkward_message();
        let whole = break_whole(&message);
        for split in 0..=message.len() {
            let (first, second) = message.split_at(split);
            assert_eq!(break_chunks(&[first, second]), whole, "split at {split}");
        }
        let octets: Vec<&[u8]> = message.chunks(1).collect();
        assert_eq!(break_chunks(&octets), whole, "octet at a time");
        for size in [7, 998, 999, 1000, 4096] {
            let chunks: Vec<&[u8]> = message.chunks(size).collect();
            assert_eq!(break_chunks(&chunks), whole, "chunks of {size}");
        }
    }

    #[test]
    fn no_output_line_is_longer_than_998_octets() {
        let output = break_whole(&awkward_message());
        assert_lines_fit(&output);
        let body: Vec<u8> = [b'A'; 1_000_000].to_vec();
        let mut message = b"Subject: one line\r\n\r\n".to_vec();
        message.extend_from_slice(&body);
        message.extend_from_slice(b"\r\n");
        let output = break_whole(&message);
        assert_lines_fit(&output);
        let rejoined: Vec<u8> = output[21..]
            .iter()
            .copied()
            .filter(|&octet| octet != b'\r' && octet != b'\n')
            .collect();
        assert_eq!(rejoined, body, "only line breaks were added");
    }

    #[test]
    fn short_lines_pass_unchanged() {
        let mut message = b"Subject: hi\r\n\r\n".to_vec();
        message.extend_from_slice(&[b'e'; 998]);
        message.extend_from_slice(b"\r\nbare\rcr\r\nno final line end");
        let mut breaker = LineBreaker::new();
        let mut out = Vec::new();
        breaker.push(&message, &mut out);
        breaker.finish(&mut out);
        assert_eq!(out, message);
        assert_eq!(breaker.breaks(), 0);
    }

    #[test]
    fn header_lines_are_folded_and_unfold_to_the_same_field() {
        let output = break_whole(&awkward_message());
        let end = memchr::memmem::find(&output, b"\r\n\r\n").unwrap() + 2;
        let (header_section, _) = output.split_at(end);
        let original = awkward_message();
        let original_end = memchr::memmem::find(&original, b"\r\n\r\n").unwrap() + 2;
        let subject_end = memchr::memmem::find(&original, b"\r\nX-Token").unwrap() + 2;
        // Folded at whitespace: unfolding gives the field back exactly.
        let unfolded = unfold(header_section);
        assert!(unfolded.starts_with(&original[..subject_end]));
        // Every continuation starts with whitespace, so there are still
        // exactly three fields.
        let fields = header_section
            .split(|&octet| octet == b'\n')
            .filter(|line| !line.is_empty() && !matches!(line[0], b' ' | b'\t' | b'\r'))
            .count();
        assert_eq!(fields, 3);
        // The token with no whitespace gets a space at each cut, nothing else.
        let token = unfolded
            .split(|&octet| octet == b'\n')
            .find(|line| line.starts_with(b"X-Token: "))
            .unwrap();
        let letters: Vec<u8> = token[9..]
            .iter()
            .copied()
            .filter(|&octet| octet == b't')
            .collect();
        assert_eq!(letters.len(), 1500);
        assert!(original_end < original.len());
    }

    #[test]
    fn body_lines_break_before_whitespace_when_they_can() {
        let mut message = b"\r\n".to_vec(); // An empty header section.
        for _ in 0..200 {
            message.extend_from_slice(b"word ");
        }
        message.extend_from_slice(b"\r\n");
        let output = break_whole(&message);
        assert_lines_fit(&output);
        let lines: Vec<&[u8]> = output.split(|&octet| octet == b'\n').collect();
        assert_eq!(
            lines[1].len(),
            994 + 1,
            "cut before the last space that fits"
        );
        assert!(lines[2].starts_with(b" word"));
    }

    /// DATA framing first, then breaking: the end of data and the
    /// unstuffing of a dot at a line start are untouched, whatever the
    /// chunking, and a line that now starts with a dot is only content (the
    /// delivery client stuffs it again when it sends).
    #[test]
    fn data_framing_is_not_affected() {
        let mut wire = b"Subject: x\r\n\r\n..stuffed\r\n".to_vec();
        wire.extend_from_slice(&[b'a'; 998]);
        wire.extend_from_slice(b".after the cut\r\n.\r\nQUIT\r\n");
        let receive = |chunks: &[&[u8]]| {
            let mut reader = DataReader::new();
            let mut breaker = LineBreaker::new();
            let mut content = Vec::new();
            let mut out = Vec::new();
            for chunk in chunks {
                content.clear();
                let (consumed, finished) = reader.feed(chunk, &mut content);
                breaker.push(&content, &mut out);
                if finished {
                    breaker.finish(&mut out);
                    return (out, chunk[consumed..].to_vec());
                }
            }
            panic!("no end of data");
        };
        let (whole, rest) = receive(&[&wire]);
        assert_eq!(rest, b"QUIT\r\n");
        let mut expected = b"Subject: x\r\n\r\n.stuffed\r\n".to_vec();
        expected.extend_from_slice(&[b'a'; 998]);
        expected.extend_from_slice(b"\r\n.after the cut\r\n");
        assert_eq!(whole, expected);
        for split in 1..wire.len() - 6 {
            let (first, second) = wire.split_at(split);
            assert_eq!(receive(&[first, second]).0, whole, "split at {split}");
        }
    }

    /// BDAT content is not dot-stuffed and may end without a line ending;
    /// it arrives in chunks whose boundaries fall anywhere.
    #[test]
    fn bdat_chunks_at_any_boundary() {
        let mut content = b"Subject: x\r\n\r\n.no stuffing in BDAT\r\n".to_vec();
        content.extend_from_slice(&[b'z'; 2500]);
        let whole = break_whole(&content);
        assert_lines_fit(&whole);
        assert!(whole.ends_with(&[b'z'; 504]));
        for split in 0..=content.len() {
            let (first, second) = content.split_at(split);
            assert_eq!(break_chunks(&[first, second]), whole, "split at {split}");
        }
    }
}
