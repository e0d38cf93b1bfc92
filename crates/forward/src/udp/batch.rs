//! Receiving a UDP forward's datagrams several at a time (`recvmmsg`).
//!
//! Why: the public side of a UDP forward read each client datagram with its own `recvfrom`,
//! one system call per datagram, while the tunnel side already moves datagrams in batches.
//! A burst (a game tick, a flood) is now read in one call.
//!
//! Memory: the slots are one mapping of [`SLOTS`] × 64 KiB, so that any datagram fits whole;
//! the kernel gives it pages only where datagrams land, the first page of a slot for small
//! ones.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use pinhole_udpio::{send_messages, Message};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{Datagram, MAX_DATAGRAM, RECV_BUFFER};

/// Datagrams one call may return.
pub const SLOTS: usize = 16;

/// Room for up to [`SLOTS`] datagrams and what arrived in them.
#[derive(Debug)]
pub struct RecvBatch {
    buf: Vec<u8>,
    /// Each datagram with the slot it landed in.
    got: Vec<(usize, Datagram)>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    /// An empty batch; its buffer is allocated on first use.
    pub fn new() -> RecvBatch {
        RecvBatch {
            buf: Vec::new(),
            got: Vec::with_capacity(SLOTS),
        }
    }

    /// How many datagrams the last receive left.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Whether the last receive left none.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }

    /// The `i`-th datagram received and its bytes.
    pub fn get(&self, i: usize) -> (Datagram, &[u8]) {
        let (slot, d) = self.got[i];
        let start = slot * RECV_BUFFER;
        (d, &self.buf[start..start + d.len])
    }

    /// The end (exclusive) of the run of datagrams that starts at `first` and shares its
    /// client and local port: what one session sends upstream in one call.
    pub(crate) fn run_end(&self, first: usize) -> usize {
        let Some(&(_, head)) = self.got.get(first) else {
            return first;
        };
        let same =
            |(_, d): &(usize, Datagram)| (d.from, d.local_port) == (head.from, head.local_port);
        first
            + self.got[first..]
                .iter()
                .take_while(|e| same(e))
                .take(SLOTS)
                .count()
    }

    /// Slot `i` (below [`SLOTS`]), to receive one datagram into: for a
    /// [`DatagramListener`](super::DatagramListener) that fills a batch its own way.
    pub fn slot(&mut self, i: usize) -> &mut [u8] {
        self.reserve();
        &mut self.buf[i * RECV_BUFFER..(i + 1) * RECV_BUFFER]
    }

    /// Forgets what the last receive left; a receive starts with it.
    pub fn clear(&mut self) {
        self.got.clear();
    }

    /// Records a datagram received into slot `slot`, after those recorded before it.
    pub fn push(&mut self, slot: usize, d: Datagram) {
        self.got.push((slot, d));
    }

    fn reserve(&mut self) {
        if self.buf.is_empty() {
            // One allocation above glibc's mmap threshold: untouched pages cost nothing.
            self.buf = vec![0; SLOTS * RECV_BUFFER];
        }
    }
}

/// Receives one or more datagrams on `socket` into `batch` (cleared first).
pub(crate) async fn recv_into(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
    batch.clear();
    batch.reserve();
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || recvmmsg(socket, batch)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

fn recvmmsg(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<()> {
    // SAFETY (for the zeroed values): all-zero is a valid `iovec`, `sockaddr_storage` and
    // `mmsghdr` (null pointers, zero lengths), and each is filled in below before use.
    let mut iovs: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
    let mut addrs: [libc::sockaddr_storage; SLOTS] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
    let base = batch.buf.as_mut_ptr();
    for i in 0..SLOTS {
        iovs[i] = libc::iovec {
            // SAFETY: slot i lies within `batch.buf`, which holds SLOTS slots (`reserve`).
            iov_base: unsafe { base.add(i * RECV_BUFFER) }.cast(),
            iov_len: RECV_BUFFER,
        };
        hdrs[i].msg_hdr.msg_name = std::ptr::addr_of_mut!(addrs[i]).cast();
        hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        hdrs[i].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iovs[i]);
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at its own address storage and its own slot of the
    // batch's buffer, all of which outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            hdrs.as_mut_ptr(),
            SLOTS as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for (slot, (hdr, addr)) in hdrs.iter().zip(&addrs).take(n as usize).enumerate() {
        // A datagram from an address that is not IPv4 or IPv6 cannot be answered: skipped.
        if let Some(from) = socket_addr(addr) {
            let len = (hdr.msg_len as usize).min(RECV_BUFFER);
            batch.push(
                slot,
                Datagram {
                    len,
                    from,
                    local_port: None,
                },
            );
        }
    }
    Ok(())
}

/// Sends each of `bufs` as one datagram to `to` on `socket`. A run of equal sizes (the last
/// may be shorter) goes as one `UDP_SEGMENT` send that the kernel cuts into the datagrams
/// (GSO); the rest go up to [`SLOTS`] per `sendmmsg`. A datagram the kernel refuses is skipped
/// and the rest still go; returns the last refusal.
///
/// Why GSO as well: into a TUN device with UDP offload the run arrives as one packet, one
/// read for the node loop instead of one per datagram; elsewhere the kernel builds and routes
/// it once. A device that cannot take it (no checksum offload, say) refuses the send, and
/// the run goes by `sendmmsg` instead: one wasted call per run, never a lost datagram.
pub(crate) async fn send_many(
    socket: &UdpSocket,
    bufs: &[&[u8]],
    to: SocketAddr,
) -> io::Result<()> {
    if let [one] = bufs {
        return socket.send_to(one, to).await.map(drop);
    }
    let to = socket2::SockAddr::from(to);
    let mut rest = bufs;
    let mut failed = Ok(());
    let mut gso = true;
    while !rest.is_empty() {
        let run = if gso { gso_run(rest) } else { 1 };
        socket.writable().await?;
        let sent = if run > 1 {
            socket
                .try_io(Interest::WRITABLE, || send_gso(socket, &rest[..run], &to))
                .map(|()| run)
        } else {
            socket.try_io(Interest::WRITABLE, || sendmmsg(socket, rest, &to))
        };
        match sent {
            Ok(sent) => rest = &rest[sent..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // Refused as a whole: send this call's datagrams one by one (in batches).
            Err(_) if run > 1 => gso = false,
            Err(e) => {
                // The call failed on the first datagram left: drop that one, send the rest.
                failed = Err(e);
                rest = &rest[1..];
            }
        }
    }
    failed
}

/// How many of the first of `bufs` one GSO send may carry: datagrams of the first one's size
/// (not empty), then one shorter, at most [`SLOTS`] and [`MAX_DATAGRAM`] bytes in all (the
/// super-datagram's length must fit the UDP header).
fn gso_run(bufs: &[&[u8]]) -> usize {
    let size = bufs[0].len();
    if size == 0 {
        return 1;
    }
    let mut total = 0;
    let mut n = 0;
    for buf in bufs.iter().take(SLOTS) {
        if buf.is_empty() || buf.len() > size || total + buf.len() > MAX_DATAGRAM {
            break;
        }
        total += buf.len();
        n += 1;
        if buf.len() < size {
            break;
        }
    }
    n.max(1)
}

/// The first [`SLOTS`] of `bufs` as `IoSlice`s, empty past them.
fn io_slices<'a>(bufs: &[&'a [u8]]) -> [IoSlice<'a>; SLOTS] {
    std::array::from_fn(|i| IoSlice::new(bufs.get(i).copied().unwrap_or_default()))
}

/// One message of `bufs` (at most [`SLOTS`], each but the last of the first one's size, as
/// [`gso_run`] picks them) with `UDP_SEGMENT` set to that size: the kernel sends them as
/// separate datagrams. All or nothing.
fn send_gso(socket: &UdpSocket, bufs: &[&[u8]], to: &socket2::SockAddr) -> io::Result<()> {
    let n = bufs.len().min(SLOTS);
    let iovs = io_slices(bufs);
    let message = Message {
        to,
        iov: &iovs[..n],
        // `gso_run` keeps a run within MAX_DATAGRAM bytes, so each size fits.
        segment_size: Some(bufs[0].len() as u16),
    };
    send_messages(socket, &[message]).map(drop)
}

/// One `sendmmsg` of the first [`SLOTS`] of `bufs` at most, each its own datagram; how many
/// the kernel took (≥ 1).
fn sendmmsg(socket: &UdpSocket, bufs: &[&[u8]], to: &socket2::SockAddr) -> io::Result<usize> {
    let n = bufs.len().min(SLOTS);
    let iovs = io_slices(bufs);
    let messages: [Message<'_>; SLOTS] = std::array::from_fn(|i| Message {
        to,
        iov: std::slice::from_ref(&iovs[i]),
        segment_size: None,
    });
    match send_messages(socket, &messages[..n])? {
        // Not expected for a non-empty batch; an error (not "would block", which would wait
        // for a readiness edge that may never come) skips one datagram rather than spin.
        0 => Err(io::Error::other("sendmmsg sent nothing")),
        sent => Ok(sent),
    }
}

/// The IPv4 or IPv6 address in `storage`, as the kernel filled it.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it has room for.
            let a: &libc::sockaddr_in = unsafe { &*std::ptr::from_ref(storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let a: &libc::sockaddr_in6 = unsafe { &*std::ptr::from_ref(storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::data;

    /// A burst already queued is read in one call, each datagram whole, with its sender, in
    /// order; on IPv4 and IPv6.
    #[tokio::test]
    async fn a_queued_burst_is_read_in_one_call_each_datagram_whole() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let socket = UdpSocket::bind(local).await.unwrap();
            let to = socket.local_addr().unwrap();
            let a = UdpSocket::bind(local).await.unwrap();
            let b = UdpSocket::bind(local).await.unwrap();
            let sizes = [0, 1, 64, 1500, 9000, crate::udp::MAX_DATAGRAM];
            let mut sent = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let from = if i % 2 == 0 { &a } else { &b };
                let bytes = data(size, i as u64);
                from.send_to(&bytes, to).await.unwrap();
                sent.push((from.local_addr().unwrap(), bytes));
            }
            let mut batch = RecvBatch::new();
            recv_into(&socket, &mut batch).await.unwrap();
            assert_eq!(
                batch.len(),
                sizes.len(),
                "{local}: one call takes the whole burst"
            );
            for (i, (from, bytes)) in sent.iter().enumerate() {
                let (d, got) = batch.get(i);
                assert_eq!(
                    (d.from, d.len),
                    (*from, bytes.len()),
                    "{local} datagram {i}"
                );
                assert_eq!(got, &bytes[..], "{local} datagram {i}");
            }
            // The next call waits for the next datagram and forgets the last batch.
            a.send_to(b"again", to).await.unwrap();
            recv_into(&socket, &mut batch).await.unwrap();
            assert_eq!(batch.len(), 1);
            assert_eq!(batch.get(0).1, b"again");
        }
    }

    /// More datagrams than one call takes, of every size, with one the kernel refuses in the
    /// middle: the rest arrive whole and in order, and the refusal is reported.
    #[tokio::test]
    async fn send_many_sends_every_datagram_in_order_and_skips_a_refused_one() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let from = UdpSocket::bind(local).await.unwrap();
            let to_socket = UdpSocket::bind(local).await.unwrap();
            let to = to_socket.local_addr().unwrap();
            let mut bufs: Vec<Vec<u8>> = (0..2 * SLOTS + 3)
                .map(|i| data((i * 397) % 3000, i as u64))
                .collect();
            let refused = 5;
            bufs[refused] = data(crate::udp::MAX_DATAGRAM + 100, 0); // EMSGSIZE
            let slices: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
            let err = send_many(&from, &slices, to).await.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{local}");
            let expected: Vec<&Vec<u8>> = bufs
                .iter()
                .enumerate()
                .filter_map(|(i, b)| (i != refused).then_some(b))
                .collect();
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            crate::test_util::within("every datagram", async {
                while got.len() < expected.len() {
                    recv_into(&to_socket, &mut batch).await.unwrap();
                    for i in 0..batch.len() {
                        let (d, bytes) = batch.get(i);
                        assert_eq!(d.from, from.local_addr().unwrap());
                        got.push(bytes.to_vec());
                    }
                }
            })
            .await;
            assert!(
                got.iter().eq(expected.iter().copied()),
                "{local}: whole, in order"
            );
        }
    }

    /// Runs of equal sizes go as GSO sends and still arrive as the datagrams they were: whole,
    /// in order, each with its own size, a shorter one ending a run, on IPv4 and IPv6.
    #[tokio::test]
    async fn equal_runs_arrive_as_the_datagrams_they_were() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let from = UdpSocket::bind(local).await.unwrap();
            let to_socket = UdpSocket::bind(local).await.unwrap();
            let to = to_socket.local_addr().unwrap();
            let sizes = [1000; 20]
                .into_iter()
                .chain([200, 200, 200, 50, 1, 1, 1300, 1300]);
            let bufs: Vec<Vec<u8>> = sizes
                .enumerate()
                .map(|(i, size)| data(size, i as u64))
                .collect();
            assert_eq!(gso_run(&[&bufs[0][..], &bufs[1][..]]), 2);
            let slices: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
            send_many(&from, &slices, to).await.unwrap();
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            crate::test_util::within("every datagram", async {
                while got.len() < bufs.len() {
                    recv_into(&to_socket, &mut batch).await.unwrap();
                    for i in 0..batch.len() {
                        got.push(batch.get(i).1.to_vec());
                    }
                }
            })
            .await;
            assert!(got == bufs, "{local}: whole, in order, each its own size");
        }
    }

    #[test]
    fn a_gso_run_is_equal_sizes_then_at_most_one_shorter() {
        let b = |n: usize| vec![7u8; n];
        let (k, s, l, e) = (b(100), b(40), b(101), b(0));
        assert_eq!(gso_run(&[&k, &k, &s, &k]), 3, "a shorter one ends the run");
        assert_eq!(gso_run(&[&k, &l]), 1, "a longer one cannot follow");
        assert_eq!(gso_run(&[&e, &e]), 1, "empty datagrams go alone");
        assert_eq!(gso_run(&[&k, &e]), 1);
        let many: Vec<&[u8]> = std::iter::repeat_n(&k[..], 40).collect();
        assert_eq!(gso_run(&many), SLOTS);
        let big = b(30_000);
        assert_eq!(
            gso_run(&[&big, &big, &big]),
            2,
            "at most MAX_DATAGRAM bytes in all"
        );
    }
}
