//! Routing between peers: the relay as a WireGuard hub for laptop → home.

use super::*;

pub(super) const LAPTOP_V4: &str = "10.77.0.3";
pub(super) const LAPTOP_V6: &str = "fd77::3";
pub(super) const LAPTOP_UDP: &str = "203.0.113.20:50000";
pub(super) const LAPTOP: usize = 2;

/// The relay serving home (with its PSK) and a laptop.
pub(super) fn hub_relay_config(route_between_peers: bool) -> WgConfig {
    let mut c = relay_config_psk();
    c.peers.push(PeerConfig {
        public_key: public(LAPTOP_KEY),
        preshared_key: None,
        allowed_ips: vec![(ip(LAPTOP_V4), 32), (ip(LAPTOP_V6), 128)],
        endpoint: None,
        persistent_keepalive: None,
    });
    c.route_between_peers = route_between_peers;
    c
}

/// The laptop dials the relay and routes the whole overlay through it.
pub(super) fn laptop_config() -> WgConfig {
    WgConfig {
        private_key: private(LAPTOP_KEY),
        own_addresses: vec![ip(LAPTOP_V4), ip(LAPTOP_V6)],
        peers: vec![PeerConfig {
            public_key: public(RELAY_KEY),
            preshared_key: None,
            allowed_ips: vec![(ip("10.77.0.0"), 24), (ip("fd77::"), 64)],
            endpoint: Some(sa(RELAY_UDP)),
            persistent_keepalive: Some(25),
        }],
        route_between_peers: false,
    }
}

/// Laptop, relay and home, all connected to the relay.
fn hub(route_between_peers: bool) -> Net {
    let now = Instant::now();
    let mut home = home_config();
    home.peers[0].allowed_ips.push((ip("fd77::"), 64));
    let mut net = Net {
        nodes: vec![
            Node::new(hub_relay_config(route_between_peers), RELAY_UDP, now),
            Node::new(home, HOME_UDP, now),
            Node::new(laptop_config(), LAPTOP_UDP, now),
        ],
        now,
        wire: Vec::new(),
    };
    net.tick();
    for i in [HOME, LAPTOP] {
        assert!(net.nodes[i]
            .wg
            .peer_stats(PeerId(0))
            .last_handshake
            .is_some());
    }
    net
}

/// `packet` as one hop later: TTL / hop limit one less, IPv4 checksum fixed.
fn one_hop_later(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        p[10..12].fill(0);
        let c = icmp::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] -= 1;
    }
    p
}

#[test]
fn the_relay_routes_laptop_to_home_and_back() {
    let mut net = hub(true);
    let to_home = udp_packet(LAPTOP_V4, HOME_V4, b"ssh to home");
    net.send(LAPTOP, &to_home);
    assert_eq!(net.nodes[HOME].inbox, vec![one_hop_later(&to_home)]);
    assert!(
        net.nodes[RELAY].inbox.is_empty(),
        "not for the relay's stack"
    );
    let got = ip::parse(&net.nodes[HOME].inbox[0]).unwrap();
    assert_eq!(got.src, ip(LAPTOP_V4), "home sees the laptop's address");

    let to_laptop = udp_packet(HOME_V4, LAPTOP_V4, b"reply");
    net.send(HOME, &to_laptop);
    assert_eq!(net.nodes[LAPTOP].inbox, vec![one_hop_later(&to_laptop)]);

    let v6 = udp_packet(LAPTOP_V6, HOME_V6, b"v6 too");
    net.send(LAPTOP, &v6);
    assert_eq!(net.nodes[HOME].inbox.last(), Some(&one_hop_later(&v6)));

    // The relay's own traffic is unaffected.
    let mine = udp_packet(LAPTOP_V4, RELAY_V4, b"for the relay");
    net.send(LAPTOP, &mine);
    assert_eq!(net.nodes[RELAY].inbox, vec![mine]);

    let d = net.nodes[RELAY].wg.drops().clone();
    assert_eq!(d.routed, 3, "{d:?}");
    let relay = &net.nodes[RELAY].wg;
    let home_id = relay.peer_id(&public(HOME_KEY)).unwrap();
    assert_eq!(
        relay.peer_stats(home_id).tx_bytes,
        (to_home.len() + v6.len()) as u64
    );
}

#[test]
fn without_the_flag_packets_for_another_peer_are_dropped_and_counted() {
    let mut net = hub(false);
    net.send(LAPTOP, &udp_packet(LAPTOP_V4, HOME_V4, b"no hub"));
    net.send(LAPTOP, &udp_packet(LAPTOP_V6, HOME_V6, b"no hub"));
    assert!(net.nodes[HOME].inbox.is_empty());
    assert!(net.nodes[RELAY].inbox.is_empty());
    let d = net.nodes[RELAY].wg.drops().clone();
    assert_eq!((d.routing_disabled, d.routed), (2, 0), "{d:?}");
}

#[test]
fn expiring_ttl_and_loops_are_dropped_and_counted() {
    let mut net = hub(true);
    let mut last_hop = udp_packet(LAPTOP_V4, HOME_V4, b"ttl 1");
    last_hop[8] = 1;
    last_hop[10..12].fill(0);
    let c = icmp::checksum(&last_hop[..20], 0);
    last_hop[10..12].copy_from_slice(&c.to_be_bytes());
    net.send(LAPTOP, &last_hop);
    let mut v6 = udp_packet(LAPTOP_V6, HOME_V6, b"hop limit 0");
    v6[7] = 0;
    net.send(LAPTOP, &v6);
    // The laptop's own address, sent through the relay: never back to it.
    net.send(LAPTOP, &udp_packet(LAPTOP_V4, LAPTOP_V4, b"loop"));
    assert!(net.nodes[HOME].inbox.is_empty());
    assert!(net.nodes[LAPTOP].inbox.is_empty());
    let d = net.nodes[RELAY].wg.drops().clone();
    assert_eq!(
        (d.ttl_exceeded, d.routing_loop, d.routed),
        (2, 1, 0),
        "{d:?}"
    );
}
