//! The client network AUTH failures are counted by (pure): an IPv4 /24, an
//! IPv6 /64, and all of loopback as one. One host rarely has a single
//! address to itself (a container bridge hands out a /24, an IPv6 host picks
//! addresses from its /64 at will), so counting per address would give each
//! of them a fresh budget.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A client network, as AUTH failures are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// 127.0.0.0/8 and ::1: every local process is one client.
    Loopback,
    /// The first three octets of an IPv4 address.
    V4([u8; 3]),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
}

impl Network {
    /// The network of `address`; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn of(address: IpAddr) -> Network {
        match address.to_canonical() {
            IpAddr::V4(v4) if v4.is_loopback() => Network::Loopback,
            IpAddr::V6(v6) if v6.is_loopback() => Network::Loopback,
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Network::V4([a, b, c])
            }
            IpAddr::V6(v6) => Network::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Network::Loopback => write!(f, "loopback"),
            Network::V4([a, b, c]) => write!(f, "{}/24", Ipv4Addr::new(a, b, c, 0)),
            Network::V6(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(prefix) << 64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> Network {
        Network::of(text.parse().unwrap())
    }

    #[test]
    fn loopback_is_one_network() {
        for address in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.3.4",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(network(address), Network::Loopback, "{address}");
        }
        assert_eq!(Network::Loopback.to_string(), "loopback");
    }

    #[test]
    fn ipv4_counts_by_24_and_ipv6_by_64() {
        assert_eq!(network("192.0.2.1"), network("192.0.2.254"));
        assert_eq!(network("192.0.2.1"), network("::ffff:192.0.2.9"));
        assert_ne!(network("192.0.2.1"), network("192.0.3.1"));
        assert_eq!(network("192.0.2.77").to_string(), "192.0.2.0/24");
        assert_eq!(network("2001:db8:1:2::1"), network("2001:db8:1:2:ffff::9"));
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"));
        assert_eq!(
            network("2001:db8:1:2:3::1").to_string(),
            "2001:db8:1:2::/64"
        );
    }
}
