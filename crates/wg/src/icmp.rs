//! ICMP echo packets for the liveness probe: built here with correct
//! checksums (IPv6 over its pseudo-header), and recognised on the way back.

use std::net::{IpAddr, Ipv6Addr};

use crate::ip::{self, PROTO_ICMP, PROTO_ICMPV6};

/// The echo identifier of our probes, so their replies can be told apart from
/// the stack's own pings ("ph" for Pinhole).
pub(crate) const PROBE_ICMP_ID: u16 = 0x7068;
/// A recognisable payload, so a packet capture explains itself.
const PROBE_PAYLOAD: &[u8; 16] = b"pinhole-liveness";

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMP_HEADER_LEN: usize = 8;

/// Request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EchoKind {
    Request,
    Reply,
}

/// A parsed, checksum-verified ICMP or ICMPv6 echo message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Echo {
    pub(crate) kind: EchoKind,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) id: u16,
    pub(crate) seq: u16,
}

/// Writes an echo request from `src` to `dst` into `out` (cleared first).
/// `src` and `dst` must be of one family; `None` otherwise.
pub(crate) fn echo_request(
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    out: &mut Vec<u8>,
) -> Option<()> {
    build(src, dst, EchoKind::Request, id, seq, PROBE_PAYLOAD, out)
}

fn build(
    src: IpAddr,
    dst: IpAddr,
    kind: EchoKind,
    id: u16,
    seq: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    out.clear();
    let icmp_len = ICMP_HEADER_LEN + payload.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + icmp_len).ok()?;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_ICMP, 0, 0]); // id, DF, ttl, proto, csum
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let csum = checksum(&out[..20], 0);
            out[10..12].copy_from_slice(&csum.to_be_bytes());
            let ty = match kind {
                EchoKind::Request => ICMP_ECHO_REQUEST,
                EchoKind::Reply => ICMP_ECHO_REPLY,
            };
            push_echo(out, ty, id, seq, payload);
            let csum = checksum(&out[20..], 0);
            out[22..24].copy_from_slice(&csum.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = u16::try_from(icmp_len).ok()?;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[PROTO_ICMPV6, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let ty = match kind {
                EchoKind::Request => ICMPV6_ECHO_REQUEST,
                EchoKind::Reply => ICMPV6_ECHO_REPLY,
            };
            push_echo(out, ty, id, seq, payload);
            let csum = checksum(&out[40..], pseudo_header_sum(s, d, icmp_len));
            out[42..44].copy_from_slice(&csum.to_be_bytes());
        }
        _ => return None,
    }
    Some(())
}

fn push_echo(out: &mut Vec<u8>, ty: u8, id: u16, seq: u16, payload: &[u8]) {
    out.extend_from_slice(&[ty, 0, 0, 0]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Parses an ICMP(v6) echo request or reply, verifying every checksum.
pub(crate) fn parse_echo(packet: &[u8]) -> Option<Echo> {
    let h = ip::parse(packet)?;
    let body = packet.get(h.header_len..h.total_len)?;
    if body.len() < ICMP_HEADER_LEN || body[1] != 0 {
        return None;
    }
    let kind = match (h.src, h.protocol, body[0]) {
        (IpAddr::V4(_), PROTO_ICMP, ICMP_ECHO_REQUEST) => EchoKind::Request,
        (IpAddr::V4(_), PROTO_ICMP, ICMP_ECHO_REPLY) => EchoKind::Reply,
        (IpAddr::V6(_), PROTO_ICMPV6, ICMPV6_ECHO_REQUEST) => EchoKind::Request,
        (IpAddr::V6(_), PROTO_ICMPV6, ICMPV6_ECHO_REPLY) => EchoKind::Reply,
        _ => return None,
    };
    let valid = match (h.src, h.dst) {
        (IpAddr::V4(_), _) => checksum(&packet[..h.header_len], 0) == 0 && checksum(body, 0) == 0,
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum(body, pseudo_header_sum(s, d, body.len())) == 0,
        _ => false,
    };
    if !valid {
        return None;
    }
    Some(Echo {
        kind,
        src: h.src,
        dst: h.dst,
        id: u16::from_be_bytes([body[4], body[5]]),
        seq: u16::from_be_bytes([body[6], body[7]]),
    })
}

/// The reply a ping-answering stack would send to `request` (tests play the
/// far stack with it).
#[cfg(test)]
pub(crate) fn echo_reply_to(request: &[u8]) -> Option<Vec<u8>> {
    let echo = parse_echo(request)?;
    if echo.kind != EchoKind::Request {
        return None;
    }
    let h = ip::parse(request)?;
    let payload = &request[h.header_len + ICMP_HEADER_LEN..h.total_len];
    let mut out = Vec::new();
    build(
        echo.dst,
        echo.src,
        EchoKind::Reply,
        echo.id,
        echo.seq,
        payload,
        &mut out,
    )?;
    Some(out)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an ICMPv6 body.
fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> u32 {
    let mut sum = sum_words(&src.octets(), 0);
    sum = sum_words(&dst.octets(), sum);
    // A tunnelled packet is at most 64 KiB, so the length fits in 32 bits.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    sum = sum_words(&len.to_be_bytes(), sum);
    sum_words(&[0, 0, 0, PROTO_ICMPV6], sum)
}

fn sum_words(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data`, starting from `initial`
/// (a pseudo-header sum). Verifying over data that contains its checksum gives 0.
pub(crate) fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = sum_words(data, initial);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Truncation is the point: the fold above left 16 bits.
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 folds to ddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0),
            !0xddf2
        );
        assert_eq!(checksum(&[0xff], 0), !0xff00);
    }

    #[test]
    fn v4_request_round_trips_and_reply_matches() {
        let mut p = Vec::new();
        echo_request(ip("10.77.0.2"), ip("10.77.0.1"), PROBE_ICMP_ID, 7, &mut p).unwrap();
        assert_eq!(p.len(), 20 + 8 + 16);
        let e = parse_echo(&p).unwrap();
        assert_eq!(
            e,
            Echo {
                kind: EchoKind::Request,
                src: ip("10.77.0.2"),
                dst: ip("10.77.0.1"),
                id: PROBE_ICMP_ID,
                seq: 7
            }
        );
        let r = echo_reply_to(&p).unwrap();
        let e = parse_echo(&r).unwrap();
        assert_eq!(
            (e.kind, e.src, e.dst, e.seq),
            (EchoKind::Reply, ip("10.77.0.1"), ip("10.77.0.2"), 7)
        );
    }

    #[test]
    fn v6_request_round_trips() {
        let mut p = Vec::new();
        echo_request(ip("fd00::2"), ip("fd00::1"), PROBE_ICMP_ID, 1, &mut p).unwrap();
        assert_eq!(p.len(), 40 + 8 + 16);
        assert_eq!(parse_echo(&p).unwrap().kind, EchoKind::Request);
        let r = echo_reply_to(&p).unwrap();
        assert_eq!(parse_echo(&r).unwrap().kind, EchoKind::Reply);
    }

    #[test]
    fn corrupted_checksums_and_mixed_families_are_refused() {
        let mut p = Vec::new();
        assert!(echo_request(ip("10.0.0.1"), ip("fd00::1"), 1, 1, &mut p).is_none());
        for src in ["10.77.0.2", "fd00::2"] {
            let dst = if src.contains(':') {
                "fd00::1"
            } else {
                "10.77.0.1"
            };
            echo_request(ip(src), ip(dst), 1, 1, &mut p).unwrap();
            // IPv6 traffic class, flow label and hop limit are covered by no checksum.
            let unchecked: &[usize] = if src.contains(':') {
                &[1, 2, 3, 7]
            } else {
                &[]
            };
            for i in (0..p.len()).filter(|i| !unchecked.contains(i)) {
                let mut q = p.clone();
                q[i] ^= 0x10;
                // Any single flipped bit breaks a checksum or the header itself.
                assert_eq!(parse_echo(&q).map(|e| e.seq), None, "{src} byte {i}");
            }
        }
    }
}
