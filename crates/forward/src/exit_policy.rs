//! Which destinations a SOCKS exit may connect to (pure; table-driven tests).
//!
//! Why a default refusal list: an exit that connects anywhere is an SSRF gateway into the
//! exit's own network: its loopback services, its LAN, the cloud metadata service at
//! 169.254.169.254 and the overlay's other peers (squid PR 1161; chisel#563). So those are
//! refused unless the config allows them explicitly, and every *resolved* address is checked,
//! not the name, so DNS rebinding cannot get around it (reliability notes D2, D3).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::cidr::{self, Cidr};

/// One `allow_destinations` or `deny_destinations` entry: an address block (or any address)
/// and an optional inclusive port range (or any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationRule {
    /// The addresses this rule covers; `None` is every address.
    pub net: Option<(IpAddr, u8)>,
    /// The ports this rule covers, inclusive; `None` is every port.
    pub ports: Option<(u16, u16)>,
}

impl DestinationRule {
    fn matches(&self, to: SocketAddr) -> bool {
        let net_ok = self.net.is_none_or(|n| cidr::contains(n, to.ip()));
        let port_ok = self
            .ports
            .is_none_or(|(lo, hi)| (lo..=hi).contains(&to.port()));
        net_ok && port_ok
    }
}

/// Why a destination was refused, for the log line (the client only sees REP 0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A `deny_destinations` rule matched.
    Denied,
    /// Loopback: 127.0.0.0/8, ::1.
    Loopback,
    /// Private or shared: 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7, fec0::/10.
    Private,
    /// Link-local, including cloud metadata (169.254.169.254): 169.254/16, fe80::/10.
    LinkLocal,
    /// Unspecified or "this network": 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast: 224/4, ff00::/8.
    Multicast,
    /// The limited broadcast address 255.255.255.255.
    Broadcast,
    /// Reserved and not routable: 240/4, IPv4-compatible IPv6 (::/96), discard-only 100::/64.
    Reserved,
    /// An address of the overlay itself.
    Overlay,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Denied => "denied by deny_destinations",
            Refusal::Loopback => "loopback address",
            Refusal::Private => "private address",
            Refusal::LinkLocal => "link-local address",
            Refusal::Unspecified => "unspecified address",
            Refusal::Multicast => "multicast address",
            Refusal::Broadcast => "broadcast address",
            Refusal::Reserved => "reserved address",
            Refusal::Overlay => "overlay address",
        })
    }
}

/// The destinations one SOCKS exit may reach.
///
/// Order of decision: a matching `deny` rule refuses; else a matching `allow` rule admits;
/// else the default refusals (see [`Refusal`]) and the overlay blocks refuse; else admit.
/// So deny wins over allow, and allow only ever lifts a default refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    overlay: Vec<Cidr>,
    allow: Vec<DestinationRule>,
    deny: Vec<DestinationRule>,
}

impl ExitPolicy {
    /// A policy with the overlay's own blocks, and the config's allow and deny rules.
    pub fn new(
        overlay: Vec<(IpAddr, u8)>,
        allow: Vec<DestinationRule>,
        deny: Vec<DestinationRule>,
    ) -> Self {
        Self {
            overlay,
            allow,
            deny,
        }
    }

    /// Admits `to`, or says why not. IPv4-mapped IPv6 is checked as IPv4, and an IPv4 address
    /// embedded in the NAT64 prefix 64:ff9b::/96 is checked too (a NAT64 exit would reach it).
    pub fn check(&self, to: SocketAddr) -> Result<(), Refusal> {
        let to = SocketAddr::new(cidr::canonical(to.ip()), to.port());
        if self.deny.iter().any(|r| r.matches(to)) {
            return Err(Refusal::Denied);
        }
        if self.allow.iter().any(|r| r.matches(to)) {
            return Ok(());
        }
        if cidr::any_contains(&self.overlay, to.ip()) {
            return Err(Refusal::Overlay);
        }
        match default_refusal(to.ip()) {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }
}

/// The built-in refusal for `ip` (canonical form), if any.
fn default_refusal(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_refusal(ip: Ipv4Addr) -> Option<Refusal> {
    const TABLE: &[([u8; 4], u8, Refusal)] = &[
        ([0, 0, 0, 0], 8, Refusal::Unspecified),
        ([10, 0, 0, 0], 8, Refusal::Private),
        ([100, 64, 0, 0], 10, Refusal::Private),
        ([127, 0, 0, 0], 8, Refusal::Loopback),
        ([169, 254, 0, 0], 16, Refusal::LinkLocal),
        ([172, 16, 0, 0], 12, Refusal::Private),
        ([192, 168, 0, 0], 16, Refusal::Private),
        ([224, 0, 0, 0], 4, Refusal::Multicast),
        ([255, 255, 255, 255], 32, Refusal::Broadcast),
        ([240, 0, 0, 0], 4, Refusal::Reserved),
    ];
    let ip = IpAddr::V4(ip);
    TABLE
        .iter()
        .find(|(net, len, _)| cidr::contains((IpAddr::from(*net), *len), ip))
        .map(|(_, _, r)| *r)
}

fn v6_refusal(ip: Ipv6Addr) -> Option<Refusal> {
    if ip.is_unspecified() {
        return Some(Refusal::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Refusal::Loopback);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix: the IPv4 address in the last 32 bits is the real destination.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = ip.octets();
        return v4_refusal(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    const TABLE: &[(u128, u8, Refusal)] = &[
        (0, 96, Refusal::Reserved), // IPv4-compatible, deprecated
        (0x0100 << 112, 64, Refusal::Reserved),
        (0xfc00 << 112, 7, Refusal::Private),
        (0xfec0 << 112, 10, Refusal::Private),
        (0x0064_ff9b_0001 << 80, 48, Refusal::Private), // local-use NAT64
        (0xfe80 << 112, 10, Refusal::LinkLocal),
        (0xff00 << 112, 8, Refusal::Multicast),
    ];
    let addr = IpAddr::V6(ip);
    TABLE
        .iter()
        .find(|(net, len, _)| cidr::contains((IpAddr::V6(Ipv6Addr::from(*net)), *len), addr))
        .map(|(_, _, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Option<(IpAddr, u8)> {
        let (ip, len) = s.split_once('/').unwrap();
        Some((ip.parse().unwrap(), len.parse().unwrap()))
    }

    #[test]
    fn default_policy_table() {
        use Refusal::*;
        let p = ExitPolicy::new(vec![(IpAddr::from([10, 77, 0, 0]), 16)], vec![], vec![]);
        let cases: &[(&str, Result<(), Refusal>)] = &[
            ("93.184.216.34:443", Ok(())),
            ("[2606:4700::1111]:443", Ok(())),
            ("192.0.2.1:80", Ok(())), // documentation ranges are fine
            ("[2001:db8::1]:80", Ok(())),
            ("127.0.0.1:22", Err(Loopback)),
            ("127.255.255.254:22", Err(Loopback)),
            ("[::1]:22", Err(Loopback)),
            ("[::ffff:127.0.0.1]:22", Err(Loopback)),
            ("10.1.2.3:80", Err(Private)),
            ("172.16.0.1:80", Err(Private)),
            ("172.31.255.255:80", Err(Private)),
            ("172.32.0.1:80", Ok(())),
            ("192.168.1.1:80", Err(Private)),
            ("100.64.0.1:80", Err(Private)),
            ("100.127.255.255:80", Err(Private)),
            ("100.128.0.1:80", Ok(())),
            ("[fc00::1]:80", Err(Private)),
            ("[fd12:3456::1]:80", Err(Private)),
            ("169.254.169.254:80", Err(LinkLocal)),
            ("[fe80::1]:80", Err(LinkLocal)),
            ("[febf::1]:80", Err(LinkLocal)),
            ("0.0.0.0:80", Err(Unspecified)),
            ("0.1.2.3:80", Err(Unspecified)),
            ("[::]:80", Err(Unspecified)),
            ("224.0.0.1:80", Err(Multicast)),
            ("239.255.255.250:1900", Err(Multicast)),
            ("[ff02::1]:80", Err(Multicast)),
            ("255.255.255.255:80", Err(Broadcast)),
            ("240.0.0.1:80", Err(Reserved)),
            ("[::7f00:1]:80", Err(Reserved)),
            ("[64:ff9b::7f00:1]:80", Err(Loopback)), // NAT64 of 127.0.0.1
            ("[64:ff9b::a9fe:a9fe]:80", Err(LinkLocal)),
            ("[64:ff9b::5db8:d822]:80", Ok(())),
            ("10.77.0.2:80", Err(Overlay)),
        ];
        for (addr, want) in cases {
            assert_eq!(p.check(sa(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn the_overlay_is_refused_even_when_public() {
        let p = ExitPolicy::new(vec![(IpAddr::from([198, 51, 100, 0]), 24)], vec![], vec![]);
        assert_eq!(p.check(sa("198.51.100.7:80")), Err(Refusal::Overlay));
        assert_eq!(
            p.check(sa("[::ffff:198.51.100.7]:80")),
            Err(Refusal::Overlay)
        );
        assert_eq!(p.check(sa("198.51.101.7:80")), Ok(()));
    }

    #[test]
    fn allow_lifts_default_refusals_and_deny_wins() {
        let allow = vec![
            DestinationRule {
                net: net("127.0.0.1/32"),
                ports: None,
            },
            DestinationRule {
                net: net("192.168.0.0/16"),
                ports: Some((8000, 8999)),
            },
            DestinationRule {
                net: net("10.77.0.5/32"),
                ports: Some((22, 22)),
            },
        ];
        let deny = vec![
            DestinationRule {
                net: None,
                ports: Some((25, 25)),
            },
            DestinationRule {
                net: net("192.168.1.0/24"),
                ports: None,
            },
            DestinationRule {
                net: net("203.0.113.0/24"),
                ports: None,
            },
        ];
        let p = ExitPolicy::new(vec![(IpAddr::from([10, 77, 0, 0]), 16)], allow, deny);
        use Refusal::*;
        let cases: &[(&str, Result<(), Refusal>)] = &[
            ("127.0.0.1:5000", Ok(())),
            ("[::ffff:127.0.0.1]:5000", Ok(())),
            ("127.0.0.2:5000", Err(Loopback)),
            ("127.0.0.1:25", Err(Denied)), // deny wins over allow
            ("93.184.216.34:25", Err(Denied)),
            ("192.168.2.1:8080", Ok(())),
            ("192.168.2.1:9000", Err(Private)),
            ("192.168.1.1:8080", Err(Denied)),
            ("10.77.0.5:22", Ok(())), // allow lifts the overlay refusal
            ("10.77.0.5:23", Err(Overlay)),
            ("203.0.113.9:443", Err(Denied)),
            ("93.184.216.34:443", Ok(())),
        ];
        for (addr, want) in cases {
            assert_eq!(p.check(sa(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn refusals_read_well_in_a_log() {
        assert_eq!(Refusal::LinkLocal.to_string(), "link-local address");
    }
}
