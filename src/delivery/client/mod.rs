//! The outbound SMTP client (RFC 5321): one connection to one host, EHLO,
//! STARTTLS, AUTH, pipelined transactions with a streamed, dot-stuffed body,
//! and a per-recipient outcome for each transaction.
//!
//! Code map: this file holds the public types; `connection` opens a session
//! (greeting, EHLO/HELO, STARTTLS) and ends it; `auth` runs AUTH;
//! `transaction` runs MAIL/RCPT/DATA; `params` builds the command lines
//! (pure); `body` streams the content, dot-stuffed by `wire::dot`; `reply`
//! turns replies, framed and parsed by `wire::reply`, into [`RemoteReply`]s
//! and dispositions (pure); `transport` is the socket with per-read/write
//! timeouts. EHLO is read by `wire::ehlo`.
//!
//! Invariant: delivery outcomes are data (`Attempt`), never errors. Only
//! opening a session fails with an error (`ConnectError`), because then no
//! recipient was attempted and the caller tries the next host.

mod auth;
mod body;
mod connection;
mod params;
mod reply;
mod transaction;
mod transport;

use std::fmt;
use std::time::Duration;

use mail_auth::report::tlsrpt::ResultType;

use crate::queue::envelope::{Notify, Ret};

pub use crate::outcome::{RemoteReply, Target};
pub use connection::Connection;

/// What the client says and how long it waits. Each timeout bounds one
/// step; none of them bounds a whole session.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The name sent in EHLO/HELO.
    pub helo_name: String,
    /// TCP connection establishment.
    pub connect_timeout: Duration,
    /// The server's 220 greeting (and an implicit-TLS handshake).
    pub greeting_timeout: Duration,
    /// EHLO, HELO, STARTTLS (and its handshake), AUTH, MAIL, RCPT, RSET.
    pub command_timeout: Duration,
    /// The reply to DATA, and each write of message content.
    pub data_timeout: Duration,
    /// The reply to the final dot.
    pub final_timeout: Duration,
}

impl ClientSettings {
    /// The timeouts RFC 5321 §4.5.3.2 recommends, with a data
    /// block timeout of 3 minutes also used for the DATA reply.
    pub fn new(helo_name: impl Into<String>) -> ClientSettings {
        ClientSettings {
            helo_name: helo_name.into(),
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            final_timeout: Duration::from_secs(600),
        }
    }
}

/// How a connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never STARTTLS.
    Disabled,
    /// STARTTLS when offered, any certificate accepted (whether it verified
    /// is recorded in [`TlsInfo`] and logged); a failed handshake retries
    /// this host once in plaintext.
    Opportunistic,
    /// STARTTLS with a verified certificate for the target name, else the
    /// host fails (temporarily).
    Required,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit { verify: bool },
    /// STARTTLS mandatory (routes with `tls = "starttls"`).
    StartTls { verify: bool },
}

/// AUTH credentials for a route. Sent only over TLS.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The TLS session of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Whether the certificate verified for the target name (by DANE, for
    /// a DANE session).
    pub verified: bool,
    /// When it did not: why, as an RFC 8460 result type (for TLS reports).
    pub certificate_failure: Option<ResultType>,
}

/// One message as the client sends it: the envelope's view, borrowed.
#[derive(Debug, Clone)]
pub struct OutboundMessage<'a> {
    /// Empty for the null reverse-path `<>`.
    pub reverse_path: &'a str,
    /// At most 100 (the caller splits larger sets, RFC 5321 §4.5.3.1.8).
    /// Addresses come validated from intake.
    pub recipients: &'a [OutboundRecipient],
    /// The stored size in octets, compared with the server's SIZE.
    pub size: u64,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// Decoded; xtext-encoded on the wire.
    pub envid: Option<&'a str>,
    pub mt_priority: Option<i8>,
}

#[derive(Debug, Clone)]
pub struct OutboundRecipient {
    pub address: String,
    pub notify: Notify,
    /// The original recipient (rfc822 address type), decoded.
    pub orcpt: Option<String>,
}

/// The result of one transaction.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// One per recipient, in the order of `OutboundMessage::recipients`.
    pub outcomes: Vec<RecipientOutcome>,
    /// False when the connection must not carry another transaction (lost,
    /// timed out, 421, or a failed RSET).
    pub connection_usable: bool,
    /// The server never answered this transaction's MAIL FROM, so nothing
    /// of the message can have been delivered: a new connection may carry
    /// it at once without risking a duplicate.
    pub nothing_sent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    pub disposition: Disposition,
    pub reply: RemoteReply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    Deferred,
    Bounced,
    /// 452 4.5.3 "too many recipients" (RFC 5321 §4.5.3.1.10): send this
    /// recipient in a further transaction right away.
    RetryNow,
}

/// Why no session could be opened with a host. The caller tries the next
/// host; no recipient has been attempted.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct ConnectError {
    pub kind: ConnectErrorKind,
    /// Names the host and what failed; never contains a password.
    pub detail: String,
    /// The server's reply when it refused (greeting, EHLO, STARTTLS, AUTH).
    pub remote: Option<RemoteReply>,
    /// A TLS handshake that failed on the server's certificate: why, as an
    /// RFC 8460 result type (for TLS reports).
    pub certificate_failure: Option<ResultType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// No TCP connection: refused, unreachable, or timed out connecting.
    /// Counts toward a "dead destination".
    Connect,
    /// Connected, but the server did not answer in time.
    Timeout,
    /// 4xx/5xx greeting, EHLO refused with 4xx, or EHLO and HELO both
    /// refused with 5xx.
    Greeting,
    /// TLS handshake failed, or STARTTLS was refused when TLS is mandatory.
    Tls,
    /// STARTTLS not offered but required.
    TlsRequired,
    /// AUTH refused, not offered, or not attempted because there was no TLS.
    Auth,
    /// Connection lost or a reply that makes no sense.
    Protocol,
}

impl ConnectError {
    pub(crate) fn new(kind: ConnectErrorKind, detail: impl Into<String>) -> ConnectError {
        ConnectError {
            kind,
            detail: detail.into(),
            remote: None,
            certificate_failure: None,
        }
    }

    pub(crate) fn refused(
        kind: ConnectErrorKind,
        detail: impl Into<String>,
        reply: RemoteReply,
    ) -> ConnectError {
        ConnectError {
            kind,
            detail: detail.into(),
            remote: Some(reply),
            certificate_failure: None,
        }
    }

    /// For logs and a recipient's last reply: the server's reply when it
    /// refused, else a local 4.x.x reply (all of these are temporary).
    pub fn reply(&self) -> RemoteReply {
        if let Some(remote) = &self.remote {
            return remote.clone();
        }
        let status = match self.kind {
            ConnectErrorKind::Connect => "4.4.1",
            ConnectErrorKind::Timeout => "4.4.2",
            ConnectErrorKind::Greeting => "4.4.0",
            ConnectErrorKind::Tls => "4.7.5",
            ConnectErrorKind::TlsRequired => "4.7.10",
            ConnectErrorKind::Auth => "4.7.8",
            ConnectErrorKind::Protocol => "4.5.0",
        };
        RemoteReply::local(status, self.detail.clone())
    }
}

/// A failure on an open connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `stage` reads like "waiting for reply to DATA".
    #[error("timeout {0}")]
    Timeout(&'static str),
    #[error("connection lost while {stage}: {detail}")]
    ConnectionLost { stage: &'static str, detail: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Reading the stored message failed; the transaction was abandoned.
    #[error("cannot read the queued message: {0}")]
    Body(std::io::Error),
    /// A reply that is not the expected one (e.g. to RSET).
    #[error("{0}")]
    Rejected(RemoteReply),
}

impl ClientError {
    /// The reply recorded for recipients this error left undecided.
    pub fn reply(&self) -> RemoteReply {
        match self {
            ClientError::Timeout(_) | ClientError::ConnectionLost { .. } => {
                RemoteReply::local("4.4.2", self.to_string())
            }
            ClientError::Protocol(_) => RemoteReply::local("4.5.0", self.to_string()),
            ClientError::Body(_) => RemoteReply::local("4.3.0", self.to_string()),
            ClientError::Rejected(reply) => reply.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_display() {
        let remote = RemoteReply {
            code: 550,
            status: "5.1.1".into(),
            text: "user unknown".into(),
        };
        assert_eq!(remote.to_string(), "550 5.1.1 user unknown");
        assert!(remote.is_permanent());
        let local = ClientError::Timeout("waiting for reply to DATA").reply();
        assert_eq!(local.to_string(), "4.4.2 timeout waiting for reply to DATA");
        assert_eq!(local.class(), 4);
    }

    #[test]
    fn credentials_debug_hides_password() {
        let credentials = Credentials {
            username: "app".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("app") && !shown.contains("hunter2"));
    }
}
