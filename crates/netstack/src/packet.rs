//! A look at an inbound packet before smoltcp sees it: is it a TCP SYN opening a connection?
//!
//! smoltcp's listening socket takes exactly one connection, so the stack adds a fresh
//! listening socket just before a SYN for a listened address arrives. Parsing uses smoltcp's
//! checked wire views, which never panic on arbitrary bytes.

use std::net::SocketAddr;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket};

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
}
