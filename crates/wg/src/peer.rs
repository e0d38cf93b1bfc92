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
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;

use crate::allowed_ips::{mask_v4, mask_v6};
use crate::icmp::{Echo, EchoKind, PROBE_ICMP_ID};

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
    /// Where we send now: configured, then the source of the peer's last
    /// authenticated datagram.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) configured_endpoint: Option<SocketAddr>,
    pub(crate) persistent_keepalive: Option<u16>,
    /// Present only on the dialing side (endpoint and keepalive configured).
    pub(crate) liveness: Option<Liveness>,
    /// The dialing side starts a handshake on the first tick instead of
    /// waiting for the first keepalive: service is up in one round trip after
    /// a (re)start.
    pub(crate) initial_handshake_pending: bool,
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
