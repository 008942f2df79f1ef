//! One DNS query, and one host's addresses: what hickory's answers and
//! errors mean for delivery.

use std::net::IpAddr;

use hickory_resolver::net::{DnsError as ResponseError, NetError, NoRecords};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

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

/// What became of looking up one host's addresses.
pub(super) enum HostLookup {
    Found(HostAddresses),
    NoSuchHost,
    NoAddresses,
    Temporary(String),
}

impl MxResolver {
    /// A and/or AAAA of `name`, as `ip_version` needs, asked concurrently.
    /// One family's answer is enough even if the other failed.
    pub(super) async fn resolve_host(&self, name: &Name) -> HostLookup {
        let want_ipv4 = self.inner.ip_version != IpVersion::Ipv6;
        let want_ipv6 = self.inner.ip_version != IpVersion::Ipv4;
        let (ipv4, ipv6) = tokio::join!(
            async {
                if want_ipv4 {
                    Some(self.query(name, RecordType::A, ipv4_of).await)
                } else {
                    None
                }
            },
            async {
                if want_ipv6 {
                    Some(self.query(name, RecordType::AAAA, ipv6_of).await)
                } else {
                    None
                }
            },
        );
        let mut addresses = HostAddresses::default();
        let mut problem = None;
        let mut all_nxdomain = true;
        for (answer, list) in [(ipv4, &mut addresses.ipv4), (ipv6, &mut addresses.ipv6)] {
            match answer {
                None | Some(Ok(Answer::NxDomain)) => {}
                Some(Ok(Answer::Records(found))) => {
                    all_nxdomain = false;
                    *list = found;
                }
                Some(Ok(Answer::NoData)) => all_nxdomain = false,
                Some(Err(reason)) => {
                    all_nxdomain = false;
                    problem.get_or_insert(reason);
                }
            }
        }
        match (addresses.is_empty(), problem) {
            (false, _) => HostLookup::Found(addresses),
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

    /// One query; `Err` is a readable reason to defer.
    pub(super) async fn query<T>(
        &self,
        name: &Name,
        record_type: RecordType,
        extract: fn(&RData) -> Option<T>,
    ) -> Result<Answer<T>, String> {
        match self.inner.resolver.lookup(name.clone(), record_type).await {
            Ok(lookup) => {
                // Answers may include the CNAMEs that led to the records.
                let records: Vec<T> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| extract(&r.data))
                    .collect();
                if records.is_empty() {
                    Ok(Answer::NoData)
                } else {
                    Ok(Answer::Records(records))
                }
            }
            Err(NetError::Dns(ResponseError::NoRecordsFound(NoRecords {
                response_code: ResponseCode::NXDomain,
                ..
            }))) => Ok(Answer::NxDomain),
            Err(NetError::Dns(ResponseError::NoRecordsFound(NoRecords {
                response_code: ResponseCode::NoError,
                ..
            }))) => Ok(Answer::NoData),
            Err(error) => Err(format!(
                "{} looking up {record_type} for {}",
                failure_text(&error),
                host_text(name)
            )),
        }
    }
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
