//! The pure half of MX resolution: which MX hosts count, in what order, and
//! which of their addresses are tried (RFC 5321 §5.1). No I/O here.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::SystemTime;

use crate::config::IpVersion;

use super::{MailTarget, TargetDnssec};

/// At most this many addresses are tried for one destination.
pub const MAX_TARGETS: usize = 5;

/// One MX record as the resolver returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Exchange<N> {
    pub preference: u16,
    /// The exchange host name; `None` is the root `.` of a null MX.
    pub host: Option<N>,
}

/// The MX records of a domain in the order their hosts are tried: by
/// preference, equal preferences shuffled (RFC 5321 §5.1). `None` when the
/// domain publishes a null MX (RFC 7505) and nothing else; a null MX mixed
/// with real ones is ignored.
pub(super) fn prioritize<N>(
    records: Vec<Exchange<N>>,
    random: &mut SplitMix64,
) -> Option<Vec<(u16, N)>> {
    let mut hosts: Vec<(u16, N)> = records
        .into_iter()
        .filter_map(|record| Some((record.preference, record.host?)))
        .collect();
    if hosts.is_empty() {
        return None;
    }
    random.shuffle(&mut hosts);
    // A stable sort keeps the shuffled order among equal preferences.
    hosts.sort_by_key(|(preference, _)| *preference);
    Some(hosts)
}

/// The addresses found for one host, per family, in resolver order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HostAddresses {
    pub ipv6: Vec<IpAddr>,
    pub ipv4: Vec<IpAddr>,
}

impl HostAddresses {
    pub fn is_empty(&self) -> bool {
        self.ipv6.is_empty() && self.ipv4.is_empty()
    }
}

/// A host whose addresses are known, in the order hosts are tried.
#[derive(Debug, Clone)]
pub(super) struct ResolvedHost {
    pub host: String,
    pub preference: u16,
    pub addresses: HostAddresses,
    /// What DNSSEC proved, when the lookup was validated.
    pub dnssec: Option<TargetDnssec>,
}

/// Flattens resolved hosts into the addresses to try, following
/// `delivery.ip_version`: `ipv4`/`ipv6` keep only that family;
/// `prefer_ipv4`/`prefer_ipv6` put that family first within each preference
/// level (so a preferred-family backup MX never beats a better MX); `any`
/// keeps each host's IPv6 then IPv4 addresses, host by host. An address
/// reached through two MX hosts is tried once; at most [`MAX_TARGETS`].
pub(super) fn order_targets(hosts: &[ResolvedHost], ip_version: IpVersion) -> Vec<MailTarget> {
    let mut targets: Vec<MailTarget> = Vec::new();
    let mut push = |host: &ResolvedHost, addresses: &[IpAddr]| {
        for &address in addresses {
            if !targets.iter().any(|target| target.address == address) {
                targets.push(MailTarget {
                    host: host.host.clone(),
                    address,
                    preference: host.preference,
                    dnssec: host.dnssec.clone(),
                });
            }
        }
    };
    for level in hosts.chunk_by(|a, b| a.preference == b.preference) {
        match ip_version {
            IpVersion::Any => {
                for host in level {
                    push(host, &host.addresses.ipv6);
                    push(host, &host.addresses.ipv4);
                }
            }
            IpVersion::Ipv4 => level.iter().for_each(|h| push(h, &h.addresses.ipv4)),
            IpVersion::Ipv6 => level.iter().for_each(|h| push(h, &h.addresses.ipv6)),
            IpVersion::PreferIpv4 => {
                level.iter().for_each(|h| push(h, &h.addresses.ipv4));
                level.iter().for_each(|h| push(h, &h.addresses.ipv6));
            }
            IpVersion::PreferIpv6 => {
                level.iter().for_each(|h| push(h, &h.addresses.ipv6));
                level.iter().for_each(|h| push(h, &h.addresses.ipv4));
            }
        }
    }
    targets.truncate(MAX_TARGETS);
    targets
}

/// SplitMix64: shuffling equal-preference MX hosts needs spread across
/// deliveries, not unpredictability, so the `rand` crate is not pulled in.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    #[cfg(test)]
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Seeded from std's per-process random SipHash keys and the clock.
    pub fn from_entropy() -> SplitMix64 {
        SplitMix64(RandomState::new().hash_one(SystemTime::now()))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, host: &str) -> Exchange<String> {
        Exchange {
            preference,
            host: Some(host.to_owned()),
        }
    }

    fn null_mx() -> Exchange<String> {
        Exchange {
            preference: 0,
            host: None,
        }
    }

    fn host(name: &str, preference: u16, ipv6: &[&str], ipv4: &[&str]) -> ResolvedHost {
        let parse = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect();
        ResolvedHost {
            host: name.to_owned(),
            preference,
            addresses: HostAddresses {
                ipv6: parse(ipv6),
                ipv4: parse(ipv4),
            },
            dnssec: None,
        }
    }

    fn addresses(targets: &[MailTarget]) -> Vec<String> {
        targets.iter().map(|t| t.address.to_string()).collect()
    }

    #[test]
    fn mx_sorted_by_preference() {
        let ordered = prioritize(
            vec![mx(30, "c"), mx(10, "a"), mx(20, "b")],
            &mut SplitMix64::new(1),
        )
        .unwrap();
        assert_eq!(
            ordered,
            vec![(10, "a".into()), (20, "b".into()), (30, "c".into())]
        );
    }

    #[test]
    fn equal_preferences_shuffled_both_orders_seen() {
        let mut random = SplitMix64::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let ordered = prioritize(
                vec![mx(10, "a"), mx(10, "b"), mx(5, "first"), mx(20, "last")],
                &mut random,
            )
            .unwrap();
            assert_eq!(ordered[0].1, "first");
            assert_eq!(ordered[3].1, "last");
            seen.insert((ordered[1].1.clone(), ordered[2].1.clone()));
        }
        assert_eq!(seen.len(), 2, "both orders of the equal pair: {seen:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<u32> = (0..50).collect();
        SplitMix64::from_entropy().shuffle(&mut items);
        items.sort();
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn null_mx_alone_means_no_mail() {
        assert_eq!(prioritize(vec![null_mx()], &mut SplitMix64::new(1)), None);
    }

    #[test]
    fn null_mx_mixed_with_real_ones_is_ignored() {
        let ordered = prioritize(vec![null_mx(), mx(10, "a")], &mut SplitMix64::new(1)).unwrap();
        assert_eq!(ordered, vec![(10, "a".into())]);
    }

    fn two_levels() -> Vec<ResolvedHost> {
        vec![
            host("a", 10, &["2001:db8::a"], &["192.0.2.1"]),
            host("b", 10, &["2001:db8::b"], &["192.0.2.2"]),
            host("c", 20, &["2001:db8::c"], &["192.0.2.3"]),
        ]
    }

    #[test]
    fn any_keeps_host_order_ipv6_then_ipv4_per_host() {
        let targets = order_targets(&two_levels(), IpVersion::Any);
        assert_eq!(
            addresses(&targets),
            [
                "2001:db8::a",
                "192.0.2.1",
                "2001:db8::b",
                "192.0.2.2",
                "2001:db8::c"
            ]
        );
        assert_eq!(targets[2].host, "b");
        assert_eq!(targets[4].preference, 20);
    }

    #[test]
    fn single_family_drops_the_other() {
        let v4 = order_targets(&two_levels(), IpVersion::Ipv4);
        assert_eq!(addresses(&v4), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        let v6 = order_targets(&two_levels(), IpVersion::Ipv6);
        assert_eq!(
            addresses(&v6),
            ["2001:db8::a", "2001:db8::b", "2001:db8::c"]
        );
    }

    #[test]
    fn preference_applies_within_each_level() {
        let v4 = order_targets(&two_levels(), IpVersion::PreferIpv4);
        assert_eq!(
            addresses(&v4),
            [
                "192.0.2.1",
                "192.0.2.2",
                "2001:db8::a",
                "2001:db8::b",
                "192.0.2.3"
            ]
        );
        let v6 = order_targets(&two_levels(), IpVersion::PreferIpv6);
        assert_eq!(
            addresses(&v6),
            [
                "2001:db8::a",
                "2001:db8::b",
                "192.0.2.1",
                "192.0.2.2",
                "2001:db8::c"
            ]
        );
    }

    #[test]
    fn shared_addresses_tried_once() {
        let hosts = vec![
            host("a", 10, &[], &["192.0.2.1"]),
            host("b", 20, &[], &["192.0.2.1", "192.0.2.2"]),
        ];
        let targets = order_targets(&hosts, IpVersion::Any);
        assert_eq!(addresses(&targets), ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(targets[0].host, "a");
        assert_eq!(targets[1].host, "b");
    }
}
