//! One peer's state beside its boringtun `Tunn`: where to send, and the
//! liveness probe that notices when the far side has forgotten our session.
//!
//! Why the probe exists: when the relay restarts it forgets every session, but
//! the home peer's session still looks valid, and WireGuard's own timers only
//! re-handshake when *data* goes unanswered (keepalives are never answered, so
//! an idle home waits until its session expires: about two minutes). The dialing
//! side therefore asks a question every peer answers: a ping to the peer's
//! overlay address, sent through the tunnel. No reply within [`PROBE_TIMEOUT`]
//! means the session is dead on the far side, so we handshake again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::Tunn;

use crate::allowed_ips::{mask_v4, mask_v6};
use crate::icmp::{Echo, EchoKind, PROBE_ICMP_ID};
use crate::limiter::MIN_INITIATION_INTERVAL;
use crate::{PeerConfig, PeerId, PeerStats};

/// How long the dialing side tolerates hearing nothing authenticated from a
/// peer before it sends a liveness probe. 10 s matches WireGuard's
/// KEEPALIVE_TIMEOUT; with [`PROBE_TIMEOUT`] it bounds detection of a
/// restarted peer at 15 s, inside the 30 s recovery budget even if the first
/// forced handshake is lost, at the cost of one small ping per 10 s of silence.
pub const PROBE_IDLE: Duration = Duration::from_secs(10);

/// How long to wait for anything authenticated after a probe before forcing a
/// new handshake. 5 s matches WireGuard's REKEY_TIMEOUT: a round trip that has
/// not completed in 5 s is, for WireGuard, a lost one.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a probe goes: our overlay address to the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeTarget {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
}

/// What the liveness state machine asks the engine to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LivenessAction {
    Nothing,
    /// Send an echo request with this sequence number.
    Probe(ProbeTarget, u16),
    /// The peer stayed silent after a probe: handshake again.
    ForceHandshake,
}

/// The probe cycle of one dialing peer: silent for [`PROBE_IDLE`] → probe;
/// still silent [`PROBE_TIMEOUT`] later → forced handshake; repeat. Anything
/// authenticated from the peer restarts the cycle.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// `None` when we lack an own address of the peer's family: then the
    /// forced handshake itself is the probe (after the same total silence).
    target: Option<ProbeTarget>,
    /// Last authenticated datagram, or last forced handshake.
    anchor: Instant,
    probe_sent: Option<Instant>,
    seq: u16,
}

impl Liveness {
    pub(crate) fn new(target: Option<ProbeTarget>, now: Instant) -> Self {
        Self {
            target,
            anchor: now,
            probe_sent: None,
            seq: 0,
        }
    }

    /// Something authenticated arrived from the peer: it is alive.
    pub(crate) fn on_authenticated(&mut self, now: Instant) {
        self.anchor = now;
        self.probe_sent = None;
    }

    pub(crate) fn poll(&mut self, now: Instant) -> LivenessAction {
        if let Some(sent) = self.probe_sent {
            if now.saturating_duration_since(sent) < PROBE_TIMEOUT {
                return LivenessAction::Nothing;
            }
            self.probe_sent = None;
            self.anchor = now;
            return LivenessAction::ForceHandshake;
        }
        if now.saturating_duration_since(self.anchor) < PROBE_IDLE {
            return LivenessAction::Nothing;
        }
        self.probe_sent = Some(now);
        match self.target {
            Some(target) => {
                self.seq = self.seq.wrapping_add(1);
                LivenessAction::Probe(target, self.seq)
            }
            None => LivenessAction::Nothing,
        }
    }

    /// New addresses after a reload; the cycle itself carries on.
    pub(crate) fn set_target(&mut self, target: Option<ProbeTarget>) {
        self.target = target;
    }

    /// Whether `echo` answers one of our probes (so it is not passed on).
    pub(crate) fn is_probe_reply(&self, echo: &Echo) -> bool {
        self.target.is_some_and(|t| {
            echo.kind == EchoKind::Reply
                && echo.id == PROBE_ICMP_ID
                && echo.src == t.dst
                && echo.dst == t.src
        })
    }
}

/// One configured peer.
pub(crate) struct Peer {
    pub(crate) tunn: Tunn,
    /// Its position in the current config (renumbered by reloads).
    pub(crate) id: PeerId,
    pub(crate) public_key: [u8; 32],
    pub(crate) preshared_key: Option<[u8; 32]>,
    pub(crate) allowed_ips: Vec<(IpAddr, u8)>,
    /// Where we send now: configured, then the source of the peer's last
    /// authenticated datagram.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) configured_endpoint: Option<SocketAddr>,
    /// Ours, not the `Tunn`'s (which cannot change it after creation), so a
    /// reload can change it without dropping the session.
    pub(crate) persistent_keepalive: Option<u16>,
    pub(crate) next_keepalive: Option<Instant>,
    /// Present only on the dialing side (endpoint and keepalive configured).
    pub(crate) liveness: Option<Liveness>,
    /// The dialing side starts a handshake on the first tick instead of
    /// waiting for the first keepalive: service is up in one round trip after
    /// a (re)start.
    pub(crate) initial_handshake_pending: bool,
    /// When its last initiation was accepted (the per-peer flood cap).
    pub(crate) last_initiation: Option<Instant>,
    /// Wall-clock time of the last completed handshake, kept after the
    /// session expires (as `wg show` does).
    pub(crate) last_handshake: Option<SystemTime>,
}

impl Peer {
    pub(crate) fn new(
        tunn: Tunn,
        id: PeerId,
        pc: &PeerConfig,
        own: &[IpAddr],
        now: Instant,
    ) -> Peer {
        let mut peer = Peer {
            tunn,
            id,
            public_key: pc.public_key,
            preshared_key: pc.preshared_key,
            allowed_ips: Vec::new(),
            endpoint: pc.endpoint,
            configured_endpoint: pc.endpoint,
            persistent_keepalive: None,
            next_keepalive: None,
            liveness: None,
            initial_handshake_pending: false,
            last_initiation: None,
            last_handshake: None,
        };
        peer.reconfigure(id, pc, own, now);
        peer
    }

    /// Applies a (re)loaded config to a peer with the same keys: allowed IPs,
    /// keepalive, endpoint and probe change; the session stays.
    pub(crate) fn reconfigure(
        &mut self,
        id: PeerId,
        pc: &PeerConfig,
        own: &[IpAddr],
        now: Instant,
    ) {
        debug_assert_eq!(self.public_key, pc.public_key);
        self.id = id;
        self.allowed_ips.clone_from(&pc.allowed_ips);
        let keepalive = pc.persistent_keepalive.filter(|&k| k > 0);
        if keepalive != self.persistent_keepalive {
            self.persistent_keepalive = keepalive;
            self.next_keepalive = keepalive.map(|k| now + Duration::from_secs(k.into()));
        }
        if pc.endpoint != self.configured_endpoint {
            self.configured_endpoint = pc.endpoint;
            // A newly configured endpoint is the operator's word; without one
            // we keep what roaming taught us.
            if pc.endpoint.is_some() {
                self.endpoint = pc.endpoint;
            }
        }
        let dialing = pc.endpoint.is_some() && keepalive.is_some();
        if !dialing {
            self.liveness = None;
            self.initial_handshake_pending = false;
            return;
        }
        let target = probe_target(own, &pc.allowed_ips);
        if target.is_none() {
            tracing::debug!(
                peer = id.0,
                "no own address of the peer's family: the liveness probe is a handshake"
            );
        }
        match &mut self.liveness {
            Some(liveness) => liveness.set_target(target),
            None => {
                self.liveness = Some(Liveness::new(target, now));
                self.initial_handshake_pending = self.tunn.time_since_last_handshake().is_none();
            }
        }
    }

    /// Whether an initiation now would exceed the kernel's 50 per second.
    pub(crate) fn initiation_too_soon(&self, now: Instant) -> bool {
        self.last_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
    }

    /// Whether a persistent keepalive is due; if so, schedules the next one.
    pub(crate) fn keepalive_due(&mut self, now: Instant) -> bool {
        match (self.persistent_keepalive, self.next_keepalive) {
            (Some(k), Some(at)) if now >= at => {
                self.next_keepalive = Some(now + Duration::from_secs(k.into()));
                true
            }
            _ => false,
        }
    }

    pub(crate) fn stats(&self) -> PeerStats {
        let (_, tx_bytes, rx_bytes, _loss, _rtt) = self.tunn.stats();
        PeerStats {
            endpoint: self.endpoint,
            last_handshake: self.last_handshake,
            rx_bytes: rx_bytes as u64,
            tx_bytes: tx_bytes as u64,
            persistent_keepalive: self.persistent_keepalive,
            allowed_ips: self.allowed_ips.clone(),
        }
    }
}

/// Picks the probe's addresses: IPv4 if we and the peer both have one, else
/// IPv6. The peer side is its first allowed prefix of that family: the address
/// itself for a host prefix, else the network's first host.
pub(crate) fn probe_target(own: &[IpAddr], allowed: &[(IpAddr, u8)]) -> Option<ProbeTarget> {
    [true, false].into_iter().find_map(|v4| {
        let src = *own.iter().find(|a| a.is_ipv4() == v4)?;
        let dst = allowed
            .iter()
            .filter(|(a, _)| a.is_ipv4() == v4)
            .find_map(|&(a, p)| first_host(a, p))?;
        Some(ProbeTarget { src, dst })
    })
}

/// The host a prefix most likely names; `None` for a default route (it names
/// the whole internet, not a peer).
fn first_host(addr: IpAddr, prefix: u8) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(a) => match prefix {
            32 => Some(addr),
            1..=31 => Some(Ipv4Addr::from(mask_v4(u32::from(a), prefix)?.wrapping_add(1)).into()),
            _ => None,
        },
        IpAddr::V6(a) => match prefix {
            128 => Some(addr),
            1..=127 => Some(Ipv6Addr::from(mask_v6(u128::from(a), prefix)?.wrapping_add(1)).into()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn target_prefers_v4_and_uses_first_host() {
        let own = [ip("fd00::2"), ip("10.77.0.2")];
        let t = probe_target(&own, &[(ip("fd00::1"), 128), (ip("10.77.0.0"), 24)]).unwrap();
        assert_eq!(
            t,
            ProbeTarget {
                src: ip("10.77.0.2"),
                dst: ip("10.77.0.1")
            }
        );
        let t = probe_target(&own, &[(ip("10.77.0.9"), 32)]).unwrap();
        assert_eq!(t.dst, ip("10.77.0.9"));
        // Only v6 on the peer side: ICMPv6.
        let t = probe_target(&own, &[(ip("fd00:1::"), 64)]).unwrap();
        assert_eq!(
            t,
            ProbeTarget {
                src: ip("fd00::2"),
                dst: ip("fd00:1::1")
            }
        );
        // A default route names no host; no own v6 address: nothing.
        assert_eq!(probe_target(&own, &[(ip("0.0.0.0"), 0)]), None);
        assert_eq!(
            probe_target(&[ip("10.0.0.1")], &[(ip("fd00::1"), 128)]),
            None
        );
    }

    #[test]
    fn cycle_probe_then_force_then_probe_again() {
        let t0 = Instant::now();
        let target = ProbeTarget {
            src: ip("10.0.0.2"),
            dst: ip("10.0.0.1"),
        };
        let mut l = Liveness::new(Some(target), t0);
        assert_eq!(
            l.poll(t0 + PROBE_IDLE - Duration::from_millis(1)),
            LivenessAction::Nothing
        );
        assert_eq!(l.poll(t0 + PROBE_IDLE), LivenessAction::Probe(target, 1));
        let t1 = t0 + PROBE_IDLE;
        assert_eq!(l.poll(t1 + PROBE_TIMEOUT / 2), LivenessAction::Nothing);
        assert_eq!(l.poll(t1 + PROBE_TIMEOUT), LivenessAction::ForceHandshake);
        let t2 = t1 + PROBE_TIMEOUT;
        assert_eq!(l.poll(t2 + Duration::from_secs(1)), LivenessAction::Nothing);
        assert_eq!(l.poll(t2 + PROBE_IDLE), LivenessAction::Probe(target, 2));
        // An answer resets the cycle: no forced handshake.
        l.on_authenticated(t2 + PROBE_IDLE + Duration::from_millis(50));
        assert_eq!(
            l.poll(t2 + PROBE_IDLE + PROBE_TIMEOUT),
            LivenessAction::Nothing
        );
        // A clock that goes backwards does not panic or fire.
        assert_eq!(l.poll(t0), LivenessAction::Nothing);
    }

    #[test]
    fn without_target_the_handshake_is_the_probe() {
        let t0 = Instant::now();
        let mut l = Liveness::new(None, t0);
        assert_eq!(l.poll(t0 + PROBE_IDLE), LivenessAction::Nothing);
        assert_eq!(
            l.poll(t0 + PROBE_IDLE + PROBE_TIMEOUT),
            LivenessAction::ForceHandshake
        );
    }
}
