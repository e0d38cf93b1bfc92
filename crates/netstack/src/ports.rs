//! Which of our overlay ports are taken, per address: a single port and a range of a
//! thousand ports are one entry each, so a range costs what one port costs.
//!
//! Ranges never overlap (`insert` refuses), so finding the owner of a port is one ordered
//! lookup: the entry with the greatest first port at or below it, if it reaches that far.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::shared::HandleId;

/// Disjoint port ranges of our addresses, each owned by one handle.
#[derive(Debug, Default)]
pub(crate) struct PortMap {
    /// Per address: first port -> (last port, owner).
    by_ip: HashMap<IpAddr, BTreeMap<u16, (u16, HandleId)>>,
}

impl PortMap {
    /// The handle owning `addr`'s port, if any.
    pub(crate) fn lookup(&self, addr: SocketAddr) -> Option<HandleId> {
        let ranges = self.by_ip.get(&addr.ip())?;
        let (_, &(last, id)) = ranges.range(..=addr.port()).next_back()?;
        (addr.port() <= last).then_some(id)
    }

    /// Whether no port of `first..=last` on `ip` is taken.
    pub(crate) fn is_free(&self, ip: IpAddr, first: u16, last: u16) -> bool {
        let Some(ranges) = self.by_ip.get(&ip) else {
            return true;
        };
        // Ranges are disjoint and sorted: only the last one starting at or before `last`
        // can reach into `first..=last`.
        ranges
            .range(..=last)
            .next_back()
            .is_none_or(|(_, &(end, _))| end < first)
    }

    /// Takes `first..=last` on `ip` for `id`; false (and nothing changed) if any is taken.
    pub(crate) fn insert(&mut self, ip: IpAddr, first: u16, last: u16, id: HandleId) -> bool {
        if first > last || !self.is_free(ip, first, last) {
            return false;
        }
        self.by_ip.entry(ip).or_default().insert(first, (last, id));
        true
    }

    /// Frees the range starting at `first` on `ip`.
    pub(crate) fn remove(&mut self, ip: IpAddr, first: u16) {
        let Some(ranges) = self.by_ip.get_mut(&ip) else {
            return;
        };
        ranges.remove(&first);
        if ranges.is_empty() {
            self.by_ip.remove(&ip);
        }
    }
}

/// The last port of `count` ports from `first`, checking the range is well formed.
pub(crate) fn range_end(first: u16, count: u16) -> io::Result<u16> {
    if first == 0 || count == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a port range needs a first port and at least one port",
        ));
    }
    first.checked_add(count - 1).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{count} ports from {first} go past port 65535"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn at(port: u16) -> SocketAddr {
        SocketAddr::new(IP, port)
    }

    #[test]
    fn ranges_are_found_and_never_overlap() {
        let mut map = PortMap::default();
        assert!(map.insert(IP, 1000, 1999, 1));
        assert!(map.insert(IP, 80, 80, 2));
        assert_eq!(map.lookup(at(1000)), Some(1));
        assert_eq!(map.lookup(at(1999)), Some(1));
        assert_eq!(map.lookup(at(2000)), None);
        assert_eq!(map.lookup(at(999)), None);
        assert_eq!(map.lookup(at(80)), Some(2));
        assert_eq!(
            map.lookup(SocketAddr::new("10.0.0.2".parse().unwrap(), 80)),
            None
        );
        for (first, last) in [
            (999, 1000),
            (1999, 2005),
            (1500, 1500),
            (0, 65535),
            (80, 80),
        ] {
            assert!(!map.insert(IP, first, last, 3), "{first}-{last}");
        }
        assert!(map.insert(IP, 2000, 2000, 4));
        assert!(map.insert(IP, 81, 999, 5));
        map.remove(IP, 1000);
        assert_eq!(map.lookup(at(1500)), None);
        assert!(map.is_free(IP, 1000, 1999));
        assert!(!map.is_free(IP, 1000, 2000));
        map.remove(IP, 80);
        map.remove(IP, 81);
        map.remove(IP, 2000);
        assert!(map.by_ip.is_empty());
    }

    #[test]
    fn range_ends_are_checked() {
        assert_eq!(range_end(27015, 16).unwrap(), 27030);
        assert_eq!(range_end(65535, 1).unwrap(), 65535);
        assert!(range_end(65535, 2).is_err());
        assert!(range_end(0, 1).is_err());
        assert!(range_end(80, 0).is_err());
    }
}
