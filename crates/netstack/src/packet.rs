//! A look at an inbound packet before smoltcp sees it: a TCP SYN opening a connection, or a
//! UDP datagram (which never reaches smoltcp); and the UDP/IP packets we send.
//!
//! smoltcp's listening socket takes exactly one connection, so the stack adds a fresh
//! listening socket just before a SYN for a listened address arrives. UDP is handled beside
//! smoltcp entirely (see `udp.rs`). Parsing uses smoltcp's checked wire views, which never
//! panic on arbitrary bytes; emitting uses its `Repr` writers, which fill in the checksums.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

/// IPv4 header without options.
pub(crate) const IPV4_HEADER: usize = 20;
/// IPv6 fixed header.
pub(crate) const IPV6_HEADER: usize = 40;
/// UDP header.
pub(crate) const UDP_HEADER: usize = 8;
/// TTL / hop limit of the UDP packets we send (Linux's default).
const HOP_LIMIT: u8 = 64;

/// The endpoints of a connection-opening SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syn {
    /// The remote endpoint (source of the SYN).
    pub(crate) remote: SocketAddr,
    /// Our endpoint (destination of the SYN).
    pub(crate) local: SocketAddr,
}

/// The SYN in `packet`, if it is a well-formed, unfragmented TCP SYN (without ACK or RST)
/// with a valid checksum.
pub(crate) fn parse_syn(packet: &[u8]) -> Option<Syn> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            let unfragmented = !ip.more_frags() && ip.frag_offset() == 0;
            if !unfragmented || ip.next_header() != IpProtocol::Tcp || !ip.verify_checksum() {
                return None;
            }
            tcp_syn(ip.payload(), ip.src_addr().into(), ip.dst_addr().into())
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            tcp_syn(ip.payload(), ip.src_addr().into(), ip.dst_addr().into())
        }
        _ => None,
    }
}

fn tcp_syn(segment: &[u8], src: IpAddress, dst: IpAddress) -> Option<Syn> {
    let tcp = TcpPacket::new_checked(segment).ok()?;
    if !tcp.syn() || tcp.ack() || tcp.rst() || !tcp.verify_checksum(&src, &dst) {
        return None;
    }
    Some(Syn {
        remote: SocketAddr::new(src.into(), tcp.src_port()),
        local: SocketAddr::new(dst.into(), tcp.dst_port()),
    })
}

/// A well-formed inbound UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpIn<'a> {
    /// Sender.
    pub(crate) from: SocketAddr,
    /// Destination (one of ours if a socket is bound to it).
    pub(crate) to: SocketAddr,
    /// The payload, as long as the UDP length field says.
    pub(crate) payload: &'a [u8],
}

/// `None` if `packet` is not UDP (smoltcp gets it), `Some(None)` if it is UDP over a valid IP
/// header but unusable (fragment, bad length or checksum, source port 0 or a
/// non-unicast source: dropped), `Some(Some(datagram))` otherwise. IPv6 packets whose UDP
/// header follows extension headers are left to smoltcp, which has no UDP socket for them.
pub(crate) fn parse_udp(packet: &[u8]) -> Option<Option<UdpIn<'_>>> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Udp || !ip.verify_checksum() {
                return None;
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Some(None);
            }
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            Some(udp_datagram(ip.payload(), src, dst, true))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Udp {
                return None;
            }
            let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
            Some(udp_datagram(ip.payload(), src, dst, false))
        }
        _ => None,
    }
}

fn udp_datagram(
    segment: &[u8],
    src: IpAddress,
    dst: IpAddress,
    zero_checksum_ok: bool,
) -> Option<UdpIn<'_>> {
    let udp = UdpPacket::new_checked(segment).ok()?;
    // IPv4 allows "no checksum" (0); IPv6 does not (RFC 8200 8.1).
    let no_checksum = udp.checksum() == 0;
    if (no_checksum && !zero_checksum_ok) || !udp.verify_checksum(&src, &dst) {
        return None;
    }
    let from = SocketAddr::new(src.into(), udp.src_port());
    let to = SocketAddr::new(dst.into(), udp.dst_port());
    let unicast = |ip: IpAddr| {
        !(ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()))
    };
    if from.port() == 0 || to.port() == 0 || !unicast(from.ip()) {
        return None;
    }
    Some(UdpIn {
        from,
        to,
        payload: udp.payload(),
    })
}

/// The largest UDP payload one unfragmented packet of `mtu` bytes carries from `ip`.
pub(crate) fn max_udp_payload(mtu: usize, ip: IpAddr) -> usize {
    let header = if ip.is_ipv4() {
        IPV4_HEADER
    } else {
        IPV6_HEADER
    };
    mtu.min(usize::from(u16::MAX))
        .saturating_sub(header + UDP_HEADER)
}

/// A UDP/IP packet from `from` to `to` (same family) carrying `payload`, with the IP header
/// checksum (IPv4, DF set) and the UDP checksum over the pseudo-header filled in. `None` if
/// the families differ or the payload cannot fit one packet.
pub(crate) fn build_udp(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let udp = UdpRepr {
        src_port: from.port(),
        dst_port: to.port(),
    };
    let udp_len = UDP_HEADER + payload.len();
    let caps = ChecksumCapabilities::default();
    let (src, dst) = (IpAddress::from(from.ip()), IpAddress::from(to.ip()));
    let mut buffer;
    let segment = match (from.ip(), to.ip()) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
            if IPV4_HEADER + udp_len > usize::from(u16::MAX) {
                return None;
            }
            let ip = Ipv4Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: HOP_LIMIT,
            };
            buffer = vec![0; ip.buffer_len() + udp_len];
            let mut packet = Ipv4Packet::new_unchecked(buffer.as_mut_slice());
            ip.emit(&mut packet, &caps);
            &mut buffer[IPV4_HEADER..]
        }
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => {
            if udp_len > usize::from(u16::MAX) {
                return None;
            }
            let ip = Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: HOP_LIMIT,
            };
            buffer = vec![0; ip.buffer_len() + udp_len];
            ip.emit(&mut Ipv6Packet::new_unchecked(buffer.as_mut_slice()));
            &mut buffer[IPV6_HEADER..]
        }
        _ => return None,
    };
    let mut packet = UdpPacket::new_unchecked(segment);
    let fill = |out: &mut [u8]| out.copy_from_slice(payload);
    udp.emit(&mut packet, &src, &dst, payload.len(), fill, &caps);
    Some(buffer)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    /// An IPv4 TCP segment with the given control flag, checksums filled in.
    pub(crate) fn tcp_v4(src: SocketAddr, dst: SocketAddr, control: TcpControl) -> Vec<u8> {
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
            panic!("ipv4 only");
        };
        let tcp = TcpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
            control,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 64_000,
            window_scale: Some(7),
            max_seg_size: Some(1380),
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: *src.ip(),
            dst_addr: *dst.ip(),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buffer = vec![0; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut packet = Ipv4Packet::new_unchecked(&mut buffer);
        ip.emit(&mut packet, &caps);
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &ip.src_addr.into(),
            &ip.dst_addr.into(),
            &caps,
        );
        buffer
    }

    #[test]
    fn finds_a_syn_and_ignores_the_rest() {
        let remote: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let local: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let syn = tcp_v4(remote, local, TcpControl::Syn);
        assert_eq!(parse_syn(&syn), Some(Syn { remote, local }));
        assert_eq!(parse_syn(&tcp_v4(remote, local, TcpControl::Rst)), None);
        assert_eq!(parse_syn(&tcp_v4(remote, local, TcpControl::Fin)), None);
        let mut corrupt = syn.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(parse_syn(&corrupt), None);
        for len in 0..syn.len() {
            assert_eq!(parse_syn(&syn[..len]), None);
        }
        assert_eq!(parse_syn(&[0x60; 60]), None);
    }

    #[test]
    fn udp_round_trips_for_both_families() {
        for (from, to) in [
            ("10.0.0.2:5000", "10.0.0.1:53"),
            ("[fd00::2]:5000", "[fd00::1]:53"),
        ] {
            let (from, to): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
            let packet = build_udp(from, to, b"query").unwrap();
            let parsed = parse_udp(&packet).unwrap().unwrap();
            assert_eq!(
                (parsed.from, parsed.to, parsed.payload),
                (from, to, &b"query"[..])
            );
            // Not a SYN, and a flipped payload bit fails the checksum.
            assert_eq!(parse_syn(&packet), None);
            let mut corrupt = packet.clone();
            *corrupt.last_mut().unwrap() ^= 1;
            assert_eq!(parse_udp(&corrupt), Some(None));
            for len in 0..packet.len() {
                assert_ne!(parse_udp(&packet[..len]), Some(Some(parsed)));
            }
        }
        let v4: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:1".parse().unwrap();
        assert_eq!(build_udp(v4, v6, b""), None);
        assert!(build_udp(v4, v4, &vec![0; 65_507]).is_some());
        assert_eq!(build_udp(v4, v4, &vec![0; 65_508]), None);
        assert_eq!(max_udp_payload(1420, v4.ip()), 1392);
        assert_eq!(max_udp_payload(1420, v6.ip()), 1372);
        assert_eq!(max_udp_payload(65_535, v4.ip()), 65_507);
    }

    #[test]
    fn tcp_is_not_udp() {
        let remote: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let local: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(parse_udp(&tcp_v4(remote, local, TcpControl::Syn)), None);
    }
}
