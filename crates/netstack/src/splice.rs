//! A connection spliced with a kernel TCP socket *by the stack*: the driver moves bytes
//! between the smoltcp socket's buffers and the kernel socket with `read`/`write` calls of its
//! own, so no task, channel or intermediate buffer sits between them.
//!
//! Why: a forward or an expose is, most of the time, exactly this pair (a public or local
//! kernel socket and an overlay connection). Spliced by a task, every chunk crossed a channel
//! as a fresh allocation, was copied twice more, and woke a second task on each side of the
//! tunnel. Here a request goes from the kernel socket straight into the socket's send buffer
//! on the driver's thread, and a reply from the receive buffer straight into the kernel.
//!
//! The splice keeps [`OverlayStream`]'s semantics: half-close passes on (an EOF from the
//! kernel socket becomes our FIN after the data; the peer's FIN becomes a `shutdown(Write)`
//! of the kernel socket after the data), an error on either side ends it, and bytes the stream
//! had not yet read or written when it was handed over go first, in order. Timeouts are the
//! caller's: it reads [`KernelSplice::progress`] and calls [`KernelSplice::stop`].

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use smoltcp::socket::tcp::{self, State};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use pinhole_tcpread::{Read, Until};

use crate::conn::{recv_chunk, Pipes};
use crate::shared::Shared;
use crate::stream::OverlayStream;

/// How a splice run by the stack ended. Both sockets are closed (or closing) in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSpliceEnd {
    /// Both directions reached EOF and passed it on.
    Closed,
    /// [`KernelSplice::stop`] was called (or the handle dropped): both sides were closed
    /// gracefully, data already in the overlay connection's send buffer still goes out.
    Stopped,
    /// Reading from or writing to the kernel socket failed.
    Kernel(io::ErrorKind),
    /// The overlay connection was reset, timed out, or its stack stopped.
    Overlay(io::ErrorKind),
}

/// What a running splice has done so far, for the caller's idle timeouts and live counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceProgress {
    /// Bytes read from the kernel socket and put into the overlay connection.
    pub to_overlay: u64,
    /// Bytes taken from the overlay connection and written to the kernel socket.
    pub to_kernel: u64,
    /// When bytes last moved (or a direction finished); the handover to begin with.
    pub last_activity: Instant,
    /// The kernel socket's EOF was read and passed on as our FIN.
    pub kernel_eof: bool,
    /// The overlay peer's FIN was passed on as a `shutdown(Write)` of the kernel socket.
    pub overlay_eof: bool,
}

const KERNEL_EOF: u8 = 1;
const OVERLAY_EOF: u8 = 2;
const STOP: u8 = 4;
/// The caller waits for bytes to move: the stack notifies `activity` once.
const WATCH: u8 = 8;

/// The figures the stack publishes and the caller reads; written only by the stack.
#[derive(Debug)]
pub(crate) struct Progress {
    base: Instant,
    to_overlay: AtomicU64,
    to_kernel: AtomicU64,
    /// Microseconds after `base` of the last activity.
    active_us: AtomicU64,
    flags: AtomicU8,
    activity: Notify,
}

impl Progress {
    fn new(base: Instant) -> Self {
        Self {
            base,
            to_overlay: AtomicU64::new(0),
            to_kernel: AtomicU64::new(0),
            active_us: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            activity: Notify::new(),
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    fn set(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
    }

    fn active(&self, now: Instant) {
        let us = now.saturating_duration_since(self.base).as_micros();
        self.active_us
            .store(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
        if self.has(WATCH) {
            self.flags.fetch_and(!WATCH, Ordering::AcqRel);
            self.activity.notify_one();
        }
    }
}

/// What [`OverlayStream::splice_kernel`] hands to the stack.
#[derive(Debug)]
pub(crate) struct Handoff {
    stream: OverlayStream,
    tcp: TcpStream,
    progress: Arc<Progress>,
    done: oneshot::Sender<KernelSpliceEnd>,
}

/// A splice the stack runs: resolves when it ends. Dropping it stops the splice, as
/// [`KernelSplice::stop`] does.
#[derive(Debug)]
pub struct KernelSplice {
    progress: Arc<Progress>,
    shared: Arc<Shared>,
    done: oneshot::Receiver<KernelSpliceEnd>,
}

impl OverlayStream {
    /// Hands this connection and `tcp` to the stack, which splices them in its own loop
    /// (see the module docs of `splice.rs`). Bytes this stream has not read yet go to `tcp`
    /// first; bytes written to it before go out first.
    pub fn splice_kernel(self, tcp: TcpStream) -> KernelSplice {
        // Refused only by kernels before 4.18; reads then go on until `EAGAIN`.
        pinhole_tcpread::report_queue(&tcp);
        let shared = Arc::clone(&self.shared);
        let progress = Arc::new(Progress::new(Instant::now()));
        let (done, rx) = oneshot::channel();
        let handoff = Box::new(Handoff {
            stream: self,
            tcp,
            progress: Arc::clone(&progress),
            done,
        });
        // A connection the stack already forgot: dropping the handoff drops `done`, and
        // the splice resolves at once with the connection's error.
        drop(shared.offer_splice(handoff));
        KernelSplice {
            progress,
            shared,
            done: rx,
        }
    }
}

impl KernelSplice {
    /// Bytes moved so far, when they last moved, and which directions finished.
    pub fn progress(&self) -> SpliceProgress {
        let p = &self.progress;
        let flags = p.flags.load(Ordering::Acquire);
        SpliceProgress {
            to_overlay: p.to_overlay.load(Ordering::Relaxed),
            to_kernel: p.to_kernel.load(Ordering::Relaxed),
            last_activity: p.base + Duration::from_micros(p.active_us.load(Ordering::Relaxed)),
            kernel_eof: flags & KERNEL_EOF != 0,
            overlay_eof: flags & OVERLAY_EOF != 0,
        }
    }

    /// Resolves once bytes move after this call (possibly at once, spuriously): lets a
    /// caller that watches the splice sleep while it is quiet, yet learn when it is not.
    pub fn activity(&self) -> impl Future<Output = ()> + Send + 'static {
        let progress = Arc::clone(&self.progress);
        progress.set(WATCH);
        // `notify_one` keeps a permit when nobody waits yet, so no wake-up is lost between
        // the flag and the wait.
        async move { progress.activity.notified().await }
    }

    /// Ends the splice: both sides are closed gracefully. Returns at once; the splice
    /// resolves with [`KernelSpliceEnd::Stopped`] (unless it had ended otherwise).
    pub fn stop(&self) {
        if !self.progress.has(STOP) {
            self.progress.set(STOP);
            self.shared.wake_stack();
        }
    }
}

impl Future for KernelSplice {
    type Output = KernelSpliceEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<KernelSpliceEnd> {
        Poll::Ready(match std::task::ready!(Pin::new(&mut self.done).poll(cx)) {
            Ok(end) => end,
            // The stack forgot the connection (or stopped) before the splice began or ended.
            Err(_) => KernelSpliceEnd::Overlay(
                self.shared
                    .error()
                    .map_or(io::ErrorKind::ConnectionAborted, |e| e.kind()),
            ),
        })
    }
}

impl Drop for KernelSplice {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The stack's side of a spliced connection.
#[derive(Debug)]
pub(crate) struct Spliced {
    pipes: Pipes,
    /// Kept until the end: dropping it tells the stack the connection has no owner.
    stream: OverlayStream,
    tcp: TcpStream,
    /// Received before the handover and not yet read by the stream: written first.
    to_kernel: VecDeque<Bytes>,
    /// Everything the stream wrote before the handover is in the socket's send buffer.
    stream_drained: bool,
    kernel_eof: bool,
    kernel_shut: bool,
    progress: Arc<Progress>,
    done: Option<oneshot::Sender<KernelSpliceEnd>>,
}

impl Spliced {
    /// Takes over an open connection's pipes and the stream handed over.
    pub(crate) fn start(mut pipes: Pipes, handoff: Handoff) -> Self {
        let Handoff {
            mut stream,
            tcp,
            progress,
            done,
        } = handoff;
        // What the stack delivered and the stream has not read, in order. The stack is the
        // only sender and runs this, so nothing can arrive between the drain and the drop.
        let mut to_kernel = VecDeque::new();
        let chunk = std::mem::take(&mut stream.rx_chunk);
        if !chunk.is_empty() {
            to_kernel.push_back(chunk);
        }
        while let Ok(chunk) = stream.rx.try_recv() {
            to_kernel.push_back(chunk);
        }
        to_kernel.extend(pipes.backlog.drain(..));
        pipes.to_stream = None;
        // Closing the stream's sender: what it wrote stays queued, then reads `Disconnected`.
        stream.tx.abort_send();
        stream.tx.close();
        let kernel_eof = stream.write_shut || pipes.write_done;
        Self {
            pipes,
            stream,
            tcp,
            to_kernel,
            stream_drained: false,
            kernel_eof,
            kernel_shut: false,
            progress,
            done: Some(done),
        }
    }

    /// Moves what can move both ways; `Err` when the splice is over (the caller then calls
    /// [`Spliced::finish`]).
    pub(crate) fn service(
        &mut self,
        socket: &mut tcp::Socket<'static>,
        shared: &Shared,
        waker: &Waker,
        now: Instant,
    ) -> Result<(), KernelSpliceEnd> {
        if self.progress.has(STOP) {
            return Err(KernelSpliceEnd::Stopped);
        }
        let mut cx = Context::from_waker(waker);
        let eof_before = (self.kernel_eof, self.kernel_shut);
        let (mut to_overlay, mut to_kernel) = (0, 0);
        let result = self
            .kernel_into_socket(socket, &mut cx, &mut to_overlay)
            .and_then(|()| self.socket_into_kernel(socket, &mut cx, &mut to_kernel));
        // Counted even when a side failed halfway: the report says what really moved.
        if to_overlay > 0 {
            self.progress
                .to_overlay
                .fetch_add(to_overlay, Ordering::Relaxed);
        }
        if to_kernel > 0 {
            self.progress
                .to_kernel
                .fetch_add(to_kernel, Ordering::Relaxed);
        }
        if to_overlay + to_kernel > 0 || eof_before != (self.kernel_eof, self.kernel_shut) {
            self.progress.active(now);
        }
        result?;
        if self.pipes.reset_seen(socket, shared) {
            return Err(KernelSpliceEnd::Overlay(io::ErrorKind::ConnectionReset));
        }
        if self.kernel_shut && self.pipes.fin_sent {
            return Err(KernelSpliceEnd::Closed);
        }
        Ok(())
    }

    /// Reports `end`, closes the kernel socket and gives the pipes back, their stream gone:
    /// the connection then closes as one whose stream was dropped.
    pub(crate) fn finish(self, end: KernelSpliceEnd) -> Pipes {
        let Self {
            mut pipes,
            stream,
            tcp,
            done,
            ..
        } = self;
        if end != KernelSpliceEnd::Closed {
            // The kernel side is gone: FIN after what is already in the send buffer.
            pipes.write_done = true;
        }
        drop(tcp);
        drop(stream);
        if let Some(done) = done {
            let _ = done.send(end);
        }
        pipes
    }

    /// The stream's leftover writes, then the kernel socket, into the socket's send buffer;
    /// FIN after the kernel socket's EOF. Adds the bytes read from the kernel to `moved`.
    fn kernel_into_socket(
        &mut self,
        socket: &mut tcp::Socket<'static>,
        cx: &mut Context<'_>,
        moved: &mut u64,
    ) -> Result<(), KernelSpliceEnd> {
        while !self.stream_drained {
            let chunk = match self.pipes.pending_tx.take() {
                Some(chunk) => chunk,
                None => match self.pipes.from_stream.try_recv() {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        self.stream_drained = true;
                        break;
                    }
                },
            };
            if !socket.may_send() {
                continue; // reset or closing: the state check reports it
            }
            let sent = socket.send_slice(&chunk).unwrap_or(chunk.len());
            if sent < chunk.len() {
                self.pipes.pending_tx = Some(chunk.slice(sent..));
                return Ok(());
            }
        }
        // A message is read until the kernel says the socket is drained; once a read is
        // bulk, the reads go on until `EAGAIN` (pinhole-tcpread's docs). A short read alone
        // proves nothing.
        let mut until = Until::Drained;
        while !self.kernel_eof && socket.can_send() {
            let tcp = &self.tcp;
            match socket.send(|room| match pinhole_tcpread::try_read(tcp, room, until) {
                Ok(read) => (read.len, Ok(read)),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok(Read { len: 0, .. })) => {
                    self.kernel_eof = true;
                    self.progress.set(KERNEL_EOF);
                }
                Ok(Ok(Read { len, drained, bulk })) => {
                    *moved += len as u64;
                    if bulk {
                        until = Until::Eagain;
                    }
                    // Pending registers the connection's waker for the socket's readiness.
                    if drained && self.tcp.poll_read_ready(cx).is_pending() {
                        break;
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Pending registers the connection's waker for the socket's readiness.
                    if self.tcp.poll_read_ready(cx).is_pending() {
                        break;
                    }
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(KernelSpliceEnd::Kernel(e.kind())),
                Err(tcp::SendError::InvalidState) => break,
            }
        }
        if self.kernel_eof
            && self.stream_drained
            && self.pipes.pending_tx.is_none()
            && !self.pipes.fin_sent
        {
            socket.close();
            // As for a stream's shutdown: nothing of ours is left to carry ACKs.
            socket.set_ack_delay(None);
            self.pipes.fin_sent = true;
        }
        Ok(())
    }

    /// What the stream had not read, then the socket's receive buffer, into the kernel
    /// socket; `shutdown(Write)` after the peer's FIN. Adds the bytes written to `moved`.
    fn socket_into_kernel(
        &mut self,
        socket: &mut tcp::Socket<'static>,
        cx: &mut Context<'_>,
        moved: &mut u64,
    ) -> Result<(), KernelSpliceEnd> {
        loop {
            let written = if let Some(front) = self.to_kernel.front_mut() {
                let written = self.tcp.try_write(front);
                if let Ok(n) = written {
                    front.advance(n);
                    if front.is_empty() {
                        self.to_kernel.pop_front();
                    }
                }
                written
            } else if socket.can_recv() {
                let tcp = &self.tcp;
                match socket.recv(|data| match tcp.try_write(data) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }) {
                    Ok(written) => written,
                    Err(_) => break,
                }
            } else {
                break;
            };
            match written {
                Ok(0) => return Err(KernelSpliceEnd::Kernel(io::ErrorKind::WriteZero)),
                Ok(n) => *moved += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.tcp.poll_write_ready(cx).is_pending() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(KernelSpliceEnd::Kernel(e.kind())),
            }
        }
        if socket.state() == State::TimeWait {
            // smoltcp clears the receive buffer when TIME-WAIT ends: a slow kernel reader must
            // not lose the tail, so take it out now. Bounded by the buffer.
            while let Some(chunk) = recv_chunk(socket) {
                self.to_kernel.push_back(chunk);
            }
        }
        self.pipes.note_peer_fin(socket);
        if self.pipes.peer_fin
            && !self.kernel_shut
            && self.to_kernel.is_empty()
            && !socket.can_recv()
        {
            // Published first: whoever reads the EOF may look at the progress at once.
            self.progress.set(OVERLAY_EOF);
            // A TCP socket's shutdown is immediate; the result only says it was not connected.
            let _ = Pin::new(&mut self.tcp).poll_shutdown(cx);
            self.kernel_shut = true;
        }
        Ok(())
    }
}
