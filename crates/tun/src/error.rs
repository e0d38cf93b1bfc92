//! What can go wrong creating a TUN device, each with what to do about it.

use std::io;

/// The fix appended to every "needs CAP_NET_ADMIN" error.
const NEEDS_CAP: &str = "needs CAP_NET_ADMIN — run as root, or give the binary \
`setcap cap_net_admin+ep`, or use netstack = \"userspace\"";

/// Why [`Tun::create`](crate::Tun::create) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The process lacks CAP_NET_ADMIN (EPERM, or EACCES on `/dev/net/tun`).
    #[error("{step}: permission denied: {NEEDS_CAP}")]
    PermissionDenied {
        /// The step that was refused, e.g. "creating TUN device".
        step: String,
    },
    /// `/dev/net/tun` is missing: no tun module, or a container without the device.
    #[error(
        "creating TUN device: /dev/net/tun does not exist — load the module (`modprobe tun`), \
         or in a container pass the device in (`--device /dev/net/tun`), \
         or use netstack = \"userspace\""
    )]
    NoTunDevice,
    /// Another interface already has the requested name.
    #[error(
        "creating TUN device {name:?}: an interface with that name already exists — \
         choose another name (or leave it unset for \"pinhole%d\"), or remove it with `ip link del {name}`"
    )]
    NameInUse {
        /// The requested name.
        name: String,
    },
    /// The requested name cannot be an interface name.
    #[error("TUN device name {name:?} is invalid: {reason}")]
    InvalidName {
        /// The requested name.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A prefix length longer than the address family allows.
    #[error("{what} {addr}/{len}: prefix length must be at most {max}")]
    InvalidPrefix {
        /// "address" or "route".
        what: &'static str,
        /// The address as written.
        addr: std::net::IpAddr,
        /// The prefix length as written.
        len: u8,
        /// 32 or 128.
        max: u8,
    },
    /// An IPv6 address on a link whose MTU cannot carry IPv6.
    #[error(
        "address {addr}: IPv6 needs an MTU of at least 1280, the TUN device is set to {mtu} — \
         raise mtu or drop the IPv6 address"
    )]
    MtuTooSmallForIpv6 {
        /// The IPv6 address.
        addr: std::net::IpAddr,
        /// The configured MTU.
        mtu: u16,
    },
    /// IPv6 is disabled by sysctl, so IPv6 addresses cannot be added.
    #[error(
        "adding address {addr} to {dev}: IPv6 is disabled on this host \
         (net.ipv6.conf.default.disable_ipv6 = 1) — enable it with \
         `sysctl -w net.ipv6.conf.default.disable_ipv6=0`, or drop the IPv6 address"
    )]
    Ipv6Disabled {
        /// The IPv6 address with its prefix.
        addr: String,
        /// The device name.
        dev: String,
    },
    /// A catch-all route (prefix length 0) was requested.
    #[error(
        "route {route}: a catch-all route would send the tunnel's own encrypted UDP back into \
         the tunnel — Pinhole does not install default routes; narrow the peer's allowed_ips, \
         or set up policy routing yourself"
    )]
    CatchAllRoute {
        /// The route as written.
        route: String,
    },
    /// The route already exists (through another interface, or with the same metric).
    #[error(
        "adding route {route} via {dev}: a route to it already exists — \
         see `ip route show {route}`, remove it, or narrow the peer's allowed_ips"
    )]
    RouteExists {
        /// The route with its prefix.
        route: String,
        /// The device name.
        dev: String,
    },
    /// [`Tun::create`](crate::Tun::create) was called outside a Tokio runtime.
    #[error("creating TUN device: must be called from within a Tokio runtime (the device is registered with its reactor)")]
    NoRuntime,
    /// Any other system error, with the step that failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done, e.g. "setting MTU 1400 on pinhole0".
        step: String,
        /// The system error.
        source: io::Error,
    },
}

/// Maps a system error from `step` to a [`TunError`]: EPERM (and EACCES, which is how
/// `/dev/net/tun` and some kernels say the same) becomes [`TunError::PermissionDenied`] with
/// the fix spelled out; everything else keeps its step and source.
pub fn map_os_error(step: impl Into<String>, err: io::Error) -> TunError {
    let step = step.into();
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => TunError::PermissionDenied { step },
        _ => TunError::Io { step, source: err },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_says_what_to_do() {
        let err = map_os_error(
            "creating TUN device",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(matches!(err, TunError::PermissionDenied { .. }));
        assert_eq!(
            err.to_string(),
            "creating TUN device: permission denied: needs CAP_NET_ADMIN — run as root, or give \
             the binary `setcap cap_net_admin+ep`, or use netstack = \"userspace\""
        );
    }

    #[test]
    fn eacces_is_permission_too() {
        let err = map_os_error("x", io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(err, TunError::PermissionDenied { .. }));
    }

    #[test]
    fn other_errors_keep_step_and_source() {
        let err = map_os_error(
            "setting MTU 9 on pinhole0",
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        let TunError::Io { step, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(step, "setting MTU 9 on pinhole0");
        assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        assert!(err.to_string().starts_with("setting MTU 9 on pinhole0: "));
    }
}
