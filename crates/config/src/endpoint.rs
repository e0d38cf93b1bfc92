//! `host:port` targets that may name a host instead of an IP (peer endpoints, expose targets).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A checked `host:port`, where host is an IPv4 address, an IPv6 address (written `[v6]:port`),
/// or a DNS name.
///
/// Names are kept unresolved on purpose: a peer endpoint is resolved when the tunnel starts and
/// an expose target when each connection is made, never while parsing a config (so `pinhole
/// check` works offline and gives the same answer everywhere).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The host: an IP address (IPv6 without brackets) or a DNS name.
    pub host: String,
    /// The port, never 0.
    pub port: u16,
}

/// Why a text is not a `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No `:port` at the end.
    #[error("`{0}` has no port")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("port `{0}` is not a number from 1 to 65535")]
    BadPort(String),
    /// The host is neither an IP address nor a valid DNS name.
    #[error("`{0}` is not an IP address or a host name")]
    BadHost(String),
    /// An IPv6 address without brackets: its colons make the port ambiguous.
    #[error("an IPv6 address with a port must be written in brackets")]
    Ipv6NeedsBrackets,
}

impl Endpoint {
    /// The host as an IP address when it is one (no DNS lookup).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Resolves the host with the system resolver (blocking) and returns the first address;
    /// call it from a blocking context, at the moment the address is needed.
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        let mut addrs = (self.host.as_str(), self.port).to_socket_addrs()?;
        addrs.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolved to no addresses", self.host),
            )
        })
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        Endpoint {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, EndpointError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::BadPort(text.to_string()));
    }
    match text.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(EndpointError::BadPort(text.to_string())),
    }
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, at most 253 characters.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    /// `host:port`, `1.2.3.4:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if let Some(rest) = s.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(EndpointError::BadHost(s.to_string()));
            };
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| EndpointError::BadHost(inside.to_string()))?;
            let Some(port) = after.strip_prefix(':') else {
                return Err(EndpointError::MissingPort(s.to_string()));
            };
            return Ok(Endpoint {
                host: ip.to_string(),
                port: parse_port(port)?,
            });
        }
        if s.parse::<Ipv6Addr>().is_ok() {
            return Err(EndpointError::Ipv6NeedsBrackets);
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(EndpointError::MissingPort(s.to_string()));
        };
        if host.contains(':') {
            return Err(EndpointError::Ipv6NeedsBrackets);
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(EndpointError::BadHost(host.to_string()));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port: parse_port(port)?,
        })
    }
}

impl fmt::Display for Endpoint {
    /// `host:port`, or `[v6]:port` so the text parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for text in [
            "relay.example.com:51820",
            "1.2.3.4:80",
            "[fd00::1]:443",
            "localhost:8000",
            "a_b.example.:1",
        ] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
        }
        let e: Endpoint = "[fd00::1]:443".parse().unwrap();
        assert_eq!(e.host, "fd00::1");
        assert_eq!(e.ip(), Some("fd00::1".parse().unwrap()));
        assert_eq!(
            Endpoint::from("127.0.0.1:9".parse::<SocketAddr>().unwrap()).to_string(),
            "127.0.0.1:9"
        );
    }

    #[test]
    fn refuses_bad_text() {
        use EndpointError::*;
        let cases: &[(&str, EndpointError)] = &[
            ("relay.example.com", MissingPort("relay.example.com".into())),
            ("relay:0", BadPort("0".into())),
            ("relay:65536", BadPort("65536".into())),
            ("relay:+80", BadPort("+80".into())),
            ("relay:", BadPort("".into())),
            (":80", BadHost("".into())),
            ("fd00::1", Ipv6NeedsBrackets),
            ("fd00::1:80", Ipv6NeedsBrackets),
            ("[fd00::1]", MissingPort("[fd00::1]".into())),
            ("[fd00::1", BadHost("[fd00::1".into())),
            ("[1.2.3.4]:80", BadHost("1.2.3.4".into())),
            ("bad host:80", BadHost("bad host".into())),
            ("-x.com:80", BadHost("-x.com".into())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Endpoint>().as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn resolves_ip_literals_without_dns() {
        let e: Endpoint = "[::1]:5".parse().unwrap();
        assert_eq!(e.resolve().unwrap(), "[::1]:5".parse().unwrap());
    }
}
