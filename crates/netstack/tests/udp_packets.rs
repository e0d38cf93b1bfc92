//! One stack fed hand-built and hostile UDP packets: what reaches a socket, what is dropped,
//! and that nothing panics.

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{at, pattern, A, B};
use pinhole_netstack::{Overlay, OverlayUdpSocket, Stack, StackConfig};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2));

fn stack() -> (Stack, Overlay) {
    pinhole_netstack::new(StackConfig::new(vec![(A, 24), (A6, 64)], 1420))
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

/// A UDP/IP packet with correct lengths and checksums.
fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let caps = ChecksumCapabilities::default();
    let udp_len = 8 + payload.len();
    let (s, d) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    let (mut buffer, offset) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => {
            let ip = Ipv4Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buffer = vec![0; 20 + udp_len];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut buffer), &caps);
            (buffer, 20)
        }
        (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => {
            let ip = Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: 64,
            };
            let mut buffer = vec![0; 40 + udp_len];
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut buffer));
            (buffer, 40)
        }
        _ => panic!("mixed families"),
    };
    let mut packet = UdpPacket::new_unchecked(&mut buffer[offset..]);
    let fill = |out: &mut [u8]| out.copy_from_slice(payload);
    repr.emit(&mut packet, &s, &d, payload.len(), fill, &caps);
    buffer
}

/// Rewrites the UDP length field (and, for IPv4, keeps the IP header valid).
fn with_udp_len(mut packet: Vec<u8>, offset: usize, len: u16) -> Vec<u8> {
    packet[offset + 4..offset + 6].copy_from_slice(&len.to_be_bytes());
    packet
}

/// Everything queued on `socket` right now.
fn drain(socket: &OverlayUdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0; 2048];
    loop {
        let recv = socket.recv_from(&mut buf);
        let ready = futures_now(recv);
        match ready {
            Some(Ok((n, _))) => got.push(buf[..n].to_vec()),
            _ => return got,
        }
    }
}

/// Polls a future once; `Some` if it was ready.
fn futures_now<F: Future>(future: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test]
async fn malformed_datagrams_are_dropped_and_good_ones_delivered() {
    let (mut stack, overlay) = stack();
    let v4 = drive_until(&mut stack, overlay.bind_udp(at(A, 53)))
        .await
        .unwrap();
    let v6 = drive_until(&mut stack, overlay.bind_udp(at(A6, 53)))
        .await
        .unwrap();
    let good4 = udp(at(B, 4000), at(A, 53), b"good four");
    let good6 = udp(at(B6, 4000), at(A6, 53), b"good six");

    let mut bad = Vec::new();
    // Length field longer than the packet, shorter than the header, or cutting the payload
    // (the checksum then no longer matches).
    for len in [200u16, 4, 0, 10] {
        bad.push(with_udp_len(good4.clone(), 20, len));
        bad.push(with_udp_len(good6.clone(), 40, len));
    }
    // Bad checksums.
    for (packet, offset) in [(&good4, 20), (&good6, 40)] {
        let mut flipped = packet.clone();
        flipped[offset + 6] ^= 0x10;
        bad.push(flipped);
        let mut payload = packet.clone();
        *payload.last_mut().unwrap() ^= 1;
        bad.push(payload);
    }
    // IPv6 forbids a zero checksum.
    let mut zero6 = good6.clone();
    zero6[46..48].copy_from_slice(&[0, 0]);
    bad.push(zero6);
    // Truncated anywhere.
    for len in 0..good4.len() {
        bad.push(good4[..len].to_vec());
    }
    for len in 0..good6.len() {
        bad.push(good6[..len].to_vec());
    }
    // A fragment, source port 0, and ports or addresses nobody bound.
    let mut fragment = good4.clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut fragment);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    bad.push(fragment);
    bad.push(udp(at(B, 0), at(A, 53), b"port zero"));
    bad.push(udp(at(B, 4000), at(A, 54), b"unbound"));
    bad.push(udp(
        at(B, 4000),
        at("10.77.0.9".parse().unwrap(), 53),
        b"not us",
    ));

    let before = stack.udp_dropped();
    for packet in &bad {
        stack.handle_inbound(packet);
    }
    stack.handle_inbound(&good4);
    stack.handle_inbound(&good6);
    stack.poll(Instant::now());
    assert_eq!(drain(&v4), vec![b"good four".to_vec()]);
    assert_eq!(drain(&v6), vec![b"good six".to_vec()]);
    // Truncated packets have no valid IP header, so smoltcp drops them; the other 17 are
    // UDP over a valid IP header and counted. Nothing is answered (no ICMP, no RST).
    assert_eq!(stack.udp_dropped() - before, 17);
    assert!(std::iter::from_fn(|| stack.poll_outbound())
        .next()
        .is_none());
    // IPv4 "no checksum" (0) is allowed.
    let mut zero4 = good4.clone();
    zero4[26..28].copy_from_slice(&[0, 0]);
    stack.handle_inbound(&zero4);
    stack.poll(Instant::now());
    assert_eq!(drain(&v4), vec![b"good four".to_vec()]);
}

#[tokio::test]
async fn random_and_bit_flipped_udp_never_panics() {
    let (mut stack, overlay) = stack();
    let socket = drive_until(&mut stack, overlay.bind_udp(at(A, 53)))
        .await
        .unwrap();
    let valid = [
        udp(at(B, 4000), at(A, 53), b"some query"),
        udp(at(B6, 4000), at(A6, 53), b"six"),
    ];
    let mut now = Instant::now();
    let mut fed = 0usize;
    for packet in &valid {
        for bit in 0..packet.len() * 8 {
            let mut flipped = packet.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            stack.handle_inbound(&flipped);
            fed += 1;
            if fed.is_multiple_of(100) {
                stack.poll(now);
                std::iter::from_fn(|| stack.poll_outbound()).for_each(drop);
                drain(&socket);
            }
        }
    }
    for seed in 0..2000u64 {
        let len = (seed as usize * 7919) % 1600;
        let mut noise = pattern(seed, len);
        if noise.len() > 40 {
            // Claim IPv4/UDP or IPv6/UDP to get past the first checks.
            if seed % 2 == 0 {
                noise[0] = 0x45;
                noise[9] = 17;
            } else {
                noise[0] = 0x60;
                noise[6] = 17;
            }
        }
        stack.handle_inbound(&noise);
        if seed.is_multiple_of(100) {
            now += Duration::from_millis(500);
            stack.poll(now);
            std::iter::from_fn(|| stack.poll_outbound()).for_each(drop);
            drain(&socket);
        }
    }
    stack.poll(now);
    drain(&socket);
    // The socket still works.
    stack.handle_inbound(&valid[0]);
    stack.poll(now);
    assert_eq!(drain(&socket), vec![b"some query".to_vec()]);
    assert_eq!(stack.udp_socket_count(), 1);
    drop(socket);
    drive_until(&mut stack, async {
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await;
    assert_eq!(stack.udp_socket_count(), 0);
}

#[tokio::test]
async fn a_full_device_holds_senders_back_without_losing_datagrams() {
    const SENT: u32 = 3000;
    let (mut stack, overlay) = stack();
    let socket = drive_until(&mut stack, overlay.bind_udp(at(A, 0)))
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        for i in 0..SENT {
            socket.send_to(&i.to_be_bytes(), at(B, 9)).await.unwrap();
        }
    });
    // The driver polls but does not take packets: the device fills and senders wait.
    for _ in 0..500 {
        tokio::task::yield_now().await;
        stack.poll(Instant::now());
    }
    let mut packets: Vec<Vec<u8>> = std::iter::from_fn(|| stack.poll_outbound()).collect();
    assert_eq!(packets.len(), 1024, "the device queue bound");
    assert!(!sender.is_finished());
    while !sender.is_finished() || stack.poll_at(Instant::now()).is_some() {
        tokio::task::yield_now().await;
        stack.poll(Instant::now());
        packets.extend(std::iter::from_fn(|| stack.poll_outbound()));
    }
    let numbers: Vec<u32> = packets
        .iter()
        .map(|packet| {
            let ip = Ipv4Packet::new_checked(packet).unwrap();
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            u32::from_be_bytes(udp.payload().try_into().unwrap())
        })
        .collect();
    assert_eq!(numbers, (0..SENT).collect::<Vec<_>>());
}
