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
mod mx;
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

use crate::config::{DnsSettings, IpVersion};

pub use self::anchor::{Anchor, TrustAnchorSource};
use self::dnssec::Validation;
use self::lookup::{Answer, HostLookup, mx_of};
use self::names::{absolute_name, domain_literal, host_text};
pub use self::order::MAX_TARGETS;
use self::order::{HostAddresses, ResolvedHost};
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
