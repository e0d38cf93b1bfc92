//! The write side of the TUN offloads: coalescing the packets written to the device into
//! super-packets (a userspace GRO), so that one write moves a burst of one flow.

use std::io::{self, IoSlice};

use super::{
    checksum_add, fold, ipv4_header_checksum, packet_pseudo_sum, parse_ip,
    transport_checksum_valid, IpHeader, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4,
    MAX_SEGMENTS, MAX_SUPER_PACKET, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_ECE, TCP_PSH, VNET_HDR_LEN,
};

/// A TCP segment's facts, parsed once.
#[derive(Debug, Clone, Copy)]
struct TcpSegment {
    ip: IpHeader,
    /// IP + TCP header bytes.
    headers: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// Parses `pkt` as a TCP segment that may be coalesced: an exact-length IP packet (IPv4
/// without options, IPv6 without extension headers), not a fragment, with payload and no
/// flags but ACK, PSH and ECE.
fn coalescable(pkt: &[u8]) -> Option<TcpSegment> {
    let ip = joinable_ip(pkt, PROTO_TCP)?;
    let tcp = pkt.get(ip.len..ip.len + 20)?;
    let doff = usize::from(tcp[12] >> 4) * 4;
    let headers = ip.len + doff;
    let flags = tcp[13];
    let allowed = TCP_ACK | TCP_PSH | TCP_ECE;
    if doff < 20 || headers >= pkt.len() || flags & TCP_ACK == 0 || flags & !allowed != 0 {
        return None;
    }
    Some(TcpSegment {
        ip,
        headers,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        flags,
        payload: pkt.len() - headers,
    })
}

/// The IP header of `pkt` if it carries `proto` and may join a super-packet: an exact-length
/// packet (IPv4 without options and with a valid header checksum, IPv6 without extension
/// headers), not a fragment. A header the kernel would drop is not merged into a super-packet
/// whose header is then recomputed.
fn joinable_ip(pkt: &[u8], proto: u8) -> Option<IpHeader> {
    let ip = parse_ip(pkt)?;
    if ip.proto != proto {
        return None;
    }
    let exact = if ip.v6 {
        usize::from(u16::from_be_bytes([pkt[4], pkt[5]])) + 40 == pkt.len()
    } else {
        ip.len == 20 && usize::from(u16::from_be_bytes([pkt[2], pkt[3]])) == pkt.len()
    };
    (exact && (ip.v6 || fold(checksum_add(&pkt[..20], 0)) == 0xffff)).then_some(ip)
}

/// A UDP datagram's facts, parsed once.
#[derive(Debug, Clone, Copy)]
struct UdpDatagram {
    ip: IpHeader,
    payload: usize,
}

/// Parses `pkt` as a UDP datagram that may be coalesced: a joinable IP packet whose UDP
/// length matches it, with payload and a checksum (an IPv4 datagram without one is written
/// as it came: the super-packet's segments would each get one).
fn udp_coalescable(pkt: &[u8]) -> Option<UdpDatagram> {
    let ip = joinable_ip(pkt, PROTO_UDP)?;
    let udp = pkt.get(ip.len..ip.len + 8)?;
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let checksum = u16::from_be_bytes([udp[6], udp[7]]);
    if len != pkt.len() - ip.len || len <= 8 || checksum == 0 {
        return None;
    }
    Some(UdpDatagram {
        ip,
        payload: len - 8,
    })
}

/// One packet (or super-packet) waiting to be written.
#[derive(Debug, Default)]
struct Item {
    /// The first packet, whole, in the arena.
    start: usize,
    len: usize,
    /// Payload ranges (in the arena) of the segments merged after the first.
    merged: Vec<(usize, usize)>,
    /// The first packet's IP header when it is TCP or UDP (with room for the ports): what
    /// finds the latest packet of a flow.
    flow: Option<IpHeader>,
    /// Set when the first packet is a TCP segment that others may join.
    tcp: Option<TcpItem>,
    /// Set when the first packet is a UDP datagram that others may join.
    udp: Option<UdpItem>,
    /// Whether the headers were rewritten for the write (done once).
    finalized: bool,
    vnet: [u8; VNET_HDR_LEN],
}

#[derive(Debug, Clone, Copy)]
struct UdpItem {
    first: UdpDatagram,
    /// IP packet length with everything merged so far.
    total: usize,
    /// No more datagrams may join (a shorter one was merged, the first one's checksum is
    /// wrong, or it is full).
    closed: bool,
    /// The first datagram's checksum was verified (done when the second joins).
    head_checked: bool,
}

#[derive(Debug, Clone, Copy)]
struct TcpItem {
    seg: TcpSegment,
    /// Sequence number the next segment must have.
    next_seq: u32,
    /// IP packet length with everything merged so far.
    total: usize,
    /// No more segments may join (a short segment or PSH was merged, the first packet's
    /// checksum is wrong, or it is full).
    closed: bool,
    /// The first packet's checksum was verified (done when the first segment joins).
    head_checked: bool,
    psh: bool,
}

/// Userspace GRO for writes to a device with offloads: decrypted packets are [`push`]ed one by
/// one, and consecutive in-order TCP segments of one flow (same addresses, ports, IP fields,
/// TCP header apart from sequence number and PSH, ACK-only flags, equal-or-shorter payloads,
/// valid checksums) become one super-packet with a `GSO_TCPV4`/`GSO_TCPV6` header. With
/// [`joining_udp`](Coalescer::joining_udp), consecutive UDP datagrams of one flow (same
/// addresses, ports and IP fields, equal payloads but for a shorter last one, valid
/// checksums) become one `GSO_UDP_L4` super-packet, which the kernel cuts back into the same
/// datagrams. Everything else is written as it came, behind a zero header. Order within a flow is kept; packets of
/// different flows keep their relative order except that segments join their flow's
/// super-packet.
///
/// Memory is bounded: [`has_room`](Coalescer::has_room) says when to [`flush`] first.
///
/// [`push`]: Coalescer::push
/// [`flush`]: Coalescer::flush
#[derive(Debug, Default)]
pub struct Coalescer {
    arena: Vec<u8>,
    items: Vec<Item>,
    /// Items in use: `items[written..live]` wait for the device.
    live: usize,
    written: usize,
    /// Whether UDP datagrams may join ([`Coalescer::joining_udp`]).
    udp: bool,
}

/// Arena bytes after which [`Coalescer::has_room`] asks for a flush.
const ARENA_LIMIT: usize = 256 * 1024;
/// Items after which [`Coalescer::has_room`] asks for a flush.
pub(super) const MAX_ITEMS: usize = 128;

impl Coalescer {
    /// An empty coalescer that joins TCP segments; buffers grow on first use up to their
    /// bounds.
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// Joins UDP datagrams too, when `yes`: only for a device with UDP segmentation offload
    /// ([`Tun::udp_offload`](crate::Tun::udp_offload)), since an older kernel refuses the
    /// super-packet. Why: a UDP burst (a flood, a QUIC transfer) then costs one write per run
    /// of up to 64 datagrams instead of one each.
    pub fn joining_udp(mut self, yes: bool) -> Coalescer {
        self.udp = yes;
        self
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.written == self.live
    }

    /// Whether a packet of `len` bytes may be pushed without passing the memory bounds (and
    /// no flush is unfinished). When not, [`flush`](Coalescer::flush) first. An empty
    /// coalescer always has room.
    pub fn has_room(&self, len: usize) -> bool {
        self.live == 0
            || (self.written == 0 && self.arena.len() + len <= ARENA_LIMIT && self.live < MAX_ITEMS)
    }

    /// Queues one IP packet for the device, joining it to its flow's super-packet if it can.
    /// Meant to be called when [`has_room`](Coalescer::has_room) says so; after a flush that
    /// returned `WouldBlock` the packet is queued behind the rest and joins nothing already
    /// being written.
    pub fn push(&mut self, pkt: &[u8]) {
        let seg = coalescable(pkt);
        if let Some(seg) = seg {
            if self.try_merge(pkt, seg) {
                return;
            }
        }
        let datagram = (self.udp && seg.is_none())
            .then(|| udp_coalescable(pkt))
            .flatten();
        if let Some(d) = datagram {
            if self.try_merge_udp(pkt, d) {
                return;
            }
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(pkt);
        if self.items.len() == self.live {
            self.items.push(Item::default());
        }
        let item = &mut self.items[self.live];
        self.live += 1;
        item.start = start;
        item.len = pkt.len();
        item.merged.clear();
        item.finalized = false;
        item.flow = parse_ip(pkt).filter(|ip| {
            (ip.proto == PROTO_TCP || ip.proto == PROTO_UDP) && pkt.len() >= ip.len + 4
        });
        item.udp = datagram.map(|first| UdpItem {
            first,
            total: pkt.len(),
            closed: false,
            head_checked: false,
        });
        item.tcp = seg.map(|seg| TcpItem {
            seg,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            total: pkt.len(),
            // A segment with PSH ends its burst: nothing joins it.
            closed: seg.flags & TCP_PSH != 0,
            head_checked: false,
            psh: false,
        });
    }

    /// The latest item of the flow of `pkt` (whose IP header is `ip`), coalescable or not:
    /// the only one a packet may join, since joining an earlier one would reorder the flow.
    fn latest_of_flow(&self, pkt: &[u8], ip: IpHeader) -> Option<usize> {
        let (at, n) = ip.addrs();
        let ports = &pkt[ip.len..ip.len + 4];
        self.items[..self.live].iter().rposition(|item| {
            let head = &self.arena[item.start..item.start + item.len];
            item.flow.is_some_and(|f| {
                f.v6 == ip.v6
                    && f.proto == ip.proto
                    && head[at..at + 2 * n] == pkt[at..at + 2 * n]
                    && head[f.len..f.len + 4] == *ports
            })
        })
    }

    /// Joins UDP datagram `pkt` to the latest item of its flow if the rules allow (a run of
    /// equal payloads, the last one maybe shorter, the same IP fields, valid checksums);
    /// false if not.
    fn try_merge_udp(&mut self, pkt: &[u8], d: UdpDatagram) -> bool {
        let Some(index) = self.latest_of_flow(pkt, d.ip) else {
            return false;
        };
        let item = &self.items[index];
        let Some(mut u) = item.udp.filter(|_| !item.finalized) else {
            return false;
        };
        let head = &self.arena[item.start..item.start + item.len];
        if u.closed
            || item.merged.len() + 1 >= MAX_SEGMENTS
            || d.payload > u.first.payload
            || u.total + d.payload > MAX_SUPER_PACKET
            || !same_ip_fields(head, pkt, d.ip.v6)
        {
            return false;
        }
        let ok = checksums_allow(
            (head, u.first.ip),
            (pkt, d.ip),
            &mut u.head_checked,
            &mut u.closed,
        );
        if !ok {
            self.items[index].udp = Some(u);
            return false;
        }
        u.total += d.payload;
        // The receiver cuts the super-packet at gso_size: only the last may be shorter.
        u.closed = d.payload < u.first.payload;
        self.items[index].udp = Some(u);
        self.append(index, &pkt[d.ip.len + 8..]);
        true
    }

    /// Joins `pkt` to the latest item of its flow if the rules allow; false if not.
    fn try_merge(&mut self, pkt: &[u8], seg: TcpSegment) -> bool {
        let Some(index) = self.latest_of_flow(pkt, seg.ip) else {
            return false;
        };
        let item = &self.items[index];
        let Some(mut t) = item.tcp.filter(|_| !item.finalized) else {
            return false;
        };
        let head = &self.arena[item.start..item.start + item.len];
        if t.closed
            || item.merged.len() + 1 >= MAX_SEGMENTS
            || seg.seq != t.next_seq
            || seg.payload > t.seg.payload
            || t.total + seg.payload > MAX_SUPER_PACKET
            || !same_headers(head, pkt, t.seg, seg)
        {
            return false;
        }
        let ok = checksums_allow(
            (head, t.seg.ip),
            (pkt, seg.ip),
            &mut t.head_checked,
            &mut t.closed,
        );
        if !ok {
            self.items[index].tcp = Some(t);
            return false;
        }
        t.next_seq = t.next_seq.wrapping_add(seg.payload as u32);
        t.total += seg.payload;
        if seg.payload < t.seg.payload {
            // A short segment ends a GSO burst: the receiver splits at gso_size.
            t.closed = true;
        }
        if seg.flags & TCP_PSH != 0 {
            t.psh = true;
            t.closed = true;
        }
        self.items[index].tcp = Some(t);
        self.append(index, &pkt[seg.headers..]);
        true
    }

    /// Adds `payload` to item `index` as its next merged segment.
    fn append(&mut self, index: usize, payload: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(payload);
        self.items[index].merged.push((start, payload.len()));
    }

    /// Writes every queued packet with `write`, in order, each as one call with its
    /// `virtio_net_hdr` first. `write` returns `Err(WouldBlock)` when the device cannot take
    /// the packet now: the flush stops there, keeps the rest, and returns `WouldBlock`; call it
    /// again later. Any other error counts as written (the caller accounts for it) and the
    /// flush goes on.
    pub fn flush(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<()>,
    ) -> io::Result<()> {
        while self.written < self.live {
            let index = self.written;
            self.finalize(index);
            let item = &self.items[index];
            let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS + 2];
            iov[0] = IoSlice::new(&item.vnet);
            iov[1] = IoSlice::new(&self.arena[item.start..item.start + item.len]);
            let mut n = 2;
            // Segments of one flow usually lie back to back in the arena: one slice each run.
            let mut run: Option<(usize, usize)> = None;
            for &(start, len) in &item.merged {
                match run {
                    Some((s, l)) if s + l == start => run = Some((s, l + len)),
                    Some((s, l)) => {
                        iov[n] = IoSlice::new(&self.arena[s..s + l]);
                        n += 1;
                        run = Some((start, len));
                    }
                    None => run = Some((start, len)),
                }
            }
            if let Some((s, l)) = run {
                iov[n] = IoSlice::new(&self.arena[s..s + l]);
                n += 1;
            }
            match write(&iov[..n]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                _ => self.written += 1,
            }
        }
        self.arena.clear();
        self.live = 0;
        self.written = 0;
        Ok(())
    }

    /// Rewrites a super-packet's first header for the whole and sets the vnet header.
    fn finalize(&mut self, index: usize) {
        let item = &mut self.items[index];
        if item.finalized {
            return;
        }
        item.finalized = true;
        item.vnet = [0; VNET_HDR_LEN];
        if item.merged.is_empty() {
            return;
        }
        if let Some(u) = item.udp {
            let ip = u.first.ip;
            let head = &mut self.arena[item.start..item.start + ip.len + 8];
            set_ip_length(head, ip, u.total);
            head[ip.len + 4..ip.len + 6]
                .copy_from_slice(&((u.total - ip.len) as u16).to_be_bytes());
            // NEEDS_CSUM, as for TCP below; the kernel cuts it into datagrams of gso_size.
            let pseudo = fold(packet_pseudo_sum(head, ip, u.total - ip.len));
            head[ip.len + 6..ip.len + 8].copy_from_slice(&pseudo.to_be_bytes());
            item.vnet = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: (ip.len + 8) as u16,
                gso_size: u.first.payload as u16,
                csum_start: ip.len as u16,
                csum_offset: 6,
            }
            .encode();
            return;
        }
        let Some(t) = item.tcp else {
            return;
        };
        let ip = t.seg.ip;
        let head = &mut self.arena[item.start..item.start + t.seg.headers];
        set_ip_length(head, ip, t.total);
        if t.psh {
            head[ip.len + 13] |= TCP_PSH;
        }
        // NEEDS_CSUM: the checksum field holds the pseudo-header sum, the kernel takes the
        // segments as verified (each was checked in `try_merge`).
        let pseudo = fold(packet_pseudo_sum(head, ip, t.total - ip.len));
        head[ip.len + 16..ip.len + 18].copy_from_slice(&pseudo.to_be_bytes());
        item.vnet = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if ip.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: t.seg.headers as u16,
            gso_size: t.seg.payload as u16,
            csum_start: ip.len as u16,
            csum_offset: 16,
        }
        .encode();
    }
}

/// Whether `pkt` may join the item whose first packet is `head` as far as checksums go. The
/// kernel will not check the checksum of a super-packet (it trusts NEEDS_CSUM), so each
/// joining packet's is checked here, and the first one's when the second joins (then
/// `head_checked`). A wrong one is written on its own and the kernel drops it as it would
/// have; a wrong first one also closes the item (`closed`).
fn checksums_allow(
    (head, head_ip): (&[u8], IpHeader),
    (pkt, pkt_ip): (&[u8], IpHeader),
    head_checked: &mut bool,
    closed: &mut bool,
) -> bool {
    if !*head_checked {
        *head_checked = true;
        if !transport_checksum_valid(head, head_ip) {
            *closed = true;
            return false;
        }
    }
    transport_checksum_valid(pkt, pkt_ip)
}

/// Sets the IP length fields of the super-packet whose headers start `head` to `total`
/// bytes, and for IPv4 the header checksum.
fn set_ip_length(head: &mut [u8], ip: IpHeader, total: usize) {
    if ip.v6 {
        head[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
    } else {
        head[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        head[10..12].copy_from_slice(&[0, 0]);
        let sum = ipv4_header_checksum(&head[..ip.len]);
        head[10..12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Whether the IP fields that GRO keeps are the same in `head` and `pkt`: IPv4 TOS, TTL, DF;
/// IPv6 traffic class, flow label, hop limit.
fn same_ip_fields(head: &[u8], pkt: &[u8], v6: bool) -> bool {
    if v6 {
        head[..4] == pkt[..4] && head[7] == pkt[7]
    } else {
        head[1] == pkt[1] && head[8] == pkt[8] && (head[6] & 0x40) == (pkt[6] & 0x40)
    }
}

/// Whether segment `pkt` may follow `head` in one super-packet: the same IP fields
/// ([`same_ip_fields`]), the same TCP header apart from sequence number, PSH and checksum (so
/// ACK, window, options).
fn same_headers(head: &[u8], pkt: &[u8], h: TcpSegment, p: TcpSegment) -> bool {
    if h.headers != p.headers {
        return false;
    }
    let (ht, pt) = (&head[h.ip.len..h.headers], &pkt[p.ip.len..p.headers]);
    same_ip_fields(head, pkt, h.ip.v6)
        && ht[8..13] == pt[8..13]
        && (ht[13] & !TCP_PSH) == (pt[13] & !TCP_PSH)
        && ht[14..16] == pt[14..16]
        && ht[18..] == pt[18..]
}
