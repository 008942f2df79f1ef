//! Domain names as relayq asks them: absolute, IDN as punycode; and RFC 5321
//! address literals, which need no DNS at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_resolver::proto::rr::Name;

use super::DnsError;

/// `domain` as an absolute name (trailing dot, IDN as punycode).
pub(super) fn absolute_name(domain: &str) -> Result<Name, DnsError> {
    let invalid = || DnsError::NoSuchDomain(format!("{domain:?} is not a valid domain name"));
    let relative = domain.strip_suffix('.').unwrap_or(domain);
    if relative.is_empty() {
        return Err(invalid());
    }
    let mut name = Name::from_utf8(relative)
        .or_else(|_| Name::from_ascii(relative))
        .map_err(|_| invalid())?;
    name.set_fqdn(true);
    Ok(name)
}

/// RFC 5321 §4.1.3 address literal: `Ok(None)` when `domain` is not one.
pub(super) fn domain_literal(domain: &str) -> Result<Option<IpAddr>, DnsError> {
    let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return Ok(None);
    };
    let invalid = || DnsError::NoSuchDomain(format!("{domain} is not a valid address literal"));
    let address = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            IpAddr::V6(inner[5..].parse::<Ipv6Addr>().map_err(|_| invalid())?)
        }
        _ => IpAddr::V4(inner.parse::<Ipv4Addr>().map_err(|_| invalid())?),
    };
    Ok(Some(address))
}

/// Lowercase ASCII, no trailing dot: how names appear in logs and targets.
pub(super) fn host_text(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    match text.strip_suffix('.') {
        Some(relative) => relative.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_absolute() {
        let name = absolute_name("Example.COM").unwrap();
        assert!(name.is_fqdn());
        assert_eq!(host_text(&name), "example.com");
        assert!(absolute_name("example.com.").unwrap().is_fqdn());
        assert_eq!(
            host_text(&absolute_name("bücher.example").unwrap()),
            "xn--bcher-kva.example"
        );
        for bad in ["", ".", "a..b"] {
            assert!(
                matches!(absolute_name(bad), Err(DnsError::NoSuchDomain(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn address_literals() {
        let literal = |text| domain_literal(text).unwrap();
        assert_eq!(literal("[127.0.0.1]"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(
            literal("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(literal("example.com"), None);
        for bad in ["[::1]", "[300.0.0.1]", "[IPv6:127.0.0.1.5]", "[x]"] {
            assert!(domain_literal(bad).is_err(), "{bad}");
        }
    }
}
