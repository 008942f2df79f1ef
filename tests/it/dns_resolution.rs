//! MX resolution against an in-process DNS server: preference order,
//! implicit and null MX, which DNS failures bounce and which defer, and the
//! order `delivery.ip_version` gives to addresses (RFC 5321 §5.1).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::dns_server::{TestDns, Zone};
use relayq::config::IpVersion;
use relayq::dns::{DnsError, LookupLimits, MailTarget, MxResolver};

fn resolver(dns: &TestDns, ip_version: IpVersion) -> MxResolver {
    MxResolver::with_search(&[dns.address], &[], 1, ip_version).expect("resolver")
}

fn hosts(targets: &[MailTarget]) -> Vec<&str> {
    targets.iter().map(|t| t.host.as_str()).collect()
}

fn addresses(targets: &[MailTarget]) -> Vec<String> {
    targets.iter().map(|t| t.address.to_string()).collect()
}

#[tokio::test]
async fn mx_hosts_in_preference_order() {
    let dns = TestDns::start(
        Zone::default()
            .mx("example.com", 20, "mx2.example.com")
            .mx("example.com", 10, "mx1.example.com")
            .mx("example.com", 30, "mx3.example.com")
            .a("mx1.example.com", "127.0.0.11")
            .a("mx2.example.com", "127.0.0.12")
            .a("mx3.example.com", "127.0.0.13"),
    );
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("Example.COM")
        .await
        .unwrap();
    assert_eq!(
        targets,
        vec![
            MailTarget {
                host: "mx1.example.com".into(),
                address: "127.0.0.11".parse().unwrap(),
                preference: 10,
                dnssec: None,
            },
            MailTarget {
                host: "mx2.example.com".into(),
                address: "127.0.0.12".parse().unwrap(),
                preference: 20,
                dnssec: None,
            },
            MailTarget {
                host: "mx3.example.com".into(),
                address: "127.0.0.13".parse().unwrap(),
                preference: 30,
                dnssec: None,
            },
        ]
    );
}

#[tokio::test]
async fn equal_preferences_tried_in_both_orders() {
    // One domain per lookup, so the cache cannot hide the shuffle.
    let mut zone = Zone::default()
        .a("a.mx.test", "127.0.0.21")
        .a("b.mx.test", "127.0.0.22");
    for n in 0..20 {
        let domain = format!("d{n}.example");
        zone = zone
            .mx(&domain, 10, "a.mx.test")
            .mx(&domain, 10, "b.mx.test");
    }
    let dns = TestDns::start(zone);
    let resolver = resolver(&dns, IpVersion::Any);
    let mut orders = HashSet::new();
    for n in 0..20 {
        let targets = resolver
            .mail_targets(&format!("d{n}.example"))
            .await
            .unwrap();
        let order: Vec<String> = hosts(&targets).into_iter().map(String::from).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, ["a.mx.test", "b.mx.test"]);
        orders.insert(order);
    }
    assert_eq!(orders.len(), 2, "both orders seen: {orders:?}");
}

#[tokio::test]
async fn no_mx_means_the_domain_itself_ipv4() {
    let dns = TestDns::start(Zone::default().a("plain.example", "127.0.0.31"));
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("plain.example")
        .await
        .unwrap();
    assert_eq!(
        targets,
        vec![MailTarget {
            host: "plain.example".into(),
            address: "127.0.0.31".parse().unwrap(),
            preference: 0,
            dnssec: None,
        }]
    );
}

#[tokio::test]
async fn no_mx_and_no_address_is_not_a_mail_domain() {
    let dns = TestDns::start(Zone::default().empty("bare.example"));
    for ip_version in [IpVersion::Any, IpVersion::PreferIpv4] {
        let error = resolver(&dns, ip_version)
            .mail_targets("bare.example")
            .await
            .unwrap_err();
        assert!(matches!(error, DnsError::NoSuchDomain(_)), "{error:?}");
        assert_eq!(error.enhanced_status(), "5.1.2");
        assert!(error.to_string().contains("not a mail domain"), "{error}");
    }
    // Only one family asked: the other may exist, so retry later.
    let error = resolver(&dns, IpVersion::Ipv4)
        .mail_targets("bare.example")
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::Temporary(_)), "{error:?}");
}

#[tokio::test]
async fn no_mx_means_the_domain_itself_ipv6() {
    let dns = TestDns::start(Zone::default().aaaa("six.example", "::1"));
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("six.example")
        .await
        .unwrap();
    assert_eq!(hosts(&targets), ["six.example"]);
    assert_eq!(addresses(&targets), ["::1"]);
}

#[tokio::test]
async fn null_mx_bounces_at_once() {
    let dns = TestDns::start(Zone::default().mx("nomail.example", 0, "."));
    let error = resolver(&dns, IpVersion::Any)
        .mail_targets("nomail.example")
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::NullMx(_)), "{error:?}");
    assert_eq!(error.enhanced_status(), "5.1.10");
    assert!(error.is_permanent());
}

#[tokio::test]
async fn null_mx_among_real_ones_is_ignored() {
    let dns = TestDns::start(
        Zone::default()
            .mx("mixed.example", 0, ".")
            .mx("mixed.example", 10, "mx.mixed.example")
            .a("mx.mixed.example", "127.0.0.41"),
    );
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("mixed.example")
        .await
        .unwrap();
    assert_eq!(hosts(&targets), ["mx.mixed.example"]);
}

#[tokio::test]
async fn nxdomain_bounces_as_no_such_domain() {
    let dns = TestDns::start(Zone::default().nxdomain("gone.example"));
    let resolver = resolver(&dns, IpVersion::Any);
    for domain in ["gone.example", "never-heard-of.example"] {
        let error = resolver.mail_targets(domain).await.unwrap_err();
        assert!(matches!(error, DnsError::NoSuchDomain(_)), "{error:?}");
        assert_eq!(error.enhanced_status(), "5.1.2");
        assert!(error.to_string().contains(domain), "{error}");
    }
}

#[tokio::test]
async fn servfail_defers() {
    let dns = TestDns::start(Zone::default().servfail("broken.example"));
    let error = resolver(&dns, IpVersion::Any)
        .mail_targets("broken.example")
        .await
        .unwrap_err();
    assert_eq!(
        error,
        DnsError::Temporary("SERVFAIL looking up MX for broken.example".into())
    );
    assert_eq!(error.enhanced_status(), "4.4.3");
    assert!(!error.is_permanent());
}

/// The bug this module exists to prevent: a resolver that retries a name
/// under the resolv.conf search list returns the last answer it got. With
/// `search corp.test` and ndots 1, `servfail.example` is asked as is first
/// (SERVFAIL), then as `servfail.example.corp.test` (NXDOMAIN), and the mail
/// would bounce. With ndots 5 the order flips, and the short name `relay`
/// would silently become `relay.corp.test`.
#[tokio::test]
async fn search_domains_never_turn_servfail_into_nxdomain() {
    let dns = TestDns::start(
        Zone::default()
            .servfail("servfail.example")
            .nxdomain("servfail.example.corp.test")
            .a("relay.corp.test", "127.0.0.51"),
    );
    for ndots in [1, 5] {
        let resolver =
            MxResolver::with_search(&[dns.address], &["corp.test"], ndots, IpVersion::Any).unwrap();

        let error = resolver.mail_targets("servfail.example").await.unwrap_err();
        assert!(
            matches!(error, DnsError::Temporary(_)),
            "ndots {ndots}: {error:?}"
        );
        let error = resolver
            .host_addresses("servfail.example")
            .await
            .unwrap_err();
        assert!(
            matches!(error, DnsError::Temporary(_)),
            "ndots {ndots}: {error:?}"
        );
        let error = resolver.host_addresses("relay").await.unwrap_err();
        assert!(
            matches!(error, DnsError::NoSuchDomain(_)),
            "ndots {ndots}: {error:?}"
        );
    }
    let queries = dns.queries();
    assert!(
        queries.iter().all(|query| !query.contains("corp.test")),
        "{queries:?}"
    );
}

#[tokio::test]
async fn mx_host_without_addresses_defers() {
    let dns = TestDns::start(
        Zone::default()
            .mx("pending.example", 10, "mx.pending.example")
            // The MX host exists (it has an MX of its own) but no A/AAAA yet.
            .mx("mx.pending.example", 10, "elsewhere.example")
            .mx("dangling.example", 10, "missing.example"),
    );
    let resolver = resolver(&dns, IpVersion::Any);
    for domain in ["pending.example", "dangling.example"] {
        let error = resolver.mail_targets(domain).await.unwrap_err();
        assert!(
            matches!(error, DnsError::Temporary(_)),
            "{domain}: {error:?}"
        );
    }
}

#[tokio::test]
async fn mx_host_that_does_not_exist_is_skipped() {
    let dns = TestDns::start(
        Zone::default()
            .mx("partial.example", 10, "missing.partial.example")
            .mx("partial.example", 20, "mx2.partial.example")
            .a("mx2.partial.example", "127.0.0.61"),
    );
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("partial.example")
        .await
        .unwrap();
    assert_eq!(hosts(&targets), ["mx2.partial.example"]);
}

fn dual_stack_zone() -> Zone {
    Zone::default()
        .mx("dual.example", 10, "mx1.dual.example")
        .mx("dual.example", 20, "mx2.dual.example")
        .a("mx1.dual.example", "127.0.0.71")
        .aaaa("mx1.dual.example", "::1")
        .a("mx2.dual.example", "127.0.0.72")
}

#[tokio::test]
async fn ip_version_orders_addresses() {
    let dns = TestDns::start(dual_stack_zone());
    let cases: [(IpVersion, &[&str]); 5] = [
        (IpVersion::Any, &["::1", "127.0.0.71", "127.0.0.72"]),
        (IpVersion::Ipv4, &["127.0.0.71", "127.0.0.72"]),
        (IpVersion::Ipv6, &["::1"]),
        (IpVersion::PreferIpv4, &["127.0.0.71", "::1", "127.0.0.72"]),
        (IpVersion::PreferIpv6, &["::1", "127.0.0.71", "127.0.0.72"]),
    ];
    for (ip_version, expected) in cases {
        let targets = resolver(&dns, ip_version)
            .mail_targets("dual.example")
            .await
            .unwrap();
        assert_eq!(addresses(&targets), expected, "{ip_version:?}");
    }
}

#[tokio::test]
async fn host_addresses_follow_ip_version() {
    let dns = TestDns::start(dual_stack_zone());
    let cases: [(IpVersion, &[&str]); 5] = [
        (IpVersion::Any, &["::1", "127.0.0.71"]),
        (IpVersion::Ipv4, &["127.0.0.71"]),
        (IpVersion::Ipv6, &["::1"]),
        (IpVersion::PreferIpv4, &["127.0.0.71", "::1"]),
        (IpVersion::PreferIpv6, &["::1", "127.0.0.71"]),
    ];
    for (ip_version, expected) in cases {
        let found = resolver(&dns, ip_version)
            .host_addresses("mx1.dual.example")
            .await
            .unwrap();
        let found: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(found, expected, "{ip_version:?}");
    }
    let resolver = resolver(&dns, IpVersion::Ipv6);
    assert_eq!(
        resolver.host_addresses("127.0.0.9").await.unwrap(),
        ["127.0.0.9".parse::<std::net::IpAddr>().unwrap()]
    );
    let error = resolver
        .host_addresses("mx2.dual.example")
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::Temporary(_)), "{error:?}");
    let error = resolver.host_addresses("nope.example").await.unwrap_err();
    assert!(matches!(error, DnsError::NoSuchDomain(_)), "{error:?}");
}

#[tokio::test]
async fn at_most_five_addresses() {
    let mut zone = Zone::default().mx("big.example", 10, "mx1.big.example").mx(
        "big.example",
        20,
        "mx2.big.example",
    );
    for n in 1..=4 {
        zone = zone.a("mx1.big.example", &format!("127.0.1.{n}"));
    }
    for n in 5..=7 {
        zone = zone.a("mx2.big.example", &format!("127.0.1.{n}"));
    }
    let dns = TestDns::start(zone);
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("big.example")
        .await
        .unwrap();
    assert_eq!(targets.len(), 5);
    assert!(targets[..4].iter().all(|t| t.host == "mx1.big.example"));
    assert_eq!(targets[4].host, "mx2.big.example");
}

#[tokio::test]
async fn domain_literals_need_no_dns() {
    let dns = TestDns::start(Zone::default());
    let resolver = resolver(&dns, IpVersion::Any);
    let v4 = resolver.mail_targets("[127.0.0.1]").await.unwrap();
    assert_eq!(addresses(&v4), ["127.0.0.1"]);
    let v6 = resolver.mail_targets("[IPv6:::1]").await.unwrap();
    assert_eq!(addresses(&v6), ["::1"]);
    assert_eq!(v6[0].preference, 0);
    let error = resolver.mail_targets("[999.0.0.1]").await.unwrap_err();
    assert!(matches!(error, DnsError::NoSuchDomain(_)), "{error:?}");
    assert!(dns.queries().is_empty(), "{:?}", dns.queries());
}

#[tokio::test]
async fn international_domain_looked_up_as_punycode() {
    let dns = TestDns::start(
        Zone::default()
            .mx("xn--bcher-kva.example", 10, "mx.xn--bcher-kva.example")
            .a("mx.xn--bcher-kva.example", "127.0.0.81"),
    );
    let targets = resolver(&dns, IpVersion::Any)
        .mail_targets("bücher.example")
        .await
        .unwrap();
    assert_eq!(hosts(&targets), ["mx.xn--bcher-kva.example"]);
}

#[tokio::test]
async fn slow_dns_defers_within_bounded_time() {
    let dns = TestDns::start(Zone::default().delay("slow.example", Duration::from_secs(30)));
    let limits = LookupLimits {
        timeout: Duration::from_millis(300),
        attempts: 1,
        total: Duration::from_secs(5),
    };
    let resolver = MxResolver::with_limits(&[dns.address], &[], 1, IpVersion::Any, limits).unwrap();
    let started = Instant::now();
    let error = resolver.mail_targets("slow.example").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, DnsError::Temporary(_)), "{error:?}");
    assert!(error.to_string().contains("timeout"), "{error}");
}

#[tokio::test]
async fn answers_are_cached_within_their_ttl() {
    let dns = TestDns::start(
        Zone::default()
            .mx("cached.example", 10, "mx.cached.example")
            .a("mx.cached.example", "127.0.0.91"),
    );
    let resolver = resolver(&dns, IpVersion::Any);
    let first = resolver.mail_targets("cached.example").await.unwrap();
    let asked = dns.queries().len();
    let second = resolver
        .clone()
        .mail_targets("cached.example")
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(dns.queries().len(), asked, "{:?}", dns.queries());
}
