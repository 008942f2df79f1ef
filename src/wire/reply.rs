//! Replies as a client reads them (RFC 5321 §4.2): where a complete,
//! possibly multi-line reply ends in the received bytes, and what it says —
//! the reply code, the enhanced status code (RFC 3463, RFC 2034) and the
//! text. The text parsing itself is smtp-proto's `ResponseReceiver`.

use std::borrow::Cow;
use std::fmt;

use smtp_proto::response::parser::ResponseReceiver;

/// The longest reply accepted, all lines together. A reply line is at most
/// 512 octets (RFC 5321 §4.5.3.1.5); EHLO replies, the longest in practice,
/// have a few dozen lines and stay far below this.
pub const MAX_REPLY_LENGTH: usize = 64 * 1024;

/// Why received bytes are not a reply. Either way the peer does not speak
/// SMTP as expected and the connection should not carry anything more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line that does not start with a three-digit reply code. Holds the
    /// first 80 octets of the line (invalid UTF-8 replaced), for the log.
    #[error("malformed reply line {0:?}")]
    MalformedLine(String),
    /// More than [`MAX_REPLY_LENGTH`] octets arrived without the reply's
    /// last line having started.
    #[error("reply longer than {MAX_REPLY_LENGTH} octets")]
    TooLong,
}

/// An enhanced status code (RFC 3463): `class.subject.detail`, with a class
/// of 2, 4 or 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u8,
    pub detail: u8,
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply, as framed by [`reply_length`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedStatus>,
    text: String,
    raw: Vec<u8>,
}

impl Reply {
    /// The code of the first line. The codes of later lines are not
    /// compared with it: a server that mixes them still gets its first
    /// line's code read, as smtp-proto does.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code at the start of the text, when there is a
    /// well-formed one of class 2, 4 or 5.
    pub fn enhanced(&self) -> Option<EnhancedStatus> {
        self.enhanced
    }

    /// The text of all lines, lines separated by LF, without the reply codes
    /// and without what smtp-proto reads as an enhanced status code at the
    /// start of a line (`d.d.d` of any class). Otherwise as received,
    /// control characters included: outside text, to be made one line
    /// (`wire::text::one_line`) before it goes into a log or a DSN.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text of each line as sent: everything after the code and its
    /// separator (an enhanced status code included), without the line end;
    /// invalid UTF-8 replaced.
    pub fn lines(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.raw.split_inclusive(|&byte| byte == b'\n').map(|line| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8_lossy(line.get(4..).unwrap_or_default())
        })
    }

    /// The reply exactly as received, line ends included (EHLO is parsed
    /// from this).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// The length of the first complete reply at the start of `buffer`, `None`
/// when more input is needed. Every line must start with three digits; a
/// line whose fourth octet is not `-` ends the reply. A line ends at LF,
/// with or without a CR before it. Never more than `buffer.len()`, and
/// never 0.
pub fn reply_length(buffer: &[u8]) -> Result<Option<usize>, ReplyError> {
    let mut start = 0;
    while let Some(offset) = memchr::memchr(b'\n', &buffer[start..]) {
        let end = start + offset + 1;
        let line = &buffer[start..end];
        if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(80)]);
            return Err(ReplyError::MalformedLine(shown.into_owned()));
        }
        if line[3] != b'-' {
            return Ok(Some(end));
        }
        start = end;
        if start > MAX_REPLY_LENGTH {
            break;
        }
    }
    if buffer.len() > MAX_REPLY_LENGTH {
        return Err(ReplyError::TooLong);
    }
    Ok(None)
}

/// Frames and parses the first reply at the start of `input`: the reply and
/// the number of octets it took, `None` when more input is needed.
pub fn parse_reply(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let Some(length) = reply_length(input)? else {
        return Ok(None);
    };
    Ok(Some((parse_framed(&input[..length]), length)))
}

/// Parses a reply [`reply_length`] has framed: it is complete, and every
/// line starts with three digits.
fn parse_framed(raw: &[u8]) -> Reply {
    let mut receiver = ResponseReceiver::default();
    match receiver.parse(&mut raw.iter()) {
        Ok(response) => {
            let [class, subject, detail] = response.esc;
            Reply {
                code: response.code,
                enhanced: matches!(class, 2 | 4 | 5).then_some(EnhancedStatus {
                    class,
                    subject,
                    detail,
                }),
                text: response.message,
                raw: raw.to_vec(),
            }
        }
        // smtp-proto refuses odd separators and lines over its own limit
        // (4 KiB); the reply is read all the same, its text kept as sent.
        Err(_) => {
            let mut reply = Reply {
                code: raw[..3]
                    .iter()
                    .fold(0, |code, digit| code * 10 + u16::from(digit - b'0')),
                enhanced: None,
                text: String::new(),
                raw: raw.to_vec(),
            };
            reply.text = reply.lines().collect::<Vec<_>>().join("\n");
            reply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &[u8]) -> Reply {
        let (reply, used) = parse_reply(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        reply
    }

    fn status(class: u8, subject: u8, detail: u8) -> Option<EnhancedStatus> {
        Some(EnhancedStatus {
            class,
            subject,
            detail,
        })
    }

    #[test]
    fn framing() {
        assert_eq!(reply_length(b"250 ok\r\n"), Ok(Some(8)));
        assert_eq!(reply_length(b"250-a\r\n250"), Ok(None));
        assert_eq!(reply_length(b"250-a\r\n250 b\r\n354 x"), Ok(Some(14)));
        assert_eq!(reply_length(b"250\r\n"), Ok(Some(5)));
        assert_eq!(reply_length(b""), Ok(None));
        assert_eq!(reply_length(b"250 no line end yet"), Ok(None));
        assert!(reply_length(b"hello\r\n").is_err());
        assert!(reply_length(&vec![b'x'; MAX_REPLY_LENGTH + 1]).is_err());
    }

    #[test]
    fn bare_lf_and_bare_cr() {
        assert_eq!(reply_length(b"250-a\n250 b\n"), Ok(Some(12)));
        let reply = parsed(b"250-a\n250 2.1.0 b\n");
        assert_eq!((reply.code(), reply.text()), (250, "a\nb"));
        // A CR alone ends no line: each of these is a single line.
        assert_eq!(reply_length(b"250 a\r250-b\r"), Ok(None));
        assert_eq!(reply_length(b"250 a\r250-b\r\n"), Ok(Some(13)));
        assert_eq!(reply_length(b"250-a\r250 b\r\n"), Ok(None));
    }

    #[test]
    fn single_line() {
        let reply = parsed(b"550 5.1.1 user unknown\r\n");
        assert_eq!(reply.code(), 550);
        assert_eq!(reply.enhanced(), status(5, 1, 1));
        assert_eq!(reply.text(), "user unknown");
        assert_eq!(reply.lines().collect::<Vec<_>>(), ["5.1.1 user unknown"]);
        assert_eq!(reply.raw(), b"550 5.1.1 user unknown\r\n");
        assert_eq!(reply.enhanced().unwrap().to_string(), "5.1.1");

        let reply = parsed(b"250 queued as ABC\r\n");
        assert_eq!((reply.enhanced(), reply.text()), (None, "queued as ABC"));
        let reply = parsed(b"554\r\n");
        assert_eq!((reply.code(), reply.text()), (554, ""));
        assert_eq!(reply.lines().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn multi_line() {
        let input = b"451-4.3.0 first\r\n451 4.3.0 second\r\nnext";
        let (reply, used) = parse_reply(input).unwrap().unwrap();
        assert_eq!(used, input.len() - 4);
        assert_eq!(reply.code(), 451);
        assert_eq!(reply.enhanced(), status(4, 3, 0));
        assert_eq!(reply.text(), "first\nsecond");
        assert_eq!(
            reply.lines().collect::<Vec<_>>(),
            ["4.3.0 first", "4.3.0 second"]
        );
        let ehlo = b"250-relay\r\n250-SIZE 100\r\n250 DSN\r\n";
        assert_eq!(
            parsed(ehlo).lines().collect::<Vec<_>>(),
            ["relay", "SIZE 100", "DSN"]
        );
        assert_eq!(parse_reply(b"250-relay\r\n250 SI").unwrap(), None);
    }

    #[test]
    fn enhanced_status_only_of_a_known_class() {
        let odd = parsed(b"250 1.2.3 odd\r\n");
        assert_eq!((odd.enhanced(), odd.text()), (None, "odd"));
        assert_eq!(parsed(b"250 2.1.5 ok\r\n").enhanced(), status(2, 1, 5));
        assert_eq!(parsed(b"421 4.4.2\r\n").enhanced(), status(4, 4, 2));
        assert_eq!(parsed(b"250 2.0 short\r\n").enhanced(), None);
    }

    #[test]
    fn malformed_lines() {
        for input in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"\r\n",
            b"\n",
            b"2x0 ok\r\n",
            b"250-first\r\nsecond\r\n",
            b"250-first\r\n 250 second\r\n",
        ] {
            assert!(
                matches!(parse_reply(input), Err(ReplyError::MalformedLine(_))),
                "{input:?}"
            );
        }
        let long_line = [b"x".repeat(200), b"\r\n".to_vec()].concat();
        let Err(ReplyError::MalformedLine(shown)) = reply_length(&long_line) else {
            panic!("a malformed line is an error");
        };
        assert_eq!(shown, "x".repeat(80));
        assert_eq!(
            ReplyError::MalformedLine("hello\r\n".into()).to_string(),
            r#"malformed reply line "hello\r\n""#
        );
    }

    #[test]
    fn odd_separator_ends_the_reply_and_keeps_the_text() {
        // smtp-proto refuses the separator; the reply is read all the same.
        let reply = parsed(b"250xyz\r\n");
        assert_eq!(
            (reply.code(), reply.text(), reply.enhanced()),
            (250, "yz", None)
        );
        let reply = parsed(b"421 4.4.2 bye\x1b[31m\r\n");
        assert_eq!(reply.text(), "bye\x1b[31m");
    }

    #[test]
    fn overlong_replies() {
        let endless = [b"250-".to_vec(), vec![b'x'; MAX_REPLY_LENGTH]].concat();
        assert_eq!(reply_length(&endless), Err(ReplyError::TooLong));
        let many_lines = b"250-x\r\n".repeat(MAX_REPLY_LENGTH / 7 + 2);
        assert_eq!(reply_length(&many_lines), Err(ReplyError::TooLong));
        assert_eq!(
            ReplyError::TooLong.to_string(),
            "reply longer than 65536 octets"
        );
        // Longer than smtp-proto's line limit, within ours: read, text kept.
        let long = format!("250-first\r\n250 2.0.0 {}\r\n", "x".repeat(5000));
        let reply = parsed(long.as_bytes());
        assert_eq!((reply.code(), reply.enhanced()), (250, None));
        assert!(reply.text().starts_with("first\n2.0.0 xxx"));
        assert_eq!(reply.text().len(), "first\n2.0.0 ".len() + 5000);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let reply = parsed(b"550 5.1.1 caf\xe9\r\n");
        assert_eq!(reply.lines().next().unwrap(), "5.1.1 caf\u{fffd}");
        assert!(reply.text().starts_with("caf"));
    }

    #[test]
    fn consumption_is_bounded_and_makes_progress() {
        let input = b"220 hi\r\n250-a\r\n250 b\r\n354 go\r\n";
        let mut rest = &input[..];
        let mut codes = Vec::new();
        while let Some((reply, used)) = parse_reply(rest).unwrap() {
            assert!(used > 0 && used <= rest.len());
            codes.push(reply.code());
            rest = &rest[used..];
        }
        assert_eq!(codes, [220, 250, 354]);
        assert!(rest.is_empty());
    }
}
