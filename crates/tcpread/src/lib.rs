//! Reads from a kernel TCP socket that also say whether the socket is drained, so the
//! read that would only hear `EAGAIN` is not made.
//!
//! Why: a forwarder woken for a 64-byte request reads it, then reads again to learn that
//! nothing more is queued, because a short read proves nothing: Linux stops a read short at
//! TCP urgent data with more bytes behind it, and no new event comes for those. That second
//! system call sits between the request and the datagram that carries it on, at both ends of
//! the tunnel, on every round trip.
//!
//! With `TCP_INQ` (Linux 4.18) set on the socket, every `recvmsg` brings back how many bytes
//! the receive queue still holds. Zero means drained: the read is the last one, and tokio's
//! readiness is cleared as if it had returned `EAGAIN`. Non-zero (urgent data, or more that
//! arrived meanwhile) means read on. After the peer's FIN the kernel reports 1, so EOF is
//! still read. Where the option is refused, reads go on until `EAGAIN` as before.
//!
//! Only a message ends its reads where the socket is drained ([`Until::Drained`]). In a bulk
//! flow more bytes arrive while the turn still runs, and the read that would have heard
//! `EAGAIN` takes them instead: stopping at "drained" there made each turn carry less and
//! cost more turns (four streams home → client, alternating builds: −7 %). The caller
//! knows which it is reading ([`Until::Eagain`] once a read was [`Read::bulk`]).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// `TCP_INQ` from `<linux/tcp.h>`; also the type of the control message it adds (`TCP_CM_INQ`).
/// Not in the `libc` crate.
const TCP_INQ: libc::c_int = 36;

/// Asks the kernel to report, with every read of `tcp`, what is left in its receive queue.
/// Returns whether it agreed; reads work either way.
pub fn report_queue(tcp: &TcpStream) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and a pointer to an int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_TCP,
            TCP_INQ,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// What one read brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Bytes read; 0 is the peer's EOF.
    pub len: usize,
    /// Nothing was left in the socket after this read: its readiness is cleared, as after
    /// `EAGAIN`, and the caller registers for the next event (`poll_read_ready`) instead of
    /// reading again.
    pub drained: bool,
    /// The read filled its buffer or brought [`BULK_READ`] bytes or more: bulk is flowing,
    /// and the caller's next reads of this wake-up go on until `EAGAIN` ([`Until::Eagain`]).
    pub bulk: bool,
}

/// A read of at least this many bytes is bulk ([`Read::bulk`]), as one that fills its buffer
/// is: it does not end the reads even where it drained the socket. A request or an answer is
/// mostly far smaller.
pub const BULK_READ: usize = 16 * 1024;

/// Where a caller's run of reads stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// At the read that leaves the socket empty by the kernel's count, unless it is bulk
    /// ([`Read::bulk`]), or at `EAGAIN`: for a message, whose last byte is in.
    Drained,
    /// At `EAGAIN` only: for a bulk flow, whose next bytes may arrive before the next read.
    Eagain,
}

/// One non-blocking read of `tcp` into `buf`. `WouldBlock` as from any tokio read: nothing
/// was queued, and readiness is cleared.
pub fn try_read(tcp: &TcpStream, buf: &mut [u8], until: Until) -> io::Result<Read> {
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and `recvmsg` only writes initialised
    // bytes into it, so `buf` stays initialised.
    let buf = unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) };
    try_read_uninit(tcp, buf, until)
}

/// [`try_read`] into a buffer that need not be initialised: the first `len` bytes are after.
pub fn try_read_uninit(
    tcp: &TcpStream,
    buf: &mut [MaybeUninit<u8>],
    until: Until,
) -> io::Result<Read> {
    let capacity = buf.len();
    let bulk = |len: usize| len == capacity || len >= BULK_READ;
    // A read that drained the socket returns `WouldBlock` from inside `try_io`, so tokio
    // clears the readiness it saw before the read (a later event is kept); its length waits
    // here.
    let mut last = None;
    let read = tcp.try_io(Interest::READABLE, || {
        // Bulk reads on until `EAGAIN` whatever the count says: no need to ask for it.
        let (len, queued) = recv(tcp.as_raw_fd(), buf, until == Until::Drained)?;
        if len > 0 && !bulk(len) && queued == Some(0) {
            last = Some(len);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(len)
    });
    if let Some(len) = last {
        // Only a drained read set it, and `try_io` passed on its `WouldBlock`.
        return Ok(Read {
            len,
            drained: true,
            bulk: false,
        });
    }
    read.map(|len| Read {
        len,
        drained: false,
        bulk: bulk(len),
    })
}

/// One `recvmsg`: the bytes read, and, when `count` asks for it, the bytes still queued
/// when the kernel said.
fn recv(
    fd: libc::c_int,
    buf: &mut [MaybeUninit<u8>],
    count: bool,
) -> io::Result<(usize, Option<u32>)> {
    // Room for one control message carrying an int, aligned for `cmsghdr`.
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if count {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
    }
    // SAFETY: `msg` points at `iov` (which spans `buf`) and, when set, at `control`, all live
    // and writable for the call; the lengths are theirs.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut queued = None;
    // SAFETY: the CMSG macros walk `control` within `msg_controllen`, which the kernel set to
    // what it wrote; the data of a `TCP_CM_INQ` message is one int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_TCP && (*cmsg).cmsg_type == TCP_INQ {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                queued = u32::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    // `n` is non-negative here and at most `buf.len()`.
    Ok((n as usize, queued))
}

#[cfg(test)]
mod tests;
