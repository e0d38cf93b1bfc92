//! Listening on an overlay `addr:port` (or a range of ports), and accepting many
//! connections on it.
//!
//! A listener is one entry in the stack's port map whatever the number of ports it covers:
//! no socket exists for any of its ports until a SYN arrives, so a thousand-port range costs
//! what one port costs.
//!
//! smoltcp's listening socket turns into the connection it accepts, so one socket serves one
//! connection. Just before smoltcp processes an inbound SYN for a listened address from a
//! remote endpoint we do not know yet, the stack adds a fresh listening socket for it
//! (`Stack::prepare_accept`); retransmitted SYNs find their embryonic socket and add nothing.
//! Once a socket is established the listener hands a new `OverlayStream` to `accept`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Waker;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use tokio::sync::mpsc;

use crate::conn::{set_opening_timers, Conn};
use crate::keys::Tuple;
use crate::packet::Syn;
use crate::ports::range_end;
use crate::shared::{HandleId, Shared};
use crate::stack::Stack;
use crate::stream::OverlayStream;

/// Accepts TCP connections arriving at one overlay `addr:port`, or at any port of a range
/// ([`crate::Overlay::listen_range`]; each stream's `local_addr()` tells which port). Dropping
/// it stops listening: connections not yet accepted are closed, accepted ones live on.
#[derive(Debug)]
pub struct OverlayListener {
    local: SocketAddr,
    last_port: u16,
    shared: Arc<Shared>,
    accepted: mpsc::Receiver<OverlayStream>,
}

impl OverlayListener {
    /// Waits for the next established connection and its remote address. Cancel-safe: a
    /// connection is never lost when the future is dropped.
    pub async fn accept(&mut self) -> io::Result<(OverlayStream, SocketAddr)> {
        match self.accepted.recv().await {
            Some(stream) => {
                let peer = stream.peer_addr();
                Ok((stream, peer))
            }
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "overlay stack stopped",
            )),
        }
    }

    /// The overlay address and port this listener accepts on (for a range, its first port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many consecutive ports, from `local_addr().port()`, this listener covers.
    pub fn port_count(&self) -> u16 {
        self.last_port - self.local.port() + 1
    }
}

impl Drop for OverlayListener {
    fn drop(&mut self) {
        self.shared.mark_dropped();
    }
}

/// The stack's side of a listener.
#[derive(Debug)]
pub(crate) struct Listening {
    local: SocketAddr,
    shared: Arc<Shared>,
    waker: Waker,
    accepted: mpsc::Sender<OverlayStream>,
    /// Sockets in LISTEN (for an instant) or SYN-RECEIVED.
    sockets: Vec<SocketHandle>,
}

impl Listening {
    /// A listener for `local.port()..=last_port` and the handle given to the caller.
    pub(crate) fn new(
        local: SocketAddr,
        last_port: u16,
        shared: Arc<Shared>,
        backlog: usize,
    ) -> (Self, OverlayListener) {
        let (accepted_tx, accepted) = mpsc::channel(backlog);
        let handle = OverlayListener {
            local,
            last_port,
            shared: Arc::clone(&shared),
            accepted,
        };
        let listening = Self {
            local,
            waker: Waker::from(Arc::clone(&shared)),
            shared,
            accepted: accepted_tx,
            sockets: Vec::new(),
        };
        (listening, handle)
    }
}

impl Listening {
    /// The sockets of connections still opening (LISTEN or SYN-RECEIVED).
    pub(crate) fn sockets(&self) -> &[SocketHandle] {
        &self.sockets
    }
}

impl Stack {
    /// Before smoltcp sees `syn`: adds a listening socket for it when it opens a new
    /// connection to one of our listeners and the connection cap allows. Returns the socket.
    pub(crate) fn prepare_accept(&mut self, syn: Syn) -> Option<(HandleId, SocketHandle)> {
        let id = self.listen_ports.lookup(syn.local)?;
        if self
            .by_tuple
            .contains_key(&Tuple::new(syn.local, syn.remote))
        {
            return None;
        }
        let listening = self.listeners.get(&id)?;
        let remote = Some(syn.remote.into());
        let known = listening
            .sockets
            .iter()
            .any(|&h| self.sockets.get::<tcp::Socket>(h).remote_endpoint() == remote);
        if known {
            return None;
        }
        let waker = listening.waker.clone();
        if !self.has_socket_room() {
            return None;
        }
        let (mut socket, buffers) = self.new_tcp_socket();
        set_opening_timers(&mut socket);
        if socket.listen(syn.local).is_err() {
            self.discard_socket(socket, buffers);
            return None;
        }
        socket.register_recv_waker(&waker);
        let handle = self.add_socket(socket, buffers);
        self.listeners.get_mut(&id)?.sockets.push(handle);
        Some((id, handle))
    }

    /// After smoltcp processed the SYN: a socket still in LISTEN did not take it (bad
    /// segment, or it went to another socket) and is removed at once.
    pub(crate) fn finish_accept(&mut self, id: HandleId, handle: SocketHandle) {
        if self.sockets.get::<tcp::Socket>(handle).state() != State::Listen {
            return;
        }
        if let Some(listening) = self.listeners.get_mut(&id) {
            listening.sockets.retain(|&h| h != handle);
        }
        self.remove_socket(handle);
    }

    /// Hands established sockets to `accept`, drops dead embryonic ones, or tears the
    /// listener down when its handle is gone.
    pub(crate) fn service_listener(&mut self, id: HandleId) {
        let Some(listening) = self.listeners.get_mut(&id) else {
            return;
        };
        listening.shared.clear_queued();
        if listening.shared.is_dropped() {
            self.close_listener(id);
            return;
        }
        let handles = std::mem::take(&mut listening.sockets);
        let mut still_opening = Vec::with_capacity(handles.len());
        for handle in handles {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            match socket.state() {
                State::Listen | State::SynReceived => {
                    if let Some(listening) = self.listeners.get(&id) {
                        socket.register_recv_waker(&listening.waker);
                    }
                    still_opening.push(handle);
                }
                State::Closed | State::TimeWait => self.remove_socket(handle),
                _ => self.promote(id, handle),
            }
        }
        if let Some(listening) = self.listeners.get_mut(&id) {
            listening.sockets = still_opening;
        }
    }

    /// An established socket becomes a connection and its stream is queued for `accept`;
    /// with a full backlog it is dropped (the peer's next segment draws a RST).
    fn promote(&mut self, id: HandleId, handle: SocketHandle) {
        let room = self
            .listeners
            .get(&id)
            .is_some_and(|listening| listening.accepted.capacity() > 0);
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let endpoints = (socket.local_endpoint(), socket.remote_endpoint());
        let (true, (Some(local), Some(remote))) = (room, endpoints) else {
            tracing::debug!(
                ?endpoints,
                "accept backlog full or connection gone, dropped"
            );
            socket.abort();
            self.remove_socket(handle);
            return;
        };
        let shared = Shared::new(&self.wake);
        let tuple = (SocketAddr::from(local), SocketAddr::from(remote));
        let (mut conn, stream) = Conn::accepted(handle, Arc::clone(&shared), tuple, socket);
        tracing::debug!(local = %tuple.0, remote = %tuple.1, "overlay connection accepted");
        // Only this task sends on the channel, so the room checked above is still there.
        let queued = self
            .listeners
            .get(&id)
            .is_some_and(|listening| listening.accepted.try_send(stream).is_ok());
        debug_assert!(queued, "accept queue had room");
        // The connection may already hold data or a FIN: service it now.
        let step = conn.service(socket, self.now);
        self.by_tuple
            .insert(Tuple::new(tuple.0, tuple.1), shared.id);
        self.conns.insert(shared.id, conn);
        self.apply(shared.id, step);
    }

    /// Stops listening: embryonic connections are dropped with their sockets.
    pub(crate) fn close_listener(&mut self, id: HandleId) {
        let Some(listening) = self.listeners.remove(&id) else {
            return;
        };
        listening.shared.retire();
        self.listen_ports
            .remove(listening.local.ip(), listening.local.port());
        for handle in listening.sockets {
            self.remove_socket(handle);
        }
        tracing::debug!(local = %listening.local, "overlay listener closed");
    }

    /// Registers a listener for `count` ports from `local`, checking that the address is
    /// ours and the ports free.
    pub(crate) fn open_listener(
        &mut self,
        local: SocketAddr,
        count: u16,
    ) -> io::Result<OverlayListener> {
        if local.port() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "overlay listen needs a port",
            ));
        }
        let last = range_end(local.port(), count)?;
        if !self.iface.has_ip_addr(local.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{} is not an overlay address of this peer", local.ip()),
            ));
        }
        let (ip, first) = (local.ip(), local.port());
        if !self.listen_ports.is_free(ip, first, last) {
            // A listener dropped just before this call may not have been reaped yet.
            let dropped: Vec<HandleId> = (self.listeners.iter())
                .filter(|(_, listening)| listening.shared.is_dropped())
                .map(|(&id, _)| id)
                .collect();
            for id in dropped {
                self.close_listener(id);
            }
        }
        let shared = Shared::new(&self.wake);
        if !self.listen_ports.insert(ip, first, last, shared.id) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("overlay {local} (ports {first}-{last}) is already listened on"),
            ));
        }
        let (listening, handle) = Listening::new(
            local,
            last,
            Arc::clone(&shared),
            crate::config::ACCEPT_BACKLOG,
        );
        self.listeners.insert(shared.id, listening);
        tracing::debug!(%local, last, "overlay listener open");
        Ok(handle)
    }

    /// Whether no TCP listener covers `ip:port`.
    pub(crate) fn tcp_listen_free(&self, ip: IpAddr, port: u16) -> bool {
        self.listen_ports
            .lookup(SocketAddr::new(ip, port))
            .is_none()
    }
}
