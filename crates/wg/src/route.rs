//! Where a decrypted packet goes: to our stack, to another peer (hub routing),
//! or nowhere. Pure decisions over a parsed header, so they are tested without
//! any crypto.

use std::net::IpAddr;

use crate::allowed_ips::AllowedIps;
use crate::icmp;
use crate::ip::IpHeader;

/// The fate of a decrypted packet whose source already passed the check
/// against the sender's allowed IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// To our stack: for one of our addresses, or for nobody in the overlay
    /// (a TUN stack may route it on, e.g. as an exit).
    Stack,
    /// To the peer in this slot.
    Peer(usize),
    /// Another peer's destination while routing between peers is off.
    Disabled,
    /// Routing is on and the destination belongs to the sender itself.
    Loop,
}

/// Decides where a packet from the peer in slot `sender` goes.
pub(crate) fn route(
    header: &IpHeader,
    sender: usize,
    own: &[IpAddr],
    routes: &AllowedIps<usize>,
    between_peers: bool,
) -> Route {
    if own.contains(&header.dst) {
        return Route::Stack;
    }
    match routes.lookup(header.dst) {
        None => Route::Stack,
        // With routing off we are no hub: leave it to the stack, as before.
        Some(s) if s == sender && !between_peers => Route::Stack,
        Some(s) if s == sender => Route::Loop,
        Some(_) if !between_peers => Route::Disabled,
        Some(s) => Route::Peer(s),
    }
}

/// Decrements the IPv4 TTL (fixing the header checksum) or the IPv6 hop
/// limit of a packet about to be routed on. `false`, and the packet
/// untouched, if it may not travel another hop (TTL ≤ 1) or is malformed.
pub(crate) fn decrement_ttl(packet: &mut [u8], header: &IpHeader) -> bool {
    match header.dst {
        IpAddr::V4(_) => {
            if packet.len() < header.header_len || packet[8] <= 1 {
                return false;
            }
            packet[8] -= 1;
            packet[10..12].fill(0);
            let sum = icmp::checksum(&packet[..header.header_len], 0);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
            true
        }
        IpAddr::V6(_) => {
            if packet.len() < 40 || packet[7] <= 1 {
                return false;
            }
            packet[7] -= 1;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn header(src: &str, dst: &str) -> IpHeader {
        IpHeader {
            src: addr(src),
            dst: addr(dst),
            protocol: 17,
            header_len: 20,
            total_len: 20,
        }
    }

    #[test]
    fn decisions() {
        let mut routes = AllowedIps::default();
        routes.insert(addr("10.77.0.2"), 32, 1).unwrap();
        routes.insert(addr("10.77.0.3"), 32, 2).unwrap();
        routes.insert(addr("10.0.0.0"), 8, 3).unwrap();
        let own = [addr("10.77.0.1")];
        let h = |dst| header("10.77.0.3", dst);
        for on in [false, true] {
            assert_eq!(route(&h("10.77.0.1"), 2, &own, &routes, on), Route::Stack);
            assert_eq!(route(&h("192.0.2.1"), 2, &own, &routes, on), Route::Stack);
        }
        assert_eq!(
            route(&h("10.77.0.2"), 2, &own, &routes, true),
            Route::Peer(1)
        );
        assert_eq!(
            route(&h("10.9.9.9"), 2, &own, &routes, true),
            Route::Peer(3)
        );
        assert_eq!(route(&h("10.77.0.3"), 2, &own, &routes, true), Route::Loop);
        assert_eq!(
            route(&h("10.77.0.2"), 2, &own, &routes, false),
            Route::Disabled
        );
        assert_eq!(
            route(&h("10.77.0.3"), 2, &own, &routes, false),
            Route::Stack
        );
    }

    #[test]
    fn ttl_is_decremented_with_a_valid_checksum() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 2;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 77, 0, 3]);
        p[16..20].copy_from_slice(&[10, 77, 0, 2]);
        let c = icmp::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let h = ip::parse(&p).unwrap();
        assert!(decrement_ttl(&mut p, &h));
        assert_eq!(p[8], 1);
        assert_eq!(icmp::checksum(&p[..20], 0), 0, "header checksum verifies");
        let before = p.clone();
        assert!(!decrement_ttl(&mut p, &h), "TTL 1 may not be routed");
        assert_eq!(p, before);

        let mut p6 = vec![0u8; 40];
        p6[0] = 0x60;
        p6[7] = 64;
        p6[39] = 2;
        let h6 = ip::parse(&p6).unwrap();
        assert!(decrement_ttl(&mut p6, &h6));
        assert_eq!(p6[7], 63);
        p6[7] = 0;
        assert!(!decrement_ttl(&mut p6, &h6));
    }
}
