//! Address blocks as plain `(IpAddr, prefix length)` pairs, and the one rule that makes
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4
//! peer) count as the IPv4 address they carry, so no check can be side-stepped by spelling.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address block: the network address and its prefix length, as the caller gives it.
///
/// Host bits are ignored; a prefix length beyond the family's width (33 for IPv4) is read as
/// the full width (a single address), so a value that slipped past validation can only make
/// a rule narrower, never wider.
pub type Cidr = (IpAddr, u8);

/// `ip`, with an IPv4-mapped IPv6 address turned into the IPv4 address it carries.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `net` contains `ip`, both taken in canonical form (see [`canonical`]).
pub(crate) fn contains(net: Cidr, ip: IpAddr) -> bool {
    let (net_ip, prefix) = canonical_net(net);
    match (net_ip, canonical(ip)) {
        (IpAddr::V4(n), IpAddr::V4(a)) => v4_bits(a, prefix) == v4_bits(n, prefix),
        (IpAddr::V6(n), IpAddr::V6(a)) => v6_bits(a, prefix) == v6_bits(n, prefix),
        _ => false,
    }
}

/// Whether any block of `nets` contains `ip`.
pub(crate) fn any_contains(nets: &[Cidr], ip: IpAddr) -> bool {
    nets.iter().any(|&n| contains(n, ip))
}

/// A block written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) is the IPv4 block it maps.
fn canonical_net((ip, prefix): Cidr) -> Cidr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
            _ => (IpAddr::V6(v6), prefix.min(128)),
        },
        IpAddr::V4(v4) => (IpAddr::V4(v4), prefix.min(32)),
    }
}

fn v4_bits(ip: Ipv4Addr, prefix: u8) -> u32 {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask
}

fn v6_bits(ip: Ipv6Addr, prefix: u8) -> u128 {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        let (ip, len) = s.split_once('/').unwrap();
        (ip.parse().unwrap(), len.parse().unwrap())
    }

    #[test]
    fn membership_table() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3/8", "10.9.9.9", true), // host bits ignored
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("192.0.2.7/32", "192.0.2.8", false),
            ("192.0.2.7/40", "192.0.2.8", false), // clamped to /32
            ("10.0.0.0/8", "::ffff:10.1.1.1", true),
            ("::ffff:10.0.0.0/104", "10.3.3.3", true),
            ("::ffff:10.0.0.0/104", "::ffff:10.3.3.3", true),
            ("fe80::/10", "fe80::1", true),
            ("fe80::/10", "fec0::1", false),
            ("::/0", "::1", true),
            ("::/0", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
        ];
        for (n, ip, want) in cases {
            assert_eq!(contains(net(n), ip.parse().unwrap()), want, "{ip} in {n}");
        }
    }

    #[test]
    fn canonical_unmaps_only_mapped_addresses() {
        let c = |s: &str| canonical(s.parse().unwrap()).to_string();
        assert_eq!(c("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(c("::127.0.0.1"), "::7f00:1");
        assert_eq!(c("2001:db8::1"), "2001:db8::1");
        assert_eq!(c("192.0.2.1"), "192.0.2.1");
    }
}
