//! Adapters that let the forwarding layer use the userspace stack without
//! knowing it is there: a forward dials *into* the overlay, an expose accepts
//! *from* it. A kernel TUN stack would plug in here the same way.

use std::io;
use std::net::{IpAddr, SocketAddr};

use pinhole_forward::{
    Acceptor, Datagram, DatagramDialer, DatagramListener, DatagramPortDialer, DatagramSocket,
    Dialer, PortDialer,
};
use pinhole_netstack::{Overlay, OverlayListener, OverlayStream, OverlayUdpSocket};

use crate::services::unspecified_like;

/// Dials one fixed overlay `address:port`: the far end of a TCP `[[forward]]`.
pub struct OverlayDialer {
    overlay: Overlay,
    to: SocketAddr,
}

impl OverlayDialer {
    /// A dialer for connections to `to` through `overlay`.
    pub fn new(overlay: Overlay, to: SocketAddr) -> Self {
        Self { overlay, to }
    }
}

impl Dialer for OverlayDialer {
    type Stream = OverlayStream;

    async fn dial(&self) -> io::Result<OverlayStream> {
        self.overlay.connect(self.to).await
    }
}

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
        if self.range {
            let (len, from, to) = self.socket.recv(buf).await?;
            return Ok(Datagram {
                len,
                from,
                local_port: Some(to.port()),
            });
        }
        let (len, from) = self.socket.recv_from(buf).await?;
        Ok(Datagram {
            len,
            from,
            local_port: None,
        })
    }

    async fn send(&self, buf: &[u8], to: SocketAddr, local_port: Option<u16>) -> io::Result<usize> {
        match local_port {
            Some(port) if self.range => self.socket.send_from(buf, port, to).await,
            _ => self.socket.send_to(buf, to).await,
        }
    }
}
