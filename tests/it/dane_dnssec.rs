//! DNSSEC for DANE at the resolver (RFC 7672 §2.1, §2.2): against a signed
//! test root (its key the trust anchor), MX delivery's lookups say which
//! hosts are secure, TLSA records are found only for those, and whatever
//! cannot be proven — bogus signatures, a SERVFAIL, a name server path
//! that strips DNSSEC — is a failure, never an unsigned answer.

use std::time::Duration;

use crate::common::dns_server::{TestDns, Zone};
use crate::common::signed_dns::{Security, SignedDns, SignedZones};
use relayq::config::IpVersion;
use relayq::dane::{HostPolicy, Tlsa, host_policy};
use relayq::dns::{DnsError, LookupLimits, MxResolver, TlsaLookup, TrustAnchorSource};

const DIGEST: [u8; 32] = [0x5a; 32];

fn limits() -> LookupLimits {
    LookupLimits {
        timeout: Duration::from_secs(2),
        attempts: 1,
        total: Duration::from_secs(10),
    }
}

/// A resolver validating from the test root's DNSKEY (or, with `ds`, its
/// DS record, which needs priming).
fn resolver(dns: &SignedDns, ds: bool) -> (MxResolver, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let file = if ds {
        dns.ds_anchor_file(directory.path())
    } else {
        dns.trust_anchor_file(directory.path())
    };
    let anchors = TrustAnchorSource::read(&file).expect("trust anchor file");
    let resolver =
        MxResolver::with_dnssec(&[dns.address], anchors, IpVersion::Ipv4, limits()).unwrap();
    (resolver, directory)
}

/// `secure.test` (signed) with a DANE MX host, `plain.test` (an insecure
/// delegation), `broken.test` (bogus signatures), a host whose TLSA lookup
/// fails, one without TLSA records, and a CNAME'd MX host.
fn zones() -> SignedZones {
    SignedZones::new()
        .zone("secure.test", Security::Signed)
        .zone("plain.test", Security::Unsigned)
        .zone("broken.test", Security::Bogus)
        .mx("secure.test", 10, "mx.secure.test")
        .a("mx.secure.test", "127.0.70.1")
        .tlsa("_25._tcp.mx.secure.test", 3, 1, 1, &DIGEST)
        .mx("notlsa.secure.test", 10, "bare.secure.test")
        .a("bare.secure.test", "127.0.70.2")
        .mx("fail.secure.test", 10, "fail-mx.secure.test")
        .a("fail-mx.secure.test", "127.0.70.3")
        .servfail("_25._tcp.fail-mx.secure.test")
        .mx("alias.secure.test", 10, "alias-mx.secure.test")
        .cname("alias-mx.secure.test", "real-mx.secure.test")
        .a("real-mx.secure.test", "127.0.70.4")
        .tlsa("_25._tcp.real-mx.secure.test", 3, 1, 1, &DIGEST)
        .mx("plain.test", 10, "mx.plain.test")
        .a("mx.plain.test", "127.0.70.5")
        .tlsa("_25._tcp.mx.plain.test", 3, 1, 1, &DIGEST)
        .mx("broken.test", 10, "mx.broken.test")
        .a("mx.broken.test", "127.0.70.6")
        // A signed domain whose MX host lives in the unsigned zone.
        .mx("mixed.secure.test", 10, "mx.plain.test")
}

fn record() -> Tlsa {
    Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: DIGEST.to_vec(),
    }
}

#[tokio::test]
async fn a_signed_domain_has_secure_hosts_and_tlsa_records() {
    let dns = zones().start();
    for ds in [false, true] {
        let (resolver, _anchor) = resolver(&dns, ds);
        let targets = resolver.mail_targets("secure.test").await.unwrap();
        assert_eq!(targets.len(), 1);
        let dnssec = targets[0].dnssec.clone().expect("validated");
        assert!(dnssec.mx_secure && dnssec.host_secure, "{dnssec:?}");
        assert_eq!(dnssec.expanded, None);
        assert_eq!(
            resolver.tlsa("mx.secure.test", None, 25).await,
            TlsaLookup::Found {
                base: "mx.secure.test".into(),
                records: vec![record()],
            }
        );
        let policy = host_policy(
            &resolver,
            "secure.test",
            &targets[0].host,
            Some(&dnssec),
            25,
        )
        .await;
        let HostPolicy::Authenticate(expectation) = policy else {
            panic!("a DANE host: {policy:?}");
        };
        assert_eq!(expectation.reference_ids, ["mx.secure.test", "secure.test"]);
    }
}

#[tokio::test]
async fn a_secure_host_without_tlsa_or_an_insecure_one_is_not_dane() {
    let dns = zones().start();
    let (resolver, _anchor) = resolver(&dns, false);

    let targets = resolver.mail_targets("notlsa.secure.test").await.unwrap();
    let dnssec = targets[0].dnssec.clone().unwrap();
    assert!(dnssec.host_secure);
    assert_eq!(
        resolver.tlsa("bare.secure.test", None, 25).await,
        TlsaLookup::NotFound
    );

    for domain in ["plain.test", "mixed.secure.test"] {
        let targets = resolver.mail_targets(domain).await.unwrap();
        let dnssec = targets[0].dnssec.clone().unwrap();
        assert!(!dnssec.host_secure, "{domain}: {dnssec:?}");
        assert_eq!(dnssec.mx_secure, domain == "mixed.secure.test");
        let before = dns.queries().len();
        let policy = host_policy(&resolver, domain, "mx.plain.test", Some(&dnssec), 25).await;
        assert_eq!(policy, HostPolicy::NotApplicable);
        assert!(
            !dns.queries()[before..]
                .iter()
                .any(|query| query.starts_with("TLSA")),
            "no TLSA lookup for an insecure host"
        );
    }
}

#[tokio::test]
async fn a_failed_tlsa_lookup_is_a_failure_not_an_absence() {
    let dns = zones().start();
    let (resolver, _anchor) = resolver(&dns, false);
    let targets = resolver.mail_targets("fail.secure.test").await.unwrap();
    let dnssec = targets[0].dnssec.clone().unwrap();
    assert!(dnssec.host_secure);
    let policy = host_policy(
        &resolver,
        "fail.secure.test",
        "fail-mx.secure.test",
        Some(&dnssec),
        25,
    )
    .await;
    let HostPolicy::LookupFailed(reason) = policy else {
        panic!("a SERVFAIL must not read as no TLSA: {policy:?}");
    };
    assert!(reason.contains("SERVFAIL"), "{reason}");
}

#[tokio::test]
async fn a_cname_expanded_host_is_the_first_tlsa_base_domain() {
    let dns = zones().start();
    let (resolver, _anchor) = resolver(&dns, false);
    let targets = resolver.mail_targets("alias.secure.test").await.unwrap();
    let dnssec = targets[0].dnssec.clone().unwrap();
    assert!(dnssec.host_secure);
    assert_eq!(dnssec.expanded.as_deref(), Some("real-mx.secure.test"));
    let policy = host_policy(
        &resolver,
        "alias.secure.test",
        &targets[0].host,
        Some(&dnssec),
        25,
    )
    .await;
    let HostPolicy::Authenticate(expectation) = policy else {
        panic!("DANE through the CNAME: {policy:?}");
    };
    assert_eq!(expectation.base, "real-mx.secure.test");
    assert_eq!(
        expectation.reference_ids,
        [
            "real-mx.secure.test",
            "alias-mx.secure.test",
            "alias.secure.test"
        ]
    );
}

#[tokio::test]
async fn bogus_signatures_defer() {
    let dns = zones().start();
    let (resolver, _anchor) = resolver(&dns, false);
    let error = resolver.mail_targets("broken.test").await.unwrap_err();
    assert!(matches!(error, DnsError::Temporary(_)), "{error:?}");
    assert!(
        error.to_string().contains("DNSSEC validation failed"),
        "{error}"
    );
    // The trust anchor itself still validates: the reason does not blame
    // the name servers.
    assert!(!error.to_string().contains("do not seem"), "{error}");
}

#[tokio::test]
async fn name_servers_that_strip_dnssec_fail_closed_and_say_so() {
    let dns = zones().start();
    dns.strip_dnssec(true);
    let (resolver, _anchor) = resolver(&dns, false);
    for domain in ["secure.test", "plain.test"] {
        let error = resolver.mail_targets(domain).await.unwrap_err();
        assert!(
            matches!(error, DnsError::Temporary(_)),
            "{domain}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("DNSSEC validation failed"), "{text}");
        assert!(
            text.contains("do not seem to pass DNSSEC records"),
            "the reason names the cause: {text}"
        );
    }
    let check = resolver.check_dnssec().await.expect("validation is on");
    assert!(check.is_err(), "{check:?}");

    dns.strip_dnssec(false);
    let (resolver, _anchor) = self::resolver(&dns, false);
    let check = resolver.check_dnssec().await.expect("validation is on");
    assert!(check.is_ok(), "{check:?}");
}

#[tokio::test]
async fn a_plain_name_server_with_the_root_anchor_defers_everything() {
    // The unsigned test server: no DNSSEC at all, as a plain local resolver.
    let dns = TestDns::start(
        Zone::default()
            .mx("example.com", 10, "mx.example.com")
            .a("mx.example.com", "127.0.70.9"),
    );
    let resolver = MxResolver::with_dnssec(
        &[dns.address],
        TrustAnchorSource::Root,
        IpVersion::Ipv4,
        limits(),
    )
    .unwrap();
    let error = resolver.mail_targets("example.com").await.unwrap_err();
    assert!(matches!(error, DnsError::Temporary(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("do not seem to pass DNSSEC records"),
        "{error}"
    );
    // Without validation the same server resolves the domain.
    let plain = MxResolver::with_limits(&[dns.address], &[], 1, IpVersion::Ipv4, limits()).unwrap();
    assert_eq!(plain.mail_targets("example.com").await.unwrap().len(), 1);
}
