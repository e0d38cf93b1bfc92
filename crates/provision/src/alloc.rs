//! Overlay address arithmetic: the n-th host of a subnet and the next free address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pinhole_config::Cidr;

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

fn width(c: &Cidr) -> u32 {
    if c.addr().is_ipv4() {
        32
    } else {
        128
    }
}

/// First and last address of a prefix, as integers.
fn range(c: &Cidr) -> (u128, u128) {
    let start = bits(c.network());
    let host_bits = width(c) - u32::from(c.prefix());
    let size_minus_one = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (start, start + size_minus_one)
}

/// The usable host range of a subnet: not the network address, and not IPv4's broadcast.
/// `None` when the subnet has no such host (an IPv4 /31 or /32, an IPv6 /128).
fn hosts(subnet: &Cidr) -> Option<(u128, u128)> {
    let (start, end) = range(subnet);
    let last = if subnet.addr().is_ipv4() {
        end.checked_sub(1)?
    } else {
        end
    };
    let first = start.checked_add(1)?;
    (first <= last).then_some((first, last))
}

/// The `n`-th host of `subnet` (1 = the first after the network address), if it is usable.
pub(crate) fn nth_host(subnet: &Cidr, n: u128) -> Option<IpAddr> {
    let (first, last) = hosts(subnet)?;
    let ip = first.checked_add(n.checked_sub(1)?)?;
    (ip <= last).then(|| from_bits(subnet.addr().is_ipv4(), ip))
}

/// The lowest host address of `subnet` outside every prefix in `used` (other families are
/// ignored), skipping the network address and, for IPv4, the broadcast address. `None` when
/// the subnet is full. Runs in O(n log n) of `used`, even when a used prefix is huge.
pub fn next_free_address(subnet: Cidr, used: &[Cidr]) -> Option<IpAddr> {
    let (first, last) = hosts(&subnet)?;
    let v4 = subnet.addr().is_ipv4();
    let mut taken: Vec<(u128, u128)> = used
        .iter()
        .filter(|c| c.addr().is_ipv4() == v4)
        .map(range)
        .collect();
    taken.sort_unstable();
    let mut candidate = first;
    for (start, end) in taken {
        if start > candidate {
            break;
        }
        if end >= candidate {
            candidate = end.checked_add(1)?;
        }
    }
    (candidate <= last).then(|| from_bits(v4, candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nth_host_skips_network_and_broadcast() {
        assert_eq!(nth_host(&c("10.77.0.0/24"), 1), Some(ip("10.77.0.1")));
        assert_eq!(nth_host(&c("10.77.0.9/24"), 2), Some(ip("10.77.0.2")));
        assert_eq!(nth_host(&c("10.77.0.0/24"), 254), Some(ip("10.77.0.254")));
        assert_eq!(nth_host(&c("10.77.0.0/24"), 255), None);
        assert_eq!(nth_host(&c("10.77.0.0/30"), 2), Some(ip("10.77.0.2")));
        assert_eq!(nth_host(&c("10.77.0.0/31"), 1), None);
        assert_eq!(nth_host(&c("fd77::/64"), 2), Some(ip("fd77::2")));
        assert_eq!(nth_host(&c("::/0"), 1), Some(ip("::1")));
    }

    #[test]
    fn next_free_skips_used_addresses_and_ranges() {
        let s = c("10.77.0.1/24");
        assert_eq!(next_free_address(s, &[]), Some(ip("10.77.0.1")));
        let used = [c("10.77.0.1/32"), c("10.77.0.2/32"), c("10.77.0.4/32")];
        assert_eq!(next_free_address(s, &used), Some(ip("10.77.0.3")));
        // A range and entries in any order, plus another family, which is ignored.
        let used = [
            c("10.77.0.8/29"),
            c("fd77::/64"),
            c("10.77.0.1/32"),
            c("10.77.0.0/29"),
        ];
        assert_eq!(next_free_address(s, &used), Some(ip("10.77.0.16")));
        // Used prefixes outside the subnet do not matter.
        assert_eq!(
            next_free_address(s, &[c("10.0.0.0/24")]),
            Some(ip("10.77.0.1"))
        );
    }

    #[test]
    fn next_free_is_none_when_full() {
        let s = c("10.77.0.1/30");
        assert_eq!(
            next_free_address(s, &[c("10.77.0.1/32"), c("10.77.0.2/32")]),
            None
        );
        assert_eq!(next_free_address(s, &[c("10.0.0.0/8")]), None);
        assert_eq!(next_free_address(c("10.77.0.1/32"), &[]), None);
        // Huge IPv6 ranges are skipped arithmetically, not address by address.
        let s = c("fd77::1/64");
        assert_eq!(next_free_address(s, &[c("fd77::/64")]), None);
        assert_eq!(
            next_free_address(s, &[c("fd77::/65")]),
            Some(ip("fd77::8000:0:0:0"))
        );
        assert_eq!(next_free_address(c("::1/0"), &[c("::/0")]), None);
    }
}
