//! The engine: one UDP socket's worth of WireGuard, many peers.
//!
//! Inbound order of checks, cheapest first, so a flood of garbage costs little
//! and is never answered: parse the message type and size; verify mac1 with
//! the shared rate limiter (which may answer with a cookie when under load,
//! WireGuard's own behaviour); find the peer (static key for an initiation,
//! receiver index for everything else); let the peer's `Tunn` authenticate
//! and decrypt; check the inner source against that peer's allowed IPs.
//! Only after all of that does the peer's endpoint move (roaming).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::allowed_ips::{AllowedIps, InsertError};
use crate::icmp::{self, PROBE_ICMP_ID};
use crate::ip::{self, PROTO_ICMP, PROTO_ICMPV6};
use crate::peer::{probe_target, Liveness, LivenessAction, Peer};
use crate::pool::{BufPool, MAX_BUFFER};
use crate::{DropCounters, PeerId, PeerStats, Transmit, WgConfig, WgError};

#[cfg(test)]
mod tests;

/// boringtun puts the peer index in the upper 24 bits of a session index.
pub(crate) const MAX_PEERS: usize = 1 << 24;
/// How often boringtun's per-peer timers and our probes run: boringtun's
/// timers have one-second granularity, so 250 ms is precise enough without
/// waking the driver every millisecond.
const TICK: Duration = Duration::from_millis(250);
/// With no peers there are no timers; wake only to reset the rate limiter.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// The shared rate limiter counts handshakes per period; boringtun only
/// resets limiters it owns, so we reset ours this often.
const RATE_LIMITER_PERIOD: Duration = Duration::from_secs(1);
/// Handshake messages per second before mac2 (a cookie) is demanded:
/// boringtun's device default. The limiter is given twice this, because each
/// handshake message passes it twice: our mac1 pre-check, which must run
/// before the Diffie-Hellman that identifies the peer, and again inside
/// `Tunn::decapsulate` (boringtun keeps its verified-packet entry private).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// boringtun panics when `dst` is too small; this fits the largest datagram
/// plus a handshake's worth of overhead, allocated once.
const SCRATCH_LEN: usize = MAX_BUFFER;
/// Bound on undrained output, so a stuck driver costs memory, not all of it.
const MAX_QUEUE: usize = 4096;
/// Bound on flushing a peer's queued packets after a handshake (boringtun
/// queues at most 256); a guard against looping, never reached in practice.
const MAX_FLUSH: usize = 1024;
/// The first byte of a cookie reply (message type 3, little-endian).
const COOKIE_REPLY_TYPE: u8 = 3;

/// A multi-peer WireGuard interface without I/O; see the crate docs for the
/// driver loop.
pub struct Wg {
    static_private: StaticSecret,
    static_public: PublicKey,
    /// One limiter for all peers: load is a property of the socket, not of a peer.
    rate_limiter: Arc<RateLimiter>,
    peers: Vec<Peer>,
    by_key: HashMap<[u8; 32], usize>,
    routes: AllowedIps<usize>,
    scratch: Vec<u8>,
    out: Outbox,
    next_tick: Instant,
    last_limiter_reset: Instant,
}

impl std::fmt::Debug for Wg {
    // Hand-written: the keys stay out of logs, the counters go in.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wg")
            .field("peers", &self.peers.len())
            .field("next_tick", &self.next_tick)
            .field("drops", &self.out.drops)
            .finish_non_exhaustive()
    }
}

/// Everything produced for the driver, kept apart from the peers so both can
/// be borrowed at once while a `TunnResult` borrows the scratch buffer.
#[derive(Default)]
struct Outbox {
    transmits: VecDeque<Transmit>,
    inbound: VecDeque<Vec<u8>>,
    pool: BufPool,
    drops: DropCounters,
}

impl Outbox {
    fn transmit(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if self.transmits.len() >= MAX_QUEUE {
            self.drops.queue_full += 1;
            return;
        }
        let payload = self.pool.copy_of(datagram);
        self.transmits.push_back(Transmit { dst, payload });
    }

    /// Sends to the peer's endpoint, or counts the drop when it has none yet.
    fn transmit_to(&mut self, endpoint: Option<SocketAddr>, datagram: &[u8]) {
        match endpoint {
            Some(dst) => self.transmit(dst, datagram),
            None => self.drops.no_endpoint += 1,
        }
    }

    fn deliver(&mut self, packet: &[u8]) {
        if self.inbound.len() >= MAX_QUEUE {
            self.drops.queue_full += 1;
            return;
        }
        let packet = self.pool.copy_of(packet);
        self.inbound.push_back(packet);
    }

    fn count(&mut self, error: &WireGuardError) {
        use WireGuardError as E;
        let d = &mut self.drops;
        match error {
            E::InvalidMac | E::InvalidAeadTag | E::WrongKey | E::InvalidTai64nTimestamp => {
                d.unauthenticated += 1
            }
            E::DuplicateCounter | E::InvalidCounter | E::WrongTai64nTimestamp => d.replayed += 1,
            E::NoCurrentSession | E::WrongIndex | E::UnexpectedPacket => d.no_session += 1,
            E::InvalidPacket | E::IncorrectPacketLength | E::WrongPacketType => d.malformed += 1,
            _ => d.other += 1,
        }
    }
}

impl Wg {
    /// Builds the engine; refuses keys that would make the interface insecure
    /// or ambiguous (low-order, duplicate, our own) and unroutable prefixes.
    pub fn new(config: WgConfig, now: Instant) -> Result<Wg, WgError> {
        if config.peers.len() >= MAX_PEERS {
            return Err(WgError::TooManyPeers {
                count: config.peers.len(),
            });
        }
        let static_private = StaticSecret::from(config.private_key);
        let static_public = PublicKey::from(&static_private);
        let rate_limiter = Arc::new(RateLimiter::new(&static_public, 2 * HANDSHAKE_RATE_LIMIT));
        let mut peers = Vec::with_capacity(config.peers.len());
        let mut by_key = HashMap::with_capacity(config.peers.len());
        let mut routes = AllowedIps::default();

        for (i, pc) in config.peers.iter().enumerate() {
            if pc.public_key == *static_public.as_bytes() {
                return Err(WgError::OwnKey { peer: i });
            }
            let peer_public = PublicKey::from(pc.public_key);
            if !static_private
                .diffie_hellman(&peer_public)
                .was_contributory()
            {
                return Err(WgError::LowOrderKey { peer: i });
            }
            if let Some(&first) = by_key.get(&pc.public_key) {
                return Err(WgError::DuplicatePeerKey { first, second: i });
            }
            by_key.insert(pc.public_key, i);
            for &(addr, prefix) in &pc.allowed_ips {
                routes.insert(addr, prefix, i).map_err(|e| match e {
                    InsertError::InvalidPrefix => WgError::InvalidPrefix {
                        peer: i,
                        addr,
                        prefix,
                    },
                    InsertError::Exists(other) => WgError::DuplicateAllowedIp {
                        peer: i,
                        other,
                        addr,
                        prefix,
                    },
                })?;
            }
            let keepalive = pc.persistent_keepalive.filter(|&k| k > 0);
            // Checked against MAX_PEERS above.
            let index = u32::try_from(i).map_err(|_| WgError::TooManyPeers {
                count: config.peers.len(),
            })?;
            let tunn = Tunn::new(
                static_private.clone(),
                peer_public,
                pc.preshared_key,
                keepalive,
                index,
                Some(Arc::clone(&rate_limiter)),
            );
            let dialing = pc.endpoint.is_some() && keepalive.is_some();
            let liveness = dialing.then(|| {
                let target = probe_target(&config.own_addresses, &pc.allowed_ips);
                if target.is_none() {
                    tracing::debug!(
                        peer = i,
                        "no own address of the peer's family: the liveness probe is a handshake"
                    );
                }
                Liveness::new(target, now)
            });
            peers.push(Peer {
                tunn,
                endpoint: pc.endpoint,
                configured_endpoint: pc.endpoint,
                persistent_keepalive: keepalive,
                liveness,
                initial_handshake_pending: dialing,
            });
        }

        Ok(Wg {
            static_private,
            static_public,
            rate_limiter,
            peers,
            by_key,
            routes,
            scratch: vec![0u8; SCRATCH_LEN],
            out: Outbox::default(),
            next_tick: now,
            last_limiter_reset: now,
        })
    }

    /// Takes one UDP datagram received from `from`. Whatever it provokes is
    /// queued for [`Wg::poll_transmit`] and [`Wg::poll_inbound`]; nothing is
    /// ever queued in answer to an unauthenticated datagram, except a cookie
    /// reply to `from` when handshakes arrive faster than the rate limit.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        if datagram.len() > SCRATCH_LEN {
            // Larger than any UDP payload; boringtun would panic decrypting it
            // into the scratch buffer.
            self.out.drops.malformed += 1;
            return;
        }
        let mut cookie = [0u8; 64];
        let packet = match self
            .rate_limiter
            .verify_packet(Some(from.ip()), datagram, &mut cookie)
        {
            Ok(packet) => packet,
            Err(TunnResult::WriteToNetwork(reply)) => {
                self.out.drops.cookie_replies_sent += 1;
                self.out.transmit(from, reply);
                return;
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                self.out.drops.bad_mac += 1;
                tracing::trace!(%from, "handshake message with a bad mac1");
                return;
            }
            Err(TunnResult::Err(e)) => {
                tracing::trace!(%from, len = datagram.len(), error = ?e, "not a WireGuard message");
                self.out.count(&e);
                return;
            }
            Err(_) => {
                self.out.drops.other += 1;
                return;
            }
        };
        let is_cookie_reply = matches!(packet, Packet::PacketCookieReply(_));
        let is_handshake = matches!(
            packet,
            Packet::HandshakeInit(_) | Packet::HandshakeResponse(_)
        );
        let peer_index = |receiver_idx: u32| {
            let i = (receiver_idx >> 8) as usize;
            (i < self.peers.len()).then_some(i)
        };
        let found = match &packet {
            Packet::HandshakeInit(init) => {
                parse_handshake_anon(&self.static_private, &self.static_public, init)
                    .ok()
                    .and_then(|half| self.by_key.get(&half.peer_static_public).copied())
                    .ok_or(Miss::UnknownPeer)
            }
            Packet::HandshakeResponse(p) => peer_index(p.receiver_idx).ok_or(Miss::UnknownIndex),
            Packet::PacketCookieReply(p) => peer_index(p.receiver_idx).ok_or(Miss::UnknownIndex),
            Packet::PacketData(p) => peer_index(p.receiver_idx).ok_or(Miss::UnknownIndex),
        };
        let idx = match found {
            Ok(idx) => idx,
            Err(miss) => {
                match miss {
                    Miss::UnknownPeer => self.out.drops.unknown_peer += 1,
                    Miss::UnknownIndex => self.out.drops.unknown_index += 1,
                }
                tracing::trace!(%from, ?miss, "datagram for no configured peer");
                return;
            }
        };

        let peer = &mut self.peers[idx];
        let mut flush = false;
        let authenticated =
            match peer
                .tunn
                .decapsulate(Some(from.ip()), datagram, &mut self.scratch)
            {
                TunnResult::Done => !is_cookie_reply,
                TunnResult::Err(e) => {
                    tracing::trace!(%from, peer = idx, error = ?e, "datagram refused");
                    self.out.count(&e);
                    false
                }
                TunnResult::WriteToNetwork(reply) if reply.first() == Some(&COOKIE_REPLY_TYPE) => {
                    // The limiter tipped into "under load" between our check and the Tunn's.
                    self.out.drops.cookie_replies_sent += 1;
                    self.out.transmit(from, reply);
                    false
                }
                TunnResult::WriteToNetwork(reply) => {
                    self.out.transmit(from, reply);
                    flush = true;
                    true
                }
                TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                    accept_inbound(
                        &mut self.out,
                        &self.routes,
                        idx,
                        peer.liveness.as_ref(),
                        packet,
                    );
                    true
                }
            };
        if !authenticated {
            return;
        }
        if peer.endpoint != Some(from) {
            tracing::debug!(peer = idx, from = ?peer.endpoint, to = %from, "peer endpoint moved");
            peer.endpoint = Some(from);
        }
        if is_handshake {
            tracing::debug!(peer = idx, %from, "handshake message accepted");
        }
        if let Some(liveness) = &mut peer.liveness {
            liveness.on_authenticated(now);
        }
        if flush {
            for _ in 0..MAX_FLUSH {
                match peer.tunn.decapsulate(None, &[], &mut self.scratch) {
                    TunnResult::WriteToNetwork(queued) => self.out.transmit(from, queued),
                    _ => break,
                }
            }
        }
    }

    /// Takes one IP packet from the stack and encrypts it to the peer whose
    /// allowed IPs hold its destination (longest prefix). A packet without a
    /// route, or for a peer we cannot reach yet, is dropped and counted.
    pub fn handle_outbound(&mut self, ip_packet: &[u8], now: Instant) {
        let _ = now; // the Tunn reads its own clock; kept for a uniform sans-IO API
        let Some(header) = ip::parse(ip_packet) else {
            self.out.drops.malformed += 1;
            return;
        };
        let Some(idx) = self.routes.lookup(header.dst) else {
            self.out.drops.no_route += 1;
            tracing::trace!(dst = %header.dst, "no peer routes this destination");
            return;
        };
        let peer = &mut self.peers[idx];
        if peer.endpoint.is_none() {
            self.out.drops.no_endpoint += 1;
            return;
        }
        let packet = &ip_packet[..header.total_len];
        match peer.tunn.encapsulate(packet, &mut self.scratch) {
            TunnResult::WriteToNetwork(datagram) => self.out.transmit_to(peer.endpoint, datagram),
            TunnResult::Err(e) => self.out.count(&e),
            // Done: queued inside the Tunn until the handshake completes.
            _ => {}
        }
    }

    /// Runs timers: boringtun's per-peer timers (rekey, keepalive, handshake
    /// retries), the rate limiter's reset, and the liveness probes. Cheap to
    /// call early: it does nothing before [`Wg::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        // From now, not from the missed deadline: a late driver gets no burst.
        self.next_tick = now
            + if self.peers.is_empty() {
                IDLE_TICK
            } else {
                TICK
            };
        if now.saturating_duration_since(self.last_limiter_reset) >= RATE_LIMITER_PERIOD {
            self.rate_limiter.reset_count();
            self.last_limiter_reset = now;
        }
        for (idx, peer) in self.peers.iter_mut().enumerate() {
            match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(datagram) => {
                    self.out.transmit_to(peer.endpoint, datagram)
                }
                // Expired: boringtun gave up handshaking; normal for an absent peer.
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(peer = idx, error = ?e, "timer error"),
                _ => {}
            }
            if std::mem::take(&mut peer.initial_handshake_pending) {
                if let TunnResult::WriteToNetwork(init) = peer
                    .tunn
                    .format_handshake_initiation(&mut self.scratch, false)
                {
                    self.out.transmit_to(peer.endpoint, init);
                }
            }
            let action = match &mut peer.liveness {
                Some(liveness) => liveness.poll(now),
                None => LivenessAction::Nothing,
            };
            match action {
                LivenessAction::Nothing => {}
                LivenessAction::Probe(target, seq) => {
                    let mut probe = self.out.pool.take();
                    if icmp::echo_request(target.src, target.dst, PROBE_ICMP_ID, seq, &mut probe)
                        .is_some()
                    {
                        self.out.drops.probes_sent += 1;
                        tracing::trace!(peer = idx, dst = %target.dst, seq, "liveness probe");
                        match peer.tunn.encapsulate(&probe, &mut self.scratch) {
                            TunnResult::WriteToNetwork(datagram) => {
                                self.out.transmit_to(peer.endpoint, datagram)
                            }
                            TunnResult::Err(e) => self.out.count(&e),
                            _ => {}
                        }
                    }
                    self.out.pool.put(probe);
                }
                LivenessAction::ForceHandshake => {
                    self.out.drops.forced_handshakes += 1;
                    tracing::debug!(peer = idx, endpoint = ?peer.configured_endpoint, "peer silent after a probe: new handshake");
                    peer.endpoint = peer.configured_endpoint;
                    if let TunnResult::WriteToNetwork(init) = peer
                        .tunn
                        .format_handshake_initiation(&mut self.scratch, true)
                    {
                        self.out.transmit_to(peer.endpoint, init);
                    }
                }
            }
        }
    }

    /// When [`Wg::handle_timeout`] must next run: at once after `new` (dialing
    /// peers start their handshake on the first tick), then 250 ms after each
    /// tick while any peer exists (1 s with none).
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// The next datagram to send on the UDP socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next decrypted IP packet for the stack; its source is already
    /// checked against the sending peer's allowed IPs.
    pub fn poll_inbound(&mut self) -> Option<Vec<u8>> {
        self.out.inbound.pop_front()
    }

    /// Status of one peer, for `pinhole status`.
    ///
    /// # Panics
    /// If `peer` is not an index into the configured peers (a caller bug).
    pub fn peer_stats(&self, peer: PeerId) -> PeerStats {
        let p = &self.peers[peer.0];
        let (since_handshake, tx_bytes, rx_bytes, _loss, _rtt) = p.tunn.stats();
        PeerStats {
            endpoint: p.endpoint,
            last_handshake: since_handshake.and_then(|d| SystemTime::now().checked_sub(d)),
            rx_bytes: rx_bytes as u64,
            tx_bytes: tx_bytes as u64,
            persistent_keepalive: p.persistent_keepalive,
        }
    }

    /// How many peers the engine has (valid [`PeerId`]s are below this).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// What was dropped, per reason, since start.
    pub fn drops(&self) -> &DropCounters {
        &self.out.drops
    }

    /// Hands back a payload from [`Wg::poll_transmit`] or [`Wg::poll_inbound`]
    /// so the next packet reuses its allocation (the pool is small and bounded).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.out.pool.put(buf);
    }
}

/// Why a datagram found no peer.
#[derive(Debug, Clone, Copy)]
enum Miss {
    UnknownPeer,
    UnknownIndex,
}

/// Cryptokey routing on the way in: passes a decrypted packet on only if its
/// source belongs to the peer that sent it; absorbs replies to our probes.
fn accept_inbound(
    out: &mut Outbox,
    routes: &AllowedIps<usize>,
    idx: usize,
    liveness: Option<&Liveness>,
    packet: &[u8],
) {
    let Some(header) = ip::parse(packet) else {
        out.drops.malformed += 1;
        return;
    };
    if routes.lookup(header.src) != Some(idx) {
        out.drops.not_allowed_source += 1;
        tracing::trace!(peer = idx, src = %header.src, "inner source outside the peer's allowed ips");
        return;
    }
    if let Some(liveness) = liveness {
        if matches!(header.protocol, PROTO_ICMP | PROTO_ICMPV6)
            && icmp::parse_echo(packet).is_some_and(|echo| liveness.is_probe_reply(&echo))
        {
            out.drops.probe_replies += 1;
            return;
        }
    }
    out.deliver(&packet[..header.total_len]);
}
