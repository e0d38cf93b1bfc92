//! Port ranges at about the cost of one port: one acceptor (or one UDP listener) over all the
//! listeners of a range, polled by the one accept or receive task, and dialers that map the
//! port a connection arrived on to its target port (listen port i → to port i).
//!
//! Cost: a wake polls each listener's readiness once (an atomic check, no system call for the
//! ones not ready), starting after the one served last so no port can starve the others; no
//! task and no buffer per port. A thousand-port range is a thousand sockets and a few KiB.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use socket2::SockRef;
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::endpoint::{Acceptor, Dialer, TcpDialer};
use crate::udp::{Datagram, DatagramDialer, DatagramListener, DatagramSocket, UdpDialer};

/// Which target port each listen port goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMap {
    /// Sorted by listen port.
    pairs: Vec<(u16, u16)>,
}

impl PortMap {
    /// `listen_first..=listen_first+len-1` → `to_first..`: the config's `a-b` to `c-d`
    /// (same length). Ports past 65535 are left out.
    pub fn range(listen_first: u16, to_first: u16, len: u16) -> Self {
        let pairs = (0..len)
            .map_while(|i| Some((listen_first.checked_add(i)?, to_first.checked_add(i)?)))
            .collect();
        Self::pairs(pairs)
    }

    /// Explicit `(listen port, target port)` pairs.
    pub fn pairs(mut pairs: Vec<(u16, u16)>) -> Self {
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| p.0);
        Self { pairs }
    }

    /// The one target port, when the map has a single pair: then any connection of the
    /// forward goes there, whatever port it arrived on (there is only one).
    pub fn single(&self) -> Option<u16> {
        match self.pairs.as_slice() {
            [(_, to)] => Some(*to),
            _ => None,
        }
    }

    /// The target port for `listen_port`.
    pub fn target(&self, listen_port: u16) -> Option<u16> {
        let i = self
            .pairs
            .binary_search_by_key(&listen_port, |p| p.0)
            .ok()?;
        Some(self.pairs[i].1)
    }
}

/// Dials one port of a fixed host: what a [`RangeDialer`] needs of its inner dialer.
pub trait PortDialer: Send + Sync + 'static {
    /// The dialed stream.
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// Opens one stream to `port` of this dialer's host.
    fn dial_port(&self, port: u16) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl PortDialer for TcpDialer {
    type Stream = TcpStream;
    fn dial_port(&self, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpDialer::dial_port(self, port)
    }
}

/// Opens one UDP session socket to `port` of a fixed host (see [`PortDialer`]).
pub trait DatagramPortDialer: Send + Sync + 'static {
    /// The session socket.
    type Socket: DatagramSocket;
    /// A fresh socket and the target address for `port`.
    fn bind_port(
        &self,
        port: u16,
    ) -> impl Future<Output = io::Result<(Self::Socket, SocketAddr)>> + Send;
}

impl DatagramPortDialer for UdpDialer {
    type Socket = UdpSocket;
    fn bind_port(
        &self,
        port: u16,
    ) -> impl Future<Output = io::Result<(UdpSocket, SocketAddr)>> + Send {
        UdpDialer::bind_port(self, port)
    }
}

/// Dials, for each connection or session, the target port mapped from the local port it
/// arrived on. Without a local port (an acceptor that does not know it) it refuses to guess.
#[derive(Debug, Clone)]
pub struct RangeDialer<D> {
    inner: D,
    map: PortMap,
}

impl<D> RangeDialer<D> {
    /// `inner` dials the host; `map` picks the port.
    pub fn new(inner: D, map: PortMap) -> Self {
        Self { inner, map }
    }

    fn port_for(&self, local_port: Option<u16>) -> io::Result<u16> {
        if let Some(port) = self.map.single() {
            return Ok(port);
        }
        local_port
            .and_then(|p| self.map.target(p))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "local port not in range"))
    }
}

impl<D: PortDialer> Dialer for RangeDialer<D> {
    type Stream = D::Stream;

    async fn dial(&self) -> io::Result<D::Stream> {
        self.dial_for(None).await
    }

    async fn dial_for(&self, local: Option<SocketAddr>) -> io::Result<D::Stream> {
        let port = self.port_for(local.map(|l| l.port()))?;
        self.inner.dial_port(port).await
    }

    fn wants_local_addr(&self) -> bool {
        self.map.single().is_none()
    }
}

impl<D: DatagramPortDialer> DatagramDialer for RangeDialer<D> {
    type Socket = D::Socket;

    async fn bind_session(&self) -> io::Result<(D::Socket, SocketAddr)> {
        self.bind_session_for(None).await
    }

    async fn bind_session_for(
        &self,
        local_port: Option<u16>,
    ) -> io::Result<(D::Socket, SocketAddr)> {
        let port = self.port_for(local_port)?;
        self.inner.bind_port(port).await
    }
}

/// Binds `first..=last` on `ip` with `bind`, all or nothing.
async fn bind_all<T, F, Fut>(ip: IpAddr, first: u16, last: u16, bind: F) -> io::Result<Vec<T>>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    if first > last {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty port range",
        ));
    }
    let mut out = Vec::with_capacity(usize::from(last - first) + 1);
    for port in first..=last {
        out.push(bind(SocketAddr::new(ip, port)).await?);
    }
    Ok(out)
}

/// One [`Acceptor`] over the TCP listeners of a port range.
#[derive(Debug)]
pub struct TcpPortRange {
    listeners: Vec<TcpListener>,
    next: usize,
    /// Per listener: whether its accepted sockets inherit its `TCP_NODELAY` (`None` until
    /// the first accept tells).
    nodelay_inherited: Vec<Option<bool>>,
}

impl TcpPortRange {
    /// Listens on every port of `first..=last` on `ip`; fails if any port cannot be bound.
    pub async fn bind(ip: IpAddr, first: u16, last: u16) -> io::Result<Self> {
        Ok(Self::from_listeners(
            bind_all(ip, first, last, TcpListener::bind).await?,
        ))
    }

    /// Serves listeners bound by the caller.
    ///
    /// Each listener gets `TCP_NODELAY`, which Linux passes on to the sockets it accepts:
    /// that saves a system call per connection. The first accepted socket of each listener
    /// is checked, and if it did not inherit the option, every socket is given it.
    pub fn from_listeners(listeners: Vec<TcpListener>) -> Self {
        let nodelay_inherited = listeners
            .iter()
            .map(|l| {
                SockRef::from(l)
                    .set_tcp_nodelay(true)
                    .is_err()
                    .then_some(false)
            })
            .collect();
        Self {
            listeners,
            next: 0,
            nodelay_inherited,
        }
    }

    /// The listeners' addresses, in order.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|l| l.local_addr()).collect()
    }
}

impl Acceptor for TcpPortRange {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let n = self.listeners.len();
        let (i, accepted) = poll_fn(|cx| {
            for k in 0..n {
                let i = (self.next + k) % n;
                if let Poll::Ready(r) = self.listeners[i].poll_accept(cx) {
                    return Poll::Ready((i, r));
                }
            }
            Poll::Pending
        })
        .await;
        self.next = (i + 1) % n.max(1);
        let (stream, addr) = accepted?;
        let inherited = match self.nodelay_inherited.get(i).copied().flatten() {
            Some(known) => known,
            None => {
                let inherited = stream.nodelay().unwrap_or(false);
                if let Some(slot) = self.nodelay_inherited.get_mut(i) {
                    *slot = Some(inherited);
                }
                inherited
            }
        };
        if !inherited {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
            }
        }
        Ok((stream, addr))
    }

    fn stream_local_addr(&self, stream: &TcpStream) -> Option<SocketAddr> {
        stream.local_addr().ok()
    }
}

/// One [`DatagramListener`] over the UDP sockets of a port range.
#[derive(Debug)]
pub struct UdpPortRange {
    /// Sorted by local port.
    sockets: Vec<(u16, UdpSocket)>,
    next: AtomicUsize,
}

impl UdpPortRange {
    /// Binds every port of `first..=last` on `ip`; fails if any port cannot be bound.
    pub async fn bind(ip: IpAddr, first: u16, last: u16) -> io::Result<Self> {
        Self::from_sockets(bind_all(ip, first, last, UdpSocket::bind).await?)
    }

    /// Serves sockets bound by the caller.
    pub fn from_sockets(sockets: Vec<UdpSocket>) -> io::Result<Self> {
        let mut sockets = sockets
            .into_iter()
            .map(|s| Ok((s.local_addr()?.port(), s)))
            .collect::<io::Result<Vec<_>>>()?;
        sockets.sort_unstable_by_key(|s| s.0);
        Ok(Self {
            sockets,
            next: AtomicUsize::new(0),
        })
    }

    /// The local ports, in order.
    pub fn ports(&self) -> Vec<u16> {
        self.sockets.iter().map(|s| s.0).collect()
    }
}

impl DatagramListener for UdpPortRange {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let n = self.sockets.len();
        let start = self.next.load(Ordering::Relaxed);
        let (i, got) = poll_fn(|cx| {
            for k in 0..n {
                let i = (start + k) % n;
                let mut rb = ReadBuf::new(&mut *buf);
                if let Poll::Ready(r) = self.sockets[i].1.poll_recv_from(cx, &mut rb) {
                    return Poll::Ready((i, r.map(|from| (rb.filled().len(), from))));
                }
            }
            Poll::Pending
        })
        .await;
        self.next.store((i + 1) % n.max(1), Ordering::Relaxed);
        let (len, from) = got?;
        Ok(Datagram {
            len,
            from,
            local_port: Some(self.sockets[i].0),
        })
    }

    async fn send(&self, buf: &[u8], to: SocketAddr, local_port: Option<u16>) -> io::Result<usize> {
        let port = local_port.ok_or(io::ErrorKind::InvalidInput)?;
        let i = self
            .sockets
            .binary_search_by_key(&port, |s| s.0)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.sockets[i].1.send_to(buf, to).await
    }
}

#[cfg(test)]
mod tests;
