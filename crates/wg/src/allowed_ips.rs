//! The cryptokey routing table: longest-prefix match from an IP address to a
//! peer, used both to pick the peer for an outbound packet and to check that
//! a decrypted packet's source belongs to the peer that sent it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// One level's map: network address to value.
type Level<K, T> = HashMap<K, T, BuildHasherDefault<PrefixHasher>>;

/// Longest-prefix-match table. One hash map per prefix length in use, probed
/// from the longest length down: at most 33 (IPv4) or 129 (IPv6) lookups, and
/// in practice a handful, since configs use few distinct lengths.
#[derive(Debug, Clone)]
pub(crate) struct AllowedIps<T> {
    v4: Vec<(u8, Level<u32, T>)>,
    v6: Vec<(u8, Level<u128, T>)>,
}

/// The hash of the table's keys. The keys are the config's prefixes, never an
/// address from the network, so nobody can pick them to collide: the default
/// SipHash (keyed against such floods) buys nothing here and cost about 1 % of
/// a sending relay's time (perf), one lookup per packet each way. This mixes the key
/// with a 64-bit finaliser (MurmurHash3's), so that prefixes whose low bits
/// are all zero still spread over the buckets.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PrefixHasher(u64);

impl PrefixHasher {
    fn mix(&mut self, word: u64) {
        let mut k = self.0 ^ word;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^= k >> 33;
        self.0 = k;
    }
}

impl Hasher for PrefixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertError<T> {
    /// The prefix length is longer than the address.
    InvalidPrefix,
    /// This exact prefix is already in the table, for this value.
    Exists(T),
}

impl<T: Copy> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

impl<T: Copy> AllowedIps<T> {
    /// Adds `addr/prefix` (host bits are ignored, as `wg` does).
    pub(crate) fn insert(
        &mut self,
        addr: IpAddr,
        prefix: u8,
        value: T,
    ) -> Result<(), InsertError<T>> {
        match addr {
            IpAddr::V4(a) => {
                let net = mask_v4(u32::from(a), prefix).ok_or(InsertError::InvalidPrefix)?;
                insert_into(&mut self.v4, prefix, net, value)
            }
            IpAddr::V6(a) => {
                let net = mask_v6(u128::from(a), prefix).ok_or(InsertError::InvalidPrefix)?;
                insert_into(&mut self.v6, prefix, net, value)
            }
        }
    }

    /// The value of the longest prefix containing `addr`.
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().find_map(|(len, map)| {
                    // Lengths in the table are valid, so masking cannot fail.
                    map.get(&mask_v4(a, *len)?).copied()
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v6(a, *len)?).copied())
            }
        }
    }
}

impl<T: Copy> AllowedIps<T> {
    /// The same prefixes with every value mapped through `f`.
    pub(crate) fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> AllowedIps<U> {
        AllowedIps {
            v4: self
                .v4
                .iter()
                .map(|(len, m)| (*len, m.iter().map(|(k, v)| (*k, f(*v))).collect()))
                .collect(),
            v6: self
                .v6
                .iter()
                .map(|(len, m)| (*len, m.iter().map(|(k, v)| (*k, f(*v))).collect()))
                .collect(),
        }
    }
}

fn insert_into<K: std::hash::Hash + Eq, T: Copy>(
    levels: &mut Vec<(u8, Level<K, T>)>,
    prefix: u8,
    net: K,
    value: T,
) -> Result<(), InsertError<T>> {
    // Keep levels sorted longest first so lookup stops at the first hit.
    let pos = match levels.binary_search_by(|(len, _)| prefix.cmp(len)) {
        Ok(pos) => pos,
        Err(pos) => {
            levels.insert(pos, (prefix, Level::default()));
            pos
        }
    };
    let map = &mut levels[pos].1;
    if let Some(existing) = map.get(&net) {
        return Err(InsertError::Exists(*existing));
    }
    map.insert(net, value);
    Ok(())
}

/// `addr` with the bits past `prefix` cleared; `None` if `prefix > 32`.
pub(crate) fn mask_v4(addr: u32, prefix: u8) -> Option<u32> {
    match prefix {
        0 => Some(0),
        1..=32 => Some(addr & (u32::MAX << (32 - prefix))),
        _ => None,
    }
}

/// `addr` with the bits past `prefix` cleared; `None` if `prefix > 128`.
pub(crate) fn mask_v6(addr: u128, prefix: u8) -> Option<u128> {
    match prefix {
        0 => Some(0),
        1..=128 => Some(addr & (u128::MAX << (128 - prefix))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_v4() {
        let mut t = AllowedIps::default();
        t.insert(ip("0.0.0.0"), 0, 'd').unwrap();
        t.insert(ip("10.0.0.0"), 8, 'a').unwrap();
        t.insert(ip("10.77.0.0"), 24, 'b').unwrap();
        t.insert(ip("10.77.0.2"), 32, 'c').unwrap();
        assert_eq!(t.lookup(ip("10.77.0.2")), Some('c'));
        assert_eq!(t.lookup(ip("10.77.0.3")), Some('b'));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some('a'));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some('d'));
        // A v4 default route does not cover v6.
        assert_eq!(t.lookup(ip("fd00::1")), None);
    }

    #[test]
    fn longest_prefix_wins_v6_and_host_bits_are_ignored() {
        let mut t = AllowedIps::default();
        t.insert(ip("fd00::1234"), 16, 1).unwrap(); // host bits set: masked to fd00::/16
        t.insert(ip("fd00:77::"), 64, 2).unwrap();
        t.insert(ip("fd00:77::2"), 128, 3).unwrap();
        assert_eq!(t.lookup(ip("fd00:77::2")), Some(3));
        assert_eq!(t.lookup(ip("fd00:77::9")), Some(2));
        assert_eq!(t.lookup(ip("fd00:1::9")), Some(1));
        assert_eq!(t.lookup(ip("fd01::1")), None);
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn refuses_bad_prefixes_and_exact_duplicates() {
        let mut t = AllowedIps::default();
        assert_eq!(
            t.insert(ip("10.0.0.0"), 33, 1),
            Err(InsertError::InvalidPrefix)
        );
        assert_eq!(t.insert(ip("::"), 129, 1), Err(InsertError::InvalidPrefix));
        t.insert(ip("10.0.0.0"), 24, 1).unwrap();
        assert_eq!(t.insert(ip("10.0.0.9"), 24, 2), Err(InsertError::Exists(1)));
        // Overlapping but different lengths are fine: longest wins.
        t.insert(ip("10.0.0.9"), 32, 2).unwrap();
        assert_eq!(t.lookup(ip("10.0.0.9")), Some(2));
        assert_eq!(t.lookup(ip("10.0.0.8")), Some(1));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_v4(0xffff_ffff, 0), Some(0));
        assert_eq!(mask_v4(0xffff_ffff, 32), Some(0xffff_ffff));
        assert_eq!(mask_v4(0x0a4d_0002, 24), Some(0x0a4d_0000));
        assert_eq!(mask_v6(u128::MAX, 128), Some(u128::MAX));
        assert_eq!(mask_v6(u128::MAX, 1), Some(1u128 << 127));
    }

    #[test]
    fn prefixes_with_zero_low_bits_still_spread_over_buckets() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<PrefixHasher>::default();
        // 256 /24 networks: every key ends in eight zero bits.
        let buckets: std::collections::HashSet<u64> = (0..256u32)
            .map(|i| build.hash_one((10 << 24) | (i << 8)) & 255)
            .collect();
        // A random function fills about 162 of 256; a hash that keeps the zeros, 1.
        assert!(buckets.len() > 128, "{} buckets", buckets.len());

        let mut table = AllowedIps::default();
        for i in 0..256u32 {
            let net = IpAddr::from(std::net::Ipv4Addr::from((10 << 24) | (i << 8)));
            table.insert(net, 24, i).unwrap();
        }
        for i in 0..256u32 {
            let host = IpAddr::from(std::net::Ipv4Addr::from((10 << 24) | (i << 8) | 7));
            assert_eq!(table.lookup(host), Some(i));
        }
    }
}
