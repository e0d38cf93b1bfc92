//! IP prefixes (`10.77.0.1/24`, `fd00::2/128`), used for interface addresses and allowed_ips.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP address with a prefix length.
///
/// The address is kept as written (an interface address `10.77.0.1/24` means "I am 10.77.0.1,
/// on 10.77.0.0/24"); [`Cidr::network`] gives the masked form. A bare IP parses as a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an IP address")]
    Address(String),
    /// The part after `/` is not a number within the address family's bits.
    #[error("prefix length `{prefix}` is not between 0 and {max}")]
    Prefix {
        /// The prefix text as written.
        prefix: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl Cidr {
    /// Builds a prefix; `None` when `prefix` exceeds the family's bit count, so an invalid
    /// `Cidr` cannot exist.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(addr)).then_some(Cidr { addr, prefix })
    }

    /// The address as written (host bits included).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The address with the host bits cleared: the first address of the prefix.
    pub fn network(&self) -> IpAddr {
        mask(self.addr, self.prefix)
    }

    /// The same prefix with host bits cleared, as WireGuard stores allowed_ips.
    pub fn to_network(self) -> Cidr {
        Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// True when `ip` is inside this prefix (always false across IPv4/IPv6).
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(self.addr, ip) && mask(ip, self.prefix) == self.network()
    }

    /// True when the two prefixes share at least one address, i.e. one contains the other.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if !same_family(self.addr, other.addr) {
            return false;
        }
        let p = self.prefix.min(other.prefix);
        mask(self.addr, p) == mask(other.addr, p)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/PREFIX` or a bare `ADDR` (a single host).
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (ip_text, prefix_text) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip_text
            .parse()
            .map_err(|_| CidrError::Address(ip_text.to_string()))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => {
                    return Err(CidrError::Prefix {
                        prefix: p.to_string(),
                        max,
                    })
                }
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
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
    fn parses_and_displays() {
        assert_eq!(c("10.77.0.1/24").to_string(), "10.77.0.1/24");
        assert_eq!(c("10.77.0.1").to_string(), "10.77.0.1/32");
        assert_eq!(c("fd00::1").to_string(), "fd00::1/128");
        assert_eq!(c("0.0.0.0/0").prefix(), 0);
        assert_eq!(c("10.77.0.9/24").network(), ip("10.77.0.0"));
        assert_eq!(c("fd00::9/64").to_network(), c("fd00::/64"));
    }

    #[test]
    fn refuses_bad_text() {
        for bad in [
            "",
            "/",
            "10.0.0.1/",
            "10.0.0.1/33",
            "fd00::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.1/+8",
            "10.0.0.1/-1",
            "10.0.0.1/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            "10.0.0.1/40".parse::<Cidr>().unwrap_err().to_string(),
            "prefix length `40` is not between 0 and 32"
        );
        assert!(Cidr::new(ip("10.0.0.1"), 33).is_none());
    }

    #[test]
    fn contains_and_overlaps() {
        assert!(c("10.77.0.0/24").contains(ip("10.77.0.200")));
        assert!(!c("10.77.0.0/24").contains(ip("10.77.1.1")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")));
        assert!(c("::/0").contains(ip("fd00::1")));
        assert!(c("10.0.0.0/8").overlaps(&c("10.77.0.2/32")));
        assert!(c("10.77.0.2/32").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.77.0.2/32").overlaps(&c("10.77.0.3/32")));
        assert!(!c("0.0.0.0/0").overlaps(&c("::/0")));
    }
}
