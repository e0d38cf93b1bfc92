//! Defensive parsing of the IP header of a tunnelled packet: just enough to
//! route it (destination), filter it (source) and recognise our probes.
//! Every length is checked before it is trusted; a bad header is `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of ICMP.
pub(crate) const PROTO_ICMP: u8 = 1;
/// IPv6 next-header number of ICMPv6.
pub(crate) const PROTO_ICMPV6: u8 = 58;

/// The fields of an IP header the engine looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpHeader {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// IPv4 protocol, or IPv6 next header (extension headers are not walked).
    pub(crate) protocol: u8,
    /// Where the payload starts.
    pub(crate) header_len: usize,
    /// Header plus payload, as the header says; never more than the slice.
    pub(crate) total_len: usize,
}

/// Parses an IPv4 or IPv6 header; `None` if truncated or inconsistent.
pub(crate) fn parse(packet: &[u8]) -> Option<IpHeader> {
    match packet.first()? >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => None,
    }
}

fn parse_v4(p: &[u8]) -> Option<IpHeader> {
    if p.len() < 20 {
        return None;
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if header_len < 20 || total_len < header_len || total_len > p.len() {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Some(IpHeader {
        src: src.into(),
        dst: dst.into(),
        protocol: p[9],
        header_len,
        total_len,
    })
}

fn parse_v6(p: &[u8]) -> Option<IpHeader> {
    if p.len() < 40 {
        return None;
    }
    let total_len = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
    if total_len > p.len() {
        return None;
    }
    let src: [u8; 16] = p[8..24].try_into().ok()?;
    let dst: [u8; 16] = p[24..40].try_into().ok()?;
    Some(IpHeader {
        src: Ipv6Addr::from(src).into(),
        dst: Ipv6Addr::from(dst).into(),
        protocol: p[6],
        header_len: 40,
        total_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(total_len: u16, ihl: u8, actual: usize) -> Vec<u8> {
        let mut p = vec![0u8; actual];
        if actual >= 20 {
            p[0] = 0x40 | ihl;
            p[2..4].copy_from_slice(&total_len.to_be_bytes());
            p[9] = PROTO_ICMP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        }
        p
    }

    #[test]
    fn valid_v4() {
        let h = parse(&v4(28, 5, 28)).unwrap();
        assert_eq!(h.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(h.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(
            (h.protocol, h.header_len, h.total_len),
            (PROTO_ICMP, 20, 28)
        );
        // Trailing bytes past total_len are tolerated (link padding).
        assert_eq!(parse(&v4(28, 5, 40)).unwrap().total_len, 28);
    }

    #[test]
    fn bad_v4_headers_are_refused() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45]), None);
        for n in 0..20 {
            let mut p = vec![0u8; n];
            if n > 0 {
                p[0] = 0x45;
            }
            assert_eq!(parse(&p), None, "{n} bytes");
        }
        assert_eq!(parse(&v4(28, 4, 28)), None, "ihl below 5");
        assert_eq!(parse(&v4(28, 15, 28)), None, "ihl past total length");
        assert_eq!(parse(&v4(29, 5, 28)), None, "total length past the slice");
        assert_eq!(parse(&v4(10, 5, 28)), None, "total length below header");
    }

    #[test]
    fn v6_and_bad_v6() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = PROTO_ICMPV6;
        p[23] = 1;
        p[39] = 2;
        let h = parse(&p).unwrap();
        assert_eq!(h.src, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "::2".parse::<IpAddr>().unwrap());
        assert_eq!((h.protocol, h.total_len), (PROTO_ICMPV6, 48));
        p[4..6].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(parse(&p), None);
        assert_eq!(parse(&p[..39]), None);
        p[0] = 0x50;
        assert_eq!(parse(&p), None);
    }
}
