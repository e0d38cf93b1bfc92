//! The UDP socket WireGuard datagrams come in and go out by, with the kernel's
//! batching: one `recvmmsg` takes many datagrams, UDP GRO hands over a run of
//! one peer's datagrams in one buffer, UDP GSO sends a run as one message, and
//! one `sendmmsg` sends a batch's runs together. A datagram per system call is
//! what holds userspace WireGuard to a few hundred Mbit/s (docs/benchmarks.md);
//! this is where that goes.
//!
//! Receiving is `quinn-udp`'s (its `recvmmsg` and GRO control messages).
//! Sending is our own `sendmmsg` (the `send` module): `quinn-udp` sends one run
//! per call, and turns GSO off for the whole socket after one refused send,
//! where only that destination needs it off. Where the kernel has no GSO or
//! GRO the same calls move one datagram at a time.
//!
//! Two system calls per wake-up are saved on the latency path (measured with
//! `strace` on a 64-byte round trip, docs/benchmarks.md): the socket is
//! registered for reading only, because every UDP send frees send-buffer
//! space and so raises an `EPOLLOUT` edge that would wake the loop once more
//! per send; and a `recvmmsg` that fills fewer slots than it offered has
//! emptied the queue, so readiness is cleared without a second call to hear
//! `EAGAIN`.

mod batch;
mod send;

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use batch::{Segments, SendBatch, MAX_GSO_BYTES};
use quinn_udp::{RecvMeta, UdpSocketState};
pub use send::{send_messages, Message, MMSG};
use socket2::SockAddr;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Receive slots per `recvmmsg`. With GRO each slot can hold a run of up to
/// 64 datagrams, so a wake-up can drain hundreds; without it, this many.
const SLOTS: usize = 8;

/// Bytes per receive slot: the largest GRO run the kernel builds (64 KiB).
const SLOT_BYTES: usize = 64 * 1024;

/// Socket buffers asked for, so a burst at line rate is not dropped by the
/// kernel before the loop gets to it.
const SOCKET_BUFFER: usize = 4 << 20;

/// At most one warning per this period for send failures, so a dead route
/// cannot flood the log.
const SEND_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a destination whose GSO send failed gets one datagram per system
/// call before GSO is tried again (its path MTU may have come back).
const NO_GSO_FOR: Duration = Duration::from_secs(60);

/// Most destinations remembered as refusing GSO; beyond it the oldest memory
/// is dropped (they are peers' endpoints, so few).
const NO_GSO_MAX: usize = 256;

/// The WireGuard socket with its batching state and receive buffers.
pub struct UdpIo {
    /// Registered for reading only (see the module docs); a full send buffer
    /// is waited out with a registration of its own ([`wait_writable`]).
    socket: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    /// An IPv6 socket that also carries IPv4 (as mapped addresses).
    dual_stack: bool,
    recv_buf: Vec<u8>,
    meta: [RecvMeta; SLOTS],
    last_send_error_log: Option<Instant>,
    /// Destinations whose last GSO send failed, until when they get none.
    no_gso: HashMap<SocketAddr, Instant>,
}

impl UdpIo {
    /// Wraps a bound socket (tests bind port 0 on loopback) and turns on what
    /// the kernel offers: GRO on receive, and GSO where it is supported.
    pub fn new(socket: UdpSocket) -> io::Result<UdpIo> {
        let dual_stack = socket.local_addr()?.is_ipv6();
        let state = UdpSocketState::new((&socket).into())?;
        allow_fragmentation(&socket, dual_stack);
        no_unread_control_messages(&socket, dual_stack);
        // Leaves the runtime's read-and-write registration for a read-only one.
        let socket = socket.into_std()?;
        // SAFETY: `AsyncFd` takes the socket by value, so its descriptor stays open,
        // and refers to the same socket, for as long as the registration lives.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(UdpIo {
            socket,
            state,
            dual_stack,
            // Pages are only touched (and resident) as far as bursts reach.
            recv_buf: vec![0u8; SLOTS * SLOT_BYTES],
            meta: [RecvMeta::default(); SLOTS],
            last_send_error_log: None,
            no_gso: HashMap::new(),
        })
    }

    /// The bound address (port 0 becomes the real port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// How many datagrams one GSO send may carry (1: no GSO here).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// How many datagrams one send to `dst` may carry: [`UdpIo::max_segments`],
    /// or 1 for a while after a GSO send to `dst` failed.
    pub fn max_segments_to(&self, dst: SocketAddr) -> usize {
        if !self.no_gso.is_empty() {
            if let Some(until) = self.no_gso.get(&dst) {
                if Instant::now() < *until {
                    return 1;
                }
            }
        }
        self.max_segments()
    }

    /// Resolves when datagrams may be waiting. Cancel-safe.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Ready when datagrams may be waiting; otherwise `cx` is woken when some
    /// arrive. The readiness is kept (`try_recv` clears it). The socket has one
    /// reader slot, no list of waiters, so a loop that polls this every turn
    /// registers nothing new; only the last task to poll is woken.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_read_ready(cx).map_ok(drop)
    }

    /// Receives what one `recvmmsg` returns and calls `each` for every
    /// datagram in it, GRO runs taken apart, with IPv4 senders in plain IPv4
    /// form. Returns the number of datagrams, or `WouldBlock` when none were
    /// waiting (without a system call once a short batch showed the queue
    /// empty). Other errors (ICMP errors surface here on Linux) are the
    /// caller's to log: they are no reason to stop.
    pub fn try_recv(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        // The readiness is taken before the call, so an event the runtime records
        // after it (a datagram that arrived since) is not the one cleared below.
        // No task waits through this poll: a pending one only says "not ready".
        let mut ready = match self
            .socket
            .poll_read_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(ready) => ready?,
            Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
        };
        let n = {
            let mut chunks = self.recv_buf.chunks_mut(SLOT_BYTES);
            // Cannot fail: `recv_buf` is allocated once as exactly SLOTS * SLOT_BYTES bytes
            // and never resized, so it has SLOTS chunks for the SLOTS calls of `from_fn`.
            let mut slices: [IoSliceMut<'_>; SLOTS] = std::array::from_fn(|_| {
                IoSliceMut::new(chunks.next().expect("recv_buf holds SLOTS slots"))
            });
            let (state, meta) = (&self.state, &mut self.meta);
            match ready.try_io(|socket| state.recv(socket.get_ref().into(), &mut slices, meta)) {
                Ok(n) => n?,
                // `try_io` cleared the readiness: the next wake-up is the kernel's.
                Err(_would_block) => return Err(io::ErrorKind::WouldBlock.into()),
            }
        };
        // `recvmmsg` stops early only when the queue is empty (an error after some
        // datagrams is kept for the next call), so a short batch needs no second
        // call just to hear `EAGAIN`. Short of what was offered: quinn-udp offers at
        // most its own batch size.
        if n < SLOTS.min(quinn_udp::BATCH_SIZE) {
            ready.clear_ready();
        }
        let mut datagrams = 0;
        for (slot, meta) in self.meta.iter().take(n).enumerate() {
            let len = meta.len.min(SLOT_BYTES);
            let data = &self.recv_buf[slot * SLOT_BYTES..slot * SLOT_BYTES + len];
            let stride = if meta.stride == 0 { len } else { meta.stride };
            if stride == 0 {
                continue;
            }
            let from = canonical(meta.addr);
            for datagram in data.chunks(stride) {
                each(from, datagram);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends every run of `batch` (waiting while the socket buffer is full)
    /// and empties it, up to [`MMSG`] runs per system call. A failed
    /// send is logged at most every 10 s and the datagrams are dropped:
    /// WireGuard's peers retransmit.
    pub async fn send(&mut self, batch: &mut SendBatch) {
        if !self.no_gso.is_empty() {
            // Expired entries go, or every datagram would keep paying a lookup.
            let now = Instant::now();
            self.no_gso.retain(|_, until| *until > now);
        }
        let runs = batch.runs().count();
        let mut done = 0;
        while done < runs {
            match self.send_runs(batch.runs().skip(done)) {
                Ok(n) => done += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = wait_writable(self.socket.get_ref()).await {
                        if let Some(run) = batch.runs().nth(done) {
                            self.log_send_error(run.dst, &e);
                        }
                        done += 1;
                    }
                }
                Err(e) => {
                    // Only the first run offered failed: those before it went.
                    if let Some(run) = batch.runs().nth(done) {
                        self.resend_alone(run, &e).await;
                    }
                    done += 1;
                }
            }
        }
        batch.clear();
    }

    /// Sends the first [`MMSG`] of `runs` in one `sendmmsg`, as [`send_messages`] counts
    /// them.
    fn send_runs<'a>(&self, runs: impl Iterator<Item = Segments<'a>>) -> io::Result<usize> {
        let mut dsts: [Option<SockAddr>; MMSG] = Default::default();
        let mut bytes: [&[u8]; MMSG] = [&[]; MMSG];
        let mut sizes: [Option<u16>; MMSG] = [None; MMSG];
        let mut count = 0;
        for run in runs.take(MMSG) {
            let dst = if self.dual_stack {
                mapped(run.dst)
            } else {
                run.dst
            };
            dsts[count] = Some(SockAddr::from(dst));
            bytes[count] = run.bytes;
            sizes[count] = run.segment_size;
            count += 1;
        }
        let Some(first) = dsts[0].as_ref() else {
            return Ok(0);
        };
        let iovs: [IoSlice<'_>; MMSG] = std::array::from_fn(|i| IoSlice::new(bytes[i]));
        let msgs: [Message<'_>; MMSG] = std::array::from_fn(|i| Message {
            // Past `count` a placeholder: those messages are not sent.
            to: dsts[i].as_ref().unwrap_or(first),
            iov: std::slice::from_ref(&iovs[i]),
            segment_size: sizes[i],
        });
        send_messages(self.socket.get_ref(), &msgs[..count])
    }

    /// A run the kernel refused. With GSO: EMSGSIZE when a segment no longer
    /// fits the path MTU (the kernel would have fragmented single datagrams),
    /// EIO/EINVAL where the device or kernel cannot segment. Nothing is lost:
    /// the run goes out one datagram at a time, and so does everything to this
    /// destination for a while; other destinations keep GSO. Without GSO the
    /// error is logged and the datagram dropped.
    async fn resend_alone(&mut self, run: Segments<'_>, e: &io::Error) {
        let Some(size) = run.segment_size else {
            self.log_send_error(run.dst, e);
            return;
        };
        tracing::debug!(to = %run.dst, error = %e, "GSO send refused; sending one datagram per system call");
        self.remember_no_gso(run.dst);
        for datagram in run.bytes.chunks(usize::from(size)) {
            let single = Segments {
                dst: run.dst,
                bytes: datagram,
                segment_size: None,
            };
            if let Err(e) = self.send_one(single).await {
                self.log_send_error(run.dst, &e);
            }
        }
    }

    /// Sends one run by itself, waiting while the socket buffer is full.
    async fn send_one(&self, run: Segments<'_>) -> io::Result<()> {
        loop {
            match self.send_runs(std::iter::once(run)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(self.socket.get_ref()).await?;
                }
                other => return other.map(drop),
            }
        }
    }

    fn remember_no_gso(&mut self, dst: SocketAddr) {
        let now = Instant::now();
        if self.no_gso.len() >= NO_GSO_MAX {
            self.no_gso.retain(|_, until| *until > now);
            if self.no_gso.len() >= NO_GSO_MAX {
                self.no_gso.clear();
            }
        }
        self.no_gso.insert(dst, now + NO_GSO_FOR);
    }

    fn log_send_error(&mut self, to: SocketAddr, e: &io::Error) {
        let due = self
            .last_send_error_log
            .is_none_or(|at| at.elapsed() >= SEND_ERROR_LOG_EVERY);
        if due {
            tracing::warn!(%to, error = %e, "cannot send to peer (repeats are not logged for 10 s)");
            self.last_send_error_log = Some(Instant::now());
        }
    }
}

/// Waits until the socket's send buffer has room. The main registration is
/// for reading only, so this registers a duplicate of the descriptor for
/// writing, for as long as the wait lasts: a full 4 MiB send buffer is rare,
/// an `EPOLLOUT` wake-up after every send would not be.
async fn wait_writable(socket: &std::net::UdpSocket) -> io::Result<()> {
    let duplicate = socket.try_clone()?;
    // SAFETY: the duplicate is owned by the `AsyncFd`, so its descriptor stays
    // open, and refers to the same socket, until the registration is dropped.
    let waiter = unsafe { AsyncFd::register_with_interest(duplicate, Interest::WRITABLE) }
        .map_err(io::Error::from)?;
    // Registering polls the socket, so room that is already there is seen at once.
    waiter.writable().await.map(drop)
}

/// Turns an IPv4-mapped IPv6 address (what a dual-stack socket reports for an
/// IPv4 sender) back into IPv4, so endpoints read the way people wrote them.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The inverse of [`canonical`]: a dual-stack socket can only send to IPv6
/// addresses, so IPv4 destinations are written in their mapped form.
fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        SocketAddr::V6(_) => addr,
    }
}

/// Binds the WireGuard port: one socket for IPv4 and IPv6 where the host has
/// IPv6, else IPv4 only, with large kernel buffers. A plain socket, because
/// the caller binds early (to report a taken port before anything starts) and
/// the node loop builds the [`UdpIo`] from it.
pub fn bind_socket(port: u16) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match s.bind(&addr.into()) {
                Ok(()) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
                Err(_) => bind_v4(port)?,
            }
        }
        Err(_) => bind_v4(port)?,
    };
    // Larger buffers are an optimisation; a host that refuses them still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

fn bind_v4(port: u16) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    Ok(s)
}

/// Gives the socket back the kernel's default fragmentation policy, which
/// `quinn-udp` turns off (QUIC probes the path MTU itself). WireGuard does
/// not: kernel WireGuard lets its outer packets be fragmented, and a tunnel
/// whose MTU is a little too large should still carry traffic, not drop it.
/// Best effort: a kernel without an option keeps what it has.
fn allow_fragmentation(socket: &UdpSocket, v6: bool) {
    let fd = socket.as_raw_fd();
    set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    );
    if v6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        );
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0);
    }
}

/// Turns off the control messages `quinn-udp` asks for and nothing here reads: the packet's
/// destination address and its TOS or traffic class. The kernel writes each of them into every
/// received datagram's header: ~0.2 µs per receive together (a `recvmmsg` on loopback, 1.38
/// against 1.17 µs with only the GRO message left). Best effort, as above.
fn no_unread_control_messages(socket: &UdpSocket, v6: bool) {
    let fd = socket.as_raw_fd();
    set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 0);
    set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 0);
    if v6 {
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 0);
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 0);
    }
}

fn set_int(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `fd` is an open socket borrowed for the call, and the option
    // value is a live `c_int` whose exact size is passed as its length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(level, name, error = %io::Error::last_os_error(), "setsockopt refused");
    }
}

#[cfg(test)]
mod tests;
