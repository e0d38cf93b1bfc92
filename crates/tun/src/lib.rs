//! A kernel TUN device for Pinhole's TUN network stack: the kernel does TCP and UDP, Pinhole
//! moves the device's IP packets through WireGuard.
//!
//! ```text
//!  kernel sockets on overlay addresses        node loop (owns Wg + Tun)
//!   (forwards, exposes)  ──▶ kernel ──▶ Tun::recv ──▶ wg.seal_outbound ──▶ UDP
//!                        ◀── kernel ◀── Tun::send ◀── wg.poll_inbound  ◀── UDP
//! ```
//!
//! [`Tun::create`] opens `/dev/net/tun` (TUNSETIFF with `IFF_TUN | IFF_NO_PI`, so each read
//! or write is exactly one bare IP packet), then configures the device over rtnetlink: MTU,
//! addresses (IPv6 without duplicate address detection), link up, routes. The device is not
//! persistent: dropping the [`Tun`] closes the descriptor and the kernel removes the device
//! together with its addresses and routes, also when the process dies.
//!
//! Needs CAP_NET_ADMIN; without it [`Tun::create`] returns [`TunError::PermissionDenied`],
//! which tells the user how to grant it or to fall back to the userspace stack.
//!
//! The device lives in the network namespace of the thread that calls [`Tun::create`].
//!
//! Offloads: the device is first made with `IFF_VNET_HDR` and `TUNSETOFFLOAD`
//! (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`, plus `TUN_F_USO4 | TUN_F_USO6` where the kernel
//! has them). Then [`Tun::offload`] is true and every read and write carries a
//! `virtio_net_hdr` in front of the packet, reads may be TCP/UDP super-packets of up to
//! 64 KiB, and writes may be too: [`offload`] splits and coalesces them. A kernel that refuses
//! gets today's device instead (one bare packet per read or write), with a debug log.
#![deny(missing_docs)]

mod error;
mod netlink;
pub mod offload;
mod sys;

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub use error::{map_os_error, TunError};
use netlink::Netlink;

/// The device name used when [`TunConfig::name`] is `None`: the kernel replaces `%d` with the
/// first free number (pinhole0, pinhole1, ...).
pub const DEFAULT_NAME: &str = "pinhole%d";

/// The smallest MTU a link may have and still carry IPv6.
pub const IPV6_MIN_MTU: u16 = 1280;

/// What device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, at most 15 bytes; `%d` is replaced by the kernel with a free number.
    /// `None` means [`DEFAULT_NAME`].
    pub name: Option<String>,
    /// The node's overlay addresses with their prefix lengths. Each also routes its prefix
    /// into the device (as `ip addr add` does).
    pub addresses: Vec<(IpAddr, u8)>,
    /// Link MTU; at least 68, and at least 1280 when there is an IPv6 address.
    pub mtu: u16,
    /// Extra routes into the device: peers' allowed_ips outside the address prefixes. Host
    /// bits are ignored; routes already covered by an address prefix are skipped; a prefix
    /// length of 0 is refused ([`TunError::CatchAllRoute`]).
    pub routes: Vec<(IpAddr, u8)>,
}

impl Default for TunConfig {
    /// No name (so [`DEFAULT_NAME`]), no addresses or routes, MTU 1420 (WireGuard's default).
    fn default() -> Self {
        TunConfig {
            name: None,
            addresses: Vec::new(),
            mtu: 1420,
            routes: Vec::new(),
        }
    }
}

/// An open TUN device. Each [`recv`](Tun::recv) yields one IP packet the kernel routed into
/// the device; each [`send`](Tun::send) hands one IP packet to the kernel as if it had arrived
/// on the device. Dropping it removes the device.
#[derive(Debug)]
pub struct Tun {
    fd: AsyncFd<File>,
    name: String,
    offload: bool,
    /// The kernel took the USO bits too (Linux 6.2 and later).
    udp_offload: bool,
}

/// Offloads asked for first; the kernel refuses the USO bits before Linux 6.2.
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6;
/// Offloads asked for when [`OFFLOADS`] is refused.
const OFFLOADS_NO_USO: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

/// Opens `/dev/net/tun` for a new device.
fn open_tun() -> Result<File, TunError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TunError::NoTunDevice,
            _ => map_os_error("creating TUN device: opening /dev/net/tun", e),
        })
}

/// Makes a device with `IFF_VNET_HDR` and turns offloads on; says whether USO is among them.
/// `None` when the kernel refuses either (the half-made device is dropped, which removes it);
/// the caller then makes a plain one and reports the errors that matter.
fn create_with_offloads(requested: &str) -> Option<(File, String, bool)> {
    let file = open_tun().ok()?;
    let name = match sys::tun_set_iff(&file, requested, true) {
        Ok(name) => name,
        Err(e) => {
            tracing::debug!(error = %e, "TUN device with IFF_VNET_HDR refused; no offloads");
            return None;
        }
    };
    let result = sys::tun_set_offload(&file, OFFLOADS)
        .map(|()| true)
        .or_else(|e| {
            tracing::debug!(device = %name, error = %e, "TUN UDP segmentation offload refused");
            sys::tun_set_offload(&file, OFFLOADS_NO_USO).map(|()| false)
        });
    match result {
        Ok(uso) => Some((file, name, uso)),
        Err(e) => {
            tracing::debug!(device = %name, error = %e, "TUNSETOFFLOAD refused; one packet per read and write");
            None
        }
    }
}

impl Tun {
    /// Creates and configures a TUN device with offloads where the kernel allows them (see
    /// [`Tun::offload`]), ready for traffic when this returns.
    ///
    /// Must be called from within a Tokio runtime with IO enabled (the descriptor is
    /// registered with its reactor). If any step fails, the half-made device is removed.
    pub fn create(config: &TunConfig) -> Result<Tun, TunError> {
        Tun::create_inner(config, true)
    }

    /// Like [`create`](Tun::create) without offloads: every read and write is exactly one
    /// bare IP packet.
    pub fn create_plain(config: &TunConfig) -> Result<Tun, TunError> {
        Tun::create_inner(config, false)
    }

    fn create_inner(config: &TunConfig, offloads: bool) -> Result<Tun, TunError> {
        let requested = config.name.as_deref().unwrap_or(DEFAULT_NAME);
        validate(config, requested)?;
        let routes = routes_to_add(config);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TunError::NoRuntime);
        }

        let with_offloads = if offloads {
            create_with_offloads(requested)
        } else {
            None
        };
        let (file, name, offload, udp_offload) = match with_offloads {
            Some((file, name, uso)) => (file, name, true, uso),
            None => {
                let file = open_tun()?;
                let name = sys::tun_set_iff(&file, requested, false).map_err(|e| {
                    match e.raw_os_error() {
                        // EBUSY: a TUN device of that name exists (IFF_TUN_EXCL); EINVAL:
                        // some other kind of interface has that name.
                        Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST)
                            if !requested.contains('%') && sys::if_index(requested).is_ok() =>
                        {
                            TunError::NameInUse {
                                name: requested.to_owned(),
                            }
                        }
                        _ => map_os_error("creating TUN device", e),
                    }
                })?;
                (file, name, false, false)
            }
        };
        // From here on, returning early drops `file`, which removes the device again.
        let index = sys::if_index(&name)
            .map_err(|e| map_os_error(format!("looking up the index of {name}"), e))?;
        let mut nl = Netlink::open().map_err(|e| map_os_error("opening a netlink socket", e))?;

        nl.request(|seq| netlink::set_mtu(index, config.mtu.into(), seq))
            .map_err(|e| map_os_error(format!("setting MTU {} on {name}", config.mtu), e))?;
        for &(addr, len) in &config.addresses {
            nl.request(|seq| netlink::new_addr(index, addr, len, seq))
                .map_err(|e| {
                    if addr.is_ipv6() && e.raw_os_error() == Some(libc::EACCES) {
                        TunError::Ipv6Disabled {
                            addr: format!("{addr}/{len}"),
                            dev: name.clone(),
                        }
                    } else {
                        map_os_error(format!("adding address {addr}/{len} to {name}"), e)
                    }
                })?;
        }
        nl.request(|seq| netlink::set_up(index, seq))
            .map_err(|e| map_os_error(format!("bringing up {name}"), e))?;
        for (dst, len) in routes {
            nl.request(|seq| netlink::new_route(index, dst, len, seq))
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        TunError::RouteExists {
                            route: format!("{dst}/{len}"),
                            dev: name.clone(),
                        }
                    } else {
                        map_os_error(format!("adding route {dst}/{len} via {name}"), e)
                    }
                })?;
        }

        let fd = sys::register(file)
            .map_err(|e| map_os_error(format!("registering {name} with the Tokio reactor"), e))?;
        tracing::debug!(device = %name, offload, udp_offload, "TUN device up");
        Ok(Tun {
            fd,
            name,
            offload,
            udp_offload,
        })
    }

    /// Whether offloads are on: then every [`recv`](Tun::recv) returns a `virtio_net_hdr`
    /// ([`offload::VNET_HDR_LEN`] bytes) followed by a packet or super-packet (split it with
    /// [`offload::segment`]), and every write must start with such a header (a zero one for a
    /// plain packet; [`offload::Coalescer`] writes super-packets).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Whether the offloads include UDP segmentation (Linux 6.2 and later): then a write may
    /// also be a `GSO_UDP_L4` super-packet, which an older kernel refuses (so only then may a
    /// [`offload::Coalescer`] join UDP datagrams, [`offload::Coalescer::joining_udp`]).
    pub fn udp_offload(&self) -> bool {
        self.udp_offload
    }

    /// The interface name the kernel gave the device (e.g. "pinhole0").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for and reads one IP packet routed into the device. `buf` should hold at least
    /// the MTU (with [`offload`](Tun::offload): the header and 64 KiB); a longer packet is
    /// truncated to `buf.len()`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |mut file| file.read(buf))
            .await
    }

    /// Reads one IP packet if one is waiting; `WouldBlock` when there is none. For draining a
    /// batch after [`recv`](Tun::recv) returned.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .try_io(Interest::READABLE, |mut file| file.read(buf))
    }

    /// Hands one IP packet to the kernel as if it had arrived on the device. A packet that is
    /// not valid IP is refused with `InvalidInput` (EINVAL) and nothing else happens.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::WRITABLE, |mut file| file.write(packet))
            .await
    }

    /// Like [`send`](Tun::send) without waiting: `WouldBlock` if the device cannot take the
    /// packet now (TUN writes practically never block).
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        self.fd
            .try_io(Interest::WRITABLE, |mut file| file.write(packet))
    }

    /// Like [`try_send`](Tun::try_send) with the packet in pieces (one `writev`): how the
    /// header and a super-packet's segments go out without being copied together.
    pub fn try_send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.fd
            .try_io(Interest::WRITABLE, |mut file| file.write_vectored(bufs))
    }

    /// Waits until the device may take a write (after a `WouldBlock`).
    pub async fn writable(&self) -> io::Result<()> {
        self.fd.writable().await.map(drop)
    }
}

/// Checks everything that can be checked without the kernel.
fn validate(config: &TunConfig, name: &str) -> Result<(), TunError> {
    let invalid = |reason| {
        Err(TunError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > sys::MAX_NAME_LEN {
        return invalid("interface names are at most 15 bytes");
    }
    if name == "." || name == ".." {
        return invalid("\".\" and \"..\" are not interface names");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return invalid("it may not contain '/', ':', NUL or whitespace");
    }
    for (what, list) in [("address", &config.addresses), ("route", &config.routes)] {
        for &(addr, len) in list {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(TunError::InvalidPrefix {
                    what,
                    addr,
                    len,
                    max,
                });
            }
        }
    }
    if let Some(&(addr, _)) = config.addresses.iter().find(|(a, _)| a.is_ipv6()) {
        if config.mtu < IPV6_MIN_MTU {
            return Err(TunError::MtuTooSmallForIpv6 {
                addr,
                mtu: config.mtu,
            });
        }
    }
    if let Some(&(addr, len)) = config.routes.iter().find(|(_, len)| *len == 0) {
        return Err(TunError::CatchAllRoute {
            route: format!("{addr}/{len}"),
        });
    }
    Ok(())
}

/// `addr` with everything past the first `len` bits cleared.
fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// The routes to install: host bits cleared, duplicates and routes inside an address prefix
/// (which the kernel already routes into the device) dropped. Expects a validated config.
fn routes_to_add(config: &TunConfig) -> Vec<(IpAddr, u8)> {
    let mut out: Vec<(IpAddr, u8)> = Vec::new();
    for &(dst, len) in &config.routes {
        let route = (network(dst, len), len);
        let covered = config.addresses.iter().any(|&(addr, alen)| {
            addr.is_ipv4() == dst.is_ipv4()
                && len >= alen
                && network(dst, alen) == network(addr, alen)
        });
        if !covered && !out.contains(&route) {
            out.push(route);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(addresses: &[(&str, u8)], routes: &[(&str, u8)]) -> TunConfig {
        TunConfig {
            addresses: addresses.iter().map(|&(a, l)| (ip(a), l)).collect(),
            routes: routes.iter().map(|&(a, l)| (ip(a), l)).collect(),
            ..TunConfig::default()
        }
    }

    #[test]
    fn names_are_checked() {
        let c = TunConfig::default();
        assert!(validate(&c, DEFAULT_NAME).is_ok());
        assert!(validate(&c, "wg-relay.0").is_ok());
        for bad in [
            "",
            "sixteen-bytes-xx",
            "a/b",
            "a:b",
            "a b",
            ".",
            "..",
            "a\0",
        ] {
            let err = validate(&c, bad).unwrap_err();
            assert!(
                matches!(err, TunError::InvalidName { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn prefixes_mtu_and_catch_all_are_checked() {
        let err = validate(&config(&[("10.0.0.1", 33)], &[]), "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 10.0.0.1/33: prefix length must be at most 32"
        );
        let err = validate(&config(&[], &[("fd00::", 129)]), "x").unwrap_err();
        assert!(matches!(
            err,
            TunError::InvalidPrefix {
                what: "route",
                max: 128,
                ..
            }
        ));

        let mut c = config(&[("10.0.0.1", 24), ("fd00::1", 64)], &[]);
        c.mtu = 1279;
        assert!(matches!(
            validate(&c, "x"),
            Err(TunError::MtuTooSmallForIpv6 { mtu: 1279, .. })
        ));
        c.mtu = 1280;
        assert!(validate(&c, "x").is_ok());
        c.addresses.pop();
        c.mtu = 576;
        assert!(validate(&c, "x").is_ok(), "IPv4 alone may use a small MTU");

        let err = validate(&config(&[], &[("0.0.0.0", 0)]), "x").unwrap_err();
        assert!(matches!(err, TunError::CatchAllRoute { .. }));
        assert!(err.to_string().starts_with("route 0.0.0.0/0: "));
    }

    #[test]
    fn network_clears_host_bits() {
        assert_eq!(network(ip("10.98.7.9"), 16), ip("10.98.0.0"));
        assert_eq!(network(ip("10.98.7.9"), 32), ip("10.98.7.9"));
        assert_eq!(network(ip("10.98.7.9"), 0), ip("0.0.0.0"));
        assert_eq!(network(ip("fd98:1:2:3::9"), 32), ip("fd98:1::"));
        assert_eq!(network(ip("fd98::9"), 128), ip("fd98::9"));
        assert_eq!(network(ip("fd98::9"), 0), ip("::"));
    }

    #[test]
    fn routes_inside_address_prefixes_and_duplicates_are_skipped() {
        let c = config(
            &[("10.99.0.1", 24), ("fd99::1", 64)],
            &[
                ("10.98.1.2", 16),
                ("10.98.0.0", 16),
                ("10.99.0.128", 25),
                ("10.99.0.0", 24),
                ("10.99.0.0", 23),
                ("fd99::5", 128),
                ("fd98::", 32),
                ("10.77.0.5", 32),
            ],
        );
        assert_eq!(
            routes_to_add(&c),
            vec![
                (ip("10.98.0.0"), 16),
                (ip("10.99.0.0"), 23),
                (ip("fd98::"), 32),
                (ip("10.77.0.5"), 32)
            ]
        );
    }

    #[test]
    fn create_outside_a_runtime_says_so() {
        let err = Tun::create(&TunConfig::default()).unwrap_err();
        assert!(matches!(err, TunError::NoRuntime), "{err}");
    }
}
