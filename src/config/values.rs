//! Parsers and checks of single values: addresses, networks, domain names.
//!
//! Each returns the reason a value is wrong, without the key; the caller in
//! [`super::validate`] knows which key it is checking.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

const DNS_PORT: u16 = 53;

/// A CIDR network, or a bare address meaning just that host.
pub(super) fn network(text: &str) -> Result<IpNet, String> {
    if let Ok(network) = text.parse::<IpNet>() {
        // Host bits are cleared so the stored network reads as it matches.
        return Ok(network.trunc());
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(address));
    }
    Err(format!(
        "invalid network {text:?}: expected CIDR notation such as \"10.0.0.0/8\" or \"fd00::/8\", or an IP address"
    ))
}

/// `"127.0.0.1:5353"`, `"[::1]:53"`, or a bare address meaning port 53.
pub(super) fn nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(address) => Ok(SocketAddr::new(address, DNS_PORT)),
        Err(_) => Err(format!(
            "invalid nameserver {text:?}: expected an IP address with an optional port, such as \"127.0.0.1:5353\", \"[::1]:53\" or \"192.0.2.53\""
        )),
    }
}

/// A smarthost: a domain name or an IP address (IPv6 with or without brackets).
pub(super) fn check_host(host: &str) -> Result<(), String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    check_domain_name(host)
}

/// Whether `name` is plausible as a host or mail domain: ASCII letters,
/// digits, hyphens and underscores in dot-separated labels. Deliberately
/// lenient beyond that: the point is to catch typos, not to enforce RFC 1035.
pub(super) fn check_domain_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(character) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        let advice = if character.is_ascii() {
            ""
        } else {
            "; write internationalized names in their ASCII (xn--) form"
        };
        return Err(format!(
            "{name:?} is not a domain name: it contains {character:?}{advice}"
        ));
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!(
            "{name:?} is not a domain name: it has an empty label (leading, trailing or doubled dot)"
        ));
    }
    if let Some(label) = name.split('.').find(|label| label.len() > 63) {
        return Err(format!(
            "{name:?} is not a domain name: label {label:?} is longer than 63 characters"
        ));
    }
    Ok(())
}

/// An address of the form `local-part@domain`, without angle brackets.
pub(super) fn check_mailbox(address: &str) -> Result<(), String> {
    let well_formed = match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && check_domain_name(domain).is_ok()
                && !address
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>'))
        }
        None => false,
    };
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "invalid address {address:?}: expected local-part@domain, such as \"postmaster@example.com\""
        ))
    }
}

/// Checks a filter with the parser `logging::init` uses, so a typo is found
/// by `check-config` instead of silently falling back to `info`.
pub(super) fn check_log_filter(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty; leave it out for the default \"info\"".to_string());
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|error| format!("invalid filter {level:?}: {error}"))
}

pub(super) fn socket_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid address {text:?}: expected an IP address and port, such as \"127.0.0.1:25\" or \"[::1]:25\""
        )
    })
}
