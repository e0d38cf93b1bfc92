//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929): the server side of the
//! handshake as a pure state machine, and the reply encoding. No I/O here; `socks_exit.rs` is
//! the async handler that drives it.
//!
//! The machine is fed the bytes received so far, in any chunking: [`Handshake::advance`]
//! consumes one whole message from the front, or says [`SocksError::Incomplete`] (read more)
//! or [`SocksError::Invalid`] (close). Only CONNECT is served; BIND and UDP ASSOCIATE get
//! REP 0x07 (reliability notes D6: an ASSOCIATE done badly is an unauthenticated UDP relay).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The largest legal message: an RFC 1929 request with a 255-byte username and password.
pub const MAX_MESSAGE: usize = 3 + 255 + 255;

/// Why bytes are not (yet) the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocksError {
    /// The message may still complete with more bytes.
    Incomplete,
    /// The bytes break the protocol, whatever follows; close. The reason is for the log.
    Invalid(&'static str),
}

/// The REP field of a reply (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// 0x00: succeeded.
    Succeeded = 0x00,
    /// 0x01: general SOCKS server failure.
    GeneralFailure = 0x01,
    /// 0x02: connection not allowed by ruleset (the exit policy refused the destination).
    NotAllowed = 0x02,
    /// 0x03: network unreachable.
    NetworkUnreachable = 0x03,
    /// 0x04: host unreachable (also: the name did not resolve).
    HostUnreachable = 0x04,
    /// 0x05: connection refused.
    ConnectionRefused = 0x05,
    /// 0x06: TTL expired (sent when the connect timed out).
    TtlExpired = 0x06,
    /// 0x07: command not supported (BIND, UDP ASSOCIATE).
    CommandNotSupported = 0x07,
    /// 0x08: address type not supported.
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// The reply for a failed connect.
    pub fn for_error(e: &io::Error) -> Self {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Reply::ConnectionRefused,
            TimedOut => Reply::TtlExpired,
            HostUnreachable => Reply::HostUnreachable,
            NetworkUnreachable => Reply::NetworkUnreachable,
            PermissionDenied => Reply::NotAllowed,
            _ => Reply::GeneralFailure,
        }
    }
}

/// Encodes a reply. `bound` is the exit's address for the connection (BND.ADDR/BND.PORT);
/// failures send 0.0.0.0:0.
pub fn encode_reply(rep: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let bound = bound.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut out = vec![5, rep as u8, 0];
    match bound.ip() {
        IpAddr::V4(v4) => {
            out.push(1);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(4);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

/// The username and password a client must present (RFC 1929).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: Vec<u8>,
    password: Vec<u8>,
}

impl Credentials {
    /// Credentials to require. Each is at most 255 bytes on the wire; longer ones can never
    /// match (the config should refuse them).
    pub fn new(username: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Compares in time independent of where the bytes differ, so the password cannot be
    /// guessed byte by byte from response times; both fields are always compared.
    fn matches(&self, username: &[u8], password: &[u8]) -> bool {
        ct_eq(&self.username, username) & ct_eq(&self.password, password)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }") // never log the secret
    }
}

/// Constant-time equality over the longer length (only the lengths may leak).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// Where a CONNECT goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// ATYP 1 or 4: an address.
    Ip(SocketAddr),
    /// ATYP 3: a name, resolved at the exit.
    Domain(String, u16),
}

/// What the server does after one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes to the client and keep reading.
    Send(Vec<u8>),
    /// Send these bytes, then close: no acceptable method, failed authentication, or an
    /// unsupported command or address type.
    Refuse(Vec<u8>),
    /// The client asks to CONNECT: connect, then send [`encode_reply`].
    Connect(Destination),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Auth,
    Request,
    Done,
}

/// The server side of one SOCKS5 handshake.
#[derive(Debug)]
pub struct Handshake {
    phase: Phase,
    credentials: Option<Credentials>,
}

impl Handshake {
    /// A handshake that requires `credentials` when given (method 0x02), else accepts
    /// no authentication (method 0x00).
    pub fn new(credentials: Option<Credentials>) -> Self {
        Self {
            phase: Phase::Greeting,
            credentials,
        }
    }

    /// Consumes the next message from the front of `buf`; returns what to do and how many
    /// bytes it took. After a [`Step::Refuse`] or [`Step::Connect`] the handshake is over.
    pub fn advance(&mut self, buf: &[u8]) -> Result<(Step, usize), SocksError> {
        let result = match self.phase {
            Phase::Greeting => self.greeting(buf),
            Phase::Auth => self.auth(buf),
            Phase::Request => request(buf),
            Phase::Done => Err(SocksError::Invalid("handshake already over")),
        };
        match &result {
            Ok((Step::Send(_), _)) => {}
            Ok(_) | Err(SocksError::Invalid(_)) => self.phase = Phase::Done,
            Err(SocksError::Incomplete) => {}
        }
        result
    }

    fn greeting(&mut self, buf: &[u8]) -> Result<(Step, usize), SocksError> {
        let [ver, n, ..] = *buf else {
            return Err(first_byte_check(buf));
        };
        if ver != 5 {
            return Err(SocksError::Invalid("greeting: version is not 5"));
        }
        if n == 0 {
            return Err(SocksError::Invalid("greeting: no methods"));
        }
        let len = 2 + usize::from(n);
        let methods = buf.get(2..len).ok_or(SocksError::Incomplete)?;
        let wanted = if self.credentials.is_some() { 2 } else { 0 };
        if methods.contains(&wanted) {
            self.phase = if wanted == 2 {
                Phase::Auth
            } else {
                Phase::Request
            };
            Ok((Step::Send(vec![5, wanted]), len))
        } else {
            Ok((Step::Refuse(vec![5, 0xff]), len))
        }
    }

    fn auth(&mut self, buf: &[u8]) -> Result<(Step, usize), SocksError> {
        let [ver, ulen, ..] = *buf else {
            return Err(match buf.first() {
                Some(v) if *v != 1 => SocksError::Invalid("auth: version is not 1"),
                _ => SocksError::Incomplete,
            });
        };
        if ver != 1 {
            return Err(SocksError::Invalid("auth: version is not 1"));
        }
        let u_end = 2 + usize::from(ulen);
        let plen = *buf.get(u_end).ok_or(SocksError::Incomplete)?;
        let len = u_end + 1 + usize::from(plen);
        let password = buf.get(u_end + 1..len).ok_or(SocksError::Incomplete)?;
        let username = &buf[2..u_end];
        let ok = self
            .credentials
            .as_ref()
            .is_some_and(|c| c.matches(username, password));
        if ok {
            self.phase = Phase::Request;
            Ok((Step::Send(vec![1, 0]), len))
        } else {
            Ok((Step::Refuse(vec![1, 1]), len))
        }
    }
}

fn first_byte_check(buf: &[u8]) -> SocksError {
    match buf.first() {
        Some(v) if *v != 5 => SocksError::Invalid("greeting: version is not 5"),
        _ => SocksError::Incomplete,
    }
}

fn request(buf: &[u8]) -> Result<(Step, usize), SocksError> {
    let [ver, cmd, rsv, atyp, ..] = *buf else {
        return Err(match buf.first() {
            Some(v) if *v != 5 => SocksError::Invalid("request: version is not 5"),
            _ => SocksError::Incomplete,
        });
    };
    if ver != 5 {
        return Err(SocksError::Invalid("request: version is not 5"));
    }
    if rsv != 0 {
        return Err(SocksError::Invalid("request: reserved byte is not 0"));
    }
    if cmd != 1 {
        let refuse = encode_reply(Reply::CommandNotSupported, None);
        return Ok((Step::Refuse(refuse), 4));
    }
    let rest = &buf[4..];
    let (dest, len) = match atyp {
        1 => {
            let a = rest.get(..6).ok_or(SocksError::Incomplete)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            (
                Destination::Ip(SocketAddr::new(ip.into(), port(&a[4..]))),
                6,
            )
        }
        4 => {
            let a = rest.get(..18).ok_or(SocksError::Incomplete)?;
            let octets: [u8; 16] = a[..16].try_into().map_err(|_| SocksError::Incomplete)?;
            let ip = Ipv6Addr::from(octets);
            (
                Destination::Ip(SocketAddr::new(ip.into(), port(&a[16..]))),
                18,
            )
        }
        3 => {
            let dlen = usize::from(*rest.first().ok_or(SocksError::Incomplete)?);
            if dlen == 0 {
                return Err(SocksError::Invalid("request: empty domain name"));
            }
            let a = rest.get(1..1 + dlen + 2).ok_or(SocksError::Incomplete)?;
            let name = std::str::from_utf8(&a[..dlen])
                .ok()
                .filter(|n| n.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80))
                .ok_or(SocksError::Invalid("request: domain name is not printable"))?;
            (
                Destination::Domain(name.to_owned(), port(&a[dlen..])),
                1 + dlen + 2,
            )
        }
        _ => {
            let refuse = encode_reply(Reply::AddressTypeNotSupported, None);
            return Ok((Step::Refuse(refuse), 4));
        }
    };
    Ok((Step::Connect(dest), 4 + len))
}

fn port(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests;
