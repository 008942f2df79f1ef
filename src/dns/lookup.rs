//! One DNS query, and one host's addresses: what hickory's answers and
//! errors mean for delivery, and, from the validating resolver, what DNSSEC
//! proved about them.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError as ResponseError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::config::IpVersion;

use super::MxResolver;
use super::names::host_text;
use super::order::{Exchange, HostAddresses};

/// What one query said, short of a temporary failure.
pub(super) enum Answer<T> {
    Records(Vec<T>),
    /// NOERROR with no records of the type asked for.
    NoData,
    NxDomain,
}

/// An answer and what DNSSEC proved about it.
pub(super) struct Reply<T> {
    pub answer: Answer<T>,
    /// Validated secure: every record of the answer (CNAMEs leading to it
    /// included), or the denial of existence. Never set by the plain
    /// resolver.
    pub secure: bool,
    /// The name the records belong to when CNAMEs led there from the name
    /// asked.
    pub owner: Option<Name>,
}

/// The resolver a lookup goes to: the plain one, or the one that validates
/// DNSSEC (MX delivery with `delivery.dane`).
#[derive(Clone, Copy)]
pub(super) struct Path<'a> {
    pub resolver: &'a TokioResolver,
    pub validating: bool,
}

/// What became of looking up one host's addresses.
pub(super) enum HostLookup {
    Found(HostAddresses, HostProof),
    NoSuchHost,
    NoAddresses,
    Temporary(String),
}

/// What DNSSEC proved about the addresses of a host.
#[derive(Debug, Clone, Default)]
pub(super) struct HostProof {
    /// Every answer that gave addresses was validated secure.
    pub secure: bool,
    /// The name the addresses belong to, when CNAMEs led there.
    pub expanded: Option<Name>,
}

impl MxResolver {
    /// A and/or AAAA of `name` from the plain resolver.
    pub(super) async fn resolve_host(&self, name: &Name) -> HostLookup {
        self.resolve_host_on(self.plain(), name).await
    }

    /// A and/or AAAA of `name`, as `ip_version` needs, asked concurrently.
    /// One family's answer is enough even if the other failed; the host is
    /// secure when every answer that gave addresses was.
    pub(super) async fn resolve_host_on(&self, path: Path<'_>, name: &Name) -> HostLookup {
        let want_ipv4 = self.inner.ip_version != IpVersion::Ipv6;
        let want_ipv6 = self.inner.ip_version != IpVersion::Ipv4;
        let (ipv4, ipv6) = tokio::join!(
            async {
                if want_ipv4 {
                    Some(ask(path, name, RecordType::A, ipv4_of).await)
                } else {
                    None
                }
            },
            async {
                if want_ipv6 {
                    Some(ask(path, name, RecordType::AAAA, ipv6_of).await)
                } else {
                    None
                }
            },
        );
        let mut addresses = HostAddresses::default();
        let mut proof = HostProof {
            secure: path.validating,
            expanded: None,
        };
        let mut problem = None;
        let mut all_nxdomain = true;
        for (reply, list) in [(ipv4, &mut addresses.ipv4), (ipv6, &mut addresses.ipv6)] {
            match reply.map(|reply| reply.map(|r| (r.answer, r.secure, r.owner))) {
                None | Some(Ok((Answer::NxDomain, ..))) => {}
                Some(Ok((Answer::Records(found), secure, owner))) => {
                    all_nxdomain = false;
                    *list = found;
                    proof.secure &= secure;
                    proof.expanded = proof.expanded.or(owner);
                }
                Some(Ok((Answer::NoData, ..))) => all_nxdomain = false,
                Some(Err(reason)) => {
                    all_nxdomain = false;
                    problem.get_or_insert(reason);
                }
            }
        }
        match (addresses.is_empty(), problem) {
            (false, _) => HostLookup::Found(addresses, proof),
            (true, Some(reason)) => HostLookup::Temporary(reason),
            (true, None) if all_nxdomain => HostLookup::NoSuchHost,
            (true, None) => HostLookup::NoAddresses,
        }
    }

    /// The TXT records of `name` (each record's strings joined, RFC 7208
    /// §3.3 and RFC 8461 §3.1 alike), lossily decoded; none for NXDOMAIN or
    /// NODATA. `Err` is a readable reason (timeout, SERVFAIL, a bad name).
    pub async fn txt_records(&self, name: &str) -> Result<Vec<String>, String> {
        let name = super::names::absolute_name(name).map_err(|error| error.to_string())?;
        match self.query(&name, RecordType::TXT, txt_of).await? {
            Answer::Records(records) => Ok(records),
            Answer::NoData | Answer::NxDomain => Ok(Vec::new()),
        }
    }

    pub(super) fn static_host(&self, name: &Name) -> Option<HostAddresses> {
        let hosts = &self.inner.hosts;
        let addresses = |record_type| -> Vec<IpAddr> {
            hosts
                .lookup_static_host(&Query::query(name.clone(), record_type))
                .map(|lookup| {
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|r| r.data.ip_addr())
                        .collect()
                })
                .unwrap_or_default()
        };
        let found = HostAddresses {
            ipv4: addresses(RecordType::A),
            ipv6: addresses(RecordType::AAAA),
        };
        (!found.is_empty()).then_some(found)
    }

    /// One query to the plain resolver; `Err` is a readable reason to
    /// defer.
    pub(super) async fn query<T>(
        &self,
        name: &Name,
        record_type: RecordType,
        extract: fn(&RData) -> Option<T>,
    ) -> Result<Answer<T>, String> {
        ask(self.plain(), name, record_type, extract)
            .await
            .map(|reply| reply.answer)
    }

    pub(super) fn plain(&self) -> Path<'_> {
        Path {
            resolver: &self.inner.resolver,
            validating: false,
        }
    }
}

/// One query on `path`; `Err` is a readable reason to defer. From the
/// validating resolver, an answer DNSSEC could not prove secure or
/// insecure (bogus, indeterminate) is such a failure too (RFC 7672
/// §2.1.1): it is never taken for an unsigned one.
pub(super) async fn ask<T>(
    path: Path<'_>,
    name: &Name,
    record_type: RecordType,
    extract: fn(&RData) -> Option<T>,
) -> Result<Reply<T>, String> {
    let failed = |what: &str| {
        let shown = if name.is_root() {
            ".".to_owned()
        } else {
            host_text(name)
        };
        format!("{what} looking up {record_type} for {shown}")
    };
    match path.resolver.lookup(name.clone(), record_type).await {
        Ok(lookup) => {
            // Answers may include the CNAMEs that led to the records.
            let answers = lookup.answers();
            let secure = match path.validating {
                true => proven(answers).map_err(&failed)?,
                false => false,
            };
            let records: Vec<T> = answers.iter().filter_map(|r| extract(&r.data)).collect();
            let owner = expanded_owner(name, answers);
            let answer = if records.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(records)
            };
            Ok(Reply {
                answer,
                secure,
                owner,
            })
        }
        Err(NetError::Dns(ResponseError::NoRecordsFound(no_records))) => {
            let secure = match (path.validating, &no_records.authorities) {
                (true, Some(authorities)) => proven(authorities).map_err(&failed)?,
                // A negative answer without records can only have passed
                // validation by proving the name's zone unsigned.
                _ => false,
            };
            let answer = match no_records.response_code {
                ResponseCode::NXDomain => Answer::NxDomain,
                ResponseCode::NoError => Answer::NoData,
                other => return Err(failed(&format!("DNS error {}", u16::from(other)))),
            };
            Ok(Reply {
                answer,
                secure,
                owner: None,
            })
        }
        // A denial DNSSEC proved insecure (an opt-out NSEC3 range, an
        // unsigned zone): as from a zone that was never signed.
        Err(NetError::Dns(ResponseError::Nsec {
            proof: Proof::Insecure,
            response,
            ..
        })) => Ok(Reply {
            answer: if response.response_code == ResponseCode::NXDomain {
                Answer::NxDomain
            } else {
                Answer::NoData
            },
            secure: false,
            owner: None,
        }),
        Err(error) => Err(failed(&failure_text(&error))),
    }
}

/// What the validating resolver proved about `records` (RRSIGs aside):
/// `Ok(true)` when every one is secure, `Ok(false)` when they are provably
/// insecure, `Err` naming the failure when any is bogus or could not be
/// decided.
fn proven(records: &[Record]) -> Result<bool, &'static str> {
    let mut all_secure = true;
    for record in records
        .iter()
        .filter(|r| r.record_type() != RecordType::RRSIG)
    {
        match record.proof {
            Proof::Secure => {}
            Proof::Insecure => all_secure = false,
            Proof::Bogus => return Err("DNSSEC validation failed (bogus)"),
            Proof::Indeterminate => return Err("DNSSEC validation failed (indeterminate)"),
        }
    }
    Ok(all_secure)
}

/// The name the CNAMEs in `answers` lead to from `name`, if any.
fn expanded_owner(name: &Name, answers: &[Record]) -> Option<Name> {
    let mut current = name.clone();
    // RFC 1034 §3.6.2 chains are short; a loop ends here.
    for _ in 0..16 {
        let next = answers.iter().find_map(|record| match &record.data {
            RData::CNAME(target) if record.name == current => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) => current = target,
            None => break,
        }
    }
    (current != *name).then_some(current)
}

pub(super) fn mx_of(data: &RData) -> Option<Exchange<Name>> {
    match data {
        RData::MX(mx) => Some(Exchange {
            preference: mx.preference,
            host: (!mx.exchange.is_root()).then(|| mx.exchange.clone()),
        }),
        _ => None,
    }
}

pub(super) fn txt_of(data: &RData) -> Option<String> {
    match data {
        RData::TXT(txt) => Some(
            txt.txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part))
                .collect(),
        ),
        _ => None,
    }
}

pub(super) fn ipv4_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    }
}

pub(super) fn ipv6_of(data: &RData) -> Option<IpAddr> {
    match data {
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

fn failure_text(error: &NetError) -> String {
    let code = match error {
        NetError::Timeout => return "timeout".to_owned(),
        NetError::Dns(ResponseError::DnssecBogus) => {
            return "DNSSEC validation failed (bogus)".to_owned();
        }
        NetError::Dns(ResponseError::Nsec { proof, .. }) => {
            return format!("DNSSEC validation failed ({proof})");
        }
        NetError::NoConnections => return "no name server reachable".to_owned(),
        NetError::Io(io) => return format!("network error ({io})"),
        NetError::Dns(ResponseError::ResponseCode(code)) => *code,
        NetError::Dns(ResponseError::NoRecordsFound(no_records)) => no_records.response_code,
        other => return other.to_string(),
    };
    match code {
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        other => format!("DNS error {} ({other})", u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_well() {
        let servfail = NetError::Dns(ResponseError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(failure_text(&servfail), "SERVFAIL");
        assert_eq!(failure_text(&NetError::Timeout), "timeout");
    }
}
