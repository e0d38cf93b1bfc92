//! Several UDP messages in one `sendmmsg`, each to its own destination and, when it carries
//! several datagrams, with its own `UDP_SEGMENT` size (GSO). The WireGuard socket sends a
//! batch's runs this way ([`crate::UdpIo::send`]); a UDP forward sends a client's burst and a
//! session's replies this way too (`pinhole-forward`), so the system call and its control
//! messages are written once.
//!
//! Why not a `sendmsg` per message: bulk traffic fills a batch with a dozen GSO runs of 45
//! datagrams each (64 KiB is the most one run may carry), and a loop turn that serves several
//! connections ends with runs of different sizes. One call sends them all.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd};

use socket2::SockAddr;

/// Most messages one `sendmmsg` carries; the rest go in the next call.
pub const MMSG: usize = 16;

/// Room for one `cmsghdr` with a `u16`, in words so the buffer is aligned as a header must be.
type CmsgBuf = [u64; 4];

/// `CMSG_SPACE` of a `u16`: 24 bytes on 64-bit Linux, 16 on 32-bit.
// SAFETY: CMSG_SPACE is a pure computation on a constant.
const CMSG_SPACE_U16: usize =
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
const _: () = assert!(CMSG_SPACE_U16 <= std::mem::size_of::<CmsgBuf>());

/// One message of [`send_messages`].
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Where the message goes, in a form the socket can send to (an IPv6 socket needs IPv4
    /// destinations mapped).
    pub to: &'a SockAddr,
    /// The message's bytes, gathered from these slices in order.
    pub iov: &'a [IoSlice<'a>],
    /// `None`: the message is one datagram. `Some(size)`: it is several datagrams of `size`
    /// bytes laid end to end (the last may be shorter), which the kernel sends apart (GSO).
    pub segment_size: Option<u16>,
}

/// Sends the first [`MMSG`] of `msgs` (the rest are left alone) in one `sendmmsg` on
/// `socket`, which must not block. Returns how many messages went: at least one when any was
/// offered; when fewer went than were offered, the next one's error shows on the next call.
/// An error means the first message did not go (`WouldBlock`: the send buffer is full).
pub fn send_messages(socket: &impl AsFd, msgs: &[Message<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(MMSG);
    if n == 0 {
        return Ok(0);
    }
    let mut cmsgs: [CmsgBuf; MMSG] = [[0; 4]; MMSG];
    // SAFETY: `mmsghdr` is plain data (integers and pointers) for which all zeroes is a
    // valid, empty value.
    let mut hdrs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
    for ((hdr, msg), cmsg) in hdrs.iter_mut().zip(&msgs[..n]).zip(&mut cmsgs) {
        let hdr = &mut hdr.msg_hdr;
        hdr.msg_name = msg.to.as_ptr().cast_mut().cast();
        hdr.msg_namelen = msg.to.len();
        // `IoSlice` has the layout of `iovec` on Unix; the kernel only reads through it.
        hdr.msg_iov = msg.iov.as_ptr().cast_mut().cast();
        hdr.msg_iovlen = msg.iov.len() as _;
        if let Some(size) = msg.segment_size {
            segment_cmsg(hdr, cmsg, size);
        }
    }
    let fd = socket.as_fd().as_raw_fd();
    loop {
        // SAFETY: the first `n` headers point at the callers' addresses and slices and at
        // control buffers of this frame, each with its true length, all alive for the call;
        // the kernel only reads them (and writes each header's `msg_len`).
        let sent =
            unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes a `UDP_SEGMENT` control message of `size` into `buf` and points `hdr` at it.
fn segment_cmsg(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, size: u16) {
    hdr.msg_control = buf.as_mut_ptr().cast();
    hdr.msg_controllen = CMSG_SPACE_U16 as _;
    // SAFETY: `msg_control` points at `CMSG_SPACE_U16` bytes of `buf` (checked at compile
    // time to fit), aligned for a `cmsghdr` (it is made of `u64`s), so the first header and
    // its `u16` of data fit; CMSG_FIRSTHDR is not null because `msg_controllen` is at least
    // one header.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
}
