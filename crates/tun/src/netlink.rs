//! A minimal rtnetlink client: just enough to set a link's MTU and flags, add addresses and add
//! routes, each as one request answered by one ACK.
//!
//! Why netlink and not ioctls: one mechanism covers IPv4 and IPv6 addresses and routes alike,
//! and it lets IPv6 addresses skip duplicate address detection (`IFA_F_NODAD`), so they are
//! usable the moment the call returns. Messages are built by hand (header, fixed struct,
//! attributes, all native-endian and 4-byte aligned) — see `rtnetlink(7)`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;

use crate::sys;

// Values from <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_addr.h>, <linux/if_link.h>.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
/// "Route installed by an administrator", as opposed to the kernel or a routing daemon.
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// One netlink message under construction.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        Message { buf }
    }

    /// The fixed-size family struct (ifinfomsg, ifaddrmsg, rtmsg) that follows the header.
    fn body(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// One `rtattr`: length (header included), type, payload, padding to 4 bytes.
    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = u16::try_from(4 + data.len()).expect("attribute fits in u16");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("message fits in u32");
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn family(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `struct ifinfomsg` selecting link `index`, changing the flags in `change` to `flags`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16]; // family AF_UNSPEC, pad, type 0
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// RTM_NEWLINK on an existing link: set its MTU.
pub(crate) fn set_mtu(index: u32, mtu: u32, seq: u32) -> Vec<u8> {
    Message::new(RTM_NEWLINK, 0, seq)
        .body(&ifinfomsg(index, 0, 0))
        .attr(IFLA_MTU, &mtu.to_ne_bytes())
        .finish()
}

/// RTM_NEWLINK on an existing link: set IFF_UP.
pub(crate) fn set_up(index: u32, seq: u32) -> Vec<u8> {
    let up = libc::IFF_UP as u32;
    Message::new(RTM_NEWLINK, 0, seq)
        .body(&ifinfomsg(index, up, up))
        .finish()
}

/// RTM_NEWADDR: `addr/prefix_len` on link `index`, like `ip addr add` (IFA_LOCAL and
/// IFA_ADDRESS both the address, which also installs the prefix route). IPv6 addresses skip
/// duplicate address detection: nothing else lives on a TUN link, and a tentative address
/// could not be bound to until DAD finished.
pub(crate) fn new_addr(index: u32, addr: IpAddr, prefix_len: u8, seq: u32) -> Vec<u8> {
    let flags = if addr.is_ipv6() { IFA_F_NODAD } else { 0 };
    let mut ifaddrmsg = [
        family(addr),
        prefix_len,
        flags,
        RT_SCOPE_UNIVERSE,
        0,
        0,
        0,
        0,
    ];
    ifaddrmsg[4..8].copy_from_slice(&index.to_ne_bytes());
    Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq)
        .body(&ifaddrmsg)
        .attr(IFA_LOCAL, &octets(&addr))
        .attr(IFA_ADDRESS, &octets(&addr))
        .finish()
}

/// RTM_NEWROUTE: `dst/prefix_len` through link `index`, no gateway, main table, like
/// `ip route add dst/prefix_len dev NAME` (scope link for IPv4, universe for IPv6, as
/// iproute2 picks). `dst` must already have its host bits cleared.
pub(crate) fn new_route(index: u32, dst: IpAddr, prefix_len: u8, seq: u32) -> Vec<u8> {
    let scope = if dst.is_ipv4() {
        RT_SCOPE_LINK
    } else {
        RT_SCOPE_UNIVERSE
    };
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    let rtmsg = [
        family(dst),
        prefix_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        scope,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq)
        .body(&rtmsg)
        .attr(RTA_DST, &octets(&dst))
        .attr(RTA_OIF, &index.to_ne_bytes())
        .finish()
}

/// Looks through a datagram from the kernel for the ACK (or error) of request `seq`:
/// `None` if it is not there, `Some(Ok(()))` for an ACK, `Some(Err(errno))` for a refusal.
pub(crate) fn parse_ack(mut buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    while buf.len() >= NLMSG_HDRLEN {
        // The loop condition guarantees 16 bytes, so these fixed-size slices always convert.
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        let msg_seq = u32::from_ne_bytes(buf[8..12].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink reply",
            )));
        }
        if kind == NLMSG_ERROR && msg_seq == seq {
            let Some(code) = buf.get(16..20) else {
                return Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short netlink error message",
                )));
            };
            // `get(16..20)` above returned exactly four bytes.
            let code = i32::from_ne_bytes(code.try_into().unwrap());
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(-code))
            });
        }
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    None
}

/// A NETLINK_ROUTE socket that sends one request at a time and waits for its ACK.
pub(crate) struct Netlink {
    sock: File,
    seq: u32,
}

impl Netlink {
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Netlink {
            sock: sys::netlink_route_socket()?,
            seq: 0,
        })
    }

    /// Sends the message `build` makes for the next sequence number and waits for its ACK.
    pub(crate) fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let msg = build(self.seq);
        // A netlink message is sent whole or not at all.
        if self.sock.write(&msg)? != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink write",
            ));
        }
        let mut buf = [0u8; 8192];
        loop {
            let n = self.sock.read(&mut buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(result) = parse_ack(&buf[..n], self.seq) {
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }

    #[test]
    fn constants_match_libc() {
        assert_eq!(NLMSG_ERROR as i32, libc::NLMSG_ERROR);
        assert_eq!(NLM_F_CREATE as i32, libc::NLM_F_CREATE);
        assert_eq!(NLM_F_EXCL as i32, libc::NLM_F_EXCL);
        assert_eq!(NLM_F_ACK as i32, libc::NLM_F_ACK);
        assert_eq!(
            (RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE),
            (libc::RTM_NEWLINK, libc::RTM_NEWADDR, libc::RTM_NEWROUTE)
        );
        assert_eq!(
            (IFLA_MTU, IFA_ADDRESS, IFA_LOCAL),
            (libc::IFLA_MTU, libc::IFA_ADDRESS, libc::IFA_LOCAL)
        );
        assert_eq!(IFA_F_NODAD as u32, libc::IFA_F_NODAD);
        assert_eq!((RTA_DST, RTA_OIF), (libc::RTA_DST, libc::RTA_OIF));
        assert_eq!(
            (RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_LINK, RTN_UNICAST),
            (
                libc::RT_TABLE_MAIN,
                libc::RTPROT_STATIC,
                libc::RT_SCOPE_LINK,
                libc::RTN_UNICAST
            )
        );
    }

    #[test]
    fn ipv4_address_message_layout() {
        let m = new_addr(7, "10.99.0.1".parse().unwrap(), 24, 42);
        // header 16 + ifaddrmsg 8 + two 8-byte attributes
        assert_eq!(m.len(), 40);
        assert_eq!(u32_at(&m, 0), 40);
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(
            u16_at(&m, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(u32_at(&m, 8), 42);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32_at(&m, 20), 7);
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, IFA_LOCAL));
        assert_eq!(&m[28..32], &[10, 99, 0, 1]);
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (8, IFA_ADDRESS));
        assert_eq!(&m[36..40], &[10, 99, 0, 1]);
    }

    #[test]
    fn ipv6_address_skips_dad() {
        let m = new_addr(3, "fd99::1".parse().unwrap(), 64, 1);
        assert_eq!(m.len(), 16 + 8 + 20 + 20);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 64, IFA_F_NODAD, 0]);
        assert_eq!(u16_at(&m, 24), 20);
        assert_eq!(
            m[28..44],
            "fd99::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
    }

    #[test]
    fn route_message_layout() {
        let m = new_route(5, "10.98.0.0".parse().unwrap(), 16, 9);
        assert_eq!(m.len(), 16 + 12 + 8 + 8);
        assert_eq!(u16_at(&m, 4), RTM_NEWROUTE);
        assert_eq!(
            &m[16..24],
            &[
                libc::AF_INET as u8,
                16,
                0,
                0,
                RT_TABLE_MAIN,
                RTPROT_STATIC,
                RT_SCOPE_LINK,
                RTN_UNICAST
            ]
        );
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30)), (8, RTA_DST));
        assert_eq!(&m[32..36], &[10, 98, 0, 0]);
        assert_eq!(
            (u16_at(&m, 36), u16_at(&m, 38), u32_at(&m, 40)),
            (8, RTA_OIF, 5)
        );
        let m6 = new_route(5, "fd98::".parse().unwrap(), 32, 9);
        assert_eq!(m6[16 + 6], RT_SCOPE_UNIVERSE);
        assert_eq!(m6.len(), 16 + 12 + 20 + 8);
    }

    #[test]
    fn link_messages_layout() {
        let m = set_mtu(4, 1400, 2);
        assert_eq!(m.len(), 16 + 16 + 8);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!((u32_at(&m, 20), u32_at(&m, 24), u32_at(&m, 28)), (4, 0, 0));
        assert_eq!(
            (u16_at(&m, 32), u16_at(&m, 34), u32_at(&m, 36)),
            (8, IFLA_MTU, 1400)
        );
        let up = set_up(4, 3);
        assert_eq!(up.len(), 32);
        let iff_up = libc::IFF_UP as u32;
        assert_eq!((u32_at(&up, 24), u32_at(&up, 28)), (iff_up, iff_up));
    }

    fn reply(kind: u16, seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]); // the echoed request header
        m
    }

    #[test]
    fn acks_and_errors_are_found_by_sequence_number() {
        assert!(matches!(
            parse_ack(&reply(NLMSG_ERROR, 5, 0), 5),
            Some(Ok(()))
        ));
        let err = parse_ack(&reply(NLMSG_ERROR, 5, -libc::EEXIST), 5)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        assert!(parse_ack(&reply(NLMSG_ERROR, 4, 0), 5).is_none());
        // A stale reply, then ours, in one datagram.
        let mut two = reply(NLMSG_ERROR, 4, -libc::EPERM);
        two.extend(reply(NLMSG_ERROR, 5, 0));
        assert!(matches!(parse_ack(&two, 5), Some(Ok(()))));
        // Some other message type with our sequence number is not an ACK.
        assert!(parse_ack(&reply(RTM_NEWADDR, 5, 0), 5).is_none());
        assert!(matches!(parse_ack(&[0xff; 16], 5), Some(Err(_))));
        assert!(parse_ack(&[], 5).is_none());
    }
}
