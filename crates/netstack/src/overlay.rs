//! `Overlay`: the cheap, cloneable handle forward/expose tasks use to open and accept
//! connections and to bind UDP sockets. It only sends requests to the driver over a bounded
//! channel.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use smoltcp::socket::tcp;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{set_opening_timers, Conn};
use crate::listener::OverlayListener;
use crate::shared::{Shared, WakeQueue};
use crate::stack::Stack;
use crate::stream::OverlayStream;
use crate::udp::OverlayUdpSocket;

/// A request from a handle to the stack.
#[derive(Debug)]
pub(crate) enum Command {
    Connect {
        shared: Arc<Shared>,
        remote: SocketAddr,
        reply: oneshot::Sender<io::Result<OverlayStream>>,
    },
    Listen {
        local: SocketAddr,
        count: u16,
        reply: oneshot::Sender<io::Result<OverlayListener>>,
    },
    BindUdp {
        local: SocketAddr,
        count: u16,
        reply: oneshot::Sender<io::Result<OverlayUdpSocket>>,
    },
}

/// Opens and accepts TCP connections and binds UDP sockets on the overlay. Clone it
/// freely: every clone talks to the same stack, which must be driven (`Stack::poll`/`wait`)
/// for anything to happen.
#[derive(Debug, Clone)]
pub struct Overlay {
    commands: mpsc::Sender<Command>,
    wake: Arc<WakeQueue>,
}

impl Overlay {
    pub(crate) fn new(commands: mpsc::Sender<Command>, wake: Arc<WakeQueue>) -> Self {
        Self { commands, wake }
    }

    /// Opens a TCP connection to `remote` from one of our addresses; resolves once it is
    /// established. A RST answer gives `ConnectionRefused`; a SYN unanswered for 30 s gives
    /// `TimedOut`. Dropping the future abandons the attempt and frees its socket.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<OverlayStream> {
        let shared = Shared::new(&self.wake);
        let guard = CancelGuard(Some(Arc::clone(&shared)));
        let (reply, answer) = oneshot::channel();
        let command = Command::Connect {
            shared,
            remote,
            reply,
        };
        self.commands.send(command).await.map_err(|_| stopped())?;
        let result = answer.await.map_err(|_| stopped());
        guard.disarm();
        result?
    }

    /// Accepts TCP connections on `local`, which must be one of our overlay addresses
    /// (`AddrNotAvailable` otherwise) and not already listened on (`AddrInUse`).
    pub async fn listen(&self, local: SocketAddr) -> io::Result<OverlayListener> {
        self.listen_range(local, 1).await
    }

    /// Accepts TCP connections on any of the `count` ports `local.port()` ..=
    /// `local.port() + count - 1` of our overlay address `local.ip()`; each accepted stream's
    /// `local_addr()` tells its port. Costs what one port costs: no socket exists for a port
    /// until a SYN arrives. `AddrInUse` if any port overlaps another listener,
    /// `InvalidInput` for a count of 0 or a range past port 65535.
    pub async fn listen_range(&self, local: SocketAddr, count: u16) -> io::Result<OverlayListener> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Listen {
            local,
            count,
            reply,
        };
        self.commands.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Binds a UDP socket to `local`: one of our overlay addresses (`AddrNotAvailable`
    /// otherwise), or an unspecified address meaning our first address of that family; port 0
    /// picks a free port in 49152-65535 (never one bound by another UDP socket or listened on
    /// by TCP). `AddrInUse` if the port is bound already. Dropping the socket frees the port.
    pub async fn bind_udp(&self, local: SocketAddr) -> io::Result<OverlayUdpSocket> {
        self.bind_udp_range(local, 1).await
    }

    /// Binds one UDP socket to the `count` ports `local.port()` ..=
    /// `local.port() + count - 1` (port 0 only with a count of 1). Use
    /// [`OverlayUdpSocket::recv`] to learn which port a datagram came to and
    /// [`OverlayUdpSocket::send_from`] to answer from it. A range costs what one port costs.
    /// `AddrInUse` if any port overlaps another UDP socket.
    pub async fn bind_udp_range(
        &self,
        local: SocketAddr,
        count: u16,
    ) -> io::Result<OverlayUdpSocket> {
        let (reply, answer) = oneshot::channel();
        let command = Command::BindUdp {
            local,
            count,
            reply,
        };
        self.commands.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "overlay stack stopped")
}

/// Tells the stack a `connect` future was dropped before it finished.
struct CancelGuard(Option<Arc<Shared>>);

impl CancelGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.mark_dropped();
        }
    }
}

impl Stack {
    /// Carries out one request from a handle.
    pub(crate) fn handle_command(&mut self, command: Command) {
        match command {
            Command::Listen {
                local,
                count,
                reply,
            } => {
                let _ = reply.send(self.open_listener(local, count));
            }
            Command::BindUdp {
                local,
                count,
                reply,
            } => {
                if !reply.is_closed() {
                    // A reply nobody takes drops the socket, which frees its port again.
                    let _ = reply.send(self.open_udp(local, count));
                }
            }
            Command::Connect {
                shared,
                remote,
                reply,
            } => {
                if shared.is_dropped() || reply.is_closed() {
                    return;
                }
                if let Err(error) = self.open_connection(shared, remote, reply) {
                    tracing::debug!(%remote, %error, "overlay connect refused locally");
                }
            }
        }
    }

    /// Creates the socket of an outbound connection and sends its SYN on the next egress.
    fn open_connection(
        &mut self,
        shared: Arc<Shared>,
        remote: SocketAddr,
        reply: oneshot::Sender<io::Result<OverlayStream>>,
    ) -> Result<(), &'static str> {
        let fail = |reply: oneshot::Sender<_>, kind, text: &'static str| {
            let _ = reply.send(Err(io::Error::new(kind, text)));
            Err(text)
        };
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return fail(
                reply,
                io::ErrorKind::InvalidInput,
                "not a unicast address and port",
            );
        }
        let Some(local_ip) = self.iface.get_source_address(&remote.ip().into()) else {
            return fail(
                reply,
                io::ErrorKind::AddrNotAvailable,
                "no overlay address of that family",
            );
        };
        if !self.has_socket_room() {
            return fail(
                reply,
                io::ErrorKind::OutOfMemory,
                "overlay connection limit reached",
            );
        }
        let Some(port) = self.allocate_port() else {
            return fail(
                reply,
                io::ErrorKind::AddrNotAvailable,
                "no free ephemeral port",
            );
        };
        let local = SocketAddr::new(local_ip.into(), port);
        let (mut socket, buffers) = self.new_tcp_socket();
        set_opening_timers(&mut socket);
        if socket.connect(self.iface.context(), remote, local).is_err() {
            self.discard_socket(socket, buffers);
            self.release_port(port);
            return fail(
                reply,
                io::ErrorKind::InvalidInput,
                "unaddressable destination",
            );
        }
        let handle = self.add_socket(socket, buffers);
        let id = shared.id;
        let mut conn = Conn::connecting(handle, shared, (local, remote), port, reply, self.now);
        tracing::debug!(%local, %remote, "overlay connection opening");
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let step = conn.service(socket, self.now);
        self.conns.insert(id, conn);
        self.apply(id, step);
        Ok(())
    }
}
