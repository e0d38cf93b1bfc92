//! Handshake flood defences boringtun lacks: a token bucket per source IP
//! before the Diffie-Hellman, and the kernel's 50 initiations/s per peer.

use super::silence::{message, with_mac1, ATTACKER};
use super::*;

/// Initiations with a valid mac1 and random content: each one costs the
/// relay a Diffie-Hellman unless something stops it first.
fn forged_inits(n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| with_mac1(message(1, 148, rng), public(RELAY_KEY)))
        .collect()
}

#[test]
fn one_source_gets_20_dh_per_second_burst_5_and_a_peer_still_connects() {
    let mut net = Net::pair();
    let mut rng = Rng(7);
    let t0 = net.now;
    let attacker = sa(ATTACKER);

    // A burst: only 5 reach the Diffie-Hellman.
    for init in forged_inits(60, &mut rng) {
        net.nodes[RELAY].wg.handle_datagram(attacker, &init, t0);
    }
    let d = net.nodes[RELAY].wg.drops().clone();
    assert_eq!(
        (d.handshake_dh_attempts, d.handshake_source_limited),
        (5, 55),
        "{d:?}"
    );

    // Home, from its own address, completes a handshake in the middle of it.
    net.tick();
    assert!(net.nodes[RELAY]
        .wg
        .peer_stats(PeerId(0))
        .last_handshake
        .is_some());
    let up = udp_packet(HOME_V4, RELAY_V4, b"through the flood");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);

    // Sustained at 100/s for 0.8 s: 20/s get through, i.e. 16.
    for (i, init) in forged_inits(80, &mut rng).into_iter().enumerate() {
        let at = t0 + Duration::from_millis(10 * (i as u64 + 1));
        net.nodes[RELAY].wg.handle_datagram(attacker, &init, at);
    }
    let d = net.nodes[RELAY].wg.drops().clone();
    assert_eq!(d.handshake_dh_attempts, 5 + 1 + 16, "{d:?}");
    assert_eq!(d.handshake_source_limited, 55 + 64, "{d:?}");
    assert_eq!(d.unknown_peer, 5 + 16, "{d:?}");
    assert_eq!(d.cookie_replies_sent, 0, "{d:?}");
    assert!(
        net.nodes[RELAY].wg.poll_transmit().is_none(),
        "the flood got no answer"
    );
}

#[test]
fn one_peer_gets_at_most_50_initiations_per_second() {
    let mut net = Net::pair();
    let t0 = net.now;
    // Fresh, genuine initiations from home's own Tunn (newer timestamps each).
    let mut inits = Vec::new();
    for _ in 0..4 {
        let home = &mut net.nodes[HOME].wg;
        let slot = home.order[0];
        let peer = home.slots[slot].as_mut().unwrap();
        match peer
            .tunn
            .format_handshake_initiation(&mut home.scratch, true)
        {
            TunnResult::WriteToNetwork(init) => inits.push(init.to_vec()),
            _ => panic!("no initiation"),
        }
    }
    // From different addresses, so the per-source bucket is not what stops them.
    let relay = &mut net.nodes[RELAY].wg;
    let mut answered = Vec::new();
    for (i, (init, ms)) in inits.iter().zip([0u64, 0, 19, 20]).enumerate() {
        let from = SocketAddr::new(ip(&format!("198.51.100.{}", 10 + i)), 40000);
        relay.handle_datagram(from, init, t0 + Duration::from_millis(ms));
        answered.push(relay.poll_transmit().is_some());
    }
    assert_eq!(answered, [true, false, false, true]);
    let d = relay.drops().clone();
    assert_eq!(
        (d.handshake_peer_limited, d.handshake_dh_attempts),
        (2, 4),
        "{d:?}"
    );
}
