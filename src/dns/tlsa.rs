//! TLSA lookups for DANE (RFC 7672 §2.2.2): `_PORT._tcp.HOST` from the
//! validating resolver, at the CNAME-expanded host name first, and what
//! the answer means for delivery.

use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::dane::Tlsa;

use super::MxResolver;
use super::lookup::{Answer, Path, ask};
use super::names::absolute_name;

/// What the TLSA lookup for one MX host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaLookup {
    /// A DNSSEC-secure TLSA RRset at `base` (the TLSA base domain), usable
    /// records or not.
    Found { base: String, records: Vec<Tlsa> },
    /// No TLSA records (NXDOMAIN or NODATA, secure or not), or only
    /// insecure ones: DANE does not apply to the host.
    NotFound,
    /// SERVFAIL, a timeout, a bogus or indeterminate answer: the host may
    /// not be used without DANE, nor with it (RFC 7672 §2.2).
    Failed(String),
}

impl MxResolver {
    /// The TLSA records of an MX host reached on `port`, for a host whose
    /// address records were DNSSEC-secure (never asked otherwise: RFC 7672
    /// §2.2.2). `expanded` is the host's CNAME-expanded name, looked up
    /// first; the host's own name is asked when the expanded one has no
    /// secure records. Without DNSSEC validation (no `delivery.dane`) this
    /// is always `Failed`.
    pub async fn tlsa(&self, host: &str, expanded: Option<&str>, port: u16) -> TlsaLookup {
        let Some(validation) = &self.inner.validation else {
            return TlsaLookup::Failed("DNSSEC validation is not enabled".to_owned());
        };
        let resolver = match validation.resolver(self.plain()).await {
            Ok(resolver) => resolver,
            Err(reason) => return TlsaLookup::Failed(reason),
        };
        let path = Path {
            resolver,
            validating: true,
        };
        let mut bases: Vec<&str> = expanded.into_iter().collect();
        if !bases.contains(&host) {
            bases.push(host);
        }
        for base in bases {
            let Ok(name) = absolute_name(&format!("_{port}._tcp.{base}")) else {
                return TlsaLookup::Failed(format!("{base:?} is not a valid TLSA base domain"));
            };
            let lookup = tokio::time::timeout(
                self.inner.total,
                ask(path, &name, RecordType::TLSA, tlsa_of),
            )
            .await
            .unwrap_or_else(|_| Err(format!("timeout looking up TLSA for {}", text(&name))));
            match lookup {
                Err(reason) => return TlsaLookup::Failed(reason),
                Ok(reply) => match reply.answer {
                    Answer::Records(records) if reply.secure => {
                        return TlsaLookup::Found {
                            base: base.trim_end_matches('.').to_ascii_lowercase(),
                            records,
                        };
                    }
                    // Insecure records, or none: the next base, or no DANE.
                    Answer::Records(_) | Answer::NoData | Answer::NxDomain => {}
                },
            }
        }
        TlsaLookup::NotFound
    }
}

fn tlsa_of(data: &RData) -> Option<Tlsa> {
    match data {
        RData::TLSA(tlsa) => Some(Tlsa {
            usage: tlsa.cert_usage.into(),
            selector: tlsa.selector.into(),
            matching: tlsa.matching.into(),
            data: tlsa.cert_data.clone(),
        }),
        _ => None,
    }
}

fn text(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}
