//! Sending a batch's runs: up to [`MMSG`] of them in one `sendmmsg`, each run
//! its own message with its own destination and, when it carries several
//! datagrams, its own `UDP_SEGMENT` size.
//!
//! Why not a `sendmsg` per run: bulk traffic fills a batch with a dozen GSO
//! runs of 45 datagrams each (64 KiB is the most one run may carry), and a
//! loop turn that serves several connections ends with runs of different
//! sizes. One call sends them all.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

use crate::batch::Segments;

/// Most runs one `sendmmsg` carries; the rest go in the next call.
pub(crate) const MMSG: usize = 16;

/// Room for one `cmsghdr` with a `u16` (`CMSG_SPACE(2)` is 16 bytes on 64-bit
/// Linux, 12 on 32-bit), in words so the buffer is aligned as a header must be.
type CmsgBuf = [u64; 4];

/// Sends the first [`MMSG`] of `runs` (what the iterator yields after that is
/// left alone) in one `sendmmsg`, each to its own destination, where `map`
/// turns a destination into what the socket can send to. Returns how many runs
/// went: at least one when any was offered; when fewer went than were offered,
/// the next one's error shows on the next call. An error means the first run
/// did not go.
pub(crate) fn send_runs<'a>(
    fd: RawFd,
    runs: impl Iterator<Item = Segments<'a>>,
    map: impl Fn(SocketAddr) -> SocketAddr,
) -> io::Result<usize> {
    let mut addrs: [Option<SockAddr>; MMSG] = Default::default();
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MMSG];
    let mut cmsgs: [CmsgBuf; MMSG] = [[0; 4]; MMSG];
    // SAFETY: `mmsghdr` is plain data (integers and pointers) for which all
    // zeroes is a valid, empty value.
    let mut hdrs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    for (i, run) in runs.take(MMSG).enumerate() {
        let addr = addrs[i].insert(SockAddr::from(map(run.dst)));
        // The kernel only reads through this pointer: the datagrams are sent, not filled.
        iovs[i] = libc::iovec {
            iov_base: run.bytes.as_ptr().cast_mut().cast(),
            iov_len: run.bytes.len(),
        };
        let hdr = &mut hdrs[i].msg_hdr;
        hdr.msg_name = addr.as_ptr().cast_mut().cast();
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
        if let Some(size) = run.segment_size {
            segment_cmsg(hdr, &mut cmsgs[i], size)?;
        }
        n = i + 1;
    }
    if n == 0 {
        return Ok(0);
    }
    loop {
        // SAFETY: the first `n` headers point at live addresses, iovecs and
        // control buffers of this frame, each with its true length; the kernel
        // only reads them (and writes each header's `msg_len`).
        let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes a `UDP_SEGMENT` control message of `size` into `buf` and points
/// `hdr` at it.
fn segment_cmsg(hdr: &mut libc::msghdr, buf: &mut CmsgBuf, size: usize) -> io::Result<()> {
    let size = u16::try_from(size).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "GSO segment over 65,535 bytes")
    })?;
    // SAFETY: CMSG_SPACE is a pure computation on a constant.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    if space > std::mem::size_of::<CmsgBuf>() {
        return Err(io::Error::other("control message buffer too small"));
    }
    hdr.msg_control = buf.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    // SAFETY: `msg_control` points at `space` bytes of `buf`, aligned for a
    // `cmsghdr` (it is made of `u64`s), so the first header and its `u16` of
    // data fit; CMSG_FIRSTHDR is not null because `msg_controllen` is at least
    // one header.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
    Ok(())
}
