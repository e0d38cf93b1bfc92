//! The TUN crate's `unsafe`: the TUNSETIFF and TUNSETOFFLOAD ioctls, `if_nametoindex`,
//! opening a netlink socket and registering the TUN descriptor with Tokio. Each block is a
//! single system call on memory this module owns, behind a safe function.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Interface names are at most this many bytes (IFNAMSIZ minus the NUL).
pub(crate) const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Turns the open `/dev/net/tun` file into a new layer-3 TUN device named after `name`
/// (a `%d` in it is replaced by the kernel with the first free number) and returns the
/// name the kernel chose.
///
/// Flags: `IFF_TUN` (IP packets, no Ethernet), `IFF_NO_PI` (no 4-byte packet-info header in
/// front of each packet), `IFF_TUN_EXCL` (fail instead of attaching to an existing persistent
/// device, so the device is always ours and goes away when the file is closed), and with
/// `vnet_hdr` `IFF_VNET_HDR` (a 10-byte `virtio_net_hdr` in front of each packet, which is
/// what carries offloads; see [`tun_set_offload`]).
///
/// `name` must already be checked: shorter than IFNAMSIZ, no NUL.
pub(crate) fn tun_set_iff(file: &File, name: &str, vnet_hdr: bool) -> io::Result<String> {
    debug_assert!(name.len() <= MAX_NAME_LEN && !name.contains('\0'));
    // SAFETY: `ifreq` is plain old data (a char array and a union of integers, structs of
    // integers and pointers); all-zero bytes are a valid value of every field.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let vnet = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL | vnet) as libc::c_short;
    // SAFETY: `file` is an open descriptor we borrow for the call; TUNSETIFF reads and writes
    // exactly one `struct ifreq`, and `ifr` is a live, exclusively borrowed `ifreq` that
    // outlives the call. The name is NUL-terminated because at most IFNAMSIZ-1 bytes were set.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut ifr as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = ifr
        .ifr_name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(libc::IFNAMSIZ);
    let bytes: Vec<u8> = ifr.ifr_name[..len].iter().map(|&c| c as u8).collect();
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "kernel returned a non-UTF-8 interface name",
        )
    })
}

/// Tells the kernel which offloads the reader of the device handles (`TUN_F_*` bits): with
/// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6` it sends TCP super-packets and partial checksums
/// into the device and accepts them from it. Needs a device made with `IFF_VNET_HDR`;
/// `EINVAL` for a bit the kernel does not know (e.g. USO before Linux 6.2).
pub(crate) fn tun_set_offload(file: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: `file` is an open descriptor we borrow for the call; TUNSETOFFLOAD takes its
    // argument by value (an unsigned long of flags), so no memory is passed.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The interface index of `name` in the calling thread's network namespace.
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that lives across the call;
    // if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// A new `NETLINK_ROUTE` socket (close-on-exec, blocking). Writes go to the kernel, which is
/// a netlink socket's default destination, so plain `write`/`read` on the `File` suffice.
pub(crate) fn netlink_route_socket() -> io::Result<File> {
    // SAFETY: socket(2) takes no pointers; it either fails or returns a new descriptor.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Registers the TUN device's file with the current Tokio reactor for reads and writes.
/// Must run inside a runtime with IO enabled.
pub(crate) fn register(file: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: Tokio needs the descriptor to stay open and be the same for the AsyncFd's whole
    // life. A `File` owns its descriptor, closes it only when dropped, and always returns the
    // same one from `as_raw_fd`; the AsyncFd owns the File, and `Tun` never hands out
    // `get_mut`/`into_inner`, so the File cannot be closed or swapped while registered.
    unsafe { AsyncFd::register_with_interest(file, Interest::READABLE | Interest::WRITABLE) }
        .map_err(|e| e.into_parts().1)
}
