//! Reply framing and parsing (RFC 5321 §4.2), pure: where a complete
//! (possibly multi-line) reply ends in the input, and what it says. The
//! parsing itself is smtp-proto's `ResponseReceiver` and `EhloResponse`.

use smtp_proto::EhloResponse;
use smtp_proto::response::parser::ResponseReceiver;

use super::{Disposition, RemoteReply};

/// The longest reply accepted, all lines together. EHLO replies are the
/// longest in practice and stay far below this.
pub(crate) const MAX_REPLY_LENGTH: usize = 64 * 1024;

/// Extensions and limits from the EHLO reply; empty after HELO.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Capabilities {
    /// smtp-proto's `EXT_*` flags.
    pub extensions: u32,
    /// SIZE; 0 when absent or unlimited.
    pub max_size: u64,
    /// smtp-proto's `AUTH_*` flags.
    pub auth_mechanisms: u64,
}

impl Capabilities {
    pub fn offers(&self, extension: u32) -> bool {
        self.extensions & extension != 0
    }

    /// Parses a complete 250 EHLO reply. Unknown keywords are ignored.
    pub fn from_ehlo(raw: &[u8]) -> Result<Capabilities, String> {
        let parsed = EhloResponse::parse(&mut raw.iter())
            .map_err(|error| format!("unparsable EHLO reply: {error}"))?;
        Ok(Capabilities {
            extensions: parsed.capabilities,
            max_size: parsed.size as u64,
            auth_mechanisms: parsed.auth_mechanisms,
        })
    }
}

/// The length of the first complete reply in `buffer`, `None` when more
/// input is needed. Every line must start with three digits; a line whose
/// fourth character is not `-` ends the reply.
pub(crate) fn complete_reply_length(buffer: &[u8]) -> Result<Option<usize>, String> {
    let mut start = 0;
    while let Some(offset) = memchr::memchr(b'\n', &buffer[start..]) {
        let end = start + offset + 1;
        let line = &buffer[start..end];
        if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "malformed reply line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ));
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
        return Err(format!("reply longer than {MAX_REPLY_LENGTH} octets"));
    }
    Ok(None)
}

/// Parses one complete reply as framed by [`complete_reply_length`].
pub(crate) fn parse_reply(raw: &[u8]) -> RemoteReply {
    let mut receiver = ResponseReceiver::default();
    let (code, enhanced, text) = match receiver.parse(&mut raw.iter()) {
        Ok(response) => (response.code, response.esc, response.message),
        // Framing guarantees the three digits; keep the text as it came.
        Err(_) => (
            u16::from(raw[0] - b'0') * 100
                + u16::from(raw[1] - b'0') * 10
                + u16::from(raw[2] - b'0'),
            [0; 3],
            raw.split(|&byte| byte == b'\n')
                .map(|line| String::from_utf8_lossy(line.get(4..).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    let status = if enhanced[0] != 0 && matches!(enhanced[0], 2 | 4 | 5) {
        format!("{}.{}.{}", enhanced[0], enhanced[1], enhanced[2])
    } else {
        match code / 100 {
            2 => "2.0.0",
            5 => "5.0.0",
            _ => "4.0.0",
        }
        .to_owned()
    };
    RemoteReply {
        code,
        status,
        text: one_line(&text),
    }
}

/// Control characters (line breaks of a multi-line reply included) become
/// single spaces, so a remote's text cannot break a log line or a DSN.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for character in text.chars() {
        let character = if character.is_control() {
            ' '
        } else {
            character
        };
        if character == ' ' && (line.is_empty() || line.ends_with(' ')) {
            continue;
        }
        line.push(character);
    }
    line.truncate(line.trim_end().len());
    line
}

/// What a negative (or nonsensical) reply means for the recipients it
/// applies to: 5xx bounces, anything else that is not 2xx defers.
pub(super) fn failure_disposition(reply: &RemoteReply) -> Disposition {
    if reply.is_permanent() {
        Disposition::Bounced
    } else {
        Disposition::Deferred
    }
}

/// The disposition for a refused RCPT: "too many recipients" (452 4.5.3,
/// or the 552 older servers send, RFC 5321 §4.5.3.1.10) means send it again
/// in the next transaction right away.
pub(super) fn recipient_failure_disposition(reply: &RemoteReply) -> Disposition {
    let too_many = matches!(reply.code, 452 | 552)
        && (reply.status.ends_with(".5.3")
            || reply
                .text
                .to_ascii_lowercase()
                .contains("too many recipients"));
    if too_many {
        Disposition::RetryNow
    } else {
        failure_disposition(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(complete_reply_length(b"250 ok\r\n"), Ok(Some(8)));
        assert_eq!(complete_reply_length(b"250-a\r\n250"), Ok(None));
        assert_eq!(
            complete_reply_length(b"250-a\r\n250 b\r\n354 x"),
            Ok(Some(14))
        );
        assert_eq!(complete_reply_length(b"250\r\n"), Ok(Some(5)));
        assert!(complete_reply_length(b"hello\r\n").is_err());
        assert!(complete_reply_length(&vec![b'x'; MAX_REPLY_LENGTH + 1]).is_err());
    }

    #[test]
    fn parsing() {
        let reply = parse_reply(b"550 5.1.1 user unknown\r\n");
        assert_eq!(reply.to_string(), "550 5.1.1 user unknown");
        let reply = parse_reply(b"451-4.3.0 first\r\n451 4.3.0 second\r\n");
        assert_eq!((reply.code, &*reply.status), (451, "4.3.0"));
        assert_eq!(reply.text, "first second");
        let reply = parse_reply(b"250 queued as ABC\r\n");
        assert_eq!(reply.to_string(), "250 2.0.0 queued as ABC");
        let reply = parse_reply(b"554\r\n");
        assert_eq!(reply.to_string(), "554 5.0.0 ");
        let reply = parse_reply(b"421 4.4.2 bye\x1b[31m\r\n");
        assert_eq!(reply.text, "bye [31m");
        let long = format!("250-first\r\n250 2.0.0 {}\r\n", "x".repeat(5000));
        let reply = parse_reply(long.as_bytes());
        assert_eq!(reply.code, 250);
        assert!(reply.text.starts_with("first ") && reply.text.len() > 5000);
    }

    #[test]
    fn too_many_recipients() {
        let reply = parse_reply(b"452 4.5.3 Too many recipients\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::RetryNow);
        let reply = parse_reply(b"452 too many recipients\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::RetryNow);
        let reply = parse_reply(b"452 4.3.1 out of space\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::Deferred);
        let reply = parse_reply(b"550 5.1.1 unknown\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::Bounced);
    }

    #[test]
    fn ehlo_capabilities() {
        let raw = b"250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-AUTH LOGIN PLAIN\r\n250 DSN\r\n";
        let capabilities = Capabilities::from_ehlo(raw).unwrap();
        assert!(capabilities.offers(smtp_proto::EXT_PIPELINING));
        assert!(capabilities.offers(smtp_proto::EXT_DSN));
        assert!(!capabilities.offers(smtp_proto::EXT_START_TLS));
        assert_eq!(capabilities.max_size, 1000);
        assert_ne!(capabilities.auth_mechanisms & smtp_proto::AUTH_PLAIN, 0);
        let bare = Capabilities::from_ehlo(b"250 mx.test\r\n").unwrap();
        assert_eq!(bare.extensions, 0);
    }
}
