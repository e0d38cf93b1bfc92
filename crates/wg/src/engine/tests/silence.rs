//! "Silence is a virtue": nothing unauthenticated gets an answer, and none of
//! it hurts the tunnel.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};

use super::*;

pub(super) const ATTACKER: &str = "203.0.113.9:6666";

/// Fills in a valid mac1 for `responder`, as any sender that knows the
/// responder's public key can: well-shaped but forged.
pub(super) fn with_mac1(mut msg: Vec<u8>, responder: [u8; 32]) -> Vec<u8> {
    let key: [u8; 32] = Blake2s256::new()
        .chain_update(b"mac1----")
        .chain_update(responder)
        .finalize()
        .into();
    let n = msg.len();
    let mut mac = Blake2sMac::<U16>::new_from_slice(&key).unwrap();
    Update::update(&mut mac, &msg[..n - 32]);
    let mac1: [u8; 16] = mac.finalize_fixed().into();
    msg[n - 32..n - 16].copy_from_slice(&mac1);
    msg[n - 16..].fill(0);
    msg
}

pub(super) fn message(kind: u8, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut m = rng.bytes(len);
    m[..4].copy_from_slice(&[kind, 0, 0, 0]);
    m
}

/// Feeds every datagram from the attacker and asserts nothing comes out.
fn assert_silent(wg: &mut Wg, datagrams: &[Vec<u8>], now: Instant) {
    assert_silent_paced(wg, datagrams, now, Duration::ZERO);
}

/// As [`assert_silent`], one datagram per `pace`, so a pace of 50 ms stays
/// inside the per-source handshake rate; returns the time after the last.
fn assert_silent_paced(
    wg: &mut Wg,
    datagrams: &[Vec<u8>],
    mut now: Instant,
    pace: Duration,
) -> Instant {
    for d in datagrams {
        now += pace;
        wg.handle_datagram(sa(ATTACKER), d, now);
        assert!(
            wg.poll_transmit().is_none(),
            "answered a {}-byte datagram {:02x?}",
            d.len(),
            &d[..d.len().min(8)]
        );
        assert!(
            wg.poll_inbound().is_none(),
            "delivered a {}-byte datagram",
            d.len()
        );
    }
    now
}

/// Garbage of every length and shape, for a fresh relay and for one with a
/// live session; then the tunnel still works.
#[test]
fn garbage_gets_no_answer() {
    let mut rng = Rng(0x5eed);
    let mut junk: Vec<Vec<u8>> = (0..=200).map(|n| rng.bytes(n)).collect();
    for n in [1000, 1420, 1500, 9000, 65_535] {
        junk.push(rng.bytes(n));
    }
    // Every message type at every length up to 200, plus the exact sizes.
    for kind in 0..=5u8 {
        for n in 4..=200 {
            junk.push(message(kind, n, &mut rng));
        }
    }
    let now = Instant::now();
    let mut fresh = Wg::new(relay_config(), now).unwrap();
    assert_silent(&mut fresh, &junk, now);

    let mut net = Net::connected();
    // Oversized data messages for the live session's indexes must not panic
    // (boringtun panics when its output buffer is too small).
    for idx in 0..8u32 {
        let mut huge = message(4, 100_000, &mut rng);
        huge[4..8].copy_from_slice(&idx.to_le_bytes());
        junk.push(huge);
    }
    assert_silent(&mut net.nodes[RELAY].wg, &junk, now);
    assert_silent(&mut net.nodes[HOME].wg, &junk, now);
    let d = net.nodes[RELAY].wg.drops().clone();
    assert!(
        d.malformed > 0 && d.bad_mac > 0 && d.unknown_index > 0,
        "{d:?}"
    );
    assert_eq!(d.cookie_replies_sent, 0);
    let up = udp_packet(HOME_V4, RELAY_V4, b"still here");
    net.send(HOME, &up);
    assert_eq!(net.nodes[RELAY].inbox, vec![up]);
}

/// Real handshake messages cut short or extended, forged initiations with a
/// valid mac1, messages for unknown indexes, and replays.
#[test]
fn truncated_forged_unknown_and_replayed_messages_get_no_answer() {
    let mut net = Net::pair();
    // Capture home's real initiation without delivering it.
    net.nodes[HOME].wg.handle_timeout(net.now);
    let init = net.nodes[HOME].wg.poll_transmit().unwrap().payload;
    assert_eq!(init.len(), 148);
    let now = net.now;
    let relay = &mut net.nodes[RELAY].wg;

    let mut bad: Vec<Vec<u8>> = (0..init.len()).map(|n| init[..n].to_vec()).collect();
    let mut longer = init.clone();
    longer.push(0);
    bad.push(longer);
    let mut rng = Rng(42);
    let relay_public = public(RELAY_KEY);
    for _ in 0..30 {
        // Correct size, random content: fails mac1.
        bad.push(message(1, 148, &mut rng));
        // Correct size and a valid mac1, random inside: fails to decrypt.
        bad.push(with_mac1(message(1, 148, &mut rng), relay_public));
        // A real initiation with its ephemeral key altered, mac1 recomputed.
        let mut altered = init.clone();
        altered[8..40].copy_from_slice(&rng.bytes(32));
        bad.push(with_mac1(altered, relay_public));
        // Responses, cookie replies and data for our peer's index and others.
        let mut resp = message(2, 92, &mut rng);
        resp[8..12].copy_from_slice(&(rng.next() as u32 & 0xff).to_le_bytes());
        bad.push(with_mac1(resp, relay_public));
        let mut cookie = message(3, 64, &mut rng);
        cookie[4..8].copy_from_slice(&(rng.next() as u32 & 0xff).to_le_bytes());
        bad.push(cookie);
        for idx in [0u32, 1, 0x100, 0xffff_ff00, rng.next() as u32] {
            let mut data = message(4, 32 + (rng.next() % 64) as usize, &mut rng);
            data[4..8].copy_from_slice(&idx.to_le_bytes());
            bad.push(data);
        }
    }
    // A public key that is not configured, with a real-looking initiation:
    // a stranger's handshake reaches the Diffie-Hellman and stops there.
    let mut stranger = Wg::new(
        WgConfig {
            private_key: private(77),
            own_addresses: vec![],
            peers: vec![PeerConfig {
                public_key: relay_public,
                preshared_key: None,
                allowed_ips: vec![],
                endpoint: Some(sa(RELAY_UDP)),
                persistent_keepalive: Some(25),
            }],
            route_between_peers: false,
        },
        now,
    )
    .unwrap();
    stranger.handle_timeout(now);
    bad.push(stranger.poll_transmit().unwrap().payload);

    // Paced at the per-source handshake rate, so every forgery gets as far
    // as it can (the rate limit itself is tested in `flood`).
    let now = assert_silent_paced(relay, &bad, now, Duration::from_millis(50));
    let d = relay.drops().clone();
    assert!(
        d.unknown_peer >= 61 && d.bad_mac >= 30 && d.unknown_index >= 30,
        "{d:?}"
    );
    assert_eq!(d.handshake_source_limited, 0, "{d:?}");
    assert!(d.no_session + d.unauthenticated >= 30, "{d:?}");
    assert_eq!(
        relay.peer_stats(PeerId(0)).endpoint,
        None,
        "nothing above moved the endpoint"
    );

    // The real initiation is still accepted; replaying it afterwards is not.
    relay.handle_datagram(sa(HOME_UDP), &init, now);
    assert!(
        relay.poll_transmit().is_some(),
        "the real initiation is answered"
    );
    relay.handle_datagram(sa(ATTACKER), &init, now + Duration::from_secs(1));
    assert!(
        relay.poll_transmit().is_none(),
        "a replayed initiation is not"
    );
    assert_eq!(relay.drops().replayed, 1);
    assert_eq!(relay.peer_stats(PeerId(0)).endpoint, Some(sa(HOME_UDP)));
}

/// Under a flood of handshakes the only answer is a 64-byte cookie reply to
/// the source (WireGuard's own DoS defence, no amplification).
#[test]
fn a_handshake_flood_gets_only_cookie_replies() {
    let mut net = Net::pair();
    net.nodes[HOME].wg.handle_timeout(net.now);
    let init = net.nodes[HOME].wg.poll_transmit().unwrap().payload;
    let now = net.now;
    let relay = &mut net.nodes[RELAY].wg;
    relay.handle_datagram(sa(HOME_UDP), &init, now);
    while relay.poll_transmit().is_some() {}
    let mut cookies = 0;
    for _ in 0..300 {
        relay.handle_datagram(sa(ATTACKER), &init, now);
        while let Some(t) = relay.poll_transmit() {
            assert_eq!(
                (t.dst, t.payload.len(), t.payload[0]),
                (sa(ATTACKER), 64, 3)
            );
            cookies += 1;
        }
    }
    assert!(cookies > 0);
    assert_eq!(relay.drops().cookie_replies_sent, cookies);
}
