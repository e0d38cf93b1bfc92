//! `OverlayStream`: one TCP connection of the userspace stack, as a tokio byte stream.
//!
//! The stream never touches smoltcp. It exchanges `Bytes` chunks with the driver over two
//! bounded channels and wakes the driver through its [`Shared`] flag:
//! - reading takes chunks the stack moved out of the smoltcp socket; when that channel is
//!   full the stack stops reading the socket, its buffer fills and the TCP window closes;
//! - writing puts chunks into a channel the stack drains into the smoltcp send buffer only
//!   while that buffer has room; when the channel is full `poll_write` returns `Pending`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::config::{CHANNEL_CHUNKS, MAX_CHUNK};
use crate::shared::Shared;

/// A TCP connection carried by the userspace stack: `AsyncRead + AsyncWrite`, like a
/// `TcpStream`, so forward/expose code splices it without knowing which stack is underneath.
///
/// - `poll_shutdown` sends FIN after all data written so far; reading goes on until the
///   peer's FIN, then returns `Ok(0)`.
/// - A RST (or a dead peer timing out) makes reads and writes fail with `ConnectionReset`.
/// - Dropping the stream closes the connection gracefully (data written so far, then FIN);
///   [`OverlayStream::abort`] resets it instead.
#[derive(Debug)]
pub struct OverlayStream {
    pub(crate) shared: Arc<Shared>,
    local: SocketAddr,
    peer: SocketAddr,
    /// Chunks the stack received for us; read by a splice too, when it takes over.
    pub(crate) rx: mpsc::Receiver<Bytes>,
    /// The unread rest of the last chunk taken from `rx`.
    pub(crate) rx_chunk: Bytes,
    pub(crate) tx: PollSender<Bytes>,
    /// `poll_shutdown` was called: nothing more will be written.
    pub(crate) write_shut: bool,
}

/// The stack's ends of a stream's two channels.
#[derive(Debug)]
pub(crate) struct StackEnds {
    /// Data for the stream to read.
    pub(crate) to_stream: mpsc::Sender<Bytes>,
    /// Data the stream wrote.
    pub(crate) from_stream: mpsc::Receiver<Bytes>,
}

impl OverlayStream {
    /// A stream for the connection `local` <-> `peer`, and the stack's ends of its channels.
    pub(crate) fn new(
        shared: Arc<Shared>,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> (Self, StackEnds) {
        let (to_stream, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (tx, from_stream) = mpsc::channel(CHANNEL_CHUNKS);
        let stream = Self {
            shared,
            local,
            peer,
            rx,
            rx_chunk: Bytes::new(),
            tx: PollSender::new(tx),
            write_shut: false,
        };
        (
            stream,
            StackEnds {
                to_stream,
                from_stream,
            },
        )
    }

    /// The remote end of the connection (an overlay address of some peer).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Our end of the connection (one of our overlay addresses).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Resets the connection (RST) instead of closing it gracefully: what a splice does when
    /// the other side of the splice was reset, so the reset propagates.
    pub fn abort(self) {
        self.shared.mark_abort();
    }

    fn failure(&self) -> io::Error {
        self.shared.error().unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "overlay connection closed")
        })
    }
}

impl AsyncRead for OverlayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(error) = this.shared.error() {
                return Poll::Ready(Err(error));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !this.rx_chunk.is_empty() {
                let n = buf.remaining().min(this.rx_chunk.len());
                buf.put_slice(&this.rx_chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(chunk) => {
                    this.rx_chunk = chunk;
                    this.shared.on_chunk_taken();
                }
                // The stack drops its sender after the peer's FIN (EOF) or on failure, and
                // records the failure first.
                None => {
                    return Poll::Ready(match this.shared.error() {
                        Some(error) => Err(error),
                        None => Ok(()),
                    })
                }
            }
        }
    }
}

impl AsyncWrite for OverlayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(error) = this.shared.error() {
            return Poll::Ready(Err(error));
        }
        if this.write_shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(this.failure()));
        }
        let n = buf.len().min(MAX_CHUNK);
        if this
            .tx
            .send_item(Bytes::copy_from_slice(&buf[..n]))
            .is_err()
        {
            return Poll::Ready(Err(this.failure()));
        }
        this.shared.wake_stack();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already with the stack; TCP delivers it without further action.
        match self.shared.error() {
            Some(error) => Poll::Ready(Err(error)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_shut {
            this.write_shut = true;
            // Closing our only sender: the stack drains what is queued, then sends FIN.
            this.tx.close();
            this.shared.wake_stack();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for OverlayStream {
    fn drop(&mut self) {
        // The sender goes first: the stack may service the connection the moment it sees
        // the stream dropped, and must then find the channel disconnected (and send FIN).
        // Fields drop only after this body, so without this a stack on another thread could
        // find the channel merely empty, and the connection lingered without a FIN.
        self.tx.abort_send();
        self.tx.close();
        self.shared.mark_dropped();
    }
}
