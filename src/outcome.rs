//! What a delivery attempt found out about a recipient: the server's reply
//! (or a local condition written the same way), the host that gave it, and
//! how the session was protected (and, for DANE, what became of it).
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
    /// The certificate matched the host's DNSSEC-signed TLSA records
    /// (RFC 7672).
    Dane,
}

impl TlsProtection {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsProtection::None => "none",
            TlsProtection::Unverified => "unverified",
            TlsProtection::Verified => "verified",
            TlsProtection::Dane => "dane",
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
    /// The MX host has DNSSEC-signed TLSA records (RFC 7672); DANE wins
    /// over an MTA-STS policy of the same domain (RFC 8461 §2).
    Dane,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::MtaStsTesting => "mta-sts-testing",
            PolicyKind::MtaSts => "mta-sts",
            PolicyKind::Dane => "dane",
        }
    }
}

/// What DANE (RFC 7672) made of one attempt at a session with an MX host,
/// with `delivery.dane` on: the `result` of
/// `relayq_dane_results_total`, and the RFC 8460 §4.3 result type a TLS
/// report counts it under. Plain data: produced once, where the session
/// was opened (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaneResult {
    /// A usable TLSA record matched the certificate: `tls=dane`.
    Matched,
    /// Secure TLSA records, none usable: TLS was required, the certificate
    /// not authenticated (RFC 7672 §2.2).
    NoUsableTlsa,
    /// The certificate matched no usable TLSA record.
    Mismatch(CertificateFailure),
    /// The host did not offer STARTTLS, or refused it.
    NoStarttls,
    /// The TLS handshake failed for another reason.
    HandshakeFailed,
    /// The TLSA lookup failed for a host with secure addresses: SERVFAIL,
    /// a timeout, a bogus answer.
    TlsaLookupFailed,
    /// The MX or address lookup did not validate (bogus, indeterminate),
    /// so no host could be judged.
    DnssecFailed,
    /// DANE does not apply: the host's addresses are not DNSSEC-secure, or
    /// it has no (secure) TLSA records.
    Insecure,
}

/// Why a certificate failed DANE authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFailure {
    /// No record matched the certificate or its chain, or the chain does
    /// not lead to the matched trust anchor.
    NotTrusted,
    /// DANE-TA: the chain is good but names none of the reference
    /// identifiers.
    HostMismatch,
    /// DANE-TA: the certificate (or one of its chain) is out of date.
    Expired,
}

impl DaneResult {
    /// Every result, in the order of [`DaneResult::index`].
    pub const LABELS: [&'static str; 8] = [
        "matched",
        "no_usable_tlsa",
        "mismatch",
        "no_starttls",
        "handshake_failed",
        "tlsa_lookup_failed",
        "dnssec_failed",
        "insecure",
    ];

    /// Position in [`DaneResult::LABELS`].
    pub fn index(self) -> usize {
        match self {
            DaneResult::Matched => 0,
            DaneResult::NoUsableTlsa => 1,
            DaneResult::Mismatch(_) => 2,
            DaneResult::NoStarttls => 3,
            DaneResult::HandshakeFailed => 4,
            DaneResult::TlsaLookupFailed => 5,
            DaneResult::DnssecFailed => 6,
            DaneResult::Insecure => 7,
        }
    }

    /// The `result` label of `relayq_dane_results_total`.
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// The RFC 8460 §4.3 result type of a failed DANE session; `None` for
    /// a success (`Matched`) and where no DANE policy applied (`Insecure`).
    pub fn tls_rpt_result_type(self) -> Option<&'static str> {
        match self {
            DaneResult::Matched | DaneResult::Insecure => None,
            DaneResult::NoUsableTlsa => Some("tlsa-invalid"),
            DaneResult::Mismatch(CertificateFailure::NotTrusted) => Some("certificate-not-trusted"),
            DaneResult::Mismatch(CertificateFailure::HostMismatch) => {
                Some("certificate-host-mismatch")
            }
            DaneResult::Mismatch(CertificateFailure::Expired) => Some("certificate-expired"),
            DaneResult::NoStarttls => Some("starttls-not-supported"),
            DaneResult::HandshakeFailed => Some("validation-failure"),
            DaneResult::TlsaLookupFailed | DaneResult::DnssecFailed => Some("dnssec-invalid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dane_results_have_one_label_each() {
        let all = [
            DaneResult::Matched,
            DaneResult::NoUsableTlsa,
            DaneResult::Mismatch(CertificateFailure::Expired),
            DaneResult::NoStarttls,
            DaneResult::HandshakeFailed,
            DaneResult::TlsaLookupFailed,
            DaneResult::DnssecFailed,
            DaneResult::Insecure,
        ];
        for (index, result) in all.iter().enumerate() {
            assert_eq!(result.index(), index);
            assert_eq!(result.as_str(), DaneResult::LABELS[index]);
        }
        assert_eq!(DaneResult::Matched.tls_rpt_result_type(), None);
        assert_eq!(
            DaneResult::Mismatch(CertificateFailure::HostMismatch).tls_rpt_result_type(),
            Some("certificate-host-mismatch")
        );
        assert_eq!(
            DaneResult::NoStarttls.tls_rpt_result_type(),
            Some("starttls-not-supported")
        );
    }
}
