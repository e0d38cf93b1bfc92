//! UDP on the overlay, beside smoltcp rather than through it.
//!
//! smoltcp's UDP sockets each own preallocated packet rings; a relay keeps one overlay socket
//! per public UDP client, thousands of them, so that would cost megabytes of idle buffers.
//! Instead the stack looks at every inbound packet before smoltcp (`Stack::ingress`): a UDP
//! datagram to a bound `addr:port` goes straight into that socket's bounded queue, any other
//! UDP datagram is dropped. Outbound, the socket builds the whole UDP/IP packet itself (in the
//! caller's task, checksums included) and queues it for the driver, which moves it to the
//! device untouched. Idle, a socket costs its two channels and nothing else; a port range is
//! one socket.
//!
//! Both directions are bounded: inbound datagrams beyond [`UDP_INBOUND_QUEUE`] are dropped and
//! counted (a kernel socket buffer does the same); outbound, `send_to` waits while
//! [`UDP_OUTBOUND_QUEUE`] packets are queued, and the driver drains the queue only while the
//! device has room. The handle wakes the driver through the same [`Shared`] flag as streams.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use crate::config::{UDP_INBOUND_QUEUE, UDP_OUTBOUND_QUEUE};
use crate::packet::build_udp;
use crate::shared::Shared;

/// A datagram on its way from the stack to a socket.
#[derive(Debug)]
pub(crate) struct Datagram {
    data: Vec<u8>,
    from: SocketAddr,
    to_port: u16,
}

impl Datagram {
    /// A datagram from `from` to our port `to_port`.
    pub(crate) fn new(data: &[u8], from: SocketAddr, to_port: u16) -> Self {
        Self {
            data: data.to_vec(),
            from,
            to_port,
        }
    }
}

/// A UDP socket on the overlay: one port, or a range of ports served by one socket.
///
/// `Send + Sync`: share it behind an `Arc` between a reader task and writers. Dropping it
/// frees its port(s). Datagrams pass whole up to [`max_payload`](Self::max_payload) bytes (the
/// tunnel MTU minus the IP and UDP headers); larger ones are refused by `send_to`, never
/// fragmented. A receive buffer smaller than the datagram truncates it, as with a kernel
/// socket.
#[derive(Debug)]
pub struct OverlayUdpSocket {
    shared: Arc<Shared>,
    local: SocketAddr,
    last_port: u16,
    max_payload: usize,
    to_stack: mpsc::Sender<Vec<u8>>,
    /// Only the socket's own users take this lock (one reader at a time); the stack holds the
    /// sending end of the channel and never touches it.
    inbound: Mutex<Inbound>,
}

#[derive(Debug)]
struct Inbound {
    queue: mpsc::Receiver<Datagram>,
    /// A datagram `readable` took out of the queue, for the next `recv`.
    peeked: Option<Datagram>,
}

/// The stack's ends of a socket's two channels.
#[derive(Debug)]
pub(crate) struct SocketEnds {
    /// Datagrams for the socket to receive.
    pub(crate) to_socket: mpsc::Sender<Datagram>,
    /// Packets the socket built.
    pub(crate) from_socket: mpsc::Receiver<Vec<u8>>,
}

impl OverlayUdpSocket {
    /// A socket for `local.port()..=last_port` and the stack's ends of its channels.
    pub(crate) fn new(
        shared: Arc<Shared>,
        local: SocketAddr,
        last_port: u16,
        max_payload: usize,
    ) -> (Self, SocketEnds) {
        let (to_socket, queue) = mpsc::channel(UDP_INBOUND_QUEUE);
        let (to_stack, from_socket) = mpsc::channel(UDP_OUTBOUND_QUEUE);
        let socket = Self {
            shared,
            local,
            last_port,
            max_payload,
            to_stack,
            inbound: Mutex::new(Inbound {
                queue,
                peeked: None,
            }),
        };
        let ends = SocketEnds {
            to_socket,
            from_socket,
        };
        (socket, ends)
    }

    /// Sends one datagram to `dst` from [`local_addr`](Self::local_addr) (for a range, its
    /// first port). Waits while the driver's queue for this socket is full.
    ///
    /// Errors: `InvalidInput` for a datagram over [`max_payload`](Self::max_payload) bytes
    /// (the `EMSGSIZE` case), a destination of the other address family, port 0 or an
    /// unspecified address; `ConnectionAborted` once the stack has stopped.
    pub async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.send_from(buf, self.local.port(), dst).await
    }

    /// Sends one datagram to `dst` from our port `from_port`, which must be one of this
    /// socket's ports (`InvalidInput` otherwise). Otherwise as [`send_to`](Self::send_to).
    pub async fn send_from(
        &self,
        buf: &[u8],
        from_port: u16,
        dst: SocketAddr,
    ) -> io::Result<usize> {
        if !(self.local.port()..=self.last_port).contains(&from_port) {
            return Err(invalid(format!(
                "port {from_port} is not one of this socket's ports ({}-{})",
                self.local.port(),
                self.last_port
            )));
        }
        if buf.len() > self.max_payload {
            return Err(invalid(format!(
                "datagram of {} bytes exceeds the overlay maximum of {} (tunnel MTU)",
                buf.len(),
                self.max_payload
            )));
        }
        let dst = self.destination(dst)?;
        let from = SocketAddr::new(self.local.ip(), from_port);
        let packet = build_udp(from, dst, buf).ok_or_else(|| invalid("unaddressable".into()))?;
        self.to_stack.send(packet).await.map_err(|_| stopped())?;
        self.shared.wake_stack();
        Ok(buf.len())
    }

    /// Receives one datagram: its length and sender. Cancel-safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (len, from, _) = self.recv(buf).await?;
        Ok((len, from))
    }

    /// Receives one datagram: its length, its sender and which of our `addr:port`s it was
    /// sent to (for a range socket, the port tells which). Cancel-safe.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        let mut inbound = self.inbound.lock().await;
        let datagram = match inbound.peeked.take() {
            Some(datagram) => datagram,
            None => inbound.queue.recv().await.ok_or_else(stopped)?,
        };
        Ok(self.deliver(datagram, buf))
    }

    /// Receives a datagram that is already queued, without waiting: `None` when none is, or
    /// while another task is receiving. Why: after [`recv`](Self::recv), a reader drains the
    /// rest of a burst this way and hands it on in one batch.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr, SocketAddr)> {
        let mut inbound = self.inbound.try_lock().ok()?;
        let datagram = match inbound.peeked.take() {
            Some(datagram) => datagram,
            None => inbound.queue.try_recv().ok()?,
        };
        Some(self.deliver(datagram, buf))
    }

    /// Copies `datagram` into `buf` (truncated to it): its length, sender and our address.
    fn deliver(&self, datagram: Datagram, buf: &mut [u8]) -> (usize, SocketAddr, SocketAddr) {
        let len = datagram.data.len().min(buf.len());
        buf[..len].copy_from_slice(&datagram.data[..len]);
        (
            len,
            datagram.from,
            SocketAddr::new(self.local.ip(), datagram.to_port),
        )
    }

    /// Waits until a datagram is ready to receive, without holding a buffer. Cancel-safe.
    pub async fn readable(&self) -> io::Result<()> {
        let mut inbound = self.inbound.lock().await;
        if inbound.peeked.is_none() {
            let datagram = inbound.queue.recv().await.ok_or_else(stopped)?;
            inbound.peeked = Some(datagram);
        }
        Ok(())
    }

    /// Our overlay address and (first) port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many consecutive ports, from `local_addr().port()`, this socket serves (1 unless
    /// bound with [`crate::Overlay::bind_udp_range`]).
    pub fn port_count(&self) -> u16 {
        self.last_port - self.local.port() + 1
    }

    /// The largest datagram `send_to` accepts: the tunnel MTU minus the IP and UDP headers
    /// (1392 bytes over IPv4, 1372 over IPv6, for MTU 1420).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Inbound datagrams dropped so far because this socket's queue was full (its reader
    /// fell behind by more than 256 datagrams).
    pub fn dropped(&self) -> u64 {
        self.shared.drops()
    }

    /// The destination as an address of our family (IPv4-mapped IPv6 counts as IPv4).
    fn destination(&self, dst: SocketAddr) -> io::Result<SocketAddr> {
        let ip = match (self.local.ip(), dst.ip()) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4),
            (IpAddr::V6(_), IpAddr::V4(_)) => None,
            (_, ip) => Some(ip),
        };
        match ip {
            Some(ip) if dst.port() != 0 && !ip.is_unspecified() => {
                Ok(SocketAddr::new(ip, dst.port()))
            }
            Some(_) => Err(invalid(format!("cannot send to {dst}"))),
            None => Err(invalid(format!(
                "cannot send to {dst} from {}: other address family",
                self.local.ip()
            ))),
        }
    }
}

impl Drop for OverlayUdpSocket {
    fn drop(&mut self) {
        self.shared.mark_dropped();
    }
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, text)
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "overlay stack stopped")
}
