//! `Overlay`: the cheap, cloneable handle forward/expose tasks use to open and accept
//! connections. It only sends requests to the driver over a bounded channel.

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
        reply: oneshot::Sender<io::Result<OverlayListener>>,
    },
}

/// Opens and accepts TCP connections on the overlay. Clone it freely: every clone talks to
/// the same stack, which must be driven (`Stack::poll`/`wait`) for anything to happen.
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
        let (reply, answer) = oneshot::channel();
        let command = Command::Listen { local, reply };
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
            Command::Listen { local, reply } => {
                let _ = reply.send(self.open_listener(local));
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
        let mut socket = self.new_tcp_socket();
        set_opening_timers(&mut socket);
        if socket.connect(self.iface.context(), remote, local).is_err() {
            self.release_port(port);
            return fail(
                reply,
                io::ErrorKind::InvalidInput,
                "unaddressable destination",
            );
        }
        let handle = self.add_socket(socket);
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
