//! Building the engine from a config, and applying a changed config to a
//! running one without dropping the peers that did not change.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};

use super::{Outbox, Wg, HANDSHAKE_RATE_LIMIT, MAX_PEERS, QUARANTINE, SCRATCH_LEN};
use crate::allowed_ips::{AllowedIps, InsertError};
use crate::limiter::SourceLimiter;
use crate::peer::Peer;
use crate::{PeerId, UpdateReport, WgConfig, WgError};

impl Wg {
    /// Builds the engine; refuses keys that would make the interface insecure
    /// or ambiguous (low-order, duplicate, our own) and unroutable prefixes.
    pub fn new(config: WgConfig, now: Instant) -> Result<Wg, WgError> {
        let static_private = StaticSecret::from(config.private_key);
        let static_public = PublicKey::from(&static_private);
        let rate_limiter = Arc::new(RateLimiter::new(&static_public, 2 * HANDSHAKE_RATE_LIMIT));
        let mut wg = Wg {
            static_private,
            static_public,
            rate_limiter,
            sources: SourceLimiter::default(),
            slots: Vec::new(),
            order: Vec::new(),
            retired: VecDeque::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::default(),
            own_addresses: Vec::new(),
            route_between_peers: false,
            scratch: vec![0u8; SCRATCH_LEN],
            out: Outbox::default(),
            next_tick: now,
            last_limiter_reset: now,
        };
        wg.update(config, now)?;
        Ok(wg)
    }

    /// Applies a changed config to the running engine (a reload). The config
    /// is checked exactly as by [`Wg::new`]; if it is refused nothing changes.
    ///
    /// A peer whose public key and preshared key are unchanged keeps its
    /// session, counters and learned endpoint; its allowed IPs, keepalive and
    /// configured endpoint are updated in place (a changed endpoint is used at
    /// once). Peers that are new, or whose preshared key changed, start without
    /// a session; peers no longer present are dropped with their sessions, and
    /// their datagrams then count as unknown. A new private key starts every
    /// peer over. [`PeerId`]s become positions in the new config: map them by
    /// public key with [`Wg::peer_id`], or by position in the config.
    pub fn update(&mut self, config: WgConfig, now: Instant) -> Result<UpdateReport, WgError> {
        let static_private = StaticSecret::from(config.private_key);
        let static_public = PublicKey::from(&static_private);
        let positions = validate(&config, &static_private, &static_public)?;

        let mut report = UpdateReport {
            private_key_changed: static_public.as_bytes() != self.static_public.as_bytes(),
            ..UpdateReport::default()
        };
        if report.private_key_changed {
            self.rate_limiter =
                Arc::new(RateLimiter::new(&static_public, 2 * HANDSHAKE_RATE_LIMIT));
        }
        self.static_private = static_private;
        self.static_public = static_public;

        // Peers we keep, found by key; everything left over is retired.
        let mut old = std::mem::take(&mut self.by_key);
        let mut order = Vec::with_capacity(config.peers.len());
        let mut fresh = Vec::new();
        for (i, pc) in config.peers.iter().enumerate() {
            let id = PeerId(i);
            let keep = old.get(&pc.public_key).copied().filter(|&slot| {
                !report.private_key_changed
                    && self.slots[slot]
                        .as_ref()
                        .is_some_and(|p| p.preshared_key == pc.preshared_key)
            });
            match keep {
                Some(slot) => {
                    old.remove(&pc.public_key);
                    if let Some(p) = self.slots[slot].as_mut() {
                        p.reconfigure(id, pc, &config.own_addresses, now);
                    }
                    report.kept.push(id);
                    order.push(slot);
                }
                None => {
                    if old.contains_key(&pc.public_key) {
                        report.restarted.push(id);
                    } else {
                        report.added.push(id);
                    }
                    fresh.push(i);
                    order.push(usize::MAX); // filled in below
                }
            }
        }
        for (key, slot) in old {
            self.slots[slot] = None;
            self.retired.push_back((slot, now));
            if !config.peers.iter().any(|p| p.public_key == key) {
                report.removed.push(key);
            }
        }
        for i in fresh {
            let slot = self.allocate(now);
            let pc = &config.peers[i];
            // Fits: slots stay below MAX_PEERS (see `allocate`).
            let index = slot as u32;
            let tunn = Tunn::new(
                self.static_private.clone(),
                PublicKey::from(pc.public_key),
                pc.preshared_key,
                // Keepalives are ours (Peer::keepalive_due), so a reload can change them.
                None,
                index,
                Some(Arc::clone(&self.rate_limiter)),
            );
            self.slots[slot] = Some(Peer::new(tunn, PeerId(i), pc, &config.own_addresses, now));
            order[i] = slot;
        }

        self.by_key = config
            .peers
            .iter()
            .zip(&order)
            .map(|(pc, &slot)| (pc.public_key, slot))
            .collect();
        self.routes = positions.map(|i| order[i]);
        self.order = order;
        self.own_addresses = config.own_addresses;
        self.route_between_peers = config.route_between_peers;
        // New dialing peers handshake on the next tick, as after `new`.
        self.next_tick = self.next_tick.min(now);
        Ok(report)
    }

    /// A free slot: a retired one once its quarantine is over, else a new one.
    fn allocate(&mut self, now: Instant) -> usize {
        let reusable = self.retired.front().is_some_and(|&(_, at)| {
            now.saturating_duration_since(at) >= QUARANTINE || self.slots.len() >= MAX_PEERS
        });
        if reusable {
            if let Some((slot, _)) = self.retired.pop_front() {
                return slot;
            }
        }
        // Below MAX_PEERS: live peers are fewer than MAX_PEERS (validated), so
        // with every slot taken some slot must be retired, handled above.
        self.slots.push(None);
        self.slots.len() - 1
    }
}

/// The checks of [`Wg::new`]; returns the routing table by config position.
fn validate(
    config: &WgConfig,
    static_private: &StaticSecret,
    static_public: &PublicKey,
) -> Result<AllowedIps<usize>, WgError> {
    if config.peers.len() >= MAX_PEERS {
        return Err(WgError::TooManyPeers {
            count: config.peers.len(),
        });
    }
    let mut by_key = HashMap::with_capacity(config.peers.len());
    let mut routes = AllowedIps::default();
    for (i, pc) in config.peers.iter().enumerate() {
        if pc.public_key == *static_public.as_bytes() {
            return Err(WgError::OwnKey { peer: i });
        }
        if !static_private
            .diffie_hellman(&PublicKey::from(pc.public_key))
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
    }
    Ok(routes)
}
