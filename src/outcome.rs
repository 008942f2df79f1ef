//! What a delivery attempt found out about a recipient: the server's reply
//! (or a local condition written the same way), the host that gave it, and
//! how the session was protected.
//! Plain data shared by the outbound client, which produces it, and the
//! queue's transitions, which record it.

use std::fmt;
use std::net::SocketAddr;

/// A server's reply, or a local condition expressed the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// 0 when the condition is local (timeout, connection lost, size).
    pub code: u16,
    /// The enhanced status code as given, else derived from the code class
    /// (`2.0.0`, `4.0.0`, `5.0.0`); for local conditions e.g. `4.4.2`.
    pub status: String,
    /// One line; the lines of a multi-line reply joined with a space.
    pub text: String,
}

impl RemoteReply {
    /// A condition detected on this side.
    pub fn local(status: &str, text: impl Into<String>) -> RemoteReply {
        RemoteReply {
            code: 0,
            status: status.to_owned(),
            text: text.into(),
        }
    }

    pub fn is_local(&self) -> bool {
        self.code == 0
    }

    /// The class of the reply: 2, 4 or 5 (from the status when local).
    pub fn class(&self) -> u8 {
        if self.code == 0 {
            self.status.bytes().next().map_or(4, |digit| digit - b'0')
        } else {
            (self.code / 100) as u8
        }
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }
}

impl fmt::Display for RemoteReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code != 0 {
            write!(f, "{} ", self.code)?;
        }
        write!(f, "{} {}", self.status, self.text)
    }
}

/// One host to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name: SNI, certificate verification and logs.
    pub host: String,
    pub address: SocketAddr,
}

impl fmt::Display for Target {
    /// Postfix's `relay=` form: `mx.example.com[192.0.2.1]:25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}[{}]:{}",
            self.host,
            self.address.ip(),
            self.address.port()
        )
    }
}

/// How a delivery attempt was protected: the `tls=` and `policy=` of its
/// log line and event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection {
    pub tls: TlsProtection,
    pub policy: PolicyKind,
}

/// Whether the session was encrypted, and whether the certificate verified
/// for the host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsProtection {
    /// Plaintext, or no session at all.
    #[default]
    None,
    Unverified,
    Verified,
}

impl TlsProtection {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsProtection::None => "none",
            TlsProtection::Unverified => "unverified",
            TlsProtection::Verified => "verified",
        }
    }
}

/// Which policy the delivery was under (RFC 8461 modes; `none` mode and
/// no policy read alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyKind {
    #[default]
    None,
    /// `mode: testing`: refusals are only logged.
    MtaStsTesting,
    /// `mode: enforce`.
    MtaSts,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::MtaStsTesting => "mta-sts-testing",
            PolicyKind::MtaSts => "mta-sts",
        }
    }
}
