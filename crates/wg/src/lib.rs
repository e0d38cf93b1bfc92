//! A sans-IO, multi-peer WireGuard engine.
//!
//! Bytes in, instructions out: the driver feeds UDP datagrams
//! ([`Wg::handle_datagram`]), IP packets from the TCP/IP stack
//! ([`Wg::handle_outbound`]) and the passing of time ([`Wg::handle_timeout`]),
//! then drains [`Wg::poll_transmit`] to the UDP socket and [`Wg::poll_inbound`]
//! to the stack. A driver that sends from one buffer has the stack's packets
//! sealed straight into it instead ([`Wg::seal_outbound`], [`DatagramSink`]). Nothing here owns a socket, a task or a clock of its own
//! (boringtun's `Tunn` still reads the clock for its protocol timers).
//!
//! On top of boringtun's point-to-point `Tunn` this crate adds what a device
//! needs and boringtun only has inside its feature-gated `device` module:
//! demultiplexing one socket to many peers, cryptokey routing both ways,
//! roaming, a shared handshake rate limiter, a timer cadence, and Pinhole's
//! own liveness probe ([`PROBE_IDLE`], [`PROBE_TIMEOUT`]) that brings a tunnel
//! back within seconds after the far side restarts. It also adds what no
//! boringtun fork has: per-source and per-peer limits on handshakes that reach
//! the Diffie-Hellman, routing between peers (a hub, off by default), and a
//! live reconfiguration ([`Wg::update`]) that keeps unchanged peers' sessions.
#![deny(missing_docs)]

mod allowed_ips;
mod engine;
mod icmp;
mod ip;
mod limiter;
mod peer;
mod pool;
mod route;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

pub use engine::{DatagramSink, Wg};
pub use peer::{PROBE_IDLE, PROBE_TIMEOUT};

/// One remote peer as the engine needs it: already parsed and validated by the
/// config layer, so the engine only checks what only it can (key sanity).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's x25519 public key: identifies it in handshakes.
    pub public_key: [u8; 32],
    /// Optional symmetric key mixed into the handshake (post-quantum hedge).
    pub preshared_key: Option<[u8; 32]>,
    /// Overlay prefixes this peer may send from and that we route to it.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Where to send until the peer roams; `None` for peers that dial us.
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives that hold a NAT mapping open; with an
    /// `endpoint` it also marks us as the dialing side and turns on the
    /// liveness probe.
    pub persistent_keepalive: Option<u16>,
}

impl fmt::Debug for PeerConfig {
    // Hand-written so a preshared key never lands in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("public_key", &Hex(&self.public_key))
            .field(
                "preshared_key",
                &self.preshared_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

/// Everything the engine needs to run one interface.
#[derive(Clone, PartialEq, Eq)]
pub struct WgConfig {
    /// Our x25519 private key.
    pub private_key: [u8; 32],
    /// Our overlay addresses: the source of liveness probes (the first one of
    /// the probe's address family is used).
    pub own_addresses: Vec<IpAddr>,
    /// The peers; a peer's position here is its [`PeerId`].
    pub peers: Vec<PeerConfig>,
    /// Act as a WireGuard hub: a decrypted packet whose destination is not one
    /// of `own_addresses` but lies in another peer's allowed IPs is encrypted
    /// again to that peer (TTL / hop limit decremented) instead of going to
    /// the stack. Off: such packets are dropped and counted
    /// ([`DropCounters::routing_disabled`]).
    pub route_between_peers: bool,
}

impl fmt::Debug for WgConfig {
    // Hand-written so the private key never lands in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgConfig")
            .field("private_key", &"<redacted>")
            .field("own_addresses", &self.own_addresses)
            .field("peers", &self.peers)
            .field("route_between_peers", &self.route_between_peers)
            .finish()
    }
}

/// Names a peer by its position in the [`WgConfig::peers`] the engine was last
/// given ([`Wg::new`] or [`Wg::update`]). An update renumbers peers to their
/// positions in the new config; map a public key to its current id with
/// [`Wg::peer_id`]. (Internally each peer also has a slot that never changes
/// while it lives: boringtun's session indexes carry it, so sessions survive
/// renumbering.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// One datagram to send on the UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The datagram; hand the Vec back with [`Wg::recycle`] once sent.
    pub payload: Vec<u8>,
}

/// What `pinhole status` shows for one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Where we currently send to it (configured, or learned by roaming).
    pub endpoint: Option<SocketAddr>,
    /// Wall-clock time of the last completed handshake (for seconds since the
    /// epoch: `duration_since(UNIX_EPOCH)`); `None` before the first one, and
    /// kept after the session expires, as `wg show` does.
    pub last_handshake: Option<SystemTime>,
    /// IP bytes received from it (decrypted).
    pub rx_bytes: u64,
    /// IP bytes sent to it (before encryption).
    pub tx_bytes: u64,
    /// The configured persistent keepalive interval, in seconds.
    pub persistent_keepalive: Option<u16>,
    /// The configured allowed IPs (for `wg show`'s UAPI output).
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// What [`Wg::update`] did, for the reload log line. Ids are positions in the
/// new config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    /// Peers whose sessions, counters and learned endpoint were kept (their
    /// allowed IPs, keepalive and configured endpoint may have changed).
    pub kept: Vec<PeerId>,
    /// Peers that were present before but start over without a session,
    /// because their preshared key or our private key changed.
    pub restarted: Vec<PeerId>,
    /// Peers that are new.
    pub added: Vec<PeerId>,
    /// Public keys of the peers that are gone: their sessions are dropped and
    /// their datagrams now count as unknown.
    pub removed: Vec<[u8; 32]>,
    /// Our private key changed: every session was dropped.
    pub private_key_changed: bool,
}

/// Counters of everything the engine dropped, per reason, plus a few event
/// counters. The data plane never logs per packet above debug level, so these
/// are how an operator (and a test) sees what happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Datagrams that are no WireGuard message (wrong type or size), and
    /// decrypted or outbound IP packets with a malformed or truncated header.
    pub malformed: u64,
    /// Handshake messages whose mac1 is wrong: not meant for our key.
    pub bad_mac: u64,
    /// Handshake initiations that do not decrypt to any configured peer's key.
    pub unknown_peer: u64,
    /// Messages whose receiver index names no peer.
    pub unknown_index: u64,
    /// Messages for a known peer that fail authentication (AEAD tag, key).
    pub unauthenticated: u64,
    /// Replays: a data counter already seen or too old, or a handshake
    /// timestamp not newer than the last one.
    pub replayed: u64,
    /// Messages for a session we do not have (e.g. the sender's state predates
    /// our restart) or an unexpected handshake response.
    pub no_session: u64,
    /// Decrypted packets whose inner source is outside the sender's allowed_ips.
    pub not_allowed_source: u64,
    /// Outbound packets whose destination no peer's allowed_ips cover.
    pub no_route: u64,
    /// Packets for a peer whose endpoint we do not know yet.
    pub no_endpoint: u64,
    /// Packets dropped because the driver did not drain `poll_transmit` /
    /// `poll_inbound` and the queue hit its bound.
    pub queue_full: u64,
    /// Anything else boringtun refused.
    pub other: u64,
    /// Decrypted packets for another peer's allowed IPs while
    /// `route_between_peers` is off.
    pub routing_disabled: u64,
    /// Decrypted packets (with `route_between_peers` on) whose destination
    /// routes back to the peer that sent them.
    pub routing_loop: u64,
    /// Packets to route between peers whose TTL / hop limit was 1 or less.
    pub ttl_exceeded: u64,
    /// Handshake messages dropped by the per-source-IP token bucket (20/s,
    /// burst 5, IPv6 per /64) before any Diffie-Hellman.
    pub handshake_source_limited: u64,
    /// Handshake initiations dropped because the same peer's previous one was
    /// accepted less than 1/50 s ago (the kernel's INITIATIONS_PER_SECOND).
    pub handshake_peer_limited: u64,
    /// Not a drop: cookie replies sent because handshakes arrive faster than
    /// the rate limit (WireGuard's DoS defence).
    pub cookie_replies_sent: u64,
    /// Not a drop: liveness probes sent.
    pub probes_sent: u64,
    /// Not a drop: probe echo replies received (absorbed, not passed on).
    pub probe_replies: u64,
    /// Not a drop: handshakes forced because a probe went unanswered.
    pub forced_handshakes: u64,
    /// Not a drop: packets passed from one peer to another (hub routing).
    pub routed: u64,
    /// Not a drop: handshake initiations that reached the Diffie-Hellman that
    /// identifies the sender (the expensive step the limits above protect).
    pub handshake_dh_attempts: u64,
}

impl DropCounters {
    /// Every drop reason with its count, named as in the fields, for status and metrics.
    pub fn drops(&self) -> [(&'static str, u64); 17] {
        [
            ("malformed", self.malformed),
            ("bad_mac", self.bad_mac),
            ("unknown_peer", self.unknown_peer),
            ("unknown_index", self.unknown_index),
            ("unauthenticated", self.unauthenticated),
            ("replayed", self.replayed),
            ("no_session", self.no_session),
            ("not_allowed_source", self.not_allowed_source),
            ("no_route", self.no_route),
            ("no_endpoint", self.no_endpoint),
            ("queue_full", self.queue_full),
            ("other", self.other),
            ("routing_disabled", self.routing_disabled),
            ("routing_loop", self.routing_loop),
            ("ttl_exceeded", self.ttl_exceeded),
            ("handshake_source_limited", self.handshake_source_limited),
            ("handshake_peer_limited", self.handshake_peer_limited),
        ]
    }

    /// The event counters (not drops), named as in the fields.
    pub fn events(&self) -> [(&'static str, u64); 6] {
        [
            ("cookie_replies_sent", self.cookie_replies_sent),
            ("probes_sent", self.probes_sent),
            ("probe_replies", self.probe_replies),
            ("forced_handshakes", self.forced_handshakes),
            ("routed", self.routed),
            ("handshake_dh_attempts", self.handshake_dh_attempts),
        ]
    }
}

/// Why [`Wg::new`] or [`Wg::update`] refused a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WgError {
    /// boringtun's session index keeps the peer in 24 bits.
    #[error("too many peers: {count} (at most {max})", max = engine::MAX_PEERS)]
    TooManyPeers {
        /// How many peers the config has.
        count: usize,
    },
    /// Two peers with one key: handshakes could not tell them apart.
    #[error("peer {second} has the same public key as peer {first}")]
    DuplicatePeerKey {
        /// The index of the first peer with that key.
        first: usize,
        /// The index of the repeat.
        second: usize,
    },
    /// A low-order public key makes the shared secret all zeros: anyone could
    /// impersonate that peer.
    #[error("peer {peer}: the public key is a low-order point (shared secret would be all zeros)")]
    LowOrderKey {
        /// The offending peer's index.
        peer: usize,
    },
    /// A peer with our own key would make us talk to ourselves.
    #[error("peer {peer}: the public key is this interface's own public key")]
    OwnKey {
        /// The offending peer's index.
        peer: usize,
    },
    /// A prefix length longer than the address.
    #[error("peer {peer}: allowed ip {addr}/{prefix} has an invalid prefix length")]
    InvalidPrefix {
        /// The offending peer's index.
        peer: usize,
        /// The address as given.
        addr: IpAddr,
        /// The prefix length as given.
        prefix: u8,
    },
    /// The same prefix for two peers: routing would be ambiguous.
    #[error("peer {peer}: allowed ip {addr}/{prefix} is already routed to peer {other}")]
    DuplicateAllowedIp {
        /// The peer that repeats the prefix.
        peer: usize,
        /// The peer that has it first.
        other: usize,
        /// The address as given.
        addr: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
}

/// Shows a key as short hex in Debug output (public keys only).
struct Hex<'a>(&'a [u8; 32]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}
