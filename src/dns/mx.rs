//! MX delivery's lookups (RFC 5321 §5.1, RFC 7505): the domain's MX
//! records, their hosts' addresses in order, the implicit MX; with
//! `delivery.dane` from the validating resolver, each target with what
//! DNSSEC proved about it (RFC 7672 §2.2).

use hickory_resolver::proto::rr::{Name, RecordType};
use tokio::time::Instant;

use super::lookup::{self, Answer, HostLookup, Path, ask, mx_of};
use super::names::{absolute_name, domain_literal, host_text};
use super::order::{self, HostAddresses, ResolvedHost, SplitMix64};
use super::{DnsError, MAX_TARGETS, MailTarget, MxResolver, TargetDnssec, family_text};

impl MxResolver {
    /// Where to deliver mail for `domain` (a domain name, IDN allowed, or a
    /// `[192.0.2.1]`/`[IPv6:2001:db8::1]` literal): up to [`MAX_TARGETS`]
    /// addresses, in the order to try. A literal is returned as is, whatever
    /// `ip_version` says.
    pub async fn mail_targets(&self, domain: &str) -> Result<Vec<MailTarget>, DnsError> {
        if let Some(address) = domain_literal(domain)? {
            return Ok(vec![MailTarget {
                host: address.to_string(),
                address,
                preference: 0,
                dnssec: None,
            }]);
        }
        let name = absolute_name(domain)?;
        let readable = host_text(&name);
        let deadline = Instant::now() + self.inner.total;
        let path = self.mx_path().await.map_err(DnsError::Temporary)?;

        let mx = match ask(path, &name, RecordType::MX, mx_of).await {
            Err(reason) => return Err(self.lookup_failed(path, reason).await),
            Ok(reply) => reply,
        };
        let mx_secure = mx.secure;
        let exchanges = match mx.answer {
            Answer::NxDomain => {
                return Err(DnsError::NoSuchDomain(format!(
                    "{readable}: no such domain"
                )));
            }
            // RFC 5321 §5.1: no MX records, the domain itself is the host.
            Answer::NoData => {
                return self
                    .implicit_mx(path, &name, &readable, mx_secure, deadline)
                    .await;
            }
            Answer::Records(records) => records,
        };
        let Some(exchanges) = order::prioritize(exchanges, &mut SplitMix64::from_entropy()) else {
            return Err(DnsError::NullMx(format!(
                "{readable} accepts no mail (null MX, RFC 7505)"
            )));
        };

        let (resolved, first_problem) = self
            .resolve_exchanges(path, &readable, &exchanges, mx_secure, deadline)
            .await;
        let targets = order::order_targets(&resolved, self.inner.ip_version);
        if targets.is_empty() {
            let hosts: Vec<String> = exchanges.iter().map(|(_, host)| host_text(host)).collect();
            return Err(match first_problem {
                Some(reason) => self.lookup_failed(path, reason).await,
                None => DnsError::Temporary(format!(
                    "no {} found for the MX hosts of {readable} ({})",
                    family_text(self.inner.ip_version),
                    hosts.join(", ")
                )),
            });
        }
        Ok(targets)
    }

    /// The resolver MX delivery asks: the validating one with
    /// `delivery.dane` (once DS anchors are primed), else the plain one.
    async fn mx_path(&self) -> Result<Path<'_>, String> {
        match &self.inner.validation {
            None => Ok(self.plain()),
            Some(validation) => Ok(Path {
                resolver: validation.resolver(self.plain()).await?,
                validating: true,
            }),
        }
    }

    /// A temporary failure of an MX delivery lookup. When DNSSEC
    /// validation failed and fails for the trust anchor itself too, the
    /// reason says so: the name servers do not pass DNSSEC through, and
    /// the operator reading the deferral must learn it there.
    async fn lookup_failed(&self, path: Path<'_>, reason: String) -> DnsError {
        if path.validating
            && reason.contains("DNSSEC")
            && let Some(Err(why)) = self.check_dnssec().await
        {
            return DnsError::Temporary(format!("{reason}; {why}"));
        }
        DnsError::Temporary(reason)
    }

    /// The addresses of MX hosts in order, until [`MAX_TARGETS`] are known or
    /// time is up, and the first temporary failure met on the way. Hosts
    /// that do not exist or have no address are skipped.
    async fn resolve_exchanges(
        &self,
        path: Path<'_>,
        readable: &str,
        exchanges: &[(u16, Name)],
        mx_secure: bool,
        deadline: Instant,
    ) -> (Vec<ResolvedHost>, Option<String>) {
        let mut resolved: Vec<ResolvedHost> = Vec::new();
        let mut found = 0;
        let mut first_problem: Option<String> = None;
        for (index, (preference, host)) in exchanges.iter().enumerate() {
            // Enough addresses: stop, but finish the preference level first,
            // since prefer_ipv4/prefer_ipv6 reorder within a level.
            let new_level = index == 0 || exchanges[index - 1].0 != *preference;
            if found >= MAX_TARGETS && new_level {
                break;
            }
            let mx_host = host_text(host);
            let lookup =
                match tokio::time::timeout_at(deadline, self.resolve_host_on(path, host)).await {
                    Ok(lookup) => lookup,
                    Err(_) => {
                        first_problem.get_or_insert(format!(
                            "timeout resolving the MX hosts of {readable} (stopped at {mx_host})"
                        ));
                        break;
                    }
                };
            match lookup {
                HostLookup::Found(addresses, proof) => {
                    found += addresses.ipv4.len() + addresses.ipv6.len();
                    resolved.push(ResolvedHost {
                        host: mx_host,
                        preference: *preference,
                        addresses,
                        dnssec: path.validating.then(|| target_dnssec(mx_secure, &proof)),
                    });
                }
                HostLookup::NoSuchHost => {
                    tracing::debug!(domain = %readable, mx = %mx_host, "MX host does not exist");
                }
                HostLookup::NoAddresses => {
                    tracing::debug!(domain = %readable, mx = %mx_host, "MX host has no usable address");
                }
                HostLookup::Temporary(reason) => {
                    first_problem.get_or_insert(reason);
                }
            }
        }

        (resolved, first_problem)
    }

    async fn implicit_mx(
        &self,
        path: Path<'_>,
        name: &Name,
        readable: &str,
        mx_secure: bool,
        deadline: Instant,
    ) -> Result<Vec<MailTarget>, DnsError> {
        let lookup = tokio::time::timeout_at(deadline, self.resolve_host_on(path, name))
            .await
            .unwrap_or_else(|_| HostLookup::Temporary(format!("timeout resolving {readable}")));
        let mut dnssec = None;
        let addresses = match lookup {
            HostLookup::Found(addresses, proof) => {
                dnssec = path.validating.then(|| target_dnssec(mx_secure, &proof));
                addresses
            }
            HostLookup::NoSuchHost => {
                return Err(DnsError::NoSuchDomain(format!(
                    "{readable}: no such domain"
                )));
            }
            // The name exists but has no MX, no A and no AAAA: not a mail
            // domain (RFC 5321 §5.1). With one family configured the other
            // was not asked, so that stays a deferral.
            HostLookup::NoAddresses if self.inner.ip_version.both_families() => {
                return Err(DnsError::NoSuchDomain(format!(
                    "{readable} has no MX, A or AAAA records: not a mail domain"
                )));
            }
            HostLookup::NoAddresses => HostAddresses::default(),
            HostLookup::Temporary(reason) => return Err(self.lookup_failed(path, reason).await),
        };
        let host = ResolvedHost {
            host: readable.to_owned(),
            preference: 0,
            addresses,
            dnssec,
        };
        let targets = order::order_targets(&[host], self.inner.ip_version);
        if targets.is_empty() {
            return Err(DnsError::Temporary(format!(
                "{readable} has no MX records and no {}",
                family_text(self.inner.ip_version)
            )));
        }
        Ok(targets)
    }
}

/// What a validated lookup proved about one MX host.
fn target_dnssec(mx_secure: bool, proof: &lookup::HostProof) -> TargetDnssec {
    TargetDnssec {
        mx_secure,
        host_secure: proof.secure,
        expanded: proof.expanded.as_ref().map(host_text),
    }
}
