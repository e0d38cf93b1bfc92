//! Hash keys of the stack's tables, made cheap where that is safe.
//!
//! Why: at thousands of connections per second the tables' hashing was about 5 % of a relay's
//! instructions per connection (callgrind): std's SipHash over a `(SocketAddr, SocketAddr)`
//! pair fed field by field cost about 500 instructions a lookup, and `AckSeq` does one per
//! outbound TCP packet.
//! - Handle ids and smoltcp socket handles are counters the stack hands out itself, so
//!   nobody can choose them to collide: [`IdMap`] hashes them with one multiplication.
//! - Connection tuples come from the network (a peer picks its ports), so they keep std's
//!   randomly keyed SipHash, but [`Tuple`] feeds it one or a few words instead of every field.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

/// A map keyed by the stack's own ids (handle ids, socket handles).
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing for keys that are counters: the multiplication spreads consecutive ids
/// over the high bits hashbrown uses for its control bytes, and the fold brings them down
/// to the low bits it uses for the bucket.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by the keys above (integers); kept correct for any other.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// A TCP connection's (local, remote) endpoints as a hash key: equal exactly when the
/// addresses are, hashed as one 128-bit word for IPv4 (three for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuple {
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

impl Tuple {
    pub(crate) fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self { local, remote }
    }
}

impl Hash for Tuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let ports = u128::from(self.local.port()) << 16 | u128::from(self.remote.port());
        match (self.local.ip(), self.remote.ip()) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => state.write_u128(
                u128::from(local.to_bits()) << 96 | u128::from(remote.to_bits()) << 64 | ports,
            ),
            (local, remote) => {
                state.write_u128(bits(local));
                state.write_u128(bits(remote));
                // The top bit keeps a v6 key apart from a v4 one with the same low bits.
                state.write_u128(1 << 127 | ports);
            }
        }
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_ids_spread_over_high_and_low_bits() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1u64..=4096).map(|id| build.hash_one(id)).collect();
        // hashbrown: the top 7 bits tag the entry, the low bits pick the bucket.
        let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        assert_eq!(tags.len(), 128);
        assert!(buckets.len() > 4096 * 6 / 10, "{} buckets", buckets.len());
    }

    #[test]
    fn tuples_are_equal_and_hash_equal_exactly_when_their_addresses_are() {
        let build = std::collections::hash_map::RandomState::new();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let t = Tuple::new(a("10.0.0.1:80"), a("10.0.0.2:5000"));
        assert_eq!(
            build.hash_one(t),
            build.hash_one(Tuple::new(t.local, t.remote))
        );
        let others = [
            Tuple::new(a("10.0.0.2:5000"), a("10.0.0.1:80")),
            Tuple::new(a("10.0.0.1:80"), a("10.0.0.2:5001")),
            Tuple::new(a("[::a00:1]:80"), a("[::a00:2]:5000")),
        ];
        for other in others {
            assert_ne!(t, other);
            assert_ne!(build.hash_one(t), build.hash_one(other));
        }
    }
}
