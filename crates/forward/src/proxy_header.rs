//! The PROXY protocol header, versions 1 and 2 (haproxy `proxy-protocol.txt`): encode it for a
//! backend, and check-then-parse it from a trusted load balancer (pure; no I/O).
//!
//! Why check-then-parse: the reader must know where the header ends before it believes any of
//! it, and must tell "more bytes needed" ([`HeaderError::Incomplete`]) from "this is not a
//! header" ([`HeaderError::Invalid`]) at every length, so a slow sender is waited for (within a
//! timeout) and garbage is refused at once. The receiver "MUST not try to guess" whether a
//! header is present (§2): [`check`] never returns a length for bytes that are not a header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::cidr::canonical;

/// Which version of the header to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// Text: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// Binary, with the 12-byte signature.
    V2,
}

/// Why bytes are not (yet) a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A header may still complete with more bytes.
    Incomplete,
    /// These bytes are not a valid header, whatever follows; the reason is for the log.
    Invalid(&'static str),
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The version it was sent in.
    pub version: ProxyVersion,
    /// The original `(source, destination)`; `None` for a v2 `LOCAL` command, v1 `UNKNOWN` or
    /// the v2 `UNSPEC`/`UNIX` families, where the spec says to use the real connection's
    /// addresses.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header the spec allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header accepted here, TLVs included.
///
/// Why 4 KiB: the addresses take at most 216 bytes (UNIX); the rest is TLVs (ALPN, authority,
/// SSL details, cloud endpoint ids), which real load balancers keep well under this, and the
/// bound is also the most a connection can make the reader buffer.
pub const V2_MAX_LEN: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_FIXED: usize = 16;

/// Encodes one header carrying `source` (the client) and `destination` (the address it
/// connected to). IPv4-mapped IPv6 addresses are sent as IPv4. When the families still differ,
/// v1 sends `PROXY UNKNOWN` (its only option) and v2 sends both as IPv6 (IPv4 mapped).
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (src_ip, dst_ip) = (canonical(source.ip()), canonical(destination.ip()));
    let (sp, dp) = (source.port(), destination.port());
    match version {
        ProxyVersion::V1 => match (src_ip, dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => format!("PROXY TCP4 {s} {d} {sp} {dp}\r\n"),
            (IpAddr::V6(s), IpAddr::V6(d)) => format!("PROXY TCP6 {s} {d} {sp} {dp}\r\n"),
            _ => "PROXY UNKNOWN\r\n".to_owned(),
        }
        .into_bytes(),
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(V2_FIXED + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY
            match (src_ip, dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.extend_from_slice(&[0x11, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.extend_from_slice(&[0x21, 0, 36]);
                    out.extend_from_slice(&as_v6(s).octets());
                    out.extend_from_slice(&as_v6(d).octets());
                }
            }
            out.extend_from_slice(&sp.to_be_bytes());
            out.extend_from_slice(&dp.to_be_bytes());
            out
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Finds the end of the header at the start of `buf`: `Ok(length)` once a whole header of
/// either version is there. Validates the framing (signature, version, command, family,
/// lengths, characters); [`parse`] validates the contents.
pub fn check(buf: &[u8]) -> Result<usize, HeaderError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return check_v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return check_v1(buf);
    }
    Err(HeaderError::Invalid("no PROXY header signature"))
}

fn check_v1(buf: &[u8]) -> Result<usize, HeaderError> {
    let end = buf.len().min(V1_MAX_LEN);
    for i in V1_PREFIX.len().min(end)..end {
        match buf[i] {
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Ok(i + 2),
                    Some(_) => Err(HeaderError::Invalid("v1: CR not followed by LF")),
                    None if i + 1 < V1_MAX_LEN => Err(HeaderError::Incomplete),
                    None => Err(HeaderError::Invalid("v1: longer than 107 bytes")),
                }
            }
            0x20..=0x7e => {}
            _ => return Err(HeaderError::Invalid("v1: not printable ASCII")),
        }
    }
    if buf.len() >= V1_MAX_LEN {
        Err(HeaderError::Invalid("v1: longer than 107 bytes"))
    } else {
        Err(HeaderError::Incomplete)
    }
}

fn check_v2(buf: &[u8]) -> Result<usize, HeaderError> {
    if buf.len() < V2_FIXED {
        return Err(HeaderError::Incomplete);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Invalid("v2: version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(HeaderError::Invalid("v2: unknown command")),
    };
    let need = match fam {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return Err(HeaderError::Invalid("v2: unknown family or protocol")),
    };
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if !local && len < need {
        return Err(HeaderError::Invalid(
            "v2: address block shorter than its family",
        ));
    }
    let total = V2_FIXED + len;
    if total > V2_MAX_LEN {
        return Err(HeaderError::Invalid("v2: header longer than accepted"));
    }
    if buf.len() < total {
        return Err(HeaderError::Incomplete);
    }
    Ok(total)
}

/// Checks and parses the header at the start of `buf`; returns it with its length (the bytes
/// after it are the client's payload).
pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), HeaderError> {
    let len = check(buf)?;
    let header = &buf[..len];
    let parsed = if header.starts_with(&V2_SIGNATURE) {
        parse_v2(header)
    } else {
        parse_v1(&header[V1_PREFIX.len()..len - 2])
    }?;
    Ok((parsed, len))
}

fn parse_v1(line: &[u8]) -> Result<ProxyHeader, HeaderError> {
    const BAD: HeaderError = HeaderError::Invalid("v1: malformed line");
    // `check` admitted printable ASCII only.
    let line = std::str::from_utf8(line).map_err(|_| BAD)?;
    let mut fields = line.split(' ');
    let proto = fields.next().ok_or(BAD)?;
    if proto == "UNKNOWN" {
        // "the receiver must ignore anything presented before the CRLF is found" (§2.1).
        return Ok(ProxyHeader {
            version: ProxyVersion::V1,
            addresses: None,
        });
    }
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(BAD);
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            src.parse::<Ipv4Addr>().map_err(|_| BAD)?.into(),
            dst.parse::<Ipv4Addr>().map_err(|_| BAD)?.into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>().map_err(|_| BAD)?.into(),
            dst.parse::<Ipv6Addr>().map_err(|_| BAD)?.into(),
        ),
        _ => return Err(HeaderError::Invalid("v1: unknown protocol")),
    };
    Ok(ProxyHeader {
        version: ProxyVersion::V1,
        addresses: Some((
            SocketAddr::new(src, port(sport)?),
            SocketAddr::new(dst, port(dport)?),
        )),
    })
}

/// A v1 port: decimal 0..=65535, digits only, no leading zero.
fn port(s: &str) -> Result<u16, HeaderError> {
    const BAD: HeaderError = HeaderError::Invalid("v1: bad port");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(BAD);
    }
    s.parse().map_err(|_| BAD)
}

fn parse_v2(h: &[u8]) -> Result<ProxyHeader, HeaderError> {
    let unknown = ProxyHeader {
        version: ProxyVersion::V2,
        addresses: None,
    };
    if h[12] & 0x0f == 0 {
        return Ok(unknown); // LOCAL: the LB's own connection (health check); use the real peer.
    }
    let a = &h[V2_FIXED..];
    let pair = |s: IpAddr, d: IpAddr, ports: &[u8]| {
        let sp = u16::from_be_bytes([ports[0], ports[1]]);
        let dp = u16::from_be_bytes([ports[2], ports[3]]);
        Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp)))
    };
    // `check` made sure the block is as long as the family needs.
    let addresses = match h[13] >> 4 {
        1 => {
            let s = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let d = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            pair(s.into(), d.into(), &a[8..12])
        }
        2 => {
            let s: [u8; 16] = a[..16].try_into().map_err(|_| HeaderError::Incomplete)?;
            let d: [u8; 16] = a[16..32].try_into().map_err(|_| HeaderError::Incomplete)?;
            pair(
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                &a[32..36],
            )
        }
        _ => None, // UNSPEC or UNIX: no IP addresses to carry
    };
    Ok(ProxyHeader {
        addresses,
        ..unknown
    })
}

#[cfg(test)]
mod tests;
