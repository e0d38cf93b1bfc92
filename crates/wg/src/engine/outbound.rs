//! The way out: an IP packet from the stack or the device is routed to the peer
//! whose allowed IPs hold its destination, and sealed by that peer's `Tunn`.
//!
//! A driver that sends from one buffer seals straight into it
//! ([`Wg::seal_outbound`] with a [`DatagramSink`]): a bulk transfer then costs
//! no copy between the cipher and the socket. [`Wg::handle_outbound`] keeps
//! the queue-and-drain shape of the rest of the engine.

use std::net::SocketAddr;
use std::time::Instant;

use boringtun::noise::TunnResult;

use super::Wg;
use crate::ip;

/// What sealing adds to an IP packet: the transport header (16 bytes) and the
/// AEAD tag (16).
const DATA_OVERHEAD: usize = 32;

/// A handshake initiation, which a `Tunn` without a session writes instead of
/// the packet (and queues the packet until the handshake completes).
const HANDSHAKE_INITIATION_LEN: usize = 148;

/// Where [`Wg::seal_outbound`] puts a datagram: typically the driver's send
/// batch, so the cipher writes into the very buffer the socket sends from.
pub trait DatagramSink {
    /// Writable space for the next datagram, at least `len` bytes long. Asked
    /// again before a commit, it is the same space (what was written stays).
    fn room(&mut self, len: usize) -> &mut [u8];
    /// Keeps the first `len` bytes of the last [`DatagramSink::room`] as one
    /// datagram for `dst`.
    fn commit(&mut self, dst: SocketAddr, len: usize);
}

impl Wg {
    /// Takes one IP packet from the stack and seals it for the peer whose
    /// allowed IPs hold its destination (longest prefix), straight into `out`.
    /// A packet without a route, or for a peer we cannot reach yet, is dropped
    /// and counted. Other output (handshakes, keepalives) still goes to
    /// [`Wg::poll_transmit`].
    pub fn seal_outbound(&mut self, ip_packet: &[u8], now: Instant, out: &mut impl DatagramSink) {
        let _ = now; // the Tunn reads its own clock; kept for a uniform sans-IO API
        let Some((slot, len)) = self.route_outbound(ip_packet) else {
            return;
        };
        let packet = &ip_packet[..len];
        let Some(Some(peer)) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(dst) = peer.endpoint else {
            self.out.drops.no_endpoint += 1;
            return;
        };
        let room = out.room((packet.len() + DATA_OVERHEAD).max(HANDSHAKE_INITIATION_LEN));
        let (base, room_len) = (room.as_ptr() as usize, room.len());
        let (start, sealed) = match peer.tunn.encapsulate(packet, room) {
            TunnResult::WriteToNetwork(datagram) => (
                (datagram.as_ptr() as usize).wrapping_sub(base),
                datagram.len(),
            ),
            TunnResult::Err(e) => {
                self.out.count(&e);
                return;
            }
            // Done: queued inside the Tunn until the handshake completes.
            _ => return,
        };
        if start != 0 {
            // boringtun writes from the start of the buffer it is given; should
            // that change, the datagram is moved there rather than sent wrong.
            if start.saturating_add(sealed) > room_len {
                return;
            }
            out.room(room_len).copy_within(start..start + sealed, 0);
        }
        out.commit(dst, sealed);
    }

    /// Like [`Wg::seal_outbound`], but the datagram is queued for
    /// [`Wg::poll_transmit`].
    pub fn handle_outbound(&mut self, ip_packet: &[u8], now: Instant) {
        let _ = now;
        if let Some((slot, len)) = self.route_outbound(ip_packet) {
            self.encapsulate_to(slot, &ip_packet[..len]);
        }
    }

    /// The slot of the peer that routes `ip_packet`, and the packet's length
    /// by its header; `None` (counted) for a malformed or unroutable packet.
    fn route_outbound(&mut self, ip_packet: &[u8]) -> Option<(usize, usize)> {
        let Some(header) = ip::parse(ip_packet) else {
            self.out.drops.malformed += 1;
            return None;
        };
        let Some(slot) = self.routes.lookup(header.dst) else {
            self.out.drops.no_route += 1;
            tracing::trace!(dst = %header.dst, "no peer routes this destination");
            return None;
        };
        Some((slot, header.total_len))
    }

    /// Encrypts `packet` to the peer in `slot` and queues the datagram.
    pub(super) fn encapsulate_to(&mut self, slot: usize, packet: &[u8]) {
        let Some(Some(peer)) = self.slots.get_mut(slot) else {
            return;
        };
        if peer.endpoint.is_none() {
            self.out.drops.no_endpoint += 1;
            return;
        }
        match peer.tunn.encapsulate(packet, &mut self.scratch) {
            TunnResult::WriteToNetwork(datagram) => self.out.transmit_to(peer.endpoint, datagram),
            TunnResult::Err(e) => self.out.count(&e),
            // Done: queued inside the Tunn until the handshake completes.
            _ => {}
        }
    }
}
