//! Engine tests on an in-memory network: every `Transmit` is moved to the
//! node that owns its destination address, with the right `from`; a bounded
//! pump fails instead of hanging. Our own timers take `now`, so tests advance
//! a virtual clock (boringtun's internal timers run on the real clock and stay
//! quiet during these short tests).

mod data;
mod flood;
mod hub;
mod recovery;
mod reload;
mod silence;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::x25519::{PublicKey, StaticSecret};

use super::*;
use crate::icmp::{self, EchoKind};
use crate::{PeerConfig, WgConfig, WgError};

/// Relay's and home's overlay and underlay addresses used throughout.
pub(super) const RELAY_V4: &str = "10.77.0.1";
pub(super) const HOME_V4: &str = "10.77.0.2";
pub(super) const RELAY_V6: &str = "fd77::1";
pub(super) const HOME_V6: &str = "fd77::2";
pub(super) const RELAY_UDP: &str = "192.0.2.1:51820";
pub(super) const HOME_UDP: &str = "198.51.100.7:40000";

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A deterministic private key (x25519 clamps any 32 bytes).
pub(super) fn private(seed: u8) -> [u8; 32] {
    [seed; 32]
}

pub(super) fn public(seed: u8) -> [u8; 32] {
    *PublicKey::from(&StaticSecret::from(private(seed))).as_bytes()
}

pub(super) const RELAY_KEY: u8 = 1;
pub(super) const HOME_KEY: u8 = 2;
pub(super) const LAPTOP_KEY: u8 = 3;

/// The relay: no endpoint for home (home dials in), no keepalive.
pub(super) fn relay_config() -> WgConfig {
    WgConfig {
        private_key: private(RELAY_KEY),
        own_addresses: vec![ip(RELAY_V4), ip(RELAY_V6)],
        peers: vec![PeerConfig {
            public_key: public(HOME_KEY),
            preshared_key: None,
            allowed_ips: vec![(ip(HOME_V4), 32), (ip(HOME_V6), 128)],
            endpoint: None,
            persistent_keepalive: None,
        }],
        route_between_peers: false,
    }
}

/// Home: dials the relay with a keepalive, so it runs the liveness probe.
pub(super) fn home_config() -> WgConfig {
    WgConfig {
        private_key: private(HOME_KEY),
        own_addresses: vec![ip(HOME_V4), ip(HOME_V6)],
        peers: vec![PeerConfig {
            public_key: public(RELAY_KEY),
            preshared_key: Some([7; 32]),
            allowed_ips: vec![(ip("10.77.0.0"), 24), (ip(RELAY_V6), 128)],
            endpoint: Some(sa(RELAY_UDP)),
            persistent_keepalive: Some(25),
        }],
        route_between_peers: false,
    }
}

/// The relay's config also needs the home's preshared key.
pub(super) fn relay_config_psk() -> WgConfig {
    let mut c = relay_config();
    c.peers[0].preshared_key = Some([7; 32]);
    c
}

/// One engine plus what its stack received.
pub(super) struct Node {
    pub(super) wg: Wg,
    pub(super) addr: SocketAddr,
    pub(super) inbox: Vec<Vec<u8>>,
    /// Plays a stack that answers ping on `own` addresses.
    pub(super) answers_ping: bool,
    pub(super) pings_answered: usize,
}

impl Node {
    pub(super) fn new(config: WgConfig, addr: &str, now: Instant) -> Node {
        Node {
            wg: Wg::new(config, now).unwrap(),
            addr: sa(addr),
            inbox: Vec::new(),
            answers_ping: false,
            pings_answered: 0,
        }
    }
}

/// The in-memory network.
pub(super) struct Net {
    pub(super) nodes: Vec<Node>,
    pub(super) now: Instant,
    /// Every datagram moved: (from, to, bytes).
    pub(super) wire: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

pub(super) const RELAY: usize = 0;
pub(super) const HOME: usize = 1;

impl Net {
    /// Relay and home, not yet connected.
    pub(super) fn pair() -> Net {
        let now = Instant::now();
        Net {
            nodes: vec![
                Node::new(relay_config_psk(), RELAY_UDP, now),
                Node::new(home_config(), HOME_UDP, now),
            ],
            now,
            wire: Vec::new(),
        }
    }

    /// Relay and home after home's first tick: the handshake is done.
    pub(super) fn connected() -> Net {
        let mut net = Net::pair();
        net.tick();
        assert!(net.nodes[HOME]
            .wg
            .peer_stats(PeerId(0))
            .last_handshake
            .is_some());
        assert!(net.nodes[RELAY]
            .wg
            .peer_stats(PeerId(0))
            .last_handshake
            .is_some());
        net
    }

    /// Moves datagrams until none are left; panics after a bound (a loop).
    pub(super) fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                self.answer_pings(i);
                let from = self.nodes[i].addr;
                while let Some(t) = self.nodes[i].wg.poll_transmit() {
                    moved = true;
                    self.wire.push((from, t.dst, t.payload.clone()));
                    if let Some(j) = self.nodes.iter().position(|n| n.addr == t.dst) {
                        let now = self.now;
                        self.nodes[j].wg.handle_datagram(from, &t.payload, now);
                    }
                    self.nodes[i].wg.recycle(t.payload);
                }
                while let Some(p) = self.nodes[i].wg.poll_inbound() {
                    moved = true;
                    self.nodes[i].inbox.push(p);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet");
    }

    fn answer_pings(&mut self, i: usize) {
        if !self.nodes[i].answers_ping {
            return;
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        let mut kept = Vec::new();
        for p in std::mem::take(&mut node.inbox) {
            match icmp::echo_reply_to(&p) {
                Some(reply) => {
                    node.pings_answered += 1;
                    node.wg.handle_outbound(&reply, now);
                }
                None => kept.push(p),
            }
        }
        node.inbox = kept;
    }

    /// Runs every node's timers at the current time, then pumps.
    pub(super) fn tick(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            n.wg.handle_timeout(now);
        }
        self.pump();
        // A second pass lets a stack answer what the first one delivered.
        self.pump();
    }

    /// Advances virtual time in 250 ms ticks.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(250);
            self.tick();
        }
    }

    /// Sends `packet` into node `i`'s engine as its stack would, then pumps.
    pub(super) fn send(&mut self, i: usize, packet: &[u8]) {
        let now = self.now;
        self.nodes[i].wg.handle_outbound(packet, now);
        self.pump();
    }

    /// Seals `packet` from node `i` into `sink` (as a driver's send batch),
    /// puts the sealed datagrams on the wire, then pumps.
    pub(super) fn send_sealed(&mut self, i: usize, packet: &[u8], sink: &mut VecSink) {
        let now = self.now;
        self.nodes[i].wg.seal_outbound(packet, now, sink);
        let from = self.nodes[i].addr;
        for (dst, datagram) in std::mem::take(&mut sink.sent) {
            self.wire.push((from, dst, datagram.clone()));
            if let Some(j) = self.nodes.iter().position(|n| n.addr == dst) {
                self.nodes[j].wg.handle_datagram(from, &datagram, now);
            }
        }
        self.pump();
    }
}

/// A [`DatagramSink`] over one reused buffer, as a send batch is; its space
/// starts out dirty, so a sealer that relied on zeroed space would show.
#[derive(Default)]
pub(super) struct VecSink {
    buf: Vec<u8>,
    pub(super) sent: Vec<(SocketAddr, Vec<u8>)>,
    pub(super) rooms: Vec<usize>,
}

impl DatagramSink for VecSink {
    fn room(&mut self, len: usize) -> &mut [u8] {
        self.rooms.push(len);
        if self.buf.len() < len {
            self.buf.resize(len, 0xa5);
        }
        &mut self.buf[..len]
    }

    fn commit(&mut self, dst: SocketAddr, len: usize) {
        self.sent.push((dst, self.buf[..len].to_vec()));
    }
}

/// A minimal valid IPv4/UDP or IPv6/UDP packet (checksums correct for v4's
/// header; UDP checksum left 0, legal for IPv4, which is all the engine reads).
pub(super) fn udp_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (ip(src), ip(dst));
    let udp_len = 8 + payload.len();
    let mut p = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let c = icmp::checksum(&p, 0);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(udp_len as u16).to_be_bytes());
            p.extend_from_slice(&[17, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&6000u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Deterministic noise for the garbage tests (xorshift64*).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn wg_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Wg>();
}

#[test]
fn echo_helper_sanity() {
    let mut p = Vec::new();
    icmp::echo_request(ip(HOME_V4), ip(RELAY_V4), 1, 1, &mut p).unwrap();
    assert_eq!(icmp::parse_echo(&p).unwrap().kind, EchoKind::Request);
}
