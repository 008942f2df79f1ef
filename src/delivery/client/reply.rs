//! What a server's reply means to the outbound client: the [`RemoteReply`]
//! it is recorded as, and the disposition of a negative one. Framing and
//! parsing are `wire::reply`'s.

use crate::wire::reply::Reply;
use crate::wire::text::one_line;

use super::{Disposition, RemoteReply};

impl From<&Reply> for RemoteReply {
    /// The enhanced status code as given, else derived from the code's
    /// class; the text made one line, so a remote's text cannot break a log
    /// line or a DSN.
    fn from(reply: &Reply) -> RemoteReply {
        let code = reply.code();
        let status = match reply.enhanced() {
            Some(enhanced) => enhanced.to_string(),
            None => match code / 100 {
                2 => "2.0.0",
                5 => "5.0.0",
                _ => "4.0.0",
            }
            .to_owned(),
        };
        RemoteReply {
            code,
            status,
            text: one_line(reply.text()),
        }
    }
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
    use crate::wire::reply::parse_reply;

    fn parse_reply_as_remote(raw: &[u8]) -> RemoteReply {
        let (reply, used) = parse_reply(raw).unwrap().unwrap();
        assert_eq!(used, raw.len());
        RemoteReply::from(&reply)
    }

    #[test]
    fn parsing() {
        let reply = parse_reply_as_remote(b"550 5.1.1 user unknown\r\n");
        assert_eq!(reply.to_string(), "550 5.1.1 user unknown");
        let reply = parse_reply_as_remote(b"451-4.3.0 first\r\n451 4.3.0 second\r\n");
        assert_eq!((reply.code, &*reply.status), (451, "4.3.0"));
        assert_eq!(reply.text, "first second");
        let reply = parse_reply_as_remote(b"250 queued as ABC\r\n");
        assert_eq!(reply.to_string(), "250 2.0.0 queued as ABC");
        let reply = parse_reply_as_remote(b"554\r\n");
        assert_eq!(reply.to_string(), "554 5.0.0 ");
        let reply = parse_reply_as_remote(b"421 4.4.2 bye\x1b[31m\r\n");
        assert_eq!(reply.text, "bye [31m");
        let long = format!("250-first\r\n250 2.0.0 {}\r\n", "x".repeat(5000));
        let reply = parse_reply_as_remote(long.as_bytes());
        assert_eq!(reply.code, 250);
        assert!(reply.text.starts_with("first ") && reply.text.len() > 5000);
    }

    #[test]
    fn status_derived_from_the_class() {
        let reply = parse_reply_as_remote(b"354 go ahead\r\n");
        assert_eq!(reply.to_string(), "354 4.0.0 go ahead");
        let reply = parse_reply_as_remote(b"250 1.2.3 odd class\r\n");
        assert_eq!(reply.to_string(), "250 2.0.0 odd class");
        let reply = parse_reply_as_remote(b"250xyz\r\n");
        assert_eq!(reply.to_string(), "250 2.0.0 yz");
    }

    #[test]
    fn too_many_recipients() {
        let reply = parse_reply_as_remote(b"452 4.5.3 Too many recipients\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::RetryNow);
        let reply = parse_reply_as_remote(b"452 too many recipients\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::RetryNow);
        let reply = parse_reply_as_remote(b"452 4.3.1 out of space\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::Deferred);
        let reply = parse_reply_as_remote(b"550 5.1.1 unknown\r\n");
        assert_eq!(recipient_failure_disposition(&reply), Disposition::Bounced);
    }
}
