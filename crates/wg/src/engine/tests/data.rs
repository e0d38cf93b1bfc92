//! Handshake, data both ways, cryptokey routing, roaming, config checks.

use super::*;

#[test]
fn handshake_then_packets_both_ways_v4_and_v6() {
    let mut net = Net::connected();
    assert_eq!(
        net.nodes[RELAY].wg.peer_stats(PeerId(0)).endpoint,
        Some(sa(HOME_UDP))
    );

    let up = udp_packet(HOME_V4, RELAY_V4, b"hello relay");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox, vec![up.clone()]);

    let down = udp_packet(RELAY_V4, HOME_V4, b"hello home");
    net.send(RELAY, &down);
    assert_eq!(net.nodes[HOME].inbox, vec![down.clone()]);

    let up6 = udp_packet(HOME_V6, RELAY_V6, b"v6 up");
    net.send(HOME, &up6);
    let down6 = udp_packet(RELAY_V6, HOME_V6, b"v6 down");
    net.send(RELAY, &down6);
    assert_eq!(net.nodes[RELAY].inbox.last(), Some(&up6));
    assert_eq!(net.nodes[HOME].inbox.last(), Some(&down6));

    let home = net.nodes[HOME].wg.peer_stats(PeerId(0));
    assert_eq!(home.tx_bytes, (up.len() + up6.len()) as u64);
    assert_eq!(home.rx_bytes, (down.len() + down6.len()) as u64);
    assert_eq!(home.persistent_keepalive, Some(25));
    assert!(home.last_handshake.unwrap() <= SystemTime::now());
    assert_eq!(net.nodes[HOME].wg.drops(), &DropCounters::default());
    let one_dh = DropCounters {
        handshake_dh_attempts: 1,
        ..DropCounters::default()
    };
    assert_eq!(net.nodes[RELAY].wg.drops(), &one_dh);
}

#[test]
fn a_packet_sent_before_the_handshake_is_delivered_after_it() {
    let mut net = Net::pair();
    // No tick: the first outbound packet itself starts the handshake.
    let up = udp_packet(HOME_V4, RELAY_V4, b"early");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);
}

#[test]
fn packets_sealed_into_the_drivers_buffer_arrive_like_queued_ones() {
    let mut net = Net::connected();
    let mut sink = VecSink::default();
    let up = udp_packet(HOME_V4, RELAY_V4, b"sealed in place");
    let mut padded = up.clone();
    padded.extend_from_slice(&[0xee; 7]);
    net.send_sealed(HOME, &padded, &mut sink);
    net.send_sealed(HOME, &up, &mut sink);
    assert_eq!(net.nodes[RELAY].inbox, vec![up.clone(), up.clone()]);
    // One transport message each, sized to the packet without the trailing bytes.
    let sealed: Vec<_> = net
        .wire
        .iter()
        .rev()
        .take(2)
        .map(|(_, _, d)| d.len())
        .collect();
    assert_eq!(sealed, vec![up.len() + 32, up.len() + 32]);

    let down = udp_packet(RELAY_V4, HOME_V4, b"and back");
    net.send_sealed(RELAY, &down, &mut sink);
    assert_eq!(net.nodes[HOME].inbox, vec![down]);
    assert_eq!(
        net.nodes[HOME].wg.peer_stats(PeerId(0)).tx_bytes,
        2 * up.len() as u64
    );
}

#[test]
fn a_packet_sealed_before_the_handshake_starts_it_and_is_delivered_after() {
    let mut net = Net::pair();
    let mut sink = VecSink::default();
    let up = udp_packet(HOME_V4, RELAY_V4, b"early, sealed");
    net.send_sealed(HOME, &up, &mut sink);
    // The sink got the handshake initiation, in room asked for its worst case.
    assert_eq!(net.wire[0].2.len(), 148);
    assert!(sink.rooms.iter().all(|&r| r >= 148));
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);
}

#[test]
fn a_sealed_packet_without_a_route_or_endpoint_is_counted_not_sent() {
    let mut net = Net::connected();
    let mut sink = VecSink::default();
    net.send_sealed(
        HOME,
        &udp_packet(HOME_V4, "192.0.2.9", b"nowhere"),
        &mut sink,
    );
    net.send_sealed(HOME, &[0x45, 0, 0], &mut sink);
    assert!(sink.rooms.is_empty());
    let drops = net.nodes[HOME].wg.drops();
    assert_eq!((drops.no_route, drops.malformed), (1, 1));
}

#[test]
fn trailing_bytes_past_the_ip_length_are_not_sent() {
    let mut net = Net::connected();
    let up = udp_packet(HOME_V4, RELAY_V4, b"x");
    let mut padded = up.clone();
    padded.extend_from_slice(&[0xee; 7]);
    net.send(HOME, &padded);
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);
}

#[test]
fn spoofed_inner_source_is_dropped_and_counted() {
    let now = Instant::now();
    // The relay serves home and a laptop; home pretends to be the laptop.
    let mut relay_cfg = relay_config_psk();
    relay_cfg.peers.push(PeerConfig {
        public_key: public(LAPTOP_KEY),
        preshared_key: None,
        allowed_ips: vec![(ip("10.77.0.3"), 32)],
        endpoint: None,
        persistent_keepalive: None,
    });
    let mut net = Net {
        nodes: vec![
            Node::new(relay_cfg, RELAY_UDP, now),
            Node::new(home_config(), HOME_UDP, now),
        ],
        now,
        wire: Vec::new(),
    };
    net.tick();
    for src in ["10.77.0.3", "10.77.0.99", "10.77.0.1"] {
        net.send(HOME, &udp_packet(src, RELAY_V4, b"spoof"));
    }
    net.send(HOME, &udp_packet("fd77::3", RELAY_V6, b"spoof"));
    assert!(net.nodes[RELAY].inbox.is_empty());
    assert_eq!(net.nodes[RELAY].wg.drops().not_allowed_source, 4);
    // The tunnel still works for honest packets.
    let ok = udp_packet(HOME_V4, RELAY_V4, b"honest");
    net.send(HOME, &ok);
    assert_eq!(net.nodes[RELAY].inbox, vec![ok]);
}

#[test]
fn outbound_without_route_or_endpoint_or_valid_header_is_dropped() {
    let now = Instant::now();
    let mut relay = Wg::new(relay_config(), now).unwrap();
    relay.handle_outbound(&udp_packet(RELAY_V4, "10.99.0.1", b"?"), now);
    relay.handle_outbound(&udp_packet(RELAY_V6, "fd99::1", b"?"), now);
    assert_eq!(relay.drops().no_route, 2);
    // Home has not dialed in yet: no endpoint to send to.
    relay.handle_outbound(&udp_packet(RELAY_V4, HOME_V4, b"?"), now);
    assert_eq!(relay.drops().no_endpoint, 1);
    let good = udp_packet(RELAY_V4, HOME_V4, b"?");
    for n in 0..good.len() {
        relay.handle_outbound(&good[..n], now);
    }
    assert_eq!(relay.drops().malformed, good.len() as u64);
    assert!(relay.poll_transmit().is_none());
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut net = Net::connected();
    // Capture one authenticated data datagram for a later replay.
    net.send(HOME, &udp_packet(HOME_V4, RELAY_V4, b"first"));
    let (_, _, captured) = net.wire.last().unwrap().clone();

    // The home's NAT rebinds: its next packet comes from a new address.
    let moved = sa("198.51.100.7:40001");
    net.nodes[HOME].addr = moved;
    net.send(HOME, &udp_packet(HOME_V4, RELAY_V4, b"after the move"));
    assert_eq!(
        net.nodes[RELAY].wg.peer_stats(PeerId(0)).endpoint,
        Some(moved)
    );

    // Garbage and a replay from an attacker move nothing.
    let attacker = sa("203.0.113.9:9999");
    let now = net.now;
    let relay = &mut net.nodes[RELAY].wg;
    relay.handle_datagram(attacker, &captured, now);
    let mut forged = captured.clone();
    forged[12] ^= 1; // a counter far ahead: passes the replay window, fails the AEAD tag
    relay.handle_datagram(attacker, &forged, now);
    relay.handle_datagram(attacker, b"\x04\0\0\0garbage garbage garbage garbage", now);
    assert_eq!(relay.peer_stats(PeerId(0)).endpoint, Some(moved));
    assert!(relay.poll_transmit().is_none());
    assert_eq!(relay.drops().replayed, 1);
    assert_eq!(relay.drops().unauthenticated, 1);

    // Replies follow the move.
    let down = udp_packet(RELAY_V4, HOME_V4, b"to the new address");
    net.send(RELAY, &down);
    assert_eq!(net.wire.last().unwrap().1, moved);
    assert_eq!(net.nodes[HOME].inbox, vec![down]);
}

#[test]
fn poll_timeout_ticks_every_250ms_and_early_calls_do_nothing() {
    let now = Instant::now();
    let mut home = Wg::new(home_config(), now).unwrap();
    assert_eq!(
        home.poll_timeout(),
        now,
        "the first tick is due at once (initial handshake)"
    );
    home.handle_timeout(now);
    assert_eq!(home.poll_timeout(), now + TICK);
    let init = home.poll_transmit().expect("initial handshake");
    assert_eq!(
        (init.dst, init.payload.len(), init.payload[0]),
        (sa(RELAY_UDP), 148, 1)
    );
    home.handle_timeout(now + TICK / 2);
    assert!(home.poll_transmit().is_none());
    assert_eq!(home.poll_timeout(), now + TICK);
    // A late driver: the next deadline counts from when it ran.
    home.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(home.poll_timeout(), now + Duration::from_secs(3) + TICK);

    let mut empty = Wg::new(
        WgConfig {
            private_key: private(9),
            own_addresses: vec![],
            peers: vec![],
            route_between_peers: false,
        },
        now,
    )
    .unwrap();
    empty.handle_timeout(now);
    assert_eq!(empty.poll_timeout(), now + IDLE_TICK);
}

#[test]
fn recycled_buffers_are_reused() {
    let mut net = Net::connected();
    net.nodes[HOME]
        .wg
        .handle_outbound(&udp_packet(HOME_V4, RELAY_V4, b"a"), net.now);
    let t = net.nodes[HOME].wg.poll_transmit().unwrap();
    let ptr = t.payload.as_ptr();
    net.nodes[HOME].wg.recycle(t.payload);
    net.nodes[HOME]
        .wg
        .handle_outbound(&udp_packet(HOME_V4, RELAY_V4, b"b"), net.now);
    assert_eq!(
        net.nodes[HOME].wg.poll_transmit().unwrap().payload.as_ptr(),
        ptr
    );
}

#[test]
fn config_mistakes_are_refused() {
    let now = Instant::now();
    let with_key = |key: [u8; 32]| {
        let mut c = relay_config();
        c.peers[0].public_key = key;
        Wg::new(c, now).err()
    };
    // Low-order points: 0, 1, and a point of order 8.
    let mut order8 = [0u8; 32];
    let hex = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800";
    for (i, b) in order8.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let mut one = [0u8; 32];
    one[0] = 1;
    for key in [[0u8; 32], one, order8] {
        assert_eq!(with_key(key), Some(WgError::LowOrderKey { peer: 0 }));
    }
    assert_eq!(
        with_key(public(RELAY_KEY)),
        Some(WgError::OwnKey { peer: 0 })
    );

    let mut dup = relay_config();
    let mut second = dup.peers[0].clone();
    second.allowed_ips = vec![(ip("10.77.0.3"), 32)];
    dup.peers.push(second);
    assert_eq!(
        Wg::new(dup, now).err(),
        Some(WgError::DuplicatePeerKey {
            first: 0,
            second: 1
        })
    );

    let mut overlap = relay_config();
    overlap.peers.push(PeerConfig {
        public_key: public(LAPTOP_KEY),
        preshared_key: None,
        allowed_ips: vec![(ip(HOME_V4), 32)],
        endpoint: None,
        persistent_keepalive: None,
    });
    assert!(matches!(
        Wg::new(overlap, now),
        Err(WgError::DuplicateAllowedIp {
            peer: 1,
            other: 0,
            ..
        })
    ));

    let mut bad_prefix = relay_config();
    bad_prefix.peers[0].allowed_ips.push((ip("10.0.0.0"), 33));
    assert!(matches!(
        Wg::new(bad_prefix, now),
        Err(WgError::InvalidPrefix { prefix: 33, .. })
    ));
    // Errors read as sentences; Debug of a config never shows a secret.
    assert!(WgError::LowOrderKey { peer: 0 }
        .to_string()
        .contains("low-order"));
    let shown = format!("{:?}", home_config());
    assert!(
        shown.contains("redacted") && !shown.contains("[2, 2, 2"),
        "{shown}"
    );
}
