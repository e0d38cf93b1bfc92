//! Handshake flood defences that boringtun lacks.
//!
//! boringtun's shared `RateLimiter` demands a cookie (mac2) once handshakes
//! arrive faster than a global rate, which stops spoofed sources. It has no
//! limit per source once mac2 is valid, so one real address can still make us
//! do a Diffie-Hellman per datagram. wireguard-go adds a token bucket per
//! source IP (20/s, burst 5, `ratelimiter/ratelimiter.go`); this is that
//! bucket, on the engine's clock. The kernel's per-peer cap
//! (INITIATIONS_PER_SECOND = 50) lives beside each peer
//! ([`MIN_INITIATION_INTERVAL`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages per second one source may have processed.
const PER_SECOND: u64 = 20;
/// How many a quiet source may send at once.
const BURST: u64 = 5;
/// Tokens are nanoseconds of earned time; one message costs this much.
const COST: u64 = 1_000_000_000 / PER_SECOND;
/// A bucket holds at most this many tokens.
const MAX_TOKENS: u64 = COST * BURST;
/// After this long without a message a bucket is full again, so forgetting it
/// changes nothing: a fresh bucket is a full one.
const REFILL: Duration = Duration::from_nanos(MAX_TOKENS);
/// Bound on the table: a spoofed flood from many addresses costs at most this
/// many entries (the global cookie limit, not this table, stops spoofing).
pub(crate) const MAX_SOURCES: usize = 4096;

/// The kernel's cap of 50 initiations per second and peer, as the minimum
/// time between two accepted initiations of one peer.
pub(crate) const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(1000 / 50);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// Token buckets keyed by source (IPv4 address, or IPv6 /64 as wireguard-go
/// does, since one host commonly owns a whole /64).
#[derive(Debug, Default)]
pub(crate) struct SourceLimiter {
    table: HashMap<IpAddr, Bucket>,
}

impl SourceLimiter {
    /// Whether a handshake message from `ip` may proceed now; takes a token.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        if let Some(b) = self.table.get_mut(&key) {
            let earned = now.saturating_duration_since(b.last).as_nanos();
            let earned = u64::try_from(earned).unwrap_or(u64::MAX);
            b.tokens = b.tokens.saturating_add(earned).min(MAX_TOKENS);
            b.last = b.last.max(now);
            if b.tokens < COST {
                return false;
            }
            b.tokens -= COST;
            return true;
        }
        if self.table.len() >= MAX_SOURCES {
            self.sweep(now);
            if self.table.len() >= MAX_SOURCES {
                // Every entry is busy: forget one. That source gets a fresh
                // burst at worst, which a spoofer gets anyway from a new address.
                if let Some(&victim) = self.table.keys().next() {
                    self.table.remove(&victim);
                }
            }
        }
        self.table.insert(
            key,
            Bucket {
                tokens: MAX_TOKENS - COST,
                last: now,
            },
        );
        true
    }

    /// Forgets sources whose bucket has refilled (no loss of information).
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.table
            .retain(|_, b| now.saturating_duration_since(b.last) < REFILL);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
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
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::default();
        let a = ip("198.51.100.1");
        let allowed = (0..100).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, BURST as usize);
        // Over one further second at 1 kHz: 20 more, not 1000.
        let allowed = (1..=1000)
            .filter(|ms| l.allow(a, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(allowed, PER_SECOND as usize);
        // Another source is unaffected; a v6 /64 is one source.
        assert!(l.allow(ip("198.51.100.2"), t0));
        let v6 = (0..10)
            .filter(|i| l.allow(ip(&format!("2001:db8::{i}")), t0))
            .count();
        assert_eq!(v6, BURST as usize);
        assert!(l.allow(ip("2001:db8:0:1::1"), t0));
        // A quiet source gets its full burst back, never more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| l.allow(a, later)).count(), 5);
        // A clock that goes backwards earns nothing and does not panic.
        assert!(!l.allow(a, t0));
    }

    #[test]
    fn table_is_bounded_and_sweeps_refilled_sources() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::default();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            assert!(l.allow(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0));
        }
        assert_eq!(l.len(), MAX_SOURCES);
        l.sweep(t0 + REFILL);
        assert_eq!(l.len(), 0);
        assert!(l.allow(ip("10.0.0.1"), t0 + REFILL));
        assert_eq!(l.len(), 1);
    }
}
