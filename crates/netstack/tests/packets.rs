//! The stack fed hand-built and hostile IP packets directly, without a peer stack.

mod common;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use common::{at, pattern, A, B};
use pinhole_netstack::{Stack, StackConfig};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

const V6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1));
const V6_PEER: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2));

fn stack() -> (Stack, pinhole_netstack::Overlay) {
    pinhole_netstack::new(StackConfig::new(vec![(A, 24), (V6, 64)], 1420))
}

/// Runs `future` while acting as the driver of `stack` (no peer: outbound is discarded).
async fn drive_until<T>(stack: &mut Stack, future: impl Future<Output = T>) -> T {
    tokio::pin!(future);
    loop {
        tokio::select! {
            out = &mut future => return out,
            () = stack.wait() => stack.poll(Instant::now()),
        }
    }
}

fn outbound(stack: &mut Stack) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| stack.poll_outbound()).collect()
}

fn ipv4(src: IpAddr, dst: IpAddr, protocol: IpProtocol, payload_len: usize) -> Ipv4Repr {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
        panic!("ipv4 only")
    };
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
    }
}

fn echo_request_v4(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x77,
        seq_no: 3,
        data: b"ping pinhole",
    };
    let ip = ipv4(src, dst, IpProtocol::Icmp, icmp.buffer_len());
    let mut buffer = vec![0; ip.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut buffer);
    ip.emit(&mut packet, &caps);
    icmp.emit(
        &mut Icmpv4Packet::new_unchecked(packet.payload_mut()),
        &caps,
    );
    buffer
}

fn syn_v4(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(4242),
        ack_number: None,
        window_len: 64_240,
        window_scale: Some(7),
        max_seg_size: Some(1380),
        sack_permitted: true,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = ipv4(src.ip(), dst.ip(), IpProtocol::Tcp, tcp.buffer_len());
    let mut buffer = vec![0; ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut buffer);
    ip.emit(&mut packet, &caps);
    let (s, d) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    tcp.emit(
        &mut TcpPacket::new_unchecked(packet.payload_mut()),
        &s,
        &d,
        &caps,
    );
    buffer
}

/// The TCP flags of an outbound IPv4 segment: (syn, ack, rst).
fn tcp_flags(packet: &[u8]) -> (bool, bool, bool) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    (tcp.syn(), tcp.ack(), tcp.rst())
}

#[test]
fn answers_ipv4_ping_on_its_address() {
    let (mut stack, _overlay) = stack();
    stack.handle_inbound(&echo_request_v4(B, A));
    stack.poll(Instant::now());
    let replies = outbound(&mut stack);
    assert_eq!(replies.len(), 1);
    let ip = Ipv4Packet::new_checked(&replies[0]).unwrap();
    assert_eq!(IpAddr::from(ip.src_addr()), A);
    assert_eq!(IpAddr::from(ip.dst_addr()), B);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
    assert_eq!(
        repr,
        Icmpv4Repr::EchoReply {
            ident: 0x77,
            seq_no: 3,
            data: b"ping pinhole"
        }
    );
    // Not our address: no answer.
    stack.handle_inbound(&echo_request_v4(B, "10.77.0.3".parse().unwrap()));
    stack.poll(Instant::now());
    assert!(outbound(&mut stack).is_empty());
}

#[test]
fn answers_ipv6_ping_on_its_address() {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (V6_PEER, V6) else {
        unreachable!()
    };
    let icmp = Icmpv6Repr::EchoRequest {
        ident: 9,
        seq_no: 1,
        data: b"six",
    };
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut buffer = vec![0; ip.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv6Packet::new_unchecked(&mut buffer);
    ip.emit(&mut packet);
    let mut icmp_packet = Icmpv6Packet::new_unchecked(packet.payload_mut());
    icmp.emit(&src, &dst, &mut icmp_packet, &caps);

    let (mut stack, _overlay) = stack();
    stack.handle_inbound(&buffer);
    stack.poll(Instant::now());
    let replies = outbound(&mut stack);
    assert_eq!(replies.len(), 1);
    let reply = Ipv6Packet::new_checked(&replies[0]).unwrap();
    assert_eq!(reply.dst_addr(), src);
    let icmp = Icmpv6Packet::new_checked(reply.payload()).unwrap();
    let repr = Icmpv6Repr::parse(&dst, &src, &icmp, &caps).unwrap();
    assert!(matches!(
        repr,
        Icmpv6Repr::EchoReply {
            ident: 9,
            seq_no: 1,
            data: b"six"
        }
    ));
}

#[test]
fn syn_to_a_closed_port_gets_a_reset() {
    let (mut stack, _overlay) = stack();
    stack.handle_inbound(&syn_v4(at(B, 40000), at(A, 81)));
    stack.poll(Instant::now());
    let replies = outbound(&mut stack);
    assert_eq!(replies.len(), 1);
    assert_eq!(tcp_flags(&replies[0]), (false, true, true));
    assert_eq!(stack.socket_count(), 0);
}

#[tokio::test]
async fn retransmitted_syns_share_one_socket_and_the_cap_holds() {
    let mut config = StackConfig::new(vec![(A, 24)], 1420);
    config.max_connections = 2;
    let (mut stack, overlay) = pinhole_netstack::new(config);
    let _listener = drive_until(&mut stack, overlay.listen(at(A, 80)))
        .await
        .unwrap();
    let now = Instant::now();

    let first = syn_v4(at(B, 40000), at(A, 80));
    stack.handle_inbound(&first);
    stack.handle_inbound(&first);
    stack.poll(now);
    stack.handle_inbound(&first);
    stack.poll(now);
    assert_eq!(stack.socket_count(), 1);
    assert!(outbound(&mut stack)
        .iter()
        .all(|p| tcp_flags(p) == (true, true, false)));

    stack.handle_inbound(&syn_v4(at(B, 40001), at(A, 80)));
    stack.poll(now);
    assert_eq!(stack.socket_count(), 2);
    assert_eq!(tcp_flags(&outbound(&mut stack)[0]), (true, true, false));

    // Beyond max_connections: smoltcp finds no socket and resets.
    stack.handle_inbound(&syn_v4(at(B, 40002), at(A, 80)));
    stack.poll(now);
    assert_eq!(stack.socket_count(), 2);
    assert_eq!(tcp_flags(&outbound(&mut stack)[0]), (false, true, true));
}

#[tokio::test]
async fn garbage_and_truncated_packets_never_panic() {
    let (mut stack, overlay) = stack();
    let _listener = drive_until(&mut stack, overlay.listen(at(A, 80)))
        .await
        .unwrap();
    let valid = [
        syn_v4(at(B, 40000), at(A, 80)),
        syn_v4(at(B, 40001), at(A, 9)),
        echo_request_v4(B, A),
    ];
    let mut now = Instant::now();
    let mut fed = 0usize;
    for packet in &valid {
        for len in 0..=packet.len() {
            stack.handle_inbound(&packet[..len]);
            fed += 1;
        }
        for bit in 0..packet.len() * 8 {
            let mut flipped = packet.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            stack.handle_inbound(&flipped);
            fed += 1;
            if fed.is_multiple_of(200) {
                stack.poll(now);
                outbound(&mut stack);
            }
        }
    }
    for seed in 0..2000u64 {
        let len = (seed as usize * 7919) % 1600;
        let mut noise = pattern(seed, len);
        if let Some(first) = noise.first_mut() {
            // Half of them claim to be IPv4 or IPv6, to get past the version check.
            *first = match seed % 4 {
                0 => 0x45,
                1 => 0x60,
                _ => *first,
            };
        }
        stack.handle_inbound(&noise);
        if seed.is_multiple_of(100) {
            now += std::time::Duration::from_millis(500);
            stack.poll(now);
            outbound(&mut stack);
        }
    }
    stack.handle_inbound(&[]);
    stack.poll(now);
    outbound(&mut stack);
    // Embryonic connections from the valid SYNs are all that may be left.
    assert!(
        stack.socket_count() <= valid.len(),
        "{}",
        stack.socket_count()
    );
}
