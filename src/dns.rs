//! Where mail goes: MX and address lookups over hickory's resolver, and the
//! classification of what DNS said into bounce or defer (ARCHITECTURE.md, "Delivery"; RFC 5321 §5.1, RFC 7505).
//! With `delivery.dane`, MX delivery's lookups are DNSSEC-validated
//! (`dnssec`) and each target says what DNSSEC proved about it; `tlsa`
//! looks up a secure host's TLSA records (RFC 7672 §2.2).
//!
//! Invariant: every query is for an absolute name. A resolv.conf `search`
//! list would otherwise retry a name that SERVFAILs under the search
//! domains, and the last answer (say, NXDOMAIN for
//! `example.com.corp.test`) would bounce mail that should have been
//! deferred. Names are made absolute here, and the resolver is built with no
//! search list at all, so neither layer alone can reintroduce the bug.

mod anchor;
mod dnssec;
mod lookup;
mod names;
mod order;
mod tlsa;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use tokio::time::Instant;

use crate::config::{DnsSettings, IpVersion};

pub use self::anchor::{Anchor, TrustAnchorSource};
use self::dnssec::Validation;
use self::lookup::{Answer, HostLookup, Path, ask, mx_of};
use self::names::{absolute_name, domain_literal, host_text};
pub use self::order::MAX_TARGETS;
use self::order::{HostAddresses, ResolvedHost, SplitMix64};
pub use self::tlsa::TlsaLookup;

/// One address to deliver to, in the order returned by
/// [`MxResolver::mail_targets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailTarget {
    /// The MX host name (lowercase, ASCII/punycode, no trailing dot); the
    /// domain itself for an implicit MX; the address for a domain literal.
    /// This is the name to verify a TLS certificate against.
    pub host: String,
    pub address: IpAddr,
    /// The MX preference; 0 for an implicit MX or a domain literal.
    pub preference: u16,
    /// What DNSSEC proved about the host, when MX lookups are validated
    /// (`delivery.dane`); `None` otherwise and for a domain literal.
    pub dnssec: Option<TargetDnssec>,
}

/// What DNSSEC proved about one MX host (RFC 7672 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDnssec {
    /// The domain's MX RRset (and any CNAME leading to it) is secure; for
    /// an implicit MX, the denial of MX records is. With an insecure MX
    /// RRset DANE still applies to a host with secure TLSA records, but
    /// the next-hop domain is no reference identifier (RFC 7672 §2.2.1).
    pub mx_secure: bool,
    /// The host's address records (and any CNAME leading to them) are
    /// secure: its TLSA records are looked up. Otherwise DANE does not
    /// apply to it.
    pub host_secure: bool,
    /// The host's name after the CNAMEs of its address lookup, when they
    /// led elsewhere (lowercase, no trailing dot): the first TLSA base
    /// domain to try.
    pub expanded: Option<String>,
}

/// Why there is no address to deliver to. Each variant carries a readable
/// reason, such as "SERVFAIL looking up MX for example.com".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// NXDOMAIN for the domain, or a domain with no MX and no address at
    /// all (for a host name: no such host): bounce 5.1.2.
    #[error("{0}")]
    NoSuchDomain(String),
    /// RFC 7505 null MX (`MX 0 .`): the domain accepts no mail; bounce 5.1.10
    /// at once.
    #[error("{0}")]
    NullMx(String),
    /// Timeout, SERVFAIL, REFUSED, network error, or MX hosts that have no
    /// addresses (yet): defer, 4.4.3.
    #[error("{0}")]
    Temporary(String),
}

impl DnsError {
    /// The RFC 3463 status for the DSN or the log.
    pub fn enhanced_status(&self) -> &'static str {
        match self {
            DnsError::NoSuchDomain(_) => "5.1.2",
            DnsError::NullMx(_) => "5.1.10",
            DnsError::Temporary(_) => "4.4.3",
        }
    }

    /// True when the recipients should bounce now rather than be retried.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(_))
    }
}

/// How long lookups may take. The defaults suit delivery; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupLimits {
    /// One query to one name server.
    pub timeout: Duration,
    /// Further tries of a query that timed out or failed (not of NXDOMAIN).
    pub attempts: usize,
    /// The whole of one `mail_targets`/`host_addresses` call, so a domain with
    /// many broken MX hosts cannot hold a delivery slot for minutes.
    pub total: Duration,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            timeout: Duration::from_secs(5),
            attempts: 2,
            total: Duration::from_secs(60),
        }
    }
}

/// Number of answers kept in hickory's cache; each is kept within its TTL.
const CACHE_SIZE: u64 = 1024;

/// The MX resolver; cheap to clone.
#[derive(Clone, Debug)]
pub struct MxResolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    resolver: TokioResolver,
    /// With `delivery.dane`: the validating resolver MX delivery uses.
    validation: Option<Validation>,
    /// `/etc/hosts`, consulted for route/smarthost names only: MX hosts
    /// come from DNS alone, as Postfix does by default.
    hosts: Hosts,
    ip_version: IpVersion,
    total: Duration,
}

impl MxResolver {
    /// Empty `nameservers`: the servers of `/etc/resolv.conf` (and nothing
    /// else from it); otherwise exactly these servers, over UDP and TCP.
    /// Search domains never apply.
    pub fn new(settings: &DnsSettings, ip_version: IpVersion) -> anyhow::Result<MxResolver> {
        let name_servers = if settings.nameservers.is_empty() {
            let (system, _) = hickory_resolver::system_conf::read_system_conf()
                .context("reading the name servers of /etc/resolv.conf")?;
            let (_, _, name_servers) = system.into_parts();
            anyhow::ensure!(
                !name_servers.is_empty(),
                "/etc/resolv.conf lists no name server; set dns.nameservers"
            );
            name_servers
        } else {
            settings.nameservers.iter().map(name_server).collect()
        };
        let hosts = Hosts::from_system().unwrap_or_default();
        let dnssec = settings.dnssec.then(|| settings.trust_anchors.clone());
        build(
            name_servers,
            hosts,
            ip_version,
            LookupLimits::default(),
            dnssec,
        )
    }

    /// Explicit name servers plus a resolv.conf-style `search` list and
    /// `ndots`, as a hostile system configuration would supply them: they
    /// are accepted and never used. `/etc/hosts` is not read.
    pub fn with_search(
        nameservers: &[SocketAddr],
        search: &[&str],
        ndots: usize,
        ip_version: IpVersion,
    ) -> anyhow::Result<MxResolver> {
        Self::with_limits(
            nameservers,
            search,
            ndots,
            ip_version,
            LookupLimits::default(),
        )
    }

    /// [`MxResolver::with_search`] with other timeouts.
    pub fn with_limits(
        nameservers: &[SocketAddr],
        search: &[&str],
        ndots: usize,
        ip_version: IpVersion,
        limits: LookupLimits,
    ) -> anyhow::Result<MxResolver> {
        for domain in search {
            Name::from_utf8(domain).with_context(|| format!("search domain {domain:?}"))?;
        }
        tracing::debug!(
            ?search,
            ndots,
            "search list and ndots ignored: names are absolute"
        );
        let name_servers = nameservers.iter().map(name_server).collect();
        build(name_servers, Hosts::default(), ip_version, limits, None)
    }

    /// Explicit name servers, and MX lookups validated from `anchors`, as
    /// with `delivery.dane`. `/etc/hosts` is not read.
    pub fn with_dnssec(
        nameservers: &[SocketAddr],
        anchors: TrustAnchorSource,
        ip_version: IpVersion,
        limits: LookupLimits,
    ) -> anyhow::Result<MxResolver> {
        let name_servers = nameservers.iter().map(name_server).collect();
        build(
            name_servers,
            Hosts::default(),
            ip_version,
            limits,
            Some(anchors),
        )
    }

    /// Whether MX lookups are DNSSEC-validated (`delivery.dane`).
    pub fn validates(&self) -> bool {
        self.inner.validation.is_some()
    }

    /// Checks that DNSSEC validation works on the configured name servers
    /// (the trust anchors' DNSKEY RRsets validate), logs the result when
    /// it changed, and returns it: `Ok` says what was checked, `Err` why
    /// it failed. `None` without `delivery.dane`.
    pub async fn check_dnssec(&self) -> Option<Result<String, String>> {
        let validation = self.inner.validation.as_ref()?;
        Some(validation.check(self.plain()).await)
    }

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

    /// The most preferred MX host of `domain`, lowercase and without the
    /// trailing dot: what `mx:` destination patterns are matched against.
    /// `None` when the domain has no MX records or the lookup fails (the
    /// domain is then its own destination). The answer comes from the
    /// resolver's cache while its TTL lasts, so grouping costs no query per
    /// message.
    pub async fn preferred_exchange(&self, domain: &str) -> Option<String> {
        if domain_literal(domain).ok()?.is_some() {
            return None;
        }
        let name = absolute_name(domain).ok()?;
        let Ok(Answer::Records(records)) = self.query(&name, RecordType::MX, mx_of).await else {
            return None;
        };
        records
            .into_iter()
            .filter_map(|record| Some((record.preference, record.host?)))
            .min_by_key(|(preference, _)| *preference)
            .map(|(_, host)| host_text(&host).trim_end_matches('.').to_ascii_lowercase())
    }

    /// The addresses of one host (a route's relay host), ordered by
    /// `ip_version`; an IP address (bare or as a `[…]` literal) is returned as
    /// is. `/etc/hosts` is consulted first when the resolver was built by
    /// [`MxResolver::new`]. `NoSuchDomain` here means the host name does not
    /// exist; whether that bounces is the caller's call.
    pub async fn host_addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(address) = host.parse::<IpAddr>() {
            return Ok(vec![address]);
        }
        if let Some(address) = domain_literal(host)? {
            return Ok(vec![address]);
        }
        let name = absolute_name(host)?;
        let readable = host_text(&name);
        let lookup = match self.static_host(&name) {
            Some(addresses) => HostLookup::Found(addresses, Default::default()),
            None => tokio::time::timeout(self.inner.total, self.resolve_host(&name))
                .await
                .unwrap_or_else(|_| HostLookup::Temporary(format!("timeout resolving {readable}"))),
        };
        let addresses = match lookup {
            HostLookup::Found(addresses, _) => addresses,
            HostLookup::NoSuchHost => {
                return Err(DnsError::NoSuchDomain(format!("{readable}: no such host")));
            }
            HostLookup::NoAddresses => HostAddresses::default(),
            HostLookup::Temporary(reason) => return Err(DnsError::Temporary(reason)),
        };
        let targets = order::order_targets(
            &[ResolvedHost {
                host: readable.clone(),
                preference: 0,
                addresses,
                dnssec: None,
            }],
            self.inner.ip_version,
        );
        if targets.is_empty() {
            return Err(DnsError::Temporary(format!(
                "no {} found for {readable}",
                family_text(self.inner.ip_version)
            )));
        }
        Ok(targets.into_iter().map(|target| target.address).collect())
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

fn build(
    name_servers: Vec<NameServerConfig>,
    hosts: Hosts,
    ip_version: IpVersion,
    limits: LookupLimits,
    dnssec: Option<TrustAnchorSource>,
) -> anyhow::Result<MxResolver> {
    let validation = match dnssec {
        Some(anchors) => Some(
            Validation::new(anchors, name_servers.clone(), limits).context("DNSSEC validation")?,
        ),
        None => None,
    };
    let (config, options) = resolver_setup(name_servers, limits);
    let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .context("building the DNS resolver")?;
    Ok(MxResolver {
        inner: Arc::new(Inner {
            resolver,
            validation,
            hosts,
            ip_version,
            total: limits.total,
        }),
    })
}

/// No domain, no search list, ndots 0, no hosts file: only the absolute
/// names this module builds are ever asked.
fn resolver_setup(
    name_servers: Vec<NameServerConfig>,
    limits: LookupLimits,
) -> (ResolverConfig, ResolverOpts) {
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    let mut options = ResolverOpts::default();
    options.ndots = 0;
    options.timeout = limits.timeout;
    options.attempts = limits.attempts;
    options.cache_size = CACHE_SIZE;
    options.use_hosts_file = ResolveHosts::Never;
    (config, options)
}

fn name_server(address: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    // Trusting NXDOMAIN lets one server's answer stand. This is about
    // NXDOMAIN only: SERVFAIL and REFUSED stay errors (retried `attempts`
    // times) and timeouts move on to the next server; none becomes NXDOMAIN.
    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
}

fn family_text(ip_version: IpVersion) -> &'static str {
    match ip_version {
        IpVersion::Ipv4 => "IPv4 address",
        IpVersion::Ipv6 => "IPv6 address",
        _ => "address",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_never_searches() {
        let (config, options) = resolver_setup(Vec::new(), LookupLimits::default());
        assert!(config.search().is_empty());
        assert!(config.domain().is_none());
        assert_eq!(options.ndots, 0);
        assert_eq!(options.cache_size, CACHE_SIZE);
        assert_eq!(options.use_hosts_file, ResolveHosts::Never);
        assert_eq!(options.timeout, Duration::from_secs(5));
        assert_eq!(options.attempts, 2);
    }

    #[test]
    fn status_by_kind() {
        let cases = [
            (DnsError::NoSuchDomain(String::new()), "5.1.2", true),
            (DnsError::NullMx(String::new()), "5.1.10", true),
            (DnsError::Temporary(String::new()), "4.4.3", false),
        ];
        for (error, status, permanent) in cases {
            assert_eq!(error.enhanced_status(), status);
            assert_eq!(error.is_permanent(), permanent);
        }
    }
}
