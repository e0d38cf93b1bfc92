//! Pure ACKs carry the highest sequence number sent, never a rewound one.
//!
//! After a retransmission timeout smoltcp rewinds its "next sequence to send" to the first
//! unacknowledged byte and stamps that number on every segment, pure ACKs included. If the
//! peer already received those bytes (only its ACK was lost), the sequence number is below
//! the peer's receive window, so the peer drops the segment as "not in window" without
//! reading its ACK field (RFC 9293 3.10.7.4) and answers with a challenge ACK. When both
//! ends are in that state at once (both sent data, both lost the other's ACKs: bursts of
//! loss in the tunnel do that), every segment either sends is dropped by the other, and
//! the connection stalls until the dead-peer timeout, retransmitting with backoff.
//!
//! The fix mirrors Linux (`tcp_acceptable_seq`): an outgoing segment without payload, SYN,
//! FIN or RST gets the highest sequence number this side ever sent on the connection. That
//! number is never below the peer's receive window, so the peer processes the ACK.
//! Keep-alives (`SND.NXT - 1`) are left alone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::keys::Tuple;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, TcpSeqNumber};

/// Per connection (local, remote): one past the highest sequence number sent.
#[derive(Debug, Default)]
pub(crate) struct AckSeq {
    highest: HashMap<Tuple, TcpSeqNumber>,
}

impl AckSeq {
    /// Records what `packet` (an IP packet we are about to send) sent and, when it is a
    /// pure ACK stamped with a rewound sequence number, moves it to the highest one.
    pub(crate) fn outbound(&mut self, packet: &mut [u8]) {
        let Some((src, dst, offset)) = tcp_of(packet) else {
            return;
        };
        let Ok(mut tcp) = TcpPacket::new_checked(&mut packet[offset..]) else {
            return;
        };
        let key = Tuple::new(
            SocketAddr::new(src, tcp.src_port()),
            SocketAddr::new(dst, tcp.dst_port()),
        );
        if tcp.rst() {
            self.highest.remove(&key);
            return;
        }
        let seq = tcp.seq_number();
        let end = seq + tcp.segment_len();
        if tcp.syn() {
            self.highest.insert(key, end);
            return;
        }
        let Some(highest) = self.highest.get_mut(&key) else {
            return;
        };
        if end > *highest {
            *highest = end;
        }
        let pure_ack = tcp.ack() && !tcp.fin() && tcp.segment_len() == 0;
        // A keep-alive is deliberately one below what the peer expects.
        if pure_ack && seq < *highest && seq + 1 != *highest {
            tcp.set_seq_number(*highest);
            tcp.fill_checksum(&IpAddress::from(src), &IpAddress::from(dst));
        }
    }

    /// The connection is gone.
    pub(crate) fn forget(&mut self, local: SocketAddr, remote: SocketAddr) {
        self.highest.remove(&Tuple::new(local, remote));
    }

    /// Drops entries of connections that no longer exist (e.g. refused or aborted accepts).
    pub(crate) fn retain(&mut self, mut live: impl FnMut(&Tuple) -> bool) {
        self.highest.retain(|key, _| live(key));
    }

    pub(crate) fn len(&self) -> usize {
        self.highest.len()
    }
}

/// Source, destination and the offset of the TCP header, for an unfragmented TCP packet.
fn tcp_of(packet: &[u8]) -> Option<(IpAddr, IpAddr, usize)> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            Some((
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                usize::from(ip.header_len()),
            ))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            // smoltcp puts no extension headers on the TCP segments it sends.
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            Some((
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.header_len(),
            ))
        }
        _ => None,
    }
}
