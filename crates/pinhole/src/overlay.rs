//! Adapters that let the forwarding layer use the overlay without knowing
//! which stack is underneath: a forward dials *into* the overlay, an expose
//! accepts *from* it.
//!
//! [`Net`] is the one value services are given. With the userspace stack it
//! holds the stack's [`Overlay`] handle; with the TUN stack the overlay is the
//! kernel's, so dialing and listening are ordinary kernel sockets on overlay
//! addresses. Either way the services get a dialer, an acceptor or a datagram
//! socket from it, each an enum over the two kinds, and never look inside.

use std::io;
use std::net::{IpAddr, SocketAddr};

use pinhole_forward::{
    Acceptor, Datagram, DatagramDialer, DatagramListener, DatagramPortDialer, DatagramSocket,
    PortDialer, RecvBatch, TcpDialer, TcpPortRange, UdpDialer, UdpPortRange, BATCH_SLOTS,
};
use pinhole_netstack::{Overlay, OverlayListener, OverlayStream, OverlayUdpSocket};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::either::Either;

use crate::services::unspecified_like;

/// Dials any port of one overlay address: the far end of a forward over a port range.
pub struct OverlayPortDialer {
    overlay: Overlay,
    ip: IpAddr,
}

impl OverlayPortDialer {
    /// A dialer for `ip:any port` through `overlay`.
    pub fn new(overlay: Overlay, ip: IpAddr) -> Self {
        Self { overlay, ip }
    }
}

impl PortDialer for OverlayPortDialer {
    type Stream = OverlayStream;

    async fn dial_port(&self, port: u16) -> io::Result<OverlayStream> {
        self.overlay.connect(SocketAddr::new(self.ip, port)).await
    }
}

/// Accepts connections on an overlay `address:port` (or range): the near end of an `[[expose]]`.
pub struct OverlayAcceptor(pub OverlayListener);

impl Acceptor for OverlayAcceptor {
    type Stream = OverlayStream;

    async fn accept(&mut self) -> io::Result<(OverlayStream, SocketAddr)> {
        self.0.accept().await
    }

    fn stream_local_addr(&self, stream: &OverlayStream) -> Option<SocketAddr> {
        Some(stream.local_addr())
    }
}

/// One overlay UDP socket, as the forwarding layer sees a datagram socket.
pub struct OverlayUdp(OverlayUdpSocket);

impl DatagramSocket for OverlayUdp {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }

    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    /// A burst at a time ([`recv_burst`]): replies reach the forward, and its client, so.
    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        recv_burst(&self.0, false, batch).await
    }
}

/// Receives a burst from `socket` into `batch` (emptied first): waits for one datagram, then
/// takes what is already queued behind it, up to a batch. `range`: the socket serves a port
/// range, so each datagram's local port is kept.
async fn recv_burst(
    socket: &OverlayUdpSocket,
    range: bool,
    batch: &mut RecvBatch,
) -> io::Result<()> {
    let datagram = |(len, from, to): (usize, SocketAddr, SocketAddr)| Datagram {
        len,
        from,
        local_port: range.then_some(to.port()),
    };
    batch.clear();
    let first = socket.recv(batch.slot(0)).await?;
    batch.push(0, datagram(first));
    for slot in 1..BATCH_SLOTS {
        let Some(next) = socket.try_recv(batch.slot(slot)) else {
            break;
        };
        batch.push(slot, datagram(next));
    }
    Ok(())
}

/// Opens one overlay UDP socket per public client, aimed at a fixed overlay
/// `address:port`: the far end of a UDP `[[forward]]`.
pub struct OverlayUdpDialer {
    overlay: Overlay,
    to: SocketAddr,
}

impl OverlayUdpDialer {
    /// Sessions to `to` through `overlay`.
    pub fn new(overlay: Overlay, to: SocketAddr) -> Self {
        Self { overlay, to }
    }
}

impl DatagramDialer for OverlayUdpDialer {
    type Socket = OverlayUdp;

    async fn bind_session(&self) -> io::Result<(OverlayUdp, SocketAddr)> {
        let local = SocketAddr::new(unspecified_like(self.to.ip()), 0);
        Ok((OverlayUdp(self.overlay.bind_udp(local).await?), self.to))
    }
}

/// [`OverlayUdpDialer`] for any port of one overlay address (UDP port ranges).
pub struct OverlayUdpPortDialer {
    overlay: Overlay,
    ip: IpAddr,
}

impl OverlayUdpPortDialer {
    /// Sessions to `ip:any port` through `overlay`.
    pub fn new(overlay: Overlay, ip: IpAddr) -> Self {
        Self { overlay, ip }
    }
}

impl DatagramPortDialer for OverlayUdpPortDialer {
    type Socket = OverlayUdp;

    async fn bind_port(&self, port: u16) -> io::Result<(OverlayUdp, SocketAddr)> {
        let local = SocketAddr::new(unspecified_like(self.ip), 0);
        let socket = self.overlay.bind_udp(local).await?;
        Ok((OverlayUdp(socket), SocketAddr::new(self.ip, port)))
    }
}

/// The overlay side of a UDP `[[expose]]`: one port or a range.
pub struct OverlayUdpListener {
    socket: OverlayUdpSocket,
    range: bool,
}

impl OverlayUdpListener {
    /// Wraps a socket bound with `bind_udp` (`range = false`) or `bind_udp_range`.
    pub fn new(socket: OverlayUdpSocket, range: bool) -> Self {
        Self { socket, range }
    }
}

impl DatagramListener for OverlayUdpListener {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let (len, from, to) = self.socket.recv(buf).await?;
        Ok(Datagram {
            len,
            from,
            local_port: self.range.then_some(to.port()),
        })
    }

    /// A burst at a time ([`recv_burst`]): the forward sends a client's burst on in one call.
    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        recv_burst(&self.socket, self.range, batch).await
    }

    async fn send(&self, buf: &[u8], to: SocketAddr, local_port: Option<u16>) -> io::Result<usize> {
        match local_port {
            Some(port) if self.range => self.socket.send_from(buf, port, to).await,
            _ => self.socket.send_to(buf, to).await,
        }
    }
}

/// The overlay as services see it: the userspace stack's handle, or the
/// kernel's own network (the TUN stack), where overlay addresses are local
/// addresses like any other.
#[derive(Clone)]
pub enum Net {
    /// The embedded stack: every socket goes through its handle.
    Userspace(Overlay),
    /// The kernel (a TUN device carries the overlay): plain kernel sockets.
    Kernel,
}

/// A stream into or out of the overlay, whichever stack carries it.
pub type NetStream = Either<OverlayStream, TcpStream>;

impl Net {
    /// Dials any port of overlay address `ip`: the far end of a TCP forward over a range.
    pub fn port_dialer(&self, ip: IpAddr) -> NetPortDialer {
        match self {
            Net::Userspace(o) => NetPortDialer::Userspace(OverlayPortDialer::new(o.clone(), ip)),
            Net::Kernel => NetPortDialer::Kernel(TcpDialer::new(ip.to_string(), 0)),
        }
    }

    /// UDP sessions to overlay `to`: the far end of a UDP `[[forward]]`.
    pub fn udp_dialer(&self, to: SocketAddr) -> NetUdpDialer {
        match self {
            Net::Userspace(o) => NetUdpDialer::Userspace(OverlayUdpDialer::new(o.clone(), to)),
            Net::Kernel => NetUdpDialer::Kernel(UdpDialer::new(to.ip().to_string(), to.port())),
        }
    }

    /// UDP sessions to any port of overlay address `ip` (UDP port ranges).
    pub fn udp_port_dialer(&self, ip: IpAddr) -> NetUdpPortDialer {
        match self {
            Net::Userspace(o) => {
                NetUdpPortDialer::Userspace(OverlayUdpPortDialer::new(o.clone(), ip))
            }
            Net::Kernel => NetUdpPortDialer::Kernel(UdpDialer::new(ip.to_string(), 0)),
        }
    }

    /// Listens on overlay `first` and the `count - 1` ports after it: the near end of a TCP
    /// `[[expose]]`.
    pub async fn listen(&self, first: SocketAddr, count: u16) -> io::Result<NetAcceptor> {
        Ok(match self {
            // A single port is a range of one, on either stack.
            Net::Userspace(o) => {
                NetAcceptor::Userspace(OverlayAcceptor(o.listen_range(first, count).await?))
            }
            Net::Kernel => NetAcceptor::Kernel(
                TcpPortRange::bind(first.ip(), first.port(), last_port(first, count)?).await?,
            ),
        })
    }

    /// Binds overlay UDP `first` and the `count - 1` ports after it: the near end of a UDP
    /// `[[expose]]`.
    pub async fn bind_udp(&self, first: SocketAddr, count: u16) -> io::Result<NetUdpListener> {
        Ok(match self {
            Net::Userspace(o) if count == 1 => {
                NetUdpListener::Userspace(OverlayUdpListener::new(o.bind_udp(first).await?, false))
            }
            Net::Userspace(o) => NetUdpListener::Userspace(OverlayUdpListener::new(
                o.bind_udp_range(first, count).await?,
                true,
            )),
            Net::Kernel if count == 1 => NetUdpListener::Kernel(UdpSocket::bind(first).await?),
            Net::Kernel => NetUdpListener::KernelRange(
                UdpPortRange::bind(first.ip(), first.port(), last_port(first, count)?).await?,
            ),
        })
    }
}

fn last_port(first: SocketAddr, count: u16) -> io::Result<u16> {
    count
        .checked_sub(1)
        .and_then(|n| first.port().checked_add(n))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "port range past 65535"))
}

/// [`Net::port_dialer`]'s dialer.
pub enum NetPortDialer {
    /// Through the embedded stack.
    Userspace(OverlayPortDialer),
    /// A kernel socket to the overlay address (its own port unused).
    Kernel(TcpDialer),
}

impl PortDialer for NetPortDialer {
    type Stream = NetStream;

    async fn dial_port(&self, port: u16) -> io::Result<NetStream> {
        match self {
            NetPortDialer::Userspace(d) => d.dial_port(port).await.map(Either::Left),
            NetPortDialer::Kernel(d) => d.dial_port(port).await.map(Either::Right),
        }
    }
}

/// The near end of a TCP expose: an overlay listener, a kernel one, or kernel ones over a range.
pub enum NetAcceptor {
    /// On the embedded stack (one port or a range).
    Userspace(OverlayAcceptor),
    /// Kernel listeners on the overlay ports (one, or a range).
    Kernel(TcpPortRange),
}

impl Acceptor for NetAcceptor {
    type Stream = NetStream;

    async fn accept(&mut self) -> io::Result<(NetStream, SocketAddr)> {
        match self {
            NetAcceptor::Userspace(a) => a.accept().await.map(|(s, a)| (Either::Left(s), a)),
            NetAcceptor::Kernel(r) => r.accept().await.map(|(s, a)| (Either::Right(s), a)),
        }
    }

    fn stream_local_addr(&self, stream: &NetStream) -> Option<SocketAddr> {
        match stream {
            Either::Left(s) => Some(s.local_addr()),
            Either::Right(s) => s.local_addr().ok(),
        }
    }
}

/// One session socket of a UDP forward, on either stack.
pub enum NetUdp {
    /// An overlay UDP socket of the embedded stack.
    Userspace(OverlayUdp),
    /// A kernel UDP socket.
    Kernel(UdpSocket),
}

impl DatagramSocket for NetUdp {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            NetUdp::Userspace(s) => s.send_to(buf, to).await,
            NetUdp::Kernel(s) => s.send_to(buf, to).await,
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            NetUdp::Userspace(s) => s.recv_from(buf).await,
            NetUdp::Kernel(s) => s.recv_from(buf).await,
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            NetUdp::Userspace(s) => s.readable().await,
            NetUdp::Kernel(s) => s.readable().await,
        }
    }

    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        match self {
            NetUdp::Userspace(s) => DatagramSocket::recv_batch(s, batch).await,
            NetUdp::Kernel(s) => DatagramSocket::recv_batch(s, batch).await,
        }
    }

    /// On the TUN stack a run of equal datagrams goes into the overlay as one GSO send, which
    /// reaches the node loop as one TUN read.
    async fn send_many(&self, bufs: &[&[u8]], to: SocketAddr) -> io::Result<()> {
        match self {
            NetUdp::Userspace(s) => DatagramSocket::send_many(s, bufs, to).await,
            NetUdp::Kernel(s) => DatagramSocket::send_many(s, bufs, to).await,
        }
    }
}

/// [`Net::udp_dialer`]'s dialer.
pub enum NetUdpDialer {
    /// Through the embedded stack.
    Userspace(OverlayUdpDialer),
    /// Kernel sockets to the overlay address.
    Kernel(UdpDialer),
}

impl DatagramDialer for NetUdpDialer {
    type Socket = NetUdp;

    async fn bind_session(&self) -> io::Result<(NetUdp, SocketAddr)> {
        match self {
            NetUdpDialer::Userspace(d) => {
                let (s, to) = d.bind_session().await?;
                Ok((NetUdp::Userspace(s), to))
            }
            NetUdpDialer::Kernel(d) => {
                let (s, to) = d.bind_session().await?;
                Ok((NetUdp::Kernel(s), to))
            }
        }
    }
}

/// [`Net::udp_port_dialer`]'s dialer.
pub enum NetUdpPortDialer {
    /// Through the embedded stack.
    Userspace(OverlayUdpPortDialer),
    /// Kernel sockets to the overlay address (its own port unused).
    Kernel(UdpDialer),
}

impl DatagramPortDialer for NetUdpPortDialer {
    type Socket = NetUdp;

    async fn bind_port(&self, port: u16) -> io::Result<(NetUdp, SocketAddr)> {
        match self {
            NetUdpPortDialer::Userspace(d) => {
                let (s, to) = d.bind_port(port).await?;
                Ok((NetUdp::Userspace(s), to))
            }
            NetUdpPortDialer::Kernel(d) => {
                let (s, to) = DatagramPortDialer::bind_port(d, port).await?;
                Ok((NetUdp::Kernel(s), to))
            }
        }
    }
}

/// The near end of a UDP expose: an overlay socket, a kernel one, or kernel ones over a range.
pub enum NetUdpListener {
    /// On the embedded stack (one port or a range).
    Userspace(OverlayUdpListener),
    /// A kernel socket on one overlay port.
    Kernel(UdpSocket),
    /// Kernel sockets on a range of overlay ports.
    KernelRange(UdpPortRange),
}

impl DatagramListener for NetUdpListener {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        match self {
            NetUdpListener::Userspace(l) => l.recv(buf).await,
            NetUdpListener::Kernel(s) => DatagramListener::recv(s, buf).await,
            NetUdpListener::KernelRange(r) => r.recv(buf).await,
        }
    }

    async fn send(&self, buf: &[u8], to: SocketAddr, local_port: Option<u16>) -> io::Result<usize> {
        match self {
            NetUdpListener::Userspace(l) => l.send(buf, to, local_port).await,
            NetUdpListener::Kernel(s) => DatagramListener::send(s, buf, to, local_port).await,
            NetUdpListener::KernelRange(r) => r.send(buf, to, local_port).await,
        }
    }

    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        match self {
            NetUdpListener::Userspace(l) => l.recv_batch(batch).await,
            NetUdpListener::Kernel(s) => DatagramListener::recv_batch(s, batch).await,
            NetUdpListener::KernelRange(r) => r.recv_batch(batch).await,
        }
    }
}
