//! The stack's side of one connection: moves data between a smoltcp socket and the channels
//! of its [`OverlayStream`], and turns socket states into stream results.
//!
//! Back-pressure lives here: the stack reads the socket only while the stream's channel has
//! room (else the TCP window closes), and drains the stream's channel only while the socket's
//! send buffer has room (else the writer's `poll_write` waits).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, RecvError, State};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::config::{CONNECT_TIMEOUT, DEAD_PEER_TIMEOUT, KEEP_ALIVE, MAX_CHUNK};
use crate::shared::Shared;
use crate::splice::Spliced;
use crate::stream::{OverlayStream, StackEnds};

/// What the stack must do with a connection after servicing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: wait for the next wake.
    Keep,
    /// The stream is gone: start the linger deadline.
    Orphaned,
    /// The connection is over: remove its socket.
    Remove(&'static str),
}

/// One connection known to the stack.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) handle: SocketHandle,
    pub(crate) shared: Arc<Shared>,
    waker: Waker,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// The local port this connection allocated, when it is an outbound one.
    pub(crate) ephemeral_port: Option<u16>,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Outbound SYN sent; the `connect` caller waits on `reply`.
    Connecting {
        reply: Option<oneshot::Sender<io::Result<OverlayStream>>>,
        started: Instant,
    },
    /// A stream exists (or existed).
    Open(Pipes),
    /// The stream was handed over with a kernel socket: the stack splices the two itself.
    Spliced(Box<Spliced>),
    /// Nothing left to do; only seen between two phases.
    Finished,
}

#[derive(Debug)]
pub(crate) struct Pipes {
    /// `None` once EOF or failure was signalled, or the stream is gone.
    pub(crate) to_stream: Option<tokio::sync::mpsc::Sender<Bytes>>,
    pub(crate) from_stream: tokio::sync::mpsc::Receiver<Bytes>,
    /// Part of a chunk that did not fit into the socket's send buffer.
    pub(crate) pending_tx: Option<Bytes>,
    /// Received data taken out of a socket in TIME-WAIT, waiting for channel room.
    pub(crate) backlog: VecDeque<Bytes>,
    /// The stream shut down its write side (or was dropped): FIN after the data.
    pub(crate) write_done: bool,
    pub(crate) fin_sent: bool,
    /// `recv` reported the peer's FIN (all data before it was read).
    pub(crate) peer_fin: bool,
    /// A state seen so far proves the peer's FIN arrived (CLOSE-WAIT, LAST-ACK, CLOSING,
    /// TIME-WAIT), even while received data still waits in the socket.
    pub(crate) fin_state_seen: bool,
    pub(crate) orphaned: bool,
    pub(crate) aborting: bool,
}

impl Conn {
    /// An outbound connection whose socket was just told to connect.
    pub(crate) fn connecting(
        handle: SocketHandle,
        shared: Arc<Shared>,
        (local, remote): (SocketAddr, SocketAddr),
        port: u16,
        reply: oneshot::Sender<io::Result<OverlayStream>>,
        now: Instant,
    ) -> Self {
        Self {
            handle,
            waker: Waker::from(Arc::clone(&shared)),
            shared,
            local,
            remote,
            ephemeral_port: Some(port),
            phase: Phase::Connecting {
                reply: Some(reply),
                started: now,
            },
        }
    }

    /// An accepted connection and the stream to hand to the listener.
    pub(crate) fn accepted(
        handle: SocketHandle,
        shared: Arc<Shared>,
        (local, remote): (SocketAddr, SocketAddr),
        socket: &mut tcp::Socket<'static>,
    ) -> (Self, OverlayStream) {
        let (stream, ends) = OverlayStream::new(Arc::clone(&shared), local, remote);
        set_established_timers(socket);
        let conn = Self {
            handle,
            waker: Waker::from(Arc::clone(&shared)),
            shared,
            local,
            remote,
            ephemeral_port: None,
            phase: Phase::Open(Pipes::new(ends)),
        };
        (conn, stream)
    }

    /// Brings the connection up to date with its socket and its stream. Called when either
    /// side woke it; cheap when nothing changed.
    pub(crate) fn service(&mut self, socket: &mut tcp::Socket<'static>, now: Instant) -> Step {
        if let Some(handoff) = self.shared.take_splice() {
            self.phase = match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::Open(pipes) => Phase::Spliced(Box::new(Spliced::start(pipes, *handoff))),
                // A stream exists only once the connection is open, and a spliced one was
                // consumed by its first handover.
                other => other,
            };
        }
        let step = match &mut self.phase {
            Phase::Connecting { reply, started } => {
                let started = *started;
                let Some(reply) = reply.take() else {
                    return Step::Remove("connect finished");
                };
                match self.connect_progress(socket, reply, started, now) {
                    Ok(pipes) => {
                        self.phase = Phase::Open(pipes);
                        Step::Keep
                    }
                    Err(Some(reply)) => {
                        self.phase = Phase::Connecting {
                            reply: Some(reply),
                            started,
                        };
                        Step::Keep
                    }
                    Err(None) => Step::Remove("connect failed"),
                }
            }
            Phase::Open(pipes) => pipes.service(socket, &self.shared),
            Phase::Spliced(spliced) => {
                match spliced.service(socket, &self.shared, &self.waker, now) {
                    Ok(()) => Step::Keep,
                    Err(end) => {
                        let Phase::Spliced(spliced) =
                            std::mem::replace(&mut self.phase, Phase::Finished)
                        else {
                            return Step::Remove("splice finished");
                        };
                        // The stream went with the splice: the connection now closes as one
                        // whose stream was dropped.
                        let mut pipes = spliced.finish(end);
                        let step = pipes.service(socket, &self.shared);
                        self.phase = Phase::Open(pipes);
                        step
                    }
                }
            }
            Phase::Finished => return Step::Remove("finished"),
        };
        if matches!(step, Step::Keep | Step::Orphaned) {
            socket.register_recv_waker(&self.waker);
            socket.register_send_waker(&self.waker);
        }
        step
    }

    /// `Ok(pipes)` once established (the stream went to the caller), `Err(Some(reply))`
    /// while still connecting, `Err(None)` when the attempt is over.
    fn connect_progress(
        &mut self,
        socket: &mut tcp::Socket<'static>,
        reply: oneshot::Sender<io::Result<OverlayStream>>,
        started: Instant,
        now: Instant,
    ) -> Result<Pipes, Option<oneshot::Sender<io::Result<OverlayStream>>>> {
        if self.shared.is_dropped() || reply.is_closed() {
            socket.abort();
            return Err(None);
        }
        match socket.state() {
            State::SynSent | State::SynReceived => Err(Some(reply)),
            State::Closed | State::TimeWait | State::Listen => {
                let kind = if now.saturating_duration_since(started) >= CONNECT_TIMEOUT {
                    io::ErrorKind::TimedOut
                } else {
                    io::ErrorKind::ConnectionRefused
                };
                let message = format!("overlay connect to {} failed", self.remote);
                let _ = reply.send(Err(io::Error::new(kind, message)));
                Err(None)
            }
            _ => {
                set_established_timers(socket);
                let shared = Arc::clone(&self.shared);
                let (stream, ends) = OverlayStream::new(shared, self.local, self.remote);
                if reply.send(Ok(stream)).is_err() {
                    socket.abort();
                    return Err(None);
                }
                Ok(Pipes::new(ends))
            }
        }
    }

    /// The linger deadline of an orphaned connection passed: reset it.
    pub(crate) fn expire(&mut self, socket: &mut tcp::Socket<'static>, now: Instant) -> Step {
        if let Phase::Open(pipes) = &mut self.phase {
            if !pipes.aborting {
                tracing::debug!(local = %self.local, remote = %self.remote, "linger expired, resetting");
                self.shared.set_error(io::ErrorKind::TimedOut);
                pipes.abort(socket);
            }
        }
        self.service(socket, now)
    }

    /// The stack is going away: the stream reports `ConnectionAborted`.
    pub(crate) fn fail(&mut self) {
        self.shared.set_error(io::ErrorKind::ConnectionAborted);
        // A splice waiting to be taken over ends here (its handle sees the error).
        self.shared.retire();
        match &mut self.phase {
            Phase::Open(pipes) => pipes.to_stream = None,
            // Dropping the splice (with the stack) resolves its handle with the error.
            Phase::Spliced(_) | Phase::Connecting { .. } | Phase::Finished => {}
        }
    }
}

/// `Some(Remove)` once a closed socket has nothing left to send. A socket closed with its
/// remote endpoint still set has a RST to emit; smoltcp wakes us after sending it.
fn rst_sent(socket: &tcp::Socket<'static>, reason: &'static str) -> Option<Step> {
    let pending_rst = socket.state() == State::Closed && socket.remote_endpoint().is_some();
    (!pending_rst).then_some(Step::Remove(reason))
}

/// Once a connection is up: give up on a silent peer (keep-alives probe it, see
/// [`set_opening_timers`]).
fn set_established_timers(socket: &mut tcp::Socket<'static>) {
    socket.set_timeout(Some(DEAD_PEER_TIMEOUT.into()));
}

/// The timers of a socket that is opening a connection (either direction), before its
/// `connect` or `listen`.
pub(crate) fn set_opening_timers(socket: &mut tcp::Socket<'static>) {
    socket.set_timeout(Some(CONNECT_TIMEOUT.into()));
    // Keep-alive is set now, not once established: on an idle socket smoltcp arms the
    // keep-alive timer to fire at once, which cost every new connection a probe and its ACK
    // in each direction (4 of 13 packets). Set before `connect`/`listen` (which reset the
    // timer, not the interval), the first probe comes after a minute of idleness.
    socket.set_keep_alive(Some(KEEP_ALIVE.into()));
    // Data is forwarded as it comes; the application upstream already chose its segments.
    socket.set_nagle_enabled(false);
}

impl Pipes {
    fn new(ends: StackEnds) -> Self {
        Self {
            to_stream: Some(ends.to_stream),
            from_stream: ends.from_stream,
            pending_tx: None,
            backlog: VecDeque::new(),
            write_done: false,
            fin_sent: false,
            peer_fin: false,
            fin_state_seen: false,
            orphaned: false,
            aborting: false,
        }
    }

    fn service(&mut self, socket: &mut tcp::Socket<'static>, shared: &Shared) -> Step {
        let mut step = Step::Keep;
        if !self.orphaned && shared.is_dropped() {
            self.orphaned = true;
            self.to_stream = None;
            if shared.wants_abort() {
                self.abort(socket);
            } else {
                step = Step::Orphaned;
            }
        }
        if self.aborting {
            return rst_sent(socket, "reset by us").unwrap_or(step);
        }
        self.stream_to_socket(socket);
        self.socket_to_stream(socket, shared);
        if self.reset_seen(socket, shared) {
            self.to_stream = None;
            return rst_sent(socket, "reset or timed out").unwrap_or(step);
        }
        if !matches!(socket.state(), State::Closed | State::TimeWait) {
            return step;
        }
        if self.to_stream.is_some() && (socket.can_recv() || !self.backlog.is_empty()) {
            // Received data still waits for a slow reader; its next read wakes us.
            return step;
        }
        self.to_stream = None;
        rst_sent(socket, "closed").unwrap_or(step)
    }

    /// Whether the socket closed without both FINs (a RST or a timeout); records
    /// `ConnectionReset` for the stream then. Notes on the way a state that proves the
    /// peer's FIN arrived.
    pub(crate) fn reset_seen(&mut self, socket: &tcp::Socket<'static>, shared: &Shared) -> bool {
        let state = socket.state();
        if matches!(
            state,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        ) {
            self.fin_state_seen = true;
        }
        let reset = matches!(state, State::Closed | State::TimeWait)
            && !(self.fin_sent && (self.peer_fin || self.fin_state_seen));
        if reset {
            shared.set_error(io::ErrorKind::ConnectionReset);
        }
        reset
    }

    /// Notes the peer's FIN once `recv` reports it (all data before it was read).
    pub(crate) fn note_peer_fin(&mut self, socket: &mut tcp::Socket<'static>) {
        if !self.peer_fin && matches!(socket.recv(|_| (0, ())), Err(RecvError::Finished)) {
            self.peer_fin = true;
        }
    }

    fn abort(&mut self, socket: &mut tcp::Socket<'static>) {
        self.aborting = true;
        self.to_stream = None;
        socket.abort();
    }

    /// Moves what the stream wrote into the socket's send buffer, while it has room.
    fn stream_to_socket(&mut self, socket: &mut tcp::Socket<'static>) {
        while !self.write_done || self.pending_tx.is_some() {
            let chunk = match self.pending_tx.take() {
                Some(chunk) => chunk,
                None => match self.from_stream.try_recv() {
                    Ok(chunk) => chunk,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.write_done = true;
                        break;
                    }
                },
            };
            if !socket.may_send() {
                // Reset or closing: nothing more will be sent; the state check reports it.
                continue;
            }
            let sent = socket.send_slice(&chunk).unwrap_or(chunk.len());
            if sent < chunk.len() {
                self.pending_tx = Some(chunk.slice(sent..));
                break;
            }
        }
        if self.write_done && self.pending_tx.is_none() && !self.fin_sent {
            socket.close();
            // Nothing of ours is left to piggyback ACKs on: send them at once, so the ACK
            // of the peer's FIN is out before the socket is removed in TIME-WAIT.
            socket.set_ack_delay(None);
            self.fin_sent = true;
        }
    }

    /// Moves received data to the stream while its channel has room; signals EOF after FIN.
    fn socket_to_stream(&mut self, socket: &mut tcp::Socket<'static>, shared: &Shared) {
        if self.orphaned {
            // Nobody reads: discard, so the peer can finish sending and close.
            self.backlog.clear();
            while socket.can_recv() {
                if socket.recv(|data| (data.len(), ())).is_err() {
                    break;
                }
            }
        }
        let mut closed = false;
        while let Some(to_stream) = &self.to_stream {
            if self.backlog.is_empty() && !socket.can_recv() {
                break;
            }
            match to_stream.try_reserve() {
                Ok(permit) => match self.backlog.pop_front() {
                    Some(chunk) => permit.send(chunk),
                    None => match recv_chunk(socket) {
                        Some(chunk) => permit.send(chunk),
                        None => break,
                    },
                },
                Err(TrySendError::Full(())) => {
                    shared.set_rx_blocked();
                    // The stream may have taken a chunk between our check and the flag.
                    if to_stream.capacity() == 0 {
                        break;
                    }
                    shared.clear_rx_blocked();
                }
                Err(TrySendError::Closed(())) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.to_stream = None;
        }
        if self.to_stream.is_some() && socket.state() == State::TimeWait {
            // smoltcp clears the receive buffer when TIME-WAIT ends (10 s); a slow reader
            // must not lose the tail of the data, so take it out now. Bounded by the buffer.
            while let Some(chunk) = recv_chunk(socket) {
                self.backlog.push_back(chunk);
            }
        }
        self.note_peer_fin(socket);
        if self.peer_fin && !socket.can_recv() && self.backlog.is_empty() {
            // All data is in the channel: dropping the sender is the stream's EOF.
            self.to_stream = None;
        }
    }
}

/// Up to [`MAX_CHUNK`] bytes from the socket's receive buffer.
pub(crate) fn recv_chunk(socket: &mut tcp::Socket<'static>) -> Option<Bytes> {
    if !socket.can_recv() {
        return None;
    }
    socket
        .recv(|data| {
            let n = data.len().min(MAX_CHUNK);
            (n, Bytes::copy_from_slice(&data[..n]))
        })
        .ok()
}
