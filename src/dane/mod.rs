//! DANE for SMTP (RFC 7672): what an MX host's TLSA records require of a
//! session with it (`policy`, pure), and the rustls verifier that checks
//! the server's certificate against them (`verifier`). The records come
//! from `dns` (DNSSEC-validated, `delivery.dane`); `tlsa` reads them.
//!
//! Invariant: a host whose address records are DNSSEC-secure and whose
//! TLSA lookup failed is never used, with or without TLS (the downgrade
//! DANE exists to stop); a host with usable TLSA records gets no mail
//! except over TLS with a certificate that matched one of them.

mod policy;
mod tlsa;
mod verifier;

pub use self::policy::{Expectation, HostPolicy, decide};
pub use self::tlsa::{Tlsa, Usage, public_key_info};
pub use self::verifier::{DaneVerifier, Verdict};

use crate::dns::{MxResolver, TargetDnssec};

/// How DANE applied to an open session, kept with the connection so that
/// its reuse for another message can be judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionDane {
    /// The host's addresses were not secure, or it has no TLSA records.
    NotApplicable,
    /// The certificate matched a usable TLSA record; `name` is the
    /// reference identifier a DANE-TA certificate carried.
    Authenticated { usage: Usage, name: Option<String> },
    /// Secure TLSA records, none usable: encrypted, not authenticated.
    EncryptOnly,
}

/// What DANE requires of a session with `host` (an MX host of
/// `next_hop`, reached on `port`), looking its TLSA records up only when
/// its address records were DNSSEC-secure (RFC 7672 §2.2.2).
pub async fn host_policy(
    resolver: &MxResolver,
    next_hop: &str,
    host: &str,
    dnssec: Option<&TargetDnssec>,
    port: u16,
) -> HostPolicy {
    let Some(dnssec) = dnssec.filter(|dnssec| dnssec.host_secure) else {
        return HostPolicy::NotApplicable;
    };
    let lookup = resolver.tlsa(host, dnssec.expanded.as_deref(), port).await;
    decide(next_hop, host, dnssec, lookup)
}
