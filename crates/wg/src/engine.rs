//! The engine: one UDP socket's worth of WireGuard, many peers.
//!
//! Inbound order of checks, cheapest first, so a flood of garbage costs little
//! and is never answered: parse the message type and size; verify mac1 with
//! the shared rate limiter (which may answer with a cookie when under load,
//! WireGuard's own behaviour); find the peer (static key for an initiation,
//! receiver index for everything else); let the peer's `Tunn` authenticate
//! and decrypt; check the inner source against that peer's allowed IPs.
//! Only after all of that does the peer's endpoint move (roaming).
//! Handshake messages also pass a token bucket per source IP before any
//! Diffie-Hellman, and initiations a per-peer cap before the `Tunn` sees them.
//!
//! Peers live in slots: a slot number is the upper 24 bits of every session
//! index boringtun hands out for that peer, so it never changes while the
//! peer lives, and a removed peer's slot is not reused for [`QUARANTINE`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::allowed_ips::AllowedIps;
use crate::icmp::{self, PROBE_ICMP_ID};
use crate::ip::{self, PROTO_ICMP, PROTO_ICMPV6};
use crate::limiter::SourceLimiter;
use crate::peer::{Liveness, LivenessAction, Peer};
use crate::pool::{BufPool, MAX_BUFFER};
use crate::route::{self, Route};
use crate::{DropCounters, PeerId, PeerStats, Transmit};

mod outbound;
pub use outbound::DatagramSink;
mod reload;
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
/// How long a removed peer's slot stays unused: boringtun erases all keys
/// 3 × REJECT_AFTER_TIME after the last handshake, so by then no live session
/// anywhere can still carry the slot in its index.
pub(crate) const QUARANTINE: Duration = Duration::from_secs(540);

/// A multi-peer WireGuard interface without I/O; see the crate docs for the
/// driver loop.
pub struct Wg {
    static_private: StaticSecret,
    static_public: PublicKey,
    /// One limiter for all peers: load is a property of the socket, not of a peer.
    rate_limiter: Arc<RateLimiter>,
    /// Per-source token buckets for handshakes that passed the limiter above.
    sources: SourceLimiter,
    /// Peers by slot; `None` for free or quarantined slots.
    slots: Vec<Option<Peer>>,
    /// Slot of each [`PeerId`] (the config order).
    order: Vec<usize>,
    /// Freed slots, oldest first, with when they were freed.
    retired: VecDeque<(usize, Instant)>,
    /// Public key to slot.
    by_key: HashMap<[u8; 32], usize>,
    /// Allowed IPs to slot.
    routes: AllowedIps<usize>,
    own_addresses: Vec<IpAddr>,
    route_between_peers: bool,
    scratch: Vec<u8>,
    out: Outbox,
    next_tick: Instant,
    last_limiter_reset: Instant,
}

impl std::fmt::Debug for Wg {
    // Hand-written: the keys stay out of logs, the counters go in.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wg")
            .field("peers", &self.order.len())
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
        let packet = self.pool.copy_of(packet);
        self.deliver_owned(packet);
    }

    fn deliver_owned(&mut self, packet: Vec<u8>) {
        if self.inbound.len() >= MAX_QUEUE {
            self.drops.queue_full += 1;
            self.pool.put(packet);
            return;
        }
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
    /// Takes one UDP datagram received from `from`. Whatever it provokes is
    /// queued for [`Wg::poll_transmit`] and [`Wg::poll_inbound`]; nothing is
    /// ever queued in answer to an unauthenticated datagram, except a cookie
    /// reply to `from` when handshakes arrive faster than the rate limit.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        if datagram.len() > SCRATCH_LEN {
            // Larger than any UDP payload: refused before a buffer is sized for
            // it (or the scratch buffer is handed to boringtun for it).
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
        let is_init = matches!(packet, Packet::HandshakeInit(_));
        let is_handshake = is_init || matches!(packet, Packet::HandshakeResponse(_));
        // Both handshake messages cost a Diffie-Hellman; mac1 (and mac2 when
        // under load) passed, so the source is worth a token.
        if is_handshake && !self.sources.allow(from.ip(), now) {
            self.out.drops.handshake_source_limited += 1;
            tracing::trace!(%from, "handshake over the per-source rate");
            return;
        }
        let found = match &packet {
            Packet::HandshakeInit(init) => {
                self.out.drops.handshake_dh_attempts += 1;
                parse_handshake_anon(&self.static_private, &self.static_public, init)
                    .ok()
                    .and_then(|half| self.by_key.get(&half.peer_static_public).copied())
                    .ok_or(Miss::UnknownPeer)
            }
            Packet::HandshakeResponse(p) => self.slot_of(p.receiver_idx),
            Packet::PacketCookieReply(p) => self.slot_of(p.receiver_idx),
            Packet::PacketData(p) => self.slot_of(p.receiver_idx),
        };
        let slot = match found {
            Ok(slot) => slot,
            Err(miss) => {
                match miss {
                    Miss::UnknownPeer => self.out.drops.unknown_peer += 1,
                    Miss::UnknownIndex => self.out.drops.unknown_index += 1,
                }
                tracing::trace!(%from, ?miss, "datagram for no configured peer");
                return;
            }
        };
        let Some(Some(peer)) = self.slots.get_mut(slot) else {
            return; // by_key and slot_of only name live slots
        };
        if is_init && peer.initiation_too_soon(now) {
            self.out.drops.handshake_peer_limited += 1;
            tracing::trace!(%from, peer = peer.id.0, "initiations faster than 50/s");
            return;
        }
        let id = peer.id.0;
        let mut flush = false;
        let mut forward = None;
        // Decrypted straight into a buffer that goes to the stack as it is; the
        // scratch buffer would cost a copy of every packet.
        let mut rx = self.out.pool.sized(datagram.len());
        let rx_at = rx.as_ptr() as usize;
        let mut deliver = None;
        let authenticated = match peer.tunn.decapsulate(Some(from.ip()), datagram, &mut rx) {
            TunnResult::Done => !is_cookie_reply,
            TunnResult::Err(e) => {
                tracing::trace!(%from, peer = id, error = ?e, "datagram refused");
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
                let inbound = Inbound {
                    routes: &self.routes,
                    own: &self.own_addresses,
                    between_peers: self.route_between_peers,
                    sender: slot,
                    id,
                    liveness: peer.liveness.as_ref(),
                };
                match inbound.accept(&mut self.out, packet) {
                    Accepted::Deliver(len) if packet.as_ptr() as usize == rx_at => {
                        deliver = Some(len);
                    }
                    // boringtun decrypts to the start of the buffer; should that
                    // change, the packet is copied rather than lost.
                    Accepted::Deliver(len) => self.out.deliver(&packet[..len]),
                    Accepted::Forward(to, copy) => forward = Some((to, copy)),
                    Accepted::Nothing => {}
                }
                true
            }
        };
        match deliver {
            Some(len) => {
                rx.truncate(len);
                self.out.deliver_owned(rx);
            }
            None => self.out.pool.put(rx),
        }
        if !authenticated {
            return;
        }
        if peer.endpoint != Some(from) {
            tracing::debug!(peer = id, from = ?peer.endpoint, to = %from, "peer endpoint moved");
            peer.endpoint = Some(from);
        }
        if is_handshake {
            tracing::debug!(peer = id, %from, "handshake message accepted");
            peer.last_handshake = Some(SystemTime::now());
        }
        if is_init {
            peer.last_initiation = Some(now);
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
        if let Some((to, packet)) = forward {
            self.out.drops.routed += 1;
            self.encapsulate_to(to, &packet);
            self.out.pool.put(packet);
        }
    }

    /// The live slot a receiver index names.
    fn slot_of(&self, receiver_idx: u32) -> Result<usize, Miss> {
        let slot = (receiver_idx >> 8) as usize;
        match self.slots.get(slot) {
            Some(Some(_)) => Ok(slot),
            _ => Err(Miss::UnknownIndex),
        }
    }

    /// Runs timers: boringtun's per-peer timers (rekey, handshake retries),
    /// persistent keepalives, the rate limiters' upkeep, and the liveness
    /// probes. Cheap to call early: it does nothing before [`Wg::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        // From now, not from the missed deadline: a late driver gets no burst.
        self.next_tick = now
            + if self.order.is_empty() {
                IDLE_TICK
            } else {
                TICK
            };
        if now.saturating_duration_since(self.last_limiter_reset) >= RATE_LIMITER_PERIOD {
            self.rate_limiter.reset_count();
            self.sources.sweep(now);
            self.last_limiter_reset = now;
        }
        for peer in self.slots.iter_mut().flatten() {
            let id = peer.id.0;
            match peer.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(datagram) => {
                    self.out.transmit_to(peer.endpoint, datagram)
                }
                // Expired: boringtun gave up handshaking; normal for an absent peer.
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(peer = id, error = ?e, "timer error"),
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
            if peer.keepalive_due(now) {
                // An empty packet; without a session it starts a handshake.
                if let TunnResult::WriteToNetwork(keepalive) =
                    peer.tunn.encapsulate(&[], &mut self.scratch)
                {
                    self.out.transmit_to(peer.endpoint, keepalive);
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
                        tracing::trace!(peer = id, dst = %target.dst, seq, "liveness probe");
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
                    tracing::debug!(peer = id, endpoint = ?peer.configured_endpoint, "peer silent after a probe: new handshake");
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

    /// When [`Wg::handle_timeout`] must next run: at once after `new` or
    /// `update` (dialing peers start their handshake on the first tick), then 250 ms after each
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

    /// Status of one peer, for `pinhole status`. `last_handshake` is wall-clock
    /// time, `None` until the first handshake completes, and kept after the
    /// session expires.
    ///
    /// # Panics
    /// If `peer` is not below [`Wg::peer_count`] (a caller bug).
    pub fn peer_stats(&self, peer: PeerId) -> PeerStats {
        self.peer(peer).stats()
    }

    /// Every peer in config order, with its public key and status: what
    /// `pinhole status` and `wg show` print.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, [u8; 32], PeerStats)> + '_ {
        (0..self.order.len()).map(|i| {
            let p = self.peer(PeerId(i));
            (PeerId(i), p.public_key, p.stats())
        })
    }

    /// The current id of the peer with this public key (ids follow the order
    /// of the last config given; see [`PeerId`]).
    pub fn peer_id(&self, public_key: &[u8; 32]) -> Option<PeerId> {
        let slot = *self.by_key.get(public_key)?;
        self.slots.get(slot)?.as_ref().map(|p| p.id)
    }

    fn peer(&self, id: PeerId) -> &Peer {
        match self.slots.get(self.order[id.0]) {
            Some(Some(p)) => p,
            _ => unreachable!("order names only live slots"),
        }
    }

    /// How many peers the engine has (valid [`PeerId`]s are below this).
    pub fn peer_count(&self) -> usize {
        self.order.len()
    }

    /// What was dropped, per reason, since start (reloads keep counting).
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

/// What the way in needs to know about the sender and the routing table.
struct Inbound<'a> {
    routes: &'a AllowedIps<usize>,
    own: &'a [IpAddr],
    between_peers: bool,
    sender: usize,
    id: usize,
    liveness: Option<&'a Liveness>,
}

impl Inbound<'_> {
    /// Cryptokey routing on the way in: passes a decrypted packet on only if
    /// its source belongs to the peer that sent it; absorbs replies to our
    /// probes; then says to deliver it to the stack (its length by its
    /// header), or returns it (a copy, TTL decremented) with the slot of the
    /// peer to route it to.
    fn accept(&self, out: &mut Outbox, packet: &[u8]) -> Accepted {
        let Some(header) = ip::parse(packet) else {
            out.drops.malformed += 1;
            return Accepted::Nothing;
        };
        if self.routes.lookup(header.src) != Some(self.sender) {
            out.drops.not_allowed_source += 1;
            tracing::trace!(peer = self.id, src = %header.src, "inner source outside the peer's allowed ips");
            return Accepted::Nothing;
        }
        if let Some(liveness) = self.liveness {
            if matches!(header.protocol, PROTO_ICMP | PROTO_ICMPV6)
                && icmp::parse_echo(packet).is_some_and(|echo| liveness.is_probe_reply(&echo))
            {
                out.drops.probe_replies += 1;
                return Accepted::Nothing;
            }
        }
        let packet = &packet[..header.total_len];
        match route::route(
            &header,
            self.sender,
            self.own,
            self.routes,
            self.between_peers,
        ) {
            Route::Stack => return Accepted::Deliver(header.total_len),
            Route::Disabled => {
                out.drops.routing_disabled += 1;
                tracing::trace!(peer = self.id, dst = %header.dst, "for another peer; route_between_peers is off");
            }
            Route::Loop => {
                out.drops.routing_loop += 1;
                tracing::trace!(peer = self.id, dst = %header.dst, "routes back to its sender");
            }
            Route::Peer(to) => {
                let mut copy = out.pool.copy_of(packet);
                if route::decrement_ttl(&mut copy, &header) {
                    return Accepted::Forward(to, copy);
                }
                out.drops.ttl_exceeded += 1;
                out.pool.put(copy);
            }
        }
        Accepted::Nothing
    }
}

/// What becomes of a decrypted packet.
enum Accepted {
    /// Dropped (and counted) or absorbed.
    Nothing,
    /// For the stack: the first `len` bytes.
    Deliver(usize),
    /// For the peer in the slot, as this copy.
    Forward(usize, Vec<u8>),
}
