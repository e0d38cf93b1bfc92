//! TUN offloads without the kernel: the `virtio_net_hdr` in front of every packet of a device
//! opened with `IFF_VNET_HDR`, segmentation of the kernel's TSO/USO super-packets read from the
//! device ([`segment`]), and coalescing of the packets written to it ([`Coalescer`], a
//! userspace GRO). Pure functions on bytes: nothing here touches the device.
//!
//! With `TUNSETOFFLOAD` (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`, and USO where the kernel has
//! it) the kernel hands the device TCP (UDP) packets of up to 64 KiB with a pseudo-header
//! checksum only, and takes such packets back. One read or write then moves up to ~45 packets
//! of the overlay MTU instead of one. wireguard-go does the same (`tun/offload_linux.go`).
//!
//! Everything from the device or from a peer is untrusted: every length and offset is checked,
//! and a packet that does not add up is refused with an [`OffloadError`], never a panic.

/// Bytes of the `virtio_net_hdr` in front of every packet (the kernel's default
/// `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the transport checksum is partial; complete it over `csum_start..` and store it
/// at `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;

/// `gso_type`: a single packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: IPv4 TCP super-packet.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: IPv4 UDP fragmentation offload (obsolete; never asked for).
pub const GSO_UDP: u8 = 3;
/// `gso_type`: IPv6 TCP super-packet.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation offload (`UDP_SEGMENT`), IPv4 or IPv6.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the super-packet has CWR set; only its first segment keeps it.
pub const GSO_ECN: u8 = 0x80;

/// Largest IP packet the coalescer builds: the IPv4 total length and the IPv6 payload
/// length are 16 bits.
pub const MAX_SUPER_PACKET: usize = 65_535;

/// At most this many TCP segments go into one super-packet (Linux GRO's limit too).
pub const MAX_SEGMENTS: usize = 64;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;

/// Why a packet read from the device could not be turned into packets for the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than a `virtio_net_hdr`.
    #[error("frame shorter than the virtio_net_hdr")]
    ShortFrame,
    /// A `gso_type` we did not ask for (or do not know).
    #[error("unsupported gso_type {0:#x}")]
    UnsupportedGso(u8),
    /// `gso_size` is 0 for a super-packet.
    #[error("gso_size is 0")]
    ZeroGsoSize,
    /// The IP header is missing, truncated, of another version than `gso_type` says, a
    /// fragment, or not followed directly by the transport header `gso_type` says.
    #[error("IP header does not match the virtio_net_hdr")]
    BadIpHeader,
    /// The TCP or UDP header is truncated or has an impossible length.
    #[error("truncated or invalid TCP/UDP header")]
    BadTransportHeader,
    /// `csum_start`/`csum_offset` point outside the packet or not at the transport header.
    #[error("checksum offsets outside the packet")]
    BadChecksumOffsets,
    /// The MTU leaves no room for payload after the headers.
    #[error("MTU too small for the packet headers")]
    MtuTooSmall,
}

/// A `virtio_net_hdr` (legacy layout, host byte order, as the kernel's TUN uses it when
/// neither `TUNSETVNETLE` nor `TUNSETVNETBE` is set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, maybe with `GSO_ECN`.
    pub gso_type: u8,
    /// Bytes of headers (IP + transport) in front of the payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the transport header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first [`VNET_HDR_LEN`] bytes of `frame`.
    pub fn decode(frame: &[u8]) -> Option<VnetHdr> {
        let b = frame.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

// ---------------------------------------------------------------------------------------
// Internet checksum

/// Adds `data` to a ones'-complement sum (RFC 1071). `data` must start at an even offset of
/// what is being checksummed; an odd last byte is padded with zero. The result is only
/// meaningful after [`fold`].
///
/// Why it is written this way: the loop it replaced added big-endian words one at a time,
/// each add waiting for the previous one's carry, and was 3.5 % of a TUN relay's time at
/// full upload and 5 % of the home's. Here 64-bit native-endian words are split into their
/// two 32-bit halves and summed into four independent `u64`s, which lose no carry (a sum
/// grows by less than 2^34 per 32 bytes) and keep the processor's adders busy: about 2.4×
/// faster on 1,400 bytes. The ones'-complement sum of byte-swapped words is the byte-swapped
/// sum (RFC 1071, 2.(B)), so the folded native-endian sum is swapped once at the end.
pub fn checksum_add(data: &[u8], acc: u64) -> u64 {
    let halves = |word: [u8; 8]| {
        let v = u64::from_ne_bytes(word);
        (v & 0xffff_ffff) + (v >> 32)
    };
    let (blocks, rest) = data.as_chunks::<32>();
    let mut lanes = [0u64; 4];
    for block in blocks {
        let (words, _) = block.as_chunks::<8>();
        for (lane, word) in lanes.iter_mut().zip(words) {
            *lane += halves(*word);
        }
    }
    let mut sum: u64 = lanes.iter().sum();
    let (words, rest) = rest.as_chunks::<4>();
    for word in words {
        sum += u64::from(u32::from_ne_bytes(*word));
    }
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_ne_bytes(tail));
    let native = fold(sum);
    let be = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    let (s, carry) = acc.overflowing_add(u64::from(be));
    // 2^64 ≡ 1 (mod 0xffff): the end-around carry keeps the sum exact.
    s + u64::from(carry)
}

/// Folds a sum from [`checksum_add`] to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The ones'-complement sum of the TCP/UDP pseudo-header (addresses, protocol, transport
/// length), unfolded. `src` and `dst` are 4 or 16 bytes.
pub fn pseudo_header_sum(proto: u8, src: &[u8], dst: &[u8], transport_len: usize) -> u64 {
    let acc = checksum_add(dst, checksum_add(src, 0));
    // Through checksum_add, not `+`: an IPv6 address sum can sit just under 2^64, and a
    // plain add would overflow (a panic in debug builds, a checksum off by one in release).
    let len = u32::try_from(transport_len).unwrap_or(u32::MAX);
    checksum_add(&len.to_be_bytes(), checksum_add(&[0, proto], acc))
}

/// The complemented checksum of a whole IPv4 header (its checksum field must be zero).
fn ipv4_header_checksum(header: &[u8]) -> u16 {
    !fold(checksum_add(header, 0))
}

// ---------------------------------------------------------------------------------------
// IP headers

/// What [`segment`] and the [`Coalescer`] need of an IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpHeader {
    v6: bool,
    /// Header length: where the transport header starts.
    len: usize,
    /// The transport protocol (IPv4 protocol, IPv6 next header).
    proto: u8,
}

impl IpHeader {
    /// Offsets of the source address and its length (the destination follows it).
    fn addrs(&self) -> (usize, usize) {
        if self.v6 {
            (8, 16)
        } else {
            (12, 4)
        }
    }
}

/// Parses the IP header at the start of `pkt`. Fragments and IPv6 extension headers are
/// refused: neither can be segmented or coalesced.
fn parse_ip(pkt: &[u8]) -> Option<IpHeader> {
    match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 20 {
                return None;
            }
            let len = usize::from(pkt[0] & 0x0f) * 4;
            // More-fragments flag or a fragment offset.
            let fragment = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0;
            if len < 20 || len > pkt.len() || fragment {
                return None;
            }
            Some(IpHeader {
                v6: false,
                len,
                proto: pkt[9],
            })
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            Some(IpHeader {
                v6: true,
                len: 40,
                proto: pkt[6],
            })
        }
        _ => None,
    }
}

/// Sets the IP length field of the packet in `pkt` to `pkt.len()` and, for IPv4, `id` and the
/// header checksum.
fn fix_ip_header(pkt: &mut [u8], ip: IpHeader, id: Option<u16>) {
    let total = pkt.len();
    if ip.v6 {
        let payload = (total - 40) as u16;
        pkt[4..6].copy_from_slice(&payload.to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        if let Some(id) = id {
            pkt[4..6].copy_from_slice(&id.to_be_bytes());
        }
        pkt[10..12].copy_from_slice(&[0, 0]);
        let sum = ipv4_header_checksum(&pkt[..ip.len]);
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The pseudo-header sum of the packet in `pkt` for `transport_len` bytes of transport.
fn packet_pseudo_sum(pkt: &[u8], ip: IpHeader, transport_len: usize) -> u64 {
    let (at, n) = ip.addrs();
    pseudo_header_sum(
        ip.proto,
        &pkt[at..at + n],
        &pkt[at + n..at + 2 * n],
        transport_len,
    )
}

/// Computes and stores the full TCP/UDP checksum of the packet in `pkt`, whose transport
/// header starts at `ip.len` and has its checksum at `ip.len + csum_offset`.
fn set_transport_checksum(pkt: &mut [u8], ip: IpHeader, csum_offset: usize) {
    let at = ip.len + csum_offset;
    pkt[at..at + 2].copy_from_slice(&[0, 0]);
    let sum = checksum_add(
        &pkt[ip.len..],
        packet_pseudo_sum(pkt, ip, pkt.len() - ip.len),
    );
    let mut csum = !fold(sum);
    if csum == 0 && ip.proto == PROTO_UDP {
        // A UDP checksum of zero means "none"; ones'-complement zero is sent as all ones.
        csum = 0xffff;
    }
    pkt[at..at + 2].copy_from_slice(&csum.to_be_bytes());
}

/// Whether the TCP or UDP checksum of the whole packet in `pkt` is correct.
fn transport_checksum_valid(pkt: &[u8], ip: IpHeader) -> bool {
    let transport = &pkt[ip.len..];
    fold(checksum_add(
        transport,
        packet_pseudo_sum(pkt, ip, transport.len()),
    )) == 0xffff
}

// ---------------------------------------------------------------------------------------
// Read side: segmentation

/// Turns one frame read from a device with `IFF_VNET_HDR` (header included) into IP packets
/// of at most `mtu` bytes with complete checksums, and passes each to `emit`. Returns how many
/// packets were emitted.
///
/// * `GSO_NONE`: the packet itself, its checksum completed when `F_NEEDS_CSUM` says it is
///   partial (bytes `csum_start..` summed into `csum_start + csum_offset`).
/// * `GSO_TCPV4`/`GSO_TCPV6`/`GSO_UDP_L4`: the super-packet cut into segments of
///   `gso_size` payload bytes (TCP: fewer if the MTU demands; UDP datagrams keep their size), each with its own IP length, IPv4 id
///   and header checksum, TCP sequence number (FIN and PSH only on the last segment, CWR only
///   on the first) or UDP length, and a full transport checksum.
///
/// `frame` is modified in place (a partial checksum is completed); `scratch` holds one
/// segment at a time and is reused.
pub fn segment(
    frame: &mut [u8],
    mtu: usize,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let hdr = VnetHdr::decode(frame).ok_or(OffloadError::ShortFrame)?;
    let pkt = &mut frame[VNET_HDR_LEN..];
    let gso_type = hdr.gso_type & !GSO_ECN;
    if gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            complete_checksum(pkt, hdr)?;
        }
        emit(pkt);
        return Ok(1);
    }

    let mut ip = parse_ip(pkt).ok_or(OffloadError::BadIpHeader)?;
    let proto = match gso_type {
        GSO_TCPV4 | GSO_TCPV6 => PROTO_TCP,
        _ => PROTO_UDP,
    };
    if ip.v6 && ip.proto != proto && hdr.flags & F_NEEDS_CSUM != 0 {
        // IPv6 extension headers: the kernel's csum_start says where the transport header
        // is. They are carried along unchanged in every segment (the payload length field
        // counts them, and the pseudo-header names the transport protocol).
        let start = usize::from(hdr.csum_start);
        if start <= 40 || start > pkt.len() {
            return Err(OffloadError::BadChecksumOffsets);
        }
        ip.len = start;
        ip.proto = proto;
    }
    let (tcp, csum_offset) = match gso_type {
        GSO_TCPV4 | GSO_TCPV6 => {
            if ip.v6 != (gso_type == GSO_TCPV6) || ip.proto != PROTO_TCP {
                return Err(OffloadError::BadIpHeader);
            }
            (true, 16)
        }
        GSO_UDP_L4 if ip.proto == PROTO_UDP => (false, 6),
        GSO_UDP_L4 => return Err(OffloadError::BadIpHeader),
        other => return Err(OffloadError::UnsupportedGso(other)),
    };
    if hdr.flags & F_NEEDS_CSUM != 0
        && (usize::from(hdr.csum_start) != ip.len || usize::from(hdr.csum_offset) != csum_offset)
    {
        return Err(OffloadError::BadChecksumOffsets);
    }
    // The header length is computed, not taken from `hdr_len`: the kernel may set that to
    // more than the headers (wireguard-go found it equal to the whole first packet on the
    // forwarding path).
    let transport_len = if tcp {
        let doff = pkt
            .get(ip.len + 12)
            .map(|b| usize::from(b >> 4) * 4)
            .ok_or(OffloadError::BadTransportHeader)?;
        if doff < 20 {
            return Err(OffloadError::BadTransportHeader);
        }
        doff
    } else {
        8
    };
    let headers = ip.len + transport_len;
    if headers > pkt.len() {
        return Err(OffloadError::BadTransportHeader);
    }
    if hdr.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    let room = mtu.saturating_sub(headers);
    if room == 0 {
        return Err(OffloadError::MtuTooSmall);
    }
    // TCP is a byte stream and may be re-cut to fit the MTU; a UDP datagram's boundaries
    // are its meaning, so UDP is cut exactly at gso_size (a datagram over the MTU then goes
    // out whole, as a plain over-MTU packet does).
    let size = if tcp {
        usize::from(hdr.gso_size).min(room)
    } else {
        usize::from(hdr.gso_size)
    };

    let (head, payload) = pkt.split_at(headers);
    let id = u16::from_be_bytes([head[4], head[5]]);
    let seq = u32::from_be_bytes([
        head[ip.len + 4],
        head[ip.len + 5],
        head[ip.len + 6],
        head[ip.len + 7],
    ]);
    let mut count = 0;
    let mut start = 0;
    loop {
        let end = (start + size).min(payload.len());
        let (first, last) = (start == 0, end == payload.len());
        scratch.clear();
        scratch.extend_from_slice(head);
        scratch.extend_from_slice(&payload[start..end]);
        // Linux's TSO gives each IPv4 segment the next id; IPv6 has none.
        fix_ip_header(scratch, ip, Some(id.wrapping_add(count as u16)));
        if tcp {
            let at = ip.len;
            let seq = seq.wrapping_add(start as u32);
            scratch[at + 4..at + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                scratch[at + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if !first {
                scratch[at + 13] &= !TCP_CWR;
            }
        } else {
            let udp_len = (scratch.len() - ip.len) as u16;
            scratch[ip.len + 4..ip.len + 6].copy_from_slice(&udp_len.to_be_bytes());
        }
        set_transport_checksum(scratch, ip, csum_offset);
        emit(scratch);
        count += 1;
        if last {
            return Ok(count);
        }
        start = end;
    }
}

/// Completes a partial checksum of a single packet as the kernel would (`skb_checksum_help`).
fn complete_checksum(pkt: &mut [u8], hdr: VnetHdr) -> Result<(), OffloadError> {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > pkt.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    // The field holds the pseudo-header sum; summing it with the rest gives the checksum.
    let csum = !fold(checksum_add(&pkt[start..], 0));
    let csum = if csum == 0 { 0xffff } else { csum };
    pkt[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

mod coalesce;
pub use coalesce::Coalescer;

#[cfg(test)]
mod tests;
