//! The recovery story: restarts on either side, and the liveness probe.

use super::*;
use crate::icmp::PROBE_ICMP_ID;
use crate::{PROBE_IDLE, PROBE_TIMEOUT};

fn handshake_inits_from(net: &Net, from: SocketAddr) -> Vec<SocketAddr> {
    net.wire
        .iter()
        .filter(|(f, _, d)| *f == from && d.len() == 148 && d[0] == 1)
        .map(|(_, to, _)| *to)
        .collect()
}

fn assert_data_flows(net: &mut Net) {
    let up = udp_packet(HOME_V4, RELAY_V4, b"up");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox.pop(), Some(up), "home -> relay");
    let down = udp_packet(RELAY_V4, HOME_V4, b"down");
    net.send(RELAY, &down);
    assert_eq!(net.nodes[HOME].inbox.pop(), Some(down), "relay -> home");
}

#[test]
fn after_a_relay_restart_service_is_back_within_30s_without_touching_home() {
    let mut net = Net::connected();
    assert_data_flows(&mut net);

    // The relay restarts: same config, no memory of any session.
    let restart = net.now;
    net.nodes[RELAY] = Node::new(relay_config_psk(), RELAY_UDP, restart);
    net.nodes[RELAY].answers_ping = true;
    while net.nodes[RELAY]
        .wg
        .peer_stats(PeerId(0))
        .last_handshake
        .is_none()
    {
        assert!(
            net.now - restart < Duration::from_secs(30),
            "not recovered within 30 s"
        );
        net.advance(Duration::from_millis(250));
    }
    let took = net.now - restart;
    assert!(
        took >= PROBE_IDLE + PROBE_TIMEOUT && took <= PROBE_IDLE + PROBE_TIMEOUT + TICK,
        "{took:?}"
    );
    let d = net.nodes[HOME].wg.drops().clone();
    assert_eq!((d.probes_sent, d.forced_handshakes), (1, 1), "{d:?}");
    // The restarted relay dropped the stale-session probe silently.
    assert!(net.nodes[RELAY].wg.drops().no_session >= 1);
    assert_eq!(
        net.nodes[RELAY].wg.peer_stats(PeerId(0)).endpoint,
        Some(sa(HOME_UDP))
    );
    assert_data_flows(&mut net);
}

#[test]
fn after_a_home_restart_the_first_tick_reconnects() {
    let mut net = Net::connected();
    // A second later (the relay takes at most 50 initiations per second from
    // one peer), home comes back from a new NAT mapping.
    net.advance(Duration::from_secs(1));
    let now = net.now;
    net.nodes[HOME] = Node::new(home_config(), "198.51.100.7:41234", now);
    net.tick();
    assert_eq!(
        net.nodes[RELAY].wg.peer_stats(PeerId(0)).endpoint,
        Some(sa("198.51.100.7:41234"))
    );
    assert_data_flows(&mut net);
}

#[test]
fn probes_are_valid_echo_requests_and_answers_keep_the_session() {
    let mut net = Net::connected();
    let inits_before = handshake_inits_from(&net, sa(HOME_UDP)).len();

    // Unanswered for now: look at the probe the relay's stack receives.
    net.advance(PROBE_IDLE);
    let probe = net.nodes[RELAY]
        .inbox
        .pop()
        .expect("a probe after PROBE_IDLE of silence");
    let echo = icmp::parse_echo(&probe).expect("a valid echo request, checksums verified");
    assert_eq!(
        (echo.kind, echo.id, echo.src, echo.dst),
        (EchoKind::Request, PROBE_ICMP_ID, ip(HOME_V4), ip(RELAY_V4))
    );
    // The relay's stack answers it: the home absorbs the reply.
    let reply = icmp::echo_reply_to(&probe).unwrap();
    net.send(RELAY, &reply);
    assert!(
        net.nodes[HOME].inbox.is_empty(),
        "probe replies are not passed to the stack"
    );
    assert_eq!(net.nodes[HOME].wg.drops().probe_replies, 1);

    // From here the relay answers every probe: a minute with no re-handshake.
    net.nodes[RELAY].answers_ping = true;
    net.advance(Duration::from_secs(60));
    let d = net.nodes[HOME].wg.drops().clone();
    assert!(d.probes_sent >= 6, "{d:?}");
    assert_eq!(d.probe_replies, d.probes_sent, "{d:?}");
    assert_eq!(d.forced_handshakes, 0, "{d:?}");
    assert_eq!(net.nodes[RELAY].pings_answered as u64, d.probes_sent - 1);
    assert_eq!(handshake_inits_from(&net, sa(HOME_UDP)).len(), inits_before);
    assert!(net.nodes[HOME].inbox.is_empty());
}

#[test]
fn traffic_from_the_peer_postpones_probes() {
    let mut net = Net::connected();
    for _ in 0..8 {
        net.advance(PROBE_IDLE / 2);
        net.send(RELAY, &udp_packet(RELAY_V4, HOME_V4, b"busy"));
    }
    assert_eq!(net.nodes[HOME].wg.drops().probes_sent, 0);
}

#[test]
fn v6_only_homes_probe_with_icmpv6() {
    let now = Instant::now();
    let mut home = home_config();
    home.own_addresses = vec![ip(HOME_V6)];
    let mut net = Net {
        nodes: vec![
            Node::new(relay_config_psk(), RELAY_UDP, now),
            Node::new(home, HOME_UDP, now),
        ],
        now,
        wire: Vec::new(),
    };
    net.tick();
    net.nodes[RELAY].answers_ping = true;
    net.advance(PROBE_IDLE + PROBE_TIMEOUT + Duration::from_secs(1));
    assert_eq!(net.nodes[RELAY].pings_answered, 1);
    let d = net.nodes[HOME].wg.drops().clone();
    assert_eq!(
        (d.probes_sent, d.probe_replies, d.forced_handshakes),
        (1, 1, 0),
        "{d:?}"
    );
}

#[test]
fn a_silent_peer_gets_forced_handshakes_to_its_configured_endpoint_forever() {
    let mut net = Net::connected();
    // The relay's packets start coming from elsewhere: home follows (roaming).
    let moved = sa("192.0.2.50:51820");
    net.nodes[RELAY].addr = moved;
    net.send(
        RELAY,
        &udp_packet(RELAY_V4, HOME_V4, b"from the new address"),
    );
    assert_eq!(
        net.nodes[HOME].wg.peer_stats(PeerId(0)).endpoint,
        Some(moved)
    );

    // Then the relay vanishes.
    net.nodes[RELAY].addr = sa("192.0.2.222:1");
    let start = net.now;
    net.advance(PROBE_IDLE + PROBE_TIMEOUT);
    // The forced handshake goes to the configured endpoint, not the roamed one.
    assert_eq!(
        net.nodes[HOME].wg.peer_stats(PeerId(0)).endpoint,
        Some(sa(RELAY_UDP))
    );
    assert_eq!(
        handshake_inits_from(&net, sa(HOME_UDP)).last(),
        Some(&sa(RELAY_UDP))
    );
    // And keeps trying on the same cadence, with a probe before each.
    net.advance(Duration::from_secs(60) - (net.now - start));
    let d = net.nodes[HOME].wg.drops().clone();
    assert_eq!((d.probes_sent, d.forced_handshakes), (4, 4), "{d:?}");
}
