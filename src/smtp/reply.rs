//! SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463).

use std::borrow::Cow;
use std::fmt;

use relayq_spool::QueueId;

use super::admission::LaneFull;
use super::consumed_headers::HeaderRefusal;

/// One reply. Every 2xx, 4xx and 5xx reply carries an enhanced status code;
/// the greeting and 354 do not (RFC 2034 §3), and have an empty `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (`CODE STATUS TEXT\r\n`) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{self}\r\n").as_bytes());
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status.is_empty() {
            write!(f, "{} {}", self.code, self.text)
        } else {
            write!(f, "{} {} {}", self.code, self.status, self.text)
        }
    }
}

/// Writes a multi-line reply (`250-first`, ..., `250 last`); used for EHLO,
/// whose keyword lines carry no enhanced status code (RFC 2034 §3).
pub fn write_multiline(code: u16, lines: &[String], out: &mut Vec<u8>) {
    for (index, line) in lines.iter().enumerate() {
        let separator = if index + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{separator}{line}\r\n").as_bytes());
    }
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "Ok")
}

pub fn bad_sequence(text: &'static str) -> Reply {
    Reply::new(503, "5.5.1", text)
}

pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Error: line too long")
}

pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Error: too many errors, closing connection")
}

pub fn idle_timeout() -> Reply {
    Reply::new(421, "4.4.2", "Error: timeout exceeded, closing connection")
}

/// The session was closed to make room for a waiting client (connection
/// pressure); the client may come back.
pub fn shed() -> Reply {
    Reply::new(
        421,
        "4.4.2",
        "Error: too many connections, closing the longest-idle one; try again later",
    )
}

pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2", "Service shutting down, closing connection")
}

pub fn spool_unavailable() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Error: queue file write error, try again later",
    )
}

/// A message a DKIM key covers that could not be signed: not queued, rather
/// than sent unsigned (ARCHITECTURE.md, the DKIM invariant).
pub fn not_signed(error: &crate::dkim::SigningError) -> Reply {
    Reply::new(
        451,
        "4.3.0",
        format!("Error: message not queued: cannot DKIM-sign it ({error})"),
    )
}

pub fn insufficient_storage_at_mail() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
}

/// RFC 5321 §4.2.2: 452 is "insufficient system storage", the reply a
/// client retries later; the text names the lane so an operator reading a
/// producer's log sees which cap was hit.
pub fn lane_full(full: LaneFull) -> Reply {
    Reply::new(
        452,
        "4.3.1",
        format!("{} lane full, try again later", full.lane),
    )
}

pub fn insufficient_storage_at_connect() -> Reply {
    Reply::new(421, "4.3.1", "Insufficient system storage, try again later")
}

pub fn message_too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}

/// After a `552` in the middle of DATA, the client sent more than the
/// server searches for the end of data: the session cannot get back in step
/// with its commands except by reading on, so it is closed.
pub fn content_not_read() -> Reply {
    Reply::new(
        421,
        "4.5.0",
        "Error: message content over the size limit not read, closing connection",
    )
}

/// A refused BDAT chunk the server will not read (RFC 3030 §2 asks it to
/// discard pipelined chunks, within a bound): what follows the command is
/// chunk data, not commands, so the session is closed.
pub fn chunk_not_read() -> Reply {
    Reply::new(
        421,
        "4.5.0",
        "Error: refused BDAT chunk not read, closing connection",
    )
}

/// The consumed header fields (idempotency key, metadata) make the message
/// unacceptable as it is.
pub fn header_refused(refusal: &HeaderRefusal) -> Reply {
    Reply::new(550, "5.6.0", refusal.to_string())
}

/// A repeat of an idempotent submission: the original is queued, nothing
/// more is stored (docs/idempotency.md).
pub fn duplicate(original: QueueId) -> Reply {
    Reply::new(
        250,
        "2.0.0",
        format!("Ok: queued as {original} (duplicate)"),
    )
}

/// Another message under an idempotency key already used.
pub fn idempotency_conflict(original: QueueId) -> Reply {
    Reply::new(
        554,
        "5.6.0",
        format!("Idempotency-Key already used for a different message ({original})"),
    )
}

/// A keyed message that came while the idempotency claims are still being
/// read from the spool at start (for longer than `claims::LOAD_WAIT`).
pub fn claims_loading() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "Error: idempotency keys still loading after a restart, try again later",
    )
}
