//! Who may use a listener and how often (`allow`, `deny`, `rate_limit`), and where a SOCKS
//! exit may connect (`allow_destinations`, `deny_destinations`): small values with the one
//! function each that decides, so the forwarding layer never re-interprets config text.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::Cidr;

/// `allow` and `deny` on a forward or expose: which client addresses may connect.
///
/// `deny` wins over `allow`; an empty `allow` list allows every address not denied.
/// Both lists hold prefixes with host bits cleared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// When not empty, only these client addresses may connect.
    pub allow: Vec<Cidr>,
    /// These client addresses may never connect, even when allowed.
    pub deny: Vec<Cidr>,
}

impl Access {
    /// True when a client at `ip` may connect. An IPv4-mapped IPv6 address
    /// (`::ffff:203.0.113.7`, as a dual-stack socket reports IPv4 clients) is judged as the
    /// IPv4 address it carries, so IPv4 rules apply to it.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// True when neither list has an entry (everyone may connect).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// A new-connection (TCP) or new-session (UDP) budget per client address: `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// How many, at least 1.
    pub count: u32,
    /// In how long: one second (`"/s"`) or one minute (`"/m"`).
    pub per: Duration,
}

/// The largest `count` a rate may have: beyond it a limit limits nothing.
pub const MAX_RATE_COUNT: u32 = 1_000_000;

/// Why a text is not a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not `<digits>/s` or `<digits>/m`.
    #[error("`{0}` is not a rate like \"20/s\" or \"600/m\"")]
    Syntax(String),
    /// Zero, or more than [`MAX_RATE_COUNT`].
    #[error("`{0}` is outside 1 to 1000000 per second or minute")]
    Range(String),
}

impl FromStr for Rate {
    type Err = RateError;

    /// `N/s` or `N/m`, N from 1 to [`MAX_RATE_COUNT`].
    fn from_str(s: &str) -> Result<Self, RateError> {
        let syntax = || RateError::Syntax(s.to_string());
        let (n, unit) = s.split_once('/').ok_or_else(syntax)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(syntax()),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        match n.parse::<u32>() {
            Ok(count) if (1..=MAX_RATE_COUNT).contains(&count) => Ok(Rate { count, per }),
            _ => Err(RateError::Range(s.to_string())),
        }
    }
}

impl fmt::Display for Rate {
    /// `20/s` or `600/m`: the form it was written in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per == Duration::from_secs(60) {
            "m"
        } else {
            "s"
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// One entry of a SOCKS exit's `allow_destinations` or `deny_destinations`: an address
/// prefix (or any address) and a port range (or any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestinationRule {
    /// The destination prefix, host bits cleared; `None` (written `*`) means any address.
    pub net: Option<Cidr>,
    /// The inclusive port range; `None` means any port.
    pub ports: Option<(u16, u16)>,
}

impl DestinationRule {
    /// True when `addr` is inside the prefix and the port range. IPv4-mapped IPv6 addresses
    /// are judged as IPv4.
    pub fn matches(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        let net_ok = self.net.is_none_or(|c| c.contains(ip));
        let port_ok = self
            .ports
            .is_none_or(|(lo, hi)| (lo..=hi).contains(&addr.port()));
        net_ok && port_ok
    }
}

/// Why a text is not a destination rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The address part is not an IP address or prefix.
    #[error("{0}")]
    Net(crate::CidrError),
    /// A port is not a number from 1 to 65535.
    #[error("port `{0}` is not a number from 1 to 65535")]
    Port(String),
    /// `HIGH` is below `LOW`.
    #[error("port range `{0}` ends before it starts")]
    Reversed(String),
    /// `*` without a port would match everything.
    #[error("`*` needs a port (\"*:443\"); for every address write \"0.0.0.0/0\" and \"::/0\"")]
    BareStar,
}

fn rule_port(text: &str) -> Result<u16, DestinationError> {
    match text.parse::<u16>() {
        Ok(p) if p != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(DestinationError::Port(text.to_string())),
    }
}

fn rule_ports(text: &str) -> Result<(u16, u16), DestinationError> {
    match text.split_once('-') {
        None => rule_port(text).map(|p| (p, p)),
        Some((lo, hi)) => {
            let (lo, hi) = (rule_port(lo)?, rule_port(hi)?);
            if hi < lo {
                return Err(DestinationError::Reversed(text.to_string()));
            }
            Ok((lo, hi))
        }
    }
}

fn rule_net(text: &str) -> Result<Cidr, DestinationError> {
    let c: Cidr = text.parse().map_err(DestinationError::Net)?;
    Ok(c.to_network())
}

impl FromStr for DestinationRule {
    type Err = DestinationError;

    /// `CIDR`, `CIDR:PORT`, `CIDR:LOW-HIGH`, `*:PORT`, `*:LOW-HIGH`; an IPv6 prefix followed by
    /// a port goes in brackets (`[fd00::/8]:443`); a bare IP means `/32` or `/128`.
    fn from_str(s: &str) -> Result<Self, DestinationError> {
        if s == "*" {
            return Err(DestinationError::BareStar);
        }
        if let Some(ports) = s.strip_prefix("*:") {
            return Ok(DestinationRule {
                net: None,
                ports: Some(rule_ports(ports)?),
            });
        }
        if let Some(rest) = s.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(DestinationError::Net(crate::CidrError::Address(
                    s.to_string(),
                )));
            };
            let ports = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(rule_ports(p)?),
                    None => return Err(DestinationError::Port(after.to_string())),
                },
            };
            let net = rule_net(inside)?;
            if net.addr().is_ipv4() {
                // Brackets are for IPv6 only, as in `[v6]:port` endpoints.
                return Err(DestinationError::Net(crate::CidrError::Address(format!(
                    "[{inside}]"
                ))));
            }
            return Ok(DestinationRule {
                net: Some(net),
                ports,
            });
        }
        // Without brackets, a colon means a port only for IPv4 (IPv6 is all colons).
        match s.split_once(':') {
            Some((net, ports)) if !net.contains(':') && !ports.contains(':') => {
                Ok(DestinationRule {
                    net: Some(rule_net(net)?),
                    ports: Some(rule_ports(ports)?),
                })
            }
            _ => Ok(DestinationRule {
                net: Some(rule_net(s)?),
                ports: None,
            }),
        }
    }
}

impl fmt::Display for DestinationRule {
    /// The canonical written form (`10.0.0.0/8:443`, `[fd00::/8]:1000-2000`, `*:25`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.net, self.ports) {
            (Some(net), None) => write!(f, "{net}")?,
            (Some(net), Some(_)) if net.addr().is_ipv6() => write!(f, "[{net}]")?,
            (Some(net), Some(_)) => write!(f, "{net}")?,
            (None, _) => f.write_str("*")?,
        }
        match self.ports {
            Some((lo, hi)) if lo == hi => write!(f, ":{lo}"),
            Some((lo, hi)) => write!(f, ":{lo}-{hi}"),
            None => Ok(()),
        }
    }
}

/// Constant-time equality for secrets (the length is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn access_deny_wins_and_empty_allow_allows_all() {
        let open = Access::default();
        assert!(open.is_open());
        assert!(open.permits(ip("203.0.113.7")) && open.permits(ip("2001:db8::1")));

        let a = Access {
            allow: vec![c("203.0.113.0/24"), c("2001:db8::/32")],
            deny: vec![c("203.0.113.7/32")],
        };
        assert!(a.permits(ip("203.0.113.8")));
        assert!(!a.permits(ip("203.0.113.7")), "deny wins over allow");
        assert!(!a.permits(ip("198.51.100.1")), "not in allow");
        assert!(a.permits(ip("2001:db8::5")));
        assert!(!a.permits(ip("2001:db9::5")));
        // A dual-stack socket reports IPv4 clients as IPv4-mapped IPv6.
        assert!(a.permits(ip("::ffff:203.0.113.8")));
        assert!(!a.permits(ip("::ffff:203.0.113.7")));
        assert!(!a.permits(ip("::ffff:198.51.100.1")));

        let deny_only = Access {
            allow: vec![],
            deny: vec![c("10.0.0.0/8")],
        };
        assert!(deny_only.permits(ip("192.0.2.1")));
        assert!(!deny_only.permits(ip("10.1.2.3")));
        assert!(!deny_only.permits(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(
            "20/s".parse::<Rate>(),
            Ok(Rate {
                count: 20,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            "600/m".parse::<Rate>().unwrap().per,
            Duration::from_secs(60)
        );
        for text in ["20/s", "600/m", "1/s", "1000000/m"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        for bad in [
            "", "20", "/s", "20/", "20/h", "20 /s", "+20/s", "-1/s", "2.5/s", "x/s",
        ] {
            assert!(
                matches!(bad.parse::<Rate>(), Err(RateError::Syntax(_))),
                "{bad}"
            );
        }
        for bad in ["0/s", "1000001/s", "99999999999999/m"] {
            assert!(
                matches!(bad.parse::<Rate>(), Err(RateError::Range(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn destination_rules_parse_and_round_trip() {
        let r = |s: &str| s.parse::<DestinationRule>().unwrap();
        assert_eq!(
            r("10.0.0.0/8"),
            DestinationRule {
                net: Some(c("10.0.0.0/8")),
                ports: None
            }
        );
        assert_eq!(r("192.168.1.5").net, Some(c("192.168.1.5/32")));
        assert_eq!(r("fd00::1").net, Some(c("fd00::1/128")));
        assert_eq!(
            r("10.1.2.3/8").net,
            Some(c("10.0.0.0/8")),
            "host bits cleared"
        );
        assert_eq!(r("10.0.0.0/8:443").ports, Some((443, 443)));
        assert_eq!(
            r("*:1000-2000"),
            DestinationRule {
                net: None,
                ports: Some((1000, 2000))
            }
        );
        assert_eq!(r("[fd00::/8]:443").net, Some(c("fd00::/8")));
        assert_eq!(r("[fd00::/8]").ports, None);
        for text in [
            "10.0.0.0/8",
            "10.0.0.0/8:443",
            "192.168.0.0/16:1000-2000",
            "*:25",
            "*:6000-7000",
            "fd00::/8",
            "[fd00::/8]:443",
            "[::1/128]:22-23",
        ] {
            assert_eq!(r(text).to_string(), text);
        }
        for bad in [
            "",
            "*",
            "*:",
            "*:0",
            "*:x",
            "*:2000-1000",
            "10.0.0.0/8:",
            "10.0.0.0/8:70000",
            "10.0.0.0/33",
            "example.com:443",
            "[fd00::/8",
            "[fd00::/8]443",
            "[10.0.0.0/8]:443",
            "fd00::/8:443",
            "10.0.0.1:80:90",
        ] {
            assert!(bad.parse::<DestinationRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn destination_rules_match() {
        let r = |s: &str| s.parse::<DestinationRule>().unwrap();
        assert!(r("10.0.0.0/8").matches(sa("10.9.9.9:1")));
        assert!(!r("10.0.0.0/8").matches(sa("11.0.0.1:1")));
        assert!(r("10.0.0.0/8:443").matches(sa("10.0.0.1:443")));
        assert!(!r("10.0.0.0/8:443").matches(sa("10.0.0.1:444")));
        assert!(r("*:1000-2000").matches(sa("[2001:db8::1]:1000")));
        assert!(r("*:1000-2000").matches(sa("192.0.2.1:2000")));
        assert!(!r("*:1000-2000").matches(sa("192.0.2.1:2001")));
        assert!(r("[fd00::/8]:443").matches(sa("[fd12::1]:443")));
        assert!(!r("[fd00::/8]:443").matches(sa("10.0.0.1:443")));
        assert!(r("169.254.169.254").matches(sa("[::ffff:169.254.169.254]:80")));
        assert!(!r("0.0.0.0/0").matches(sa("[::1]:80")), "families differ");
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
