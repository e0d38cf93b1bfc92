//! The stack's side of UDP sockets: which ports are bound, delivery of inbound datagrams
//! (before smoltcp sees them), and moving the packets sockets built to the device.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::config::{EPHEMERAL_PORTS, MAX_UDP_SOCKETS, UDP_OUTBOUND_QUEUE};
use crate::keys::IdMap;
use crate::packet::{max_udp_payload, UdpIn};
use crate::ports::{range_end, PortMap};
use crate::shared::{HandleId, Shared};
use crate::stack::Stack;
use crate::udp::{Datagram, OverlayUdpSocket};

/// One bound UDP socket (a port or a range), as the stack sees it.
#[derive(Debug)]
pub(crate) struct UdpBound {
    ip: IpAddr,
    first: u16,
    shared: Arc<Shared>,
    to_socket: mpsc::Sender<Datagram>,
    from_socket: mpsc::Receiver<Vec<u8>>,
}

/// Every bound UDP socket, by handle and by port.
#[derive(Debug)]
pub(crate) struct UdpTable {
    ports: PortMap,
    pub(crate) bound: IdMap<HandleId, UdpBound>,
    next_port: u16,
    /// Inbound datagrams dropped at the stack: malformed, or to a port nobody bound.
    pub(crate) dropped: u64,
}

impl UdpTable {
    /// An empty table whose ephemeral search starts at `first_port`.
    pub(crate) fn new(first_port: u16) -> Self {
        Self {
            ports: PortMap::default(),
            bound: IdMap::default(),
            next_port: first_port,
            dropped: 0,
        }
    }

    /// Hands an inbound datagram (`None`: a malformed one) to the socket bound to its
    /// destination. A full socket queue drops it and counts the drop on the socket.
    pub(crate) fn deliver(&mut self, datagram: Option<UdpIn<'_>>) {
        let Some(datagram) = datagram else {
            self.dropped += 1;
            return;
        };
        let bound = self
            .ports
            .lookup(datagram.to)
            .and_then(|id| self.bound.get(&id));
        let Some(bound) = bound else {
            self.dropped += 1;
            return;
        };
        match bound.to_socket.try_reserve() {
            Ok(permit) => permit.send(Datagram::new(
                datagram.payload,
                datagram.from,
                datagram.to.port(),
            )),
            Err(TrySendError::Full(())) => bound.shared.count_drop(),
            // The socket was just dropped; its wake removes it.
            Err(TrySendError::Closed(())) => self.dropped += 1,
        }
    }
}

impl Stack {
    /// Binds a UDP socket to `count` ports from `local` (port 0 with count 1: an ephemeral
    /// port; unspecified address: our first address of that family).
    pub(crate) fn open_udp(
        &mut self,
        local: SocketAddr,
        count: u16,
    ) -> io::Result<OverlayUdpSocket> {
        let ip = self.local_ip(local.ip())?;
        let (first, last) = match (local.port(), count) {
            (0, 1) => {
                let port = self.ephemeral_udp_port(ip);
                // Sockets dropped just before this bind may hold the last free ports.
                let port = port.or_else(|| {
                    self.reap_dropped_udp();
                    self.ephemeral_udp_port(ip)
                });
                let port = port.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::AddrNotAvailable,
                        "no free ephemeral UDP port",
                    )
                })?;
                (port, port)
            }
            (first, count) => (first, range_end(first, count)?),
        };
        if !self.udp.ports.is_free(ip, first, last) {
            // A socket dropped just before this bind may not have been reaped yet.
            self.reap_dropped_udp();
        }
        if !self.udp.ports.is_free(ip, first, last) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("overlay UDP {ip} ports {first}-{last}: some are already bound"),
            ));
        }
        if self.udp.bound.len() >= MAX_UDP_SOCKETS {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "overlay UDP socket limit reached",
            ));
        }
        let shared = Shared::new(&self.wake);
        self.udp.ports.insert(ip, first, last, shared.id);
        let local = SocketAddr::new(ip, first);
        let max_payload = max_udp_payload(self.config_mtu(), ip);
        let (socket, ends) = OverlayUdpSocket::new(Arc::clone(&shared), local, last, max_payload);
        let bound = UdpBound {
            ip,
            first,
            shared,
            to_socket: ends.to_socket,
            from_socket: ends.from_socket,
        };
        tracing::debug!(%local, last, "overlay UDP socket bound");
        self.udp.bound.insert(bound.shared.id, bound);
        Ok(socket)
    }

    /// Moves the packets a socket built to the device while it has room, and frees the
    /// socket's ports once its handle is gone.
    pub(crate) fn service_udp(&mut self, id: HandleId) {
        let Some(bound) = self.udp.bound.get_mut(&id) else {
            return;
        };
        bound.shared.clear_queued();
        for _ in 0..UDP_OUTBOUND_QUEUE {
            if self.device.outbound_full() {
                // The driver drains the device after this poll; come back then.
                if !bound.from_socket.is_empty() {
                    self.ready.push(id);
                }
                break;
            }
            match bound.from_socket.try_recv() {
                Ok(packet) => self.device.push_outbound(packet),
                Err(_) => break,
            }
        }
        if bound.shared.is_dropped() {
            self.close_udp(id);
        }
    }

    /// UDP sockets currently bound (a port range counts once).
    pub fn udp_socket_count(&self) -> usize {
        self.udp.bound.len()
    }

    /// Inbound UDP datagrams dropped by the stack because they were malformed (bad length,
    /// bad checksum, fragment, source port 0) or sent to a port nobody bound. Drops for a
    /// full socket queue are counted per socket ([`OverlayUdpSocket::dropped`]).
    pub fn udp_dropped(&self) -> u64 {
        self.udp.dropped
    }

    fn close_udp(&mut self, id: HandleId) {
        let Some(bound) = self.udp.bound.remove(&id) else {
            return;
        };
        bound.shared.retire();
        self.udp.ports.remove(bound.ip, bound.first);
        tracing::debug!(ip = %bound.ip, port = bound.first, "overlay UDP socket closed");
    }

    /// Frees the ports of sockets whose handles are gone but whose wake was not serviced.
    fn reap_dropped_udp(&mut self) {
        let dropped: Vec<HandleId> = self
            .udp
            .bound
            .iter()
            .filter(|(_, bound)| bound.shared.is_dropped())
            .map(|(&id, _)| id)
            .collect();
        for id in dropped {
            self.service_udp(id);
        }
    }

    /// A free port of the ephemeral range on `ip`: no UDP socket and no TCP listener on it.
    fn ephemeral_udp_port(&mut self, ip: IpAddr) -> Option<u16> {
        let (first, last) = EPHEMERAL_PORTS;
        for _ in first..=last {
            let port = self.udp.next_port;
            self.udp.next_port = if port >= last { first } else { port + 1 };
            let tcp_free = self.tcp_listen_free(ip, port);
            if tcp_free && self.udp.ports.is_free(ip, port, port) {
                return Some(port);
            }
        }
        None
    }
}
