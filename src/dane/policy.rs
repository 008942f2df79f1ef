//! What an MX host's TLSA lookup means for a session with it (RFC 7672
//! §2.2), and the reference identifiers a DANE-TA certificate must carry
//! (RFC 7672 §3.2.3). Pure: the lookup has happened.

use std::fmt;
use std::sync::Arc;

use super::tlsa::{Tlsa, Usage};
use crate::dns::{TargetDnssec, TlsaLookup};

/// What DANE requires of a session with one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// DANE does not apply: the host's address records are not
    /// DNSSEC-secure, or it has no TLSA records (or only insecure ones).
    /// MTA-STS applies if the domain has a policy, else opportunistic TLS.
    NotApplicable,
    /// Usable TLSA records: STARTTLS is required and the certificate must
    /// match one of them.
    Authenticate(Arc<Expectation>),
    /// A secure TLSA RRset without one usable record: STARTTLS is still
    /// required, the certificate is not checked (RFC 7672 §2.2: the
    /// records say TLS is there, they cannot say what it looks like).
    EncryptOnly { base: String },
    /// The TLSA lookup failed for a host with secure addresses: the host
    /// is not used, and mail that finds no other host is deferred.
    LookupFailed(String),
}

/// What a certificate must match: the usable TLSA records of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The TLSA base domain: the name sent as SNI (RFC 7672 §8.1).
    pub base: String,
    /// Usable records only, with their usage.
    pub records: Vec<(Usage, Tlsa)>,
    /// The names a DANE-TA certificate must carry one of (lowercase, no
    /// trailing dot); DANE-EE ignores names.
    pub reference_ids: Vec<String>,
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLSA records of {}:", self.base)?;
        for (_, record) in &self.records {
            write!(f, " [{record}]")?;
        }
        Ok(())
    }
}

/// Decides from the TLSA lookup of `host`, an MX host of `next_hop` whose
/// DNSSEC proof is `dnssec`.
///
/// Reference identifiers (RFC 7672 §3.2.3): the TLSA base domain, the MX
/// host name as the MX record gave it when the base is its CNAME-expanded
/// name, and the next-hop domain — the latter only when the MX RRset was
/// secure, since an insecure one may have been forged to lead here.
pub fn decide(next_hop: &str, host: &str, dnssec: &TargetDnssec, lookup: TlsaLookup) -> HostPolicy {
    let (base, records) = match lookup {
        TlsaLookup::NotFound => return HostPolicy::NotApplicable,
        TlsaLookup::Failed(reason) => return HostPolicy::LookupFailed(reason),
        TlsaLookup::Found { base, records } => (base, records),
    };
    let usable: Vec<(Usage, Tlsa)> = records
        .into_iter()
        .filter_map(|record| Some((record.usable()?, record)))
        .collect();
    if usable.is_empty() {
        return HostPolicy::EncryptOnly { base };
    }
    let mut reference_ids: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !name.is_empty() && !reference_ids.contains(&name) {
            reference_ids.push(name);
        }
    };
    add(&base);
    add(host);
    if let Some(expanded) = &dnssec.expanded {
        add(expanded);
    }
    if dnssec.mx_secure {
        add(next_hop);
    }
    HostPolicy::Authenticate(Arc::new(Expectation {
        base,
        records: usable,
        reference_ids,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dnssec(mx_secure: bool, expanded: Option<&str>) -> TargetDnssec {
        TargetDnssec {
            mx_secure,
            host_secure: true,
            expanded: expanded.map(str::to_owned),
        }
    }

    fn record(usage: u8) -> Tlsa {
        Tlsa {
            usage,
            selector: 1,
            matching: 1,
            data: vec![7; 32],
        }
    }

    fn found(base: &str, records: Vec<Tlsa>) -> TlsaLookup {
        TlsaLookup::Found {
            base: base.to_owned(),
            records,
        }
    }

    #[test]
    fn no_records_or_a_failure() {
        assert_eq!(
            decide(
                "example.com",
                "mx.example.com",
                &dnssec(true, None),
                TlsaLookup::NotFound
            ),
            HostPolicy::NotApplicable
        );
        assert_eq!(
            decide(
                "example.com",
                "mx.example.com",
                &dnssec(true, None),
                TlsaLookup::Failed("SERVFAIL".into())
            ),
            HostPolicy::LookupFailed("SERVFAIL".into())
        );
    }

    #[test]
    fn pkix_usages_are_unusable_but_still_require_tls() {
        let policy = decide(
            "example.com",
            "mx.example.com",
            &dnssec(true, None),
            found("mx.example.com", vec![record(0), record(1)]),
        );
        assert_eq!(
            policy,
            HostPolicy::EncryptOnly {
                base: "mx.example.com".into()
            }
        );
    }

    #[test]
    fn usable_records_are_kept_with_their_usage() {
        let HostPolicy::Authenticate(expectation) = decide(
            "example.com",
            "mx.example.com",
            &dnssec(true, None),
            found("mx.example.com", vec![record(1), record(3), record(2)]),
        ) else {
            panic!("usable records authenticate");
        };
        let usages: Vec<Usage> = expectation
            .records
            .iter()
            .map(|(usage, _)| *usage)
            .collect();
        assert_eq!(usages, [Usage::EndEntity, Usage::TrustAnchor]);
    }

    #[test]
    fn reference_identifiers() {
        let ids = |mx_secure, expanded, base: &str| {
            let HostPolicy::Authenticate(expectation) = decide(
                "Example.COM",
                "mx.example.com",
                &dnssec(mx_secure, expanded),
                found(base, vec![record(2)]),
            ) else {
                panic!("authenticate");
            };
            expectation.reference_ids.clone()
        };
        assert_eq!(
            ids(true, None, "mx.example.com"),
            ["mx.example.com", "example.com"]
        );
        assert_eq!(ids(false, None, "mx.example.com"), ["mx.example.com"]);
        assert_eq!(
            ids(true, Some("mail.provider.net"), "mail.provider.net"),
            ["mail.provider.net", "mx.example.com", "example.com"]
        );
        assert_eq!(
            ids(false, Some("mail.provider.net"), "mx.example.com"),
            ["mx.example.com", "mail.provider.net"]
        );
    }
}
