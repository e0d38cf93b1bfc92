//! The in-memory "network card" smoltcp drives: two bounded queues of IP packets.
//!
//! `Medium::Ip` means no link layer: what smoltcp reads and writes are bare IPv4/IPv6 packets,
//! exactly what WireGuard carries.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::config::{MAX_INBOUND_QUEUE, MAX_OUTBOUND_QUEUE};

/// Spare buffers kept for reuse in each direction, so a steady stream of packets allocates
/// nothing. Bursts are the measure: one poll of a bulk sender emits a window's worth of
/// segments before the driver takes any, and one turn of the loop may decrypt a few hundred
/// datagrams before smoltcp reads them (the spares handed back to the engine come from
/// here). With 64, most packets of a bulk transfer cost an allocation and a free on both
/// peers (127,327 allocations for a 200 MB upload at the home, under callgrind). At most 256
/// MTU-sized buffers each way, about 380 KiB, are kept, and only after traffic.
const POOL_SIZE: usize = 256;

/// Bounded inbound and outbound packet queues standing in for a network interface.
#[derive(Debug)]
pub(crate) struct VecDevice {
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    /// Outbound buffers the driver handed back ([`VecDevice::recycle`]).
    tx_pool: Vec<Vec<u8>>,
    mtu: usize,
    dropped_inbound: u64,
}

impl VecDevice {
    /// A device whose largest emitted packet is `mtu` bytes.
    pub(crate) fn new(mtu: usize) -> Self {
        Self {
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
            pool: Vec::new(),
            tx_pool: Vec::new(),
            mtu,
            dropped_inbound: 0,
        }
    }

    /// Queues a copy of `packet` for smoltcp; returns false (and counts a drop) when full.
    pub(crate) fn push_inbound(&mut self, packet: &[u8]) -> bool {
        if self.inbound.len() >= MAX_INBOUND_QUEUE {
            self.dropped_inbound += 1;
            return false;
        }
        let mut buffer = self.pool.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(packet);
        self.inbound.push_back(buffer);
        true
    }

    /// Queues `packet` for smoltcp without copying it, leaving a spare buffer (empty when
    /// none is kept) in its place; returns false (and counts a drop) when full.
    pub(crate) fn push_inbound_owned(&mut self, packet: &mut Vec<u8>) -> bool {
        if self.inbound.len() >= MAX_INBOUND_QUEUE {
            self.dropped_inbound += 1;
            return false;
        }
        let spare = self.pool.pop().unwrap_or_default();
        self.inbound.push_back(std::mem::replace(packet, spare));
        true
    }

    /// The next inbound packet smoltcp will read, if any.
    pub(crate) fn peek_inbound(&self) -> Option<&[u8]> {
        self.inbound.front().map(Vec::as_slice)
    }

    /// Whether inbound packets wait for a poll.
    pub(crate) fn has_inbound(&self) -> bool {
        !self.inbound.is_empty()
    }

    /// Drops the next inbound packet without smoltcp seeing it (it was handled beside it).
    pub(crate) fn discard_inbound(&mut self) {
        if let Some(buffer) = self.inbound.pop_front() {
            if self.pool.len() < POOL_SIZE {
                self.pool.push(buffer);
            }
        }
    }

    /// Whether the outbound queue is full (smoltcp and UDP sockets wait for the driver).
    pub(crate) fn outbound_full(&self) -> bool {
        self.outbound.len() >= MAX_OUTBOUND_QUEUE
    }

    /// Queues a packet built outside smoltcp; the caller checked `outbound_full` first.
    pub(crate) fn push_outbound(&mut self, packet: Vec<u8>) {
        self.outbound.push_back(packet);
    }

    /// Takes the next packet smoltcp emitted.
    pub(crate) fn pop_outbound(&mut self) -> Option<Vec<u8>> {
        self.outbound.pop_front()
    }

    /// Takes back a buffer from [`pop_outbound`](Self::pop_outbound) once the driver is done
    /// with it, for the next packet smoltcp emits.
    pub(crate) fn recycle(&mut self, buffer: Vec<u8>) {
        // An empty spare from `push_inbound_owned` would only be reallocated later.
        if self.tx_pool.len() < POOL_SIZE && buffer.capacity() > 0 {
            self.tx_pool.push(buffer);
        }
    }

    /// Inbound packets dropped because the queue was full.
    pub(crate) fn dropped_inbound(&self) -> u64 {
        self.dropped_inbound
    }
}

impl phy::Device for VecDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let buffer = self.inbound.pop_front()?;
        let rx = RxToken {
            buffer,
            pool: &mut self.pool,
        };
        let tx = TxToken {
            outbound: &mut self.outbound,
            pool: &mut self.tx_pool,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        if self.outbound.len() >= MAX_OUTBOUND_QUEUE {
            return None;
        }
        Some(TxToken {
            outbound: &mut self.outbound,
            pool: &mut self.tx_pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// One received packet; its buffer goes back to the pool once smoltcp has read it.
pub(crate) struct RxToken<'a> {
    buffer: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = f(&self.buffer);
        if self.pool.len() < POOL_SIZE {
            self.pool.push(self.buffer);
        }
        result
    }
}

/// Permission to emit one packet into the outbound queue.
pub(crate) struct TxToken<'a> {
    outbound: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = self.pool.pop().unwrap_or_default();
        packet.clear();
        // Once, to the full size: growing from empty would reallocate on the way.
        packet.reserve_exact(len);
        packet.resize(len, 0);
        let result = f(&mut packet);
        // A reply produced while receiving (RST, echo reply) may exceed the bound by a few
        // packets at most: one per inbound packet processed before the driver drains us.
        if self.outbound.len() < MAX_OUTBOUND_QUEUE * 2 {
            self.outbound.push_back(packet);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    #[test]
    fn inbound_queue_is_bounded_and_recycles_buffers() {
        let mut device = VecDevice::new(1420);
        for _ in 0..MAX_INBOUND_QUEUE {
            assert!(device.push_inbound(&[0x45; 20]));
        }
        assert!(!device.push_inbound(&[0x45; 20]));
        assert_eq!(device.dropped_inbound(), 1);
        let (rx, _tx) = device.receive(Instant::ZERO).unwrap();
        assert_eq!(rx.consume(|p| p.len()), 20);
        assert_eq!(device.pool.len(), 1);
    }

    #[test]
    fn an_owned_packet_is_queued_as_it_is_and_a_spare_is_left_behind() {
        let mut device = VecDevice::new(1420);
        let mut packet = vec![0x45; 60];
        let queued_at = packet.as_ptr();
        assert!(device.push_inbound_owned(&mut packet));
        assert!(
            packet.is_empty(),
            "no spare kept yet: an empty buffer is left"
        );
        assert_eq!(device.peek_inbound().map(<[u8]>::as_ptr), Some(queued_at));

        // Once smoltcp consumed it, the buffer is a spare that the next push hands back.
        let (rx, _tx) = device.receive(Instant::ZERO).unwrap();
        assert_eq!(rx.consume(|p| p.len()), 60);
        let mut next = vec![0x45; 40];
        assert!(device.push_inbound_owned(&mut next));
        assert_eq!(next.as_ptr(), queued_at, "the consumed buffer came back");

        for _ in 1..MAX_INBOUND_QUEUE {
            assert!(device.push_inbound_owned(&mut vec![0x45; 20]));
        }
        let mut refused = vec![0x45; 20];
        assert!(!device.push_inbound_owned(&mut refused));
        assert_eq!(refused.len(), 20, "a refused packet stays with the caller");
        assert_eq!(device.dropped_inbound(), 1);
    }

    #[test]
    fn transmit_stops_when_outbound_is_full() {
        let mut device = VecDevice::new(1420);
        for _ in 0..MAX_OUTBOUND_QUEUE {
            let tx = device.transmit(Instant::ZERO).unwrap();
            tx.consume(40, |buf| buf[0] = 0x45);
        }
        assert!(device.transmit(Instant::ZERO).is_none());
        assert_eq!(device.pop_outbound().unwrap().len(), 40);
        assert_eq!(device.capabilities().max_transmission_unit, 1420);
    }
}
