use std::io;

use super::coalesce::MAX_ITEMS;
use super::*;

/// The textbook checksum, 16 bits at a time: the reference the fast one is checked against.
fn reference_sum(data: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn reference_checksum(data: &[u8]) -> u16 {
    !(reference_sum(data) as u16)
}

/// The pseudo-header as bytes, as RFC 793/8200 lay it out.
fn pseudo_bytes(pkt: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    if pkt[0] >> 4 == 4 {
        let ihl = usize::from(pkt[0] & 15) * 4;
        p.extend_from_slice(&pkt[12..20]);
        p.extend_from_slice(&[0, pkt[9]]);
        p.extend_from_slice(&((pkt.len() - ihl) as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&pkt[8..40]);
        p.extend_from_slice(&((pkt.len() - 40) as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, pkt[6]]);
    }
    p
}

/// Whether the transport checksum of `pkt` verifies by the reference computation.
fn transport_ok(pkt: &[u8]) -> bool {
    let ihl = if pkt[0] >> 4 == 4 {
        usize::from(pkt[0] & 15) * 4
    } else {
        40
    };
    let mut all = pseudo_bytes(pkt);
    all.extend_from_slice(&pkt[ihl..]);
    reference_checksum(&all) == 0
}

fn ipv4_header_ok(pkt: &[u8]) -> bool {
    reference_checksum(&pkt[..usize::from(pkt[0] & 15) * 4]) == 0
}

/// A deterministic byte stream (no rand dependency).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Tcp {
    v6: bool,
    sport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
}

const T: Tcp = Tcp {
    v6: false,
    sport: 40000,
    seq: 1000,
    ack: 77,
    flags: TCP_ACK,
    window: 500,
};

/// A TCP packet with a 12-byte timestamp option and correct checksums.
fn tcp_packet(t: Tcp, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&t.sport.to_be_bytes());
    tcp.extend_from_slice(&5201u16.to_be_bytes());
    tcp.extend_from_slice(&t.seq.to_be_bytes());
    tcp.extend_from_slice(&t.ack.to_be_bytes());
    tcp.extend_from_slice(&[8 << 4, t.flags]);
    tcp.extend_from_slice(&t.window.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
    tcp.extend_from_slice(payload);
    let mut pkt = ip_header(t.v6, PROTO_TCP, tcp.len());
    let ihl = pkt.len();
    pkt.extend_from_slice(&tcp);
    let mut all = pseudo_bytes(&pkt);
    all.extend_from_slice(&pkt[ihl..]);
    let c = reference_checksum(&all);
    pkt[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    assert!(transport_ok(&pkt));
    pkt
}

fn udp_packet(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut pkt = ip_header(v6, PROTO_UDP, 8 + payload.len());
    pkt.extend_from_slice(&5353u16.to_be_bytes());
    pkt.extend_from_slice(&7001u16.to_be_bytes());
    pkt.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    pkt
}

fn ip_header(v6: bool, proto: u8, transport: usize) -> Vec<u8> {
    if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(transport as u16).to_be_bytes());
        h.extend_from_slice(&[proto, 64]);
        h.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        h
    } else {
        let total = (20 + transport) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2]);
        let c = reference_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }
}

fn frame(hdr: VnetHdr, pkt: &[u8]) -> Vec<u8> {
    let mut f = hdr.encode().to_vec();
    f.extend_from_slice(pkt);
    f
}

/// Turns `pkt` into what the kernel hands a device with offloads: the pseudo-header sum
/// (folded, not complemented) in the transport checksum field.
fn partial(pkt: &[u8], csum_offset: usize) -> Vec<u8> {
    let mut p = pkt.to_vec();
    let ihl = if p[0] >> 4 == 4 {
        usize::from(p[0] & 15) * 4
    } else {
        40
    };
    let at = ihl + csum_offset;
    let sum = reference_sum(&pseudo_bytes(&p)) as u16;
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    p
}

fn segment_all(f: &mut [u8], mtu: usize) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let n = segment(f, mtu, &mut scratch, |p| out.push(p.to_vec()))?;
    assert_eq!(n, out.len());
    Ok(out)
}

fn tcp_field(pkt: &[u8], off: usize) -> u32 {
    let ihl = if pkt[0] >> 4 == 4 { 20 } else { 40 };
    u32::from_be_bytes([
        pkt[ihl + off],
        pkt[ihl + off + 1],
        pkt[ihl + off + 2],
        pkt[ihl + off + 3],
    ])
}

fn tcp_flags(pkt: &[u8]) -> u8 {
    let ihl = if pkt[0] >> 4 == 4 { 20 } else { 40 };
    pkt[ihl + 13]
}

#[test]
fn checksum_matches_the_reference_at_every_length_and_start() {
    for len in 0..300 {
        let data = noise(len as u32, len);
        let ours = !fold(checksum_add(&data, 0));
        assert_eq!(ours, reference_checksum(&data), "len {len}");
    }
    // Sums carried across pieces that start at even offsets equal the sum of the whole.
    let data = noise(9, 4001);
    for cut in (0..4001).step_by(2) {
        let split = checksum_add(&data[cut..], checksum_add(&data[..cut], 0));
        assert_eq!(fold(split), fold(checksum_add(&data, 0)), "cut {cut}");
    }
    // All ones: the end-around carry must not lose anything.
    let ones = vec![0xff; 1 << 17];
    assert_eq!(!fold(checksum_add(&ones, 0)), reference_checksum(&ones));
}

#[test]
fn vnet_header_round_trips_and_short_frames_are_refused() {
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 72,
        gso_size: 1348,
        csum_start: 40,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::decode(&h.encode()), Some(h));
    assert_eq!(VnetHdr::decode(&[0; 9]), None);
    assert_eq!(
        segment(&mut [0; 9], 1420, &mut Vec::new(), |_| {}),
        Err(OffloadError::ShortFrame)
    );
}

#[test]
fn plain_packets_pass_and_partial_checksums_are_completed() {
    let pkt = tcp_packet(T, &noise(1, 333));
    let out = segment_all(&mut frame(VnetHdr::default(), &pkt), 1420).unwrap();
    assert_eq!(out, vec![pkt.clone()]);

    for (pkt, off) in [
        (pkt.clone(), 16),
        (tcp_packet(Tcp { v6: true, ..T }, &noise(2, 777)), 16),
        (udp_packet(false, &noise(3, 101)), 6),
        (udp_packet(true, &noise(4, 0)), 6),
    ] {
        let ihl = if pkt[0] >> 4 == 4 { 20 } else { 40 };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: ihl as u16,
            csum_offset: off as u16,
            ..VnetHdr::default()
        };
        let out = segment_all(&mut frame(hdr, &partial(&pkt, off)), 1420).unwrap();
        assert_eq!(out.len(), 1);
        assert!(transport_ok(&out[0]), "checksum completed");
        assert_eq!(out[0].len(), pkt.len());
        if off == 16 {
            assert_eq!(out[0], pkt, "same bytes as the fully checksummed original");
        }
    }
}

fn check_tcp_split(v6: bool) {
    let ihl = if v6 { 40 } else { 20 };
    let payload = noise(5, 4000);
    let first = Tcp {
        v6,
        seq: u32::MAX - 1500, // wraps during the split
        flags: TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR,
        ..T
    };
    let sup = tcp_packet(first, &payload);
    let mss = 1420 - ihl - 32;
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: (ihl + 32) as u16,
        gso_size: mss as u16,
        csum_start: ihl as u16,
        csum_offset: 16,
    };
    let out = segment_all(&mut frame(hdr, &partial(&sup, 16)), 1420).unwrap();
    assert_eq!(out.len(), 4000usize.div_ceil(mss));
    let mut joined = Vec::new();
    for (i, p) in out.iter().enumerate() {
        let last = i == out.len() - 1;
        assert!(p.len() <= 1420);
        assert!(transport_ok(p), "segment {i} TCP checksum");
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
        } else {
            assert!(ipv4_header_ok(p), "segment {i} IPv4 header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
            assert_eq!(u16::from_be_bytes([p[4], p[5]]), 0x1234 + i as u16);
        }
        assert_eq!(
            tcp_field(p, 4),
            first.seq.wrapping_add((i * mss) as u32),
            "segment {i} seq"
        );
        assert_eq!(tcp_field(p, 8), first.ack);
        let flags = tcp_flags(p);
        assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
        assert_eq!(
            flags & (TCP_FIN | TCP_PSH) != 0,
            last,
            "FIN/PSH only on the last"
        );
        assert_eq!(
            p[ihl + 20..ihl + 32],
            sup[ihl + 20..ihl + 32],
            "options kept"
        );
        joined.extend_from_slice(&p[ihl + 32..]);
    }
    assert_eq!(joined, payload);
}

#[test]
fn tcp_super_packets_are_split_into_valid_segments() {
    check_tcp_split(false);
    check_tcp_split(true);
}

#[test]
fn ipv6_extension_headers_ride_along_in_every_segment() {
    // A TCP super-packet behind an 8-byte destination-options header.
    let plain = tcp_packet(Tcp { v6: true, ..T }, &noise(12, 3000));
    let mut sup = plain[..40].to_vec();
    sup[6] = 60; // next header: destination options
    sup[4..6].copy_from_slice(&((plain.len() - 40 + 8) as u16).to_be_bytes());
    sup.extend_from_slice(&[PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
    sup.extend_from_slice(&plain[40..]);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 48 + 32,
        gso_size: 1000,
        csum_start: 48,
        csum_offset: 16,
    };
    let out = segment_all(&mut frame(hdr, &sup), 1420).unwrap();
    assert_eq!(out.len(), 3);
    let mut joined = Vec::new();
    for p in &out {
        assert_eq!(p[6], 60);
        assert_eq!(p[40..48], sup[40..48]);
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
        // The checksum as a receiver computes it: pseudo-header with the TCP length and
        // protocol 6, over the TCP header and payload.
        let mut all = p[8..40].to_vec();
        all.extend_from_slice(&((p.len() - 48) as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, PROTO_TCP]);
        all.extend_from_slice(&p[48..]);
        assert_eq!(reference_checksum(&all), 0);
        joined.extend_from_slice(&p[48 + 32..]);
    }
    assert_eq!(joined, plain[40 + 32..]);
    // Without NEEDS_CSUM there is nothing to say where TCP starts: refused.
    let hdr = VnetHdr { flags: 0, ..hdr };
    assert_eq!(
        segment_all(&mut frame(hdr, &sup), 1420),
        Err(OffloadError::BadIpHeader)
    );
}

#[test]
fn segments_fit_the_mtu_even_when_gso_size_does_not() {
    let sup = tcp_packet(T, &noise(6, 3000));
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 52,
        gso_size: 9000,
        csum_start: 20,
        csum_offset: 16,
    };
    let out = segment_all(&mut frame(hdr, &partial(&sup, 16)), 1280).unwrap();
    assert_eq!(
        out.iter().map(Vec::len).collect::<Vec<_>>(),
        [1280, 1280, 52 + 3000 - 2 * 1228]
    );
    assert!(out.iter().all(|p| transport_ok(p) && ipv4_header_ok(p)));
    assert_eq!(
        segment_all(&mut frame(hdr, &sup), 52),
        Err(OffloadError::MtuTooSmall)
    );
}

#[test]
fn udp_super_packets_are_split() {
    for v6 in [false, true] {
        let ihl = if v6 { 40 } else { 20 };
        let payload = noise(7, 2500);
        let sup = udp_packet(v6, &payload);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (ihl + 8) as u16,
            gso_size: 1000,
            csum_start: ihl as u16,
            csum_offset: 6,
        };
        let out = segment_all(&mut frame(hdr, &partial(&sup, 6)), 1420).unwrap();
        assert_eq!(out.len(), 3);
        let mut joined = Vec::new();
        for p in &out {
            assert!(transport_ok(p));
            assert_eq!(
                usize::from(u16::from_be_bytes([p[ihl + 4], p[ihl + 5]])),
                p.len() - ihl
            );
            assert!(v6 || ipv4_header_ok(p));
            joined.extend_from_slice(&p[ihl + 8..]);
        }
        assert_eq!(joined, payload);
    }
}

#[test]
fn udp_datagrams_keep_their_boundaries_when_the_mtu_is_smaller() {
    // Two 1400-byte datagrams in one USO super-packet, a 1000-byte MTU: cutting at the MTU
    // would mix the two; each must come out whole, as an over-MTU plain packet does.
    let payload = noise(9, 2800);
    let sup = udp_packet(false, &payload);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: 28,
        gso_size: 1400,
        csum_start: 20,
        csum_offset: 6,
    };
    let out = segment_all(&mut frame(hdr, &partial(&sup, 6)), 1000).unwrap();
    assert_eq!(out.len(), 2);
    for (p, original) in out.iter().zip(payload.chunks(1400)) {
        assert!(transport_ok(p) && ipv4_header_ok(p));
        assert_eq!(&p[28..], original);
    }
}

#[test]
fn malformed_frames_are_refused() {
    let tcp4 = tcp_packet(T, &noise(8, 3000));
    let gso = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 52,
        gso_size: 1368,
        csum_start: 20,
        csum_offset: 16,
    };
    let err = |hdr: VnetHdr, pkt: &[u8]| segment_all(&mut frame(hdr, pkt), 1420).unwrap_err();

    // A GSO type that does not match the packet, or that we do not split.
    for (gso_type, expected) in [
        (GSO_TCPV6, OffloadError::BadIpHeader),
        (GSO_UDP_L4, OffloadError::BadIpHeader),
        (GSO_UDP, OffloadError::UnsupportedGso(GSO_UDP)),
    ] {
        assert_eq!(
            err(VnetHdr { gso_type, ..gso }, &tcp4),
            expected,
            "gso_type {gso_type}"
        );
    }
    assert_eq!(
        err(VnetHdr { gso_size: 0, ..gso }, &tcp4),
        OffloadError::ZeroGsoSize
    );
    assert_eq!(
        err(
            VnetHdr {
                csum_start: 24,
                ..gso
            },
            &tcp4
        ),
        OffloadError::BadChecksumOffsets
    );
    assert_eq!(err(gso, &tcp4[..45]), OffloadError::BadTransportHeader);
    assert_eq!(err(gso, &tcp4[..19]), OffloadError::BadIpHeader);
    let mut short_doff = tcp4.clone();
    short_doff[32] = 4 << 4;
    assert_eq!(err(gso, &short_doff), OffloadError::BadTransportHeader);
    let mut fragment = tcp4.clone();
    fragment[6] |= 0x20;
    assert_eq!(err(gso, &fragment), OffloadError::BadIpHeader);
    let single = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 3040,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    assert_eq!(err(single, &tcp4), OffloadError::BadChecksumOffsets);
}

#[test]
fn arbitrary_frames_never_panic() {
    let base = tcp_packet(T, &noise(10, 2000));
    let base6 = tcp_packet(Tcp { v6: true, ..T }, &noise(11, 2000));
    let mut scratch = Vec::new();
    for i in 0..20_000u32 {
        let r = noise(i, 16);
        let pkt = match r[0] % 3 {
            0 => noise(i + 1, usize::from(r[1]) * 9),
            1 => base[..usize::from(r[2]) * 9 % base.len()].to_vec(),
            _ => base6[..usize::from(r[2]) * 9 % base6.len()].to_vec(),
        };
        let hdr = VnetHdr {
            flags: r[3] & 3,
            gso_type: [GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, r[4]][usize::from(r[5] % 5)],
            hdr_len: u16::from_be_bytes([r[6], r[7]]),
            gso_size: u16::from_be_bytes([r[8] & 7, r[9]]),
            csum_start: [20, 40, u16::from(r[10])][usize::from(r[11] % 3)],
            csum_offset: [16, 6, u16::from(r[12])][usize::from(r[13] % 3)],
        };
        let mtu = [1420, 1280, 60, 0][usize::from(r[14] % 4)];
        let mut f = frame(hdr, &pkt);
        let limit = f.len();
        let _ = segment(&mut f, mtu, &mut scratch, |p| assert!(p.len() <= limit));
        // And the same bytes through the coalescer.
        let mut c = Coalescer::new();
        c.push(&pkt);
        c.push(&pkt);
        c.flush(|_| Ok(())).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Coalescer

/// Flushes `c` and returns each write as one frame (header + packet).
fn written(c: &mut Coalescer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    c.flush(|iov| {
        out.push(iov.iter().flat_map(|s| s.iter().copied()).collect());
        Ok(())
    })
    .unwrap();
    assert!(c.is_empty());
    out
}

/// `n` consecutive full segments of one flow, 1000 payload bytes each.
fn flow(t: Tcp, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            tcp_packet(
                Tcp {
                    seq: t.seq.wrapping_add(1000 * i as u32),
                    ..t
                },
                &noise(100 + i as u32, 1000),
            )
        })
        .collect()
}

/// Resegments a written super-packet and checks it gives back `originals` (IPv4 ids apart).
fn assert_resegments_to(frame: &[u8], originals: &[Vec<u8>]) {
    let mut f = frame.to_vec();
    let out = segment_all(&mut f, 1420).unwrap();
    assert_eq!(out.len(), originals.len());
    for (got, want) in out.iter().zip(originals) {
        assert!(transport_ok(got));
        if got[0] >> 4 == 4 {
            assert!(ipv4_header_ok(got));
            assert!(
                got[..4] == want[..4] && got[6..10] == want[6..10] && got[12..] == want[12..],
                "all but the IPv4 id and header checksum"
            );
        } else {
            assert!(got == want);
        }
    }
}

#[test]
fn consecutive_segments_of_a_flow_become_one_super_packet() {
    for v6 in [false, true] {
        let ihl = if v6 { 40 } else { 20 };
        let mut pkts = flow(
            Tcp {
                v6,
                seq: u32::MAX - 10,
                ..T
            },
            5,
        );
        // The last one is short and has PSH: it may join, and ends the burst.
        let last = tcp_packet(
            Tcp {
                v6,
                seq: (u32::MAX - 10).wrapping_add(5000),
                flags: TCP_ACK | TCP_PSH,
                ..T
            },
            b"tail",
        );
        pkts.push(last);
        let mut c = Coalescer::new();
        for p in &pkts {
            assert!(c.has_room(p.len()));
            c.push(p);
        }
        let out = written(&mut c);
        assert_eq!(out.len(), 1);
        let hdr = VnetHdr::decode(&out[0]).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
                hdr_len: (ihl + 32) as u16,
                gso_size: 1000,
                csum_start: ihl as u16,
                csum_offset: 16,
            }
        );
        let sup = &out[0][VNET_HDR_LEN..];
        assert_eq!(sup.len(), ihl + 32 + 5004);
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([sup[4], sup[5]])), 32 + 5004);
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([sup[2], sup[3]])), sup.len());
            assert!(ipv4_header_ok(sup));
        }
        assert!(
            tcp_flags(sup) & TCP_PSH != 0,
            "PSH of the last segment kept"
        );
        // The checksum field holds the pseudo-header sum for the whole, as NEEDS_CSUM wants:
        // completing it gives a valid checksum.
        let mut completed = sup.to_vec();
        complete_checksum(&mut completed, hdr).unwrap();
        assert!(transport_ok(&completed));
        assert_resegments_to(&out[0], &pkts);
    }
}

#[test]
fn what_may_not_be_coalesced_is_written_as_it_came() {
    let zero = [0u8; VNET_HDR_LEN];
    let base = flow(T, 1).remove(0);
    let next = |t: Tcp| tcp_packet(Tcp { seq: 2000, ..t }, &noise(1, 1000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "out of order",
            tcp_packet(Tcp { seq: 2500, ..T }, &noise(1, 1000)),
        ),
        (
            "FIN",
            next(Tcp {
                flags: TCP_ACK | TCP_FIN,
                ..T
            }),
        ),
        (
            "SYN",
            next(Tcp {
                flags: TCP_ACK | TCP_SYN_FOR_TEST,
                ..T
            }),
        ),
        ("other ack", next(Tcp { ack: 78, ..T })),
        ("other window", next(Tcp { window: 501, ..T })),
        ("other port", next(Tcp { sport: 40001, ..T })),
        ("longer than the first", {
            tcp_packet(Tcp { seq: 2000, ..T }, &noise(1, 1001))
        }),
        ("bad checksum", {
            let mut p = next(T);
            let n = p.len();
            p[n - 1] ^= 1;
            p
        }),
        ("pure ACK", tcp_packet(Tcp { seq: 2000, ..T }, b"")),
        ("other AE or reserved bits", {
            let mut p = next(T);
            p[20 + 12] |= 0x01;
            refresh_tcp_checksum(&mut p);
            p
        }),
        ("bad IPv4 header checksum", {
            let mut p = next(T);
            p[10] ^= 0x01;
            p
        }),
        ("UDP", udp_packet(false, b"hello")),
    ];
    for (what, second) in cases {
        let mut c = Coalescer::new();
        c.push(&base);
        c.push(&second);
        let out = written(&mut c);
        assert_eq!(out.len(), 2, "{what}");
        assert_eq!(out[0][..VNET_HDR_LEN], zero, "{what}");
        assert_eq!(out[0][VNET_HDR_LEN..], base[..], "{what}");
        assert_eq!(out[1][..VNET_HDR_LEN], zero, "{what}");
        assert_eq!(out[1][VNET_HDR_LEN..], second[..], "{what}");
    }
}

const TCP_SYN_FOR_TEST: u8 = 0x02;

/// Recomputes the TCP checksum of an IPv4 `pkt` after a test changed its header.
fn refresh_tcp_checksum(pkt: &mut [u8]) {
    pkt[20 + 16..20 + 18].copy_from_slice(&[0, 0]);
    let mut all = pseudo_bytes(pkt);
    all.extend_from_slice(&pkt[20..]);
    let c = reference_checksum(&all);
    pkt[20 + 16..20 + 18].copy_from_slice(&c.to_be_bytes());
    assert!(transport_ok(pkt));
}

#[test]
fn the_pseudo_header_sum_is_exact_for_addresses_that_sum_near_two_to_the_64() {
    // Found in review: these two IPv6 addresses sum to 0xffff_ffff_ffff_fff2 in 64-bit
    // words, so adding the protocol and length with `+` overflowed.
    let src = [
        0xfd, 0x98, 0, 0, 0, 0, 0, 0, 0x04, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0,
    ];
    let dst = [0xfd, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    for len in [0usize, 20, 1440, 65_535] {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, PROTO_TCP]);
        let expected = reference_sum(&bytes) as u16;
        assert_eq!(
            fold(pseudo_header_sum(PROTO_TCP, &src, &dst, len)),
            expected,
            "{len}"
        );
    }
}

#[test]
fn a_bad_first_checksum_keeps_the_flow_apart() {
    let mut pkts = flow(T, 3);
    pkts[0][60] ^= 0x55;
    let mut c = Coalescer::new();
    for p in &pkts {
        c.push(p);
    }
    let out = written(&mut c);
    // The first stays alone (the kernel drops it); the next two join each other.
    assert_eq!(out.len(), 2);
    assert_eq!(out[0][VNET_HDR_LEN..], pkts[0][..]);
    assert_resegments_to(&out[1], &pkts[1..]);
}

#[test]
fn flows_interleave_without_reordering() {
    let a = flow(T, 4);
    let b = flow(
        Tcp {
            sport: 40001,
            seq: 9,
            ..T
        },
        4,
    );
    let mut c = Coalescer::new();
    for i in 0..4 {
        c.push(&a[i]);
        c.push(&b[i]);
    }
    let out = written(&mut c);
    assert_eq!(out.len(), 2);
    assert_resegments_to(&out[0], &a);
    assert_resegments_to(&out[1], &b);

    // A packet of the flow that cannot join (a pure ACK) ends the super-packet before it:
    // a later segment must not jump over it.
    let ack = tcp_packet(Tcp { seq: 3000, ..T }, b"");
    let mut c = Coalescer::new();
    c.push(&a[0]);
    c.push(&a[1]);
    c.push(&ack);
    c.push(&a[2]);
    c.push(&a[3]);
    let out = written(&mut c);
    assert_eq!(out.len(), 3);
    assert_resegments_to(&out[0], &a[..2]);
    assert_eq!(out[1][VNET_HDR_LEN..], ack[..]);
    assert_resegments_to(&out[2], &a[2..]);
}

#[test]
fn a_short_segment_ends_the_super_packet_and_size_is_bounded() {
    let mut pkts = flow(T, 2);
    pkts.insert(1, tcp_packet(Tcp { seq: 2000, ..T }, b"short"));
    pkts[2] = tcp_packet(Tcp { seq: 2005, ..T }, &noise(3, 1000));
    let mut c = Coalescer::new();
    for p in &pkts {
        c.push(p);
    }
    let out = written(&mut c);
    assert_eq!(out.len(), 2);
    assert_resegments_to(&out[0], &pkts[..2]);

    // Large segments: at most 64 KiB of IP packet per super-packet.
    let big: Vec<Vec<u8>> = (0..50)
        .map(|i| tcp_packet(Tcp { seq: 1400 * i, ..T }, &noise(i, 1400)))
        .collect();
    let mut c = Coalescer::new();
    for p in &big {
        c.push(p);
    }
    let out = written(&mut c);
    assert!(out.len() >= 2);
    assert!(out
        .iter()
        .all(|f| f.len() - VNET_HDR_LEN <= MAX_SUPER_PACKET));
    let joined: usize = out.iter().map(|f| f.len() - VNET_HDR_LEN - 52).sum();
    assert_eq!(joined, 50 * 1400);
}

#[test]
fn a_blocked_flush_resumes_where_it_stopped() {
    let a = flow(T, 2);
    let u = udp_packet(false, b"x");
    let mut c = Coalescer::new();
    c.push(&a[0]);
    c.push(&a[1]);
    c.push(&u);
    let mut first = Vec::new();
    let mut calls = 0;
    let r = c.flush(|iov| {
        calls += 1;
        if calls == 2 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        first.push(iov.iter().map(|s| s.len()).sum::<usize>());
        Ok(())
    });
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert!(!c.is_empty());
    assert!(!c.has_room(10), "no pushes into an unfinished flush");
    // Pushed anyway: queued behind, and joins nothing that is half written.
    let a2 = tcp_packet(Tcp { seq: 3000, ..T }, &noise(102, 1000));
    c.push(&a2);
    let rest = written(&mut c);
    assert_eq!(first.len(), 1);
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0][VNET_HDR_LEN..], u[..]);
    assert_eq!(rest[1][VNET_HDR_LEN..], a2[..]);
    assert!(c.has_room(10));
}

#[test]
fn room_is_bounded() {
    let mut c = Coalescer::new();
    let u = udp_packet(false, &[0; 1000]);
    let mut pushed = 0;
    while c.has_room(u.len()) {
        c.push(&u);
        pushed += 1;
    }
    assert_eq!(pushed, MAX_ITEMS);
    assert_eq!(written(&mut c).len(), MAX_ITEMS);
}

/// A UDP datagram from `sport` with a valid checksum.
fn udp_datagram(v6: bool, sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut pkt = udp_packet(v6, payload);
    let ihl = if v6 { 40 } else { 20 };
    pkt[ihl..ihl + 2].copy_from_slice(&sport.to_be_bytes());
    let mut all = pseudo_bytes(&pkt);
    all.extend_from_slice(&pkt[ihl..]);
    let c = reference_checksum(&all);
    pkt[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
    assert!(transport_ok(&pkt));
    pkt
}

#[test]
fn udp_datagrams_of_a_flow_become_one_super_packet() {
    for v6 in [false, true] {
        let ihl = if v6 { 40 } else { 20 };
        // Five of one size, then a shorter one, which may join and ends the run.
        let mut pkts: Vec<_> = (0..5)
            .map(|i| udp_datagram(v6, 5353, &noise(200 + i, 1000)))
            .collect();
        pkts.push(udp_datagram(v6, 5353, b"tail"));
        let mut c = Coalescer::new().joining_udp(true);
        for p in &pkts {
            c.push(p);
        }
        let out = written(&mut c);
        assert_eq!(out.len(), 1, "v6={v6}");
        let hdr = VnetHdr::decode(&out[0]).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: (ihl + 8) as u16,
                gso_size: 1000,
                csum_start: ihl as u16,
                csum_offset: 6,
            }
        );
        let sup = &out[0][VNET_HDR_LEN..];
        assert_eq!(sup.len(), ihl + 8 + 5004);
        let udp_len = usize::from(u16::from_be_bytes([sup[ihl + 4], sup[ihl + 5]]));
        assert_eq!(
            udp_len,
            8 + 5004,
            "the UDP length covers the whole, as the kernel checks"
        );
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([sup[4], sup[5]])), 8 + 5004);
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([sup[2], sup[3]])), sup.len());
            assert!(ipv4_header_ok(sup));
        }
        let mut completed = sup.to_vec();
        complete_checksum(&mut completed, hdr).unwrap();
        assert!(
            transport_ok(&completed),
            "the pseudo-header sum is the whole's"
        );
        assert_resegments_to(&out[0], &pkts);
    }
}

#[test]
fn what_may_not_join_a_udp_run_is_written_as_it_came() {
    let zero = [0u8; VNET_HDR_LEN];
    let base = udp_datagram(false, 5353, &noise(1, 1000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "longer than the first",
            udp_datagram(false, 5353, &noise(2, 1001)),
        ),
        ("other port", udp_datagram(false, 5354, &noise(2, 1000))),
        ("bad checksum", {
            let mut p = udp_datagram(false, 5353, &noise(2, 1000));
            let n = p.len();
            p[n - 1] ^= 1;
            p
        }),
        ("no checksum", udp_packet(false, &noise(2, 1000))),
        ("other TTL", {
            let mut p = udp_datagram(false, 5353, &noise(2, 1000));
            p[8] = 63;
            p[10..12].copy_from_slice(&[0, 0]);
            let c = reference_checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            p
        }),
        ("UDP length short of the packet", {
            let mut p = udp_datagram(false, 5353, &noise(2, 1000));
            p[24..26].copy_from_slice(&1000u16.to_be_bytes());
            p
        }),
        ("TCP on the same ports", {
            let mut p = flow(T, 1).remove(0);
            p[20..22].copy_from_slice(&5353u16.to_be_bytes());
            p[22..24].copy_from_slice(&7001u16.to_be_bytes());
            refresh_tcp_checksum(&mut p);
            p
        }),
    ];
    for (what, second) in cases {
        let mut c = Coalescer::new().joining_udp(true);
        c.push(&base);
        c.push(&second);
        let out = written(&mut c);
        assert_eq!(out.len(), 2, "{what}");
        assert_eq!(out[0][..VNET_HDR_LEN], zero, "{what}");
        assert_eq!(out[0][VNET_HDR_LEN..], base[..], "{what}");
        assert_eq!(out[1][..VNET_HDR_LEN], zero, "{what}");
        assert_eq!(out[1][VNET_HDR_LEN..], second[..], "{what}");
    }
    // A bad first checksum keeps the run from forming: the kernel drops that one alone.
    let mut bad = base.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let mut c = Coalescer::new().joining_udp(true);
    for p in [&bad, &base, &base] {
        c.push(p);
    }
    let out = written(&mut c);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0][VNET_HDR_LEN..], bad[..]);
    assert_resegments_to(&out[1], &[base.clone(), base.clone()]);
}

#[test]
fn a_shorter_datagram_ends_the_run_and_the_next_starts_another() {
    let full = udp_datagram(true, 5353, &noise(3, 800));
    let short = udp_datagram(true, 5353, &noise(4, 300));
    let mut c = Coalescer::new().joining_udp(true);
    for p in [&full, &short, &full, &full] {
        c.push(p);
    }
    let out = written(&mut c);
    assert_eq!(out.len(), 2);
    assert_resegments_to(&out[0], &[full.clone(), short.clone()]);
    assert_resegments_to(&out[1], &[full.clone(), full.clone()]);
}

/// Decrypted packets come from peers: damaged ones (a byte changed, cut short, in any mix
/// with intact ones) must never panic the coalescer.
#[test]
fn damaged_packets_never_panic_the_coalescer() {
    let bases = [
        flow(T, 2),
        vec![
            udp_datagram(false, 5353, &noise(5, 700)),
            udp_datagram(false, 5353, &noise(6, 700)),
        ],
        vec![
            udp_datagram(true, 5353, &noise(7, 64)),
            udp_datagram(true, 5353, &noise(8, 64)),
        ],
    ];
    for seed in 0..3000u32 {
        let r = noise(seed, 8);
        let mut c = Coalescer::new().joining_udp(true);
        for (k, base) in bases[usize::from(r[0]) % 3].iter().enumerate() {
            let mut p = base.clone();
            if (r[1] >> k) & 1 == 1 {
                let at = usize::from(r[2 + k]) * p.len() / 256;
                p[at] ^= r[4 + k] | 1;
            }
            if (r[6] >> k) & 1 == 1 {
                p.truncate(usize::from(r[7]) * p.len() / 256);
            }
            c.push(&p);
        }
        written(&mut c);
    }
}

#[test]
fn udp_datagrams_join_only_when_asked() {
    // A kernel without USO refuses a GSO_UDP_L4 write: by default each datagram goes alone.
    let d = udp_datagram(false, 5353, &noise(9, 500));
    let mut c = Coalescer::new();
    for _ in 0..3 {
        c.push(&d);
    }
    let out = written(&mut c);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|f| f[..VNET_HDR_LEN] == [0; VNET_HDR_LEN]));
}
