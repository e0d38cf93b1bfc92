//! Reload: unchanged peers keep their sessions; removed ones are gone;
//! a changed key starts over; a refused config changes nothing.

use super::hub::{hub_relay_config, laptop_config, LAPTOP, LAPTOP_UDP};
use super::*;
use crate::UpdateReport;

fn inits_on_wire(net: &Net) -> usize {
    net.wire
        .iter()
        .filter(|(_, _, d)| d.len() == 148 && d[0] == 1)
        .count()
}

#[test]
fn a_live_session_survives_adding_a_peer_and_changing_allowed_ips() {
    let mut net = Net::connected();
    let up = udp_packet(HOME_V4, RELAY_V4, b"before");
    net.send(HOME, &up);
    let before = net.nodes[RELAY].wg.peer_stats(PeerId(0));
    let inits = inits_on_wire(&net);

    // The laptop is added in front (home is renumbered) and home gets a LAN.
    let mut config = hub_relay_config(true);
    config.peers.swap(0, 1);
    config.peers[1].allowed_ips.push((ip("192.168.1.0"), 24));
    let now = net.now;
    let report = net.nodes[RELAY].wg.update(config, now).unwrap();
    assert_eq!(
        report,
        UpdateReport {
            kept: vec![PeerId(1)],
            added: vec![PeerId(0)],
            ..UpdateReport::default()
        }
    );
    let relay = &net.nodes[RELAY].wg;
    assert_eq!(relay.peer_id(&public(HOME_KEY)), Some(PeerId(1)));
    assert_eq!(relay.peer_id(&public(LAPTOP_KEY)), Some(PeerId(0)));
    assert_eq!(relay.peer_id(&public(99)), None);
    let kept = relay.peer_stats(PeerId(1));
    assert_eq!(kept.last_handshake, before.last_handshake);
    assert_eq!(kept.rx_bytes, before.rx_bytes);
    assert_eq!(
        kept.endpoint,
        Some(sa(HOME_UDP)),
        "the learned endpoint stays"
    );
    assert_eq!(kept.allowed_ips.len(), 3);

    // Both ways on the old session, from the new prefix too, no handshake.
    let lan = udp_packet("192.168.1.5", RELAY_V4, b"from home's LAN");
    net.send(HOME, &lan);
    let down = udp_packet(RELAY_V4, "192.168.1.5", b"to home's LAN");
    net.send(RELAY, &down);
    assert_eq!(net.nodes[RELAY].inbox, vec![up, lan]);
    assert_eq!(net.nodes[HOME].inbox, vec![down]);
    assert_eq!(inits_on_wire(&net), inits, "no new handshake");

    // The added peer works, and status lists both in config order.
    net.nodes
        .push(Node::new(laptop_config(), LAPTOP_UDP, net.now));
    net.tick();
    let to_relay = udp_packet("10.77.0.3", RELAY_V4, b"laptop");
    net.send(LAPTOP, &to_relay);
    assert_eq!(net.nodes[RELAY].inbox.last(), Some(&to_relay));
    let keys: Vec<_> = net.nodes[RELAY]
        .wg
        .peers()
        .map(|(id, key, _)| (id, key))
        .collect();
    assert_eq!(
        keys,
        [
            (PeerId(0), public(LAPTOP_KEY)),
            (PeerId(1), public(HOME_KEY))
        ]
    );
}

#[test]
fn a_removed_peer_is_gone() {
    let mut net = Net::connected();
    let mut config = relay_config_psk();
    config.peers.clear();
    let now = net.now;
    let report = net.nodes[RELAY].wg.update(config, now).unwrap();
    assert_eq!(report.removed, vec![public(HOME_KEY)]);
    assert_eq!(net.nodes[RELAY].wg.peer_count(), 0);
    assert_eq!(net.nodes[RELAY].wg.peers().count(), 0);

    net.send(HOME, &udp_packet(HOME_V4, RELAY_V4, b"anyone?"));
    assert!(net.nodes[RELAY].inbox.is_empty());
    assert_eq!(net.nodes[RELAY].wg.drops().unknown_index, 1);
    // Its handshakes find no peer and get no answer.
    net.now += Duration::from_secs(1);
    net.nodes[HOME].wg.handle_timeout(net.now);
    let slot = net.nodes[HOME].wg.order[0];
    let home = &mut net.nodes[HOME].wg;
    let peer = home.slots[slot].as_mut().unwrap();
    let TunnResult::WriteToNetwork(init) = peer
        .tunn
        .format_handshake_initiation(&mut home.scratch, true)
    else {
        panic!("no initiation")
    };
    let init = init.to_vec();
    let relay = &mut net.nodes[RELAY].wg;
    relay.handle_datagram(sa(HOME_UDP), &init, net.now);
    assert!(relay.poll_transmit().is_none());
    assert_eq!(relay.drops().unknown_peer, 1);
}

#[test]
fn a_changed_preshared_key_forces_a_new_session() {
    let mut net = Net::connected();
    let mut relay_cfg = relay_config_psk();
    relay_cfg.peers[0].preshared_key = Some([8; 32]);
    let now = net.now;
    let report = net.nodes[RELAY].wg.update(relay_cfg, now).unwrap();
    assert_eq!(report.restarted, vec![PeerId(0)]);
    assert!(report.kept.is_empty() && report.removed.is_empty());
    let stats = net.nodes[RELAY].wg.peer_stats(PeerId(0));
    assert_eq!((stats.last_handshake, stats.rx_bytes), (None, 0));

    // The old session is gone on the relay.
    net.send(HOME, &udp_packet(HOME_V4, RELAY_V4, b"old session"));
    assert!(net.nodes[RELAY].inbox.is_empty());
    assert_eq!(net.nodes[RELAY].wg.drops().unknown_index, 1);

    // Home gets the new key too: it handshakes again on its next tick.
    net.advance(Duration::from_secs(1));
    let mut home_cfg = home_config();
    home_cfg.peers[0].preshared_key = Some([8; 32]);
    let now = net.now;
    let report = net.nodes[HOME].wg.update(home_cfg, now).unwrap();
    assert_eq!(report.restarted, vec![PeerId(0)]);
    net.tick();
    assert!(
        net.nodes[RELAY]
            .wg
            .peer_stats(PeerId(0))
            .last_handshake
            .is_some(),
        "{:?} {:?}",
        net.nodes[RELAY].wg.drops(),
        net.nodes[HOME].wg.drops()
    );
    let up = udp_packet(HOME_V4, RELAY_V4, b"new session");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);
}

#[test]
fn a_new_private_key_restarts_everyone_and_a_refused_config_changes_nothing() {
    let mut net = Net::connected();
    let now = net.now;
    let mut bad = relay_config_psk();
    bad.peers.push(bad.peers[0].clone());
    assert!(matches!(
        net.nodes[RELAY].wg.update(bad, now),
        Err(WgError::DuplicatePeerKey {
            first: 0,
            second: 1
        })
    ));
    let up = udp_packet(HOME_V4, RELAY_V4, b"still fine");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);

    let mut rekeyed = relay_config_psk();
    rekeyed.private_key = private(42);
    let report = net.nodes[RELAY].wg.update(rekeyed, now).unwrap();
    assert!(report.private_key_changed);
    assert_eq!(report.restarted, vec![PeerId(0)]);
    assert_eq!(
        net.nodes[RELAY].wg.peer_stats(PeerId(0)).last_handshake,
        None
    );
}

#[test]
fn keepalive_changes_in_place_on_the_engine_clock() {
    let mut net = Net::connected();
    let keepalives = |net: &Net| {
        net.wire
            .iter()
            .filter(|(f, _, d)| *f == sa(HOME_UDP) && d.len() == 32 && d[0] == 4)
            .count()
    };
    let mut config = home_config();
    config.peers[0].persistent_keepalive = Some(2);
    // The handshake's confirmation is already one empty data message.
    let base = keepalives(&net);
    let keepalives = |net: &Net| keepalives(net) - base;
    let now = net.now;
    let report = net.nodes[HOME].wg.update(config, now).unwrap();
    assert_eq!(report.kept, vec![PeerId(0)]);
    assert_eq!(
        net.nodes[HOME]
            .wg
            .peer_stats(PeerId(0))
            .persistent_keepalive,
        Some(2)
    );
    net.advance(Duration::from_millis(1750));
    assert_eq!(keepalives(&net), 0);
    net.advance(Duration::from_millis(250));
    assert_eq!(keepalives(&net), 1);
    net.advance(Duration::from_secs(2));
    assert_eq!(keepalives(&net), 2);
    assert_eq!(net.nodes[RELAY].wg.drops().unknown_index, 0);
}

#[test]
fn a_removed_peers_slot_is_reused_only_after_quarantine() {
    let now = Instant::now();
    let mut relay = Wg::new(hub_relay_config(false), now).unwrap();
    let stats: Vec<_> = relay.peers().map(|(_, _, s)| s).collect();
    assert!(
        stats.iter().all(|s| s.last_handshake.is_none()),
        "none before a handshake"
    );
    assert_eq!(stats[0].allowed_ips, relay_config().peers[0].allowed_ips);
    let home_slot = relay.order[0];

    let only_laptop = |c: &mut WgConfig| {
        c.peers.remove(0);
    };
    let mut c = hub_relay_config(false);
    only_laptop(&mut c);
    relay.update(c, now).unwrap();
    // Home comes back at once: a new slot, so old sessions cannot match.
    relay.update(hub_relay_config(false), now).unwrap();
    assert_ne!(relay.order[0], home_slot);
    assert_eq!(relay.slots.len(), 3);

    let later = now + QUARANTINE;
    let mut c = hub_relay_config(false);
    only_laptop(&mut c);
    relay.update(c, later).unwrap();
    let mut c = hub_relay_config(false);
    c.peers[0].public_key = public(55);
    relay.update(c, later).unwrap();
    assert_eq!(
        relay.order[0], home_slot,
        "quarantine over: the first freed slot"
    );
    assert_eq!(relay.slots.len(), 3);
}
