//! The splicer of forwards and exposes: when one side of a connection is a kernel TCP socket
//! and the other an overlay connection of the userspace stack (a forward's public client and
//! its overlay connection, an expose's overlay connection and its local target), the stack
//! splices the two in its own loop ([`OverlayStream::splice_kernel`]). When both sides are
//! kernel sockets (the TUN stack's forwards and exposes), the task splices them through a pipe
//! ([`PipeSplice`]). A SOCKS exit is an expose whose target is chosen per connection, so its
//! pair goes the same ways. Any other pair is copied by the connection's task.
//!
//! Why: copied by a task, every request and reply crossed a channel to the stack as a fresh
//! allocation and woke one more task on each peer; the stack reads and writes the kernel
//! socket itself with no copy of its own. Between two kernel sockets a pipe keeps the bytes
//! in the kernel (docs/benchmarks.md has the figures for both).
//!
//! The connection's task still owns the timeouts and the live byte counts
//! ([`pinhole_forward::supervise`]), and sleeps in between.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pinhole_forward::{
    splice_counted, supervise, Counters, OffloadProgress, Offloaded, PipePool, PipeSplice, Rewind,
    SpliceEnd, SpliceReport, Splicer,
};
use pinhole_netstack::{KernelSplice, KernelSpliceEnd, OverlayStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::overlay::NetStream;

/// Lets the userspace stack splice kernel sockets with overlay connections; see the module.
#[derive(Debug, Clone, Copy, Default)]
pub struct StackSplicer;

impl Splicer for StackSplicer {
    async fn splice<A, B>(
        &self,
        a: A,
        b: B,
        idle_timeout: Duration,
        half_close_timeout: Duration,
        counters: &Counters,
    ) -> SpliceReport
    where
        A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Each side sits in an `Option`, so that it can be looked at as its concrete type and
        // taken only once both sides are known to fit.
        let (mut a, mut b) = (Some(a), Some(b));
        let timeouts = (idle_timeout, half_close_timeout);
        match take_sides(&mut a, &mut b) {
            Some(Taken::Stack(pair)) => return offload(pair, timeouts, counters).await,
            Some(Taken::Kernels(kernels)) => return pipe_splice(kernels, timeouts, counters).await,
            None => {}
        }
        match (a, b) {
            (Some(a), Some(b)) => {
                splice_counted(a, b, idle_timeout, half_close_timeout, counters).await
            }
            // Not reached: `take_sides` takes the sides only when both fit, then returns them.
            _ => SpliceReport {
                a_to_b: 0,
                b_to_a: 0,
                end: SpliceEnd::ErrorA(std::io::ErrorKind::Other),
            },
        }
    }
}

/// A forward's accepted side as `serve` passes it: a client of a kernel listener, in a
/// [`Rewind`].
type ForwardAccepted = Rewind<TcpStream>;
/// A forward's dialed side: into the overlay (the stack's when the value is its stream).
type ForwardDialed = NetStream;
/// An expose's accepted side: an overlay connection (the stack's when the value is its
/// stream), in a [`Rewind`].
type ExposeAccepted = Rewind<NetStream>;
/// An expose's dialed side: a kernel socket to the target.
type ExposeDialed = TcpStream;
/// A SOCKS exit's accepted side: an expose's, in one more [`Rewind`] with the bytes the
/// client sent after its request. Its dialed side is an [`ExposeDialed`].
type SocksAccepted = Rewind<ExposeAccepted>;

/// Which side of the splice (`a`, accepted; `b`, dialed) the kernel socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// A kernel socket and an overlay connection of the stack, taken from the splice's sides.
struct Pair {
    kernel: TcpStream,
    overlay: OverlayStream,
    kernel_side: Side,
    /// Bytes the accepted side's reader took past a PROXY header: they go first.
    unread: Vec<u8>,
}

/// Two kernel sockets (the TUN stack's forward or expose) and the accepted side's unread
/// bytes: `(a, b, unread)`.
type Kernels = (TcpStream, TcpStream, Vec<u8>);

/// A forward's or an expose's two sides, taken for the faster splice that fits them.
enum Taken {
    /// A kernel socket and an overlay connection of the userspace stack: the stack splices.
    Stack(Pair),
    /// Two kernel sockets (the TUN stack): spliced through a pipe.
    Kernels(Kernels),
}

/// Takes both sides when they are a forward's or an expose's; leaves them untouched
/// otherwise (a SOCKS exit's, a test's).
fn take_sides<A: 'static, B: 'static>(a: &mut Option<A>, b: &mut Option<B>) -> Option<Taken> {
    if let (Some(accepted), Some(dialed)) = (
        as_slot::<ForwardAccepted, _>(a),
        as_slot::<ForwardDialed, _>(b),
    ) {
        if accepted.is_none() || dialed.is_none() {
            return None;
        }
        let (kernel, unread) = accepted.take()?.into_parts();
        return Some(match dialed.take()? {
            Either::Left(overlay) => Taken::Stack(Pair {
                kernel,
                overlay,
                kernel_side: Side::A,
                unread,
            }),
            Either::Right(dialed) => Taken::Kernels((kernel, dialed, unread)),
        });
    }
    let dialed = as_slot::<ExposeDialed, _>(b)?;
    if dialed.is_none() {
        return None;
    }
    let (overlay, unread) = if let Some(accepted) = as_slot::<ExposeAccepted, _>(a) {
        accepted.take()?.into_parts()
    } else {
        let accepted = as_slot::<SocksAccepted, _>(a)?;
        let (inner, mut unread) = accepted.take()?.into_parts();
        // The SOCKS handshake read through the inner `Rewind`: what it read past the request
        // comes first, then what the inner one still holds.
        let (overlay, rest) = inner.into_parts();
        unread.extend_from_slice(&rest);
        (overlay, unread)
    };
    let kernel = dialed.take()?;
    Some(match overlay {
        Either::Left(overlay) => Taken::Stack(Pair {
            kernel,
            overlay,
            kernel_side: Side::B,
            unread,
        }),
        Either::Right(accepted) => Taken::Kernels((accepted, kernel, unread)),
    })
}

/// The pipes every TUN-stack splice of this process borrows (see `pinhole_forward::PipePool`):
/// 64 pipes, 128 descriptors, opened as they are first needed.
fn pipes() -> std::sync::Arc<PipePool> {
    static POOL: std::sync::OnceLock<std::sync::Arc<PipePool>> = std::sync::OnceLock::new();
    std::sync::Arc::clone(POOL.get_or_init(|| PipePool::new(64)))
}

/// Splices two kernel sockets through pipes, after the unread bytes, and watches the
/// timeouts until the splice ends.
async fn pipe_splice(
    (a, mut b, unread): Kernels,
    (idle_timeout, half_close_timeout): (Duration, Duration),
    counters: &Counters,
) -> SpliceReport {
    if let Err(report) = write_unread(&mut b, &unread).await {
        return report;
    }
    let splice = AfterUnread {
        splice: PipeSplice::new(a, b, pipes()),
        unread: unread.len() as u64,
    };
    supervise(splice, idle_timeout, half_close_timeout, counters).await
}

/// Writes the bytes the accepted side's reader took past a header to `to`, the other side,
/// ahead of everything else; the report to return when that fails.
async fn write_unread<W>(to: &mut W, unread: &[u8]) -> Result<(), SpliceReport>
where
    W: AsyncWrite + Unpin,
{
    if unread.is_empty() {
        return Ok(());
    }
    to.write_all(unread).await.map_err(|e| SpliceReport {
        a_to_b: 0,
        b_to_a: 0,
        end: SpliceEnd::ErrorB(e.kind()),
    })
}

/// An offloaded splice that started after [`write_unread`]: those bytes count as moved from
/// `a` to `b`, in the live counters and in the report.
struct AfterUnread<O> {
    splice: O,
    unread: u64,
}

impl<O: Offloaded> Future for AfterUnread<O> {
    type Output = SpliceEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SpliceEnd> {
        Pin::new(&mut self.splice).poll(cx)
    }
}

impl<O: Offloaded> Offloaded for AfterUnread<O> {
    fn progress(&self) -> OffloadProgress {
        let mut p = self.splice.progress();
        p.a_to_b += self.unread;
        p
    }

    fn stop(&self) {
        self.splice.stop();
    }

    fn activity(&self) -> impl Future<Output = ()> + Send + 'static {
        self.splice.activity()
    }
}

/// Hands the pair to the stack, after its unread bytes, and watches the timeouts until the
/// splice ends.
async fn offload(
    pair: Pair,
    (idle_timeout, half_close_timeout): (Duration, Duration),
    counters: &Counters,
) -> SpliceReport {
    let Pair {
        mut kernel,
        mut overlay,
        kernel_side,
        unread,
    } = pair;
    // The unread bytes came from the accepted side and go to the other one first.
    let written = match kernel_side {
        Side::A => write_unread(&mut overlay, &unread).await,
        Side::B => write_unread(&mut kernel, &unread).await,
    };
    if let Err(report) = written {
        return report;
    }
    let splice = AfterUnread {
        splice: Offload {
            splice: overlay.splice_kernel(kernel),
            kernel_side,
        },
        unread: unread.len() as u64,
    };
    supervise(splice, idle_timeout, half_close_timeout, counters).await
}

/// A [`KernelSplice`] in the terms of the forwarding layer: sides `a` and `b` instead of
/// kernel and overlay.
struct Offload {
    splice: KernelSplice,
    kernel_side: Side,
}

impl Future for Offload {
    type Output = SpliceEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SpliceEnd> {
        let kernel_is_a = self.kernel_side == Side::A;
        Poll::Ready(match ready!(Pin::new(&mut self.splice).poll(cx)) {
            // `supervise` names the timeout it stopped the splice for.
            KernelSpliceEnd::Closed | KernelSpliceEnd::Stopped => SpliceEnd::Closed,
            KernelSpliceEnd::Kernel(kind) if kernel_is_a => SpliceEnd::ErrorA(kind),
            KernelSpliceEnd::Kernel(kind) => SpliceEnd::ErrorB(kind),
            KernelSpliceEnd::Overlay(kind) if kernel_is_a => SpliceEnd::ErrorB(kind),
            KernelSpliceEnd::Overlay(kind) => SpliceEnd::ErrorA(kind),
        })
    }
}

impl Offloaded for Offload {
    fn progress(&self) -> OffloadProgress {
        let p = self.splice.progress();
        let (a_to_b, b_to_a) = match self.kernel_side {
            Side::A => (p.to_overlay, p.to_kernel),
            Side::B => (p.to_kernel, p.to_overlay),
        };
        OffloadProgress {
            a_to_b,
            b_to_a,
            last_activity: Instant::from_std(p.last_activity),
            half_closed: p.kernel_eof || p.overlay_eof,
        }
    }

    fn stop(&self) {
        self.splice.stop();
    }

    fn activity(&self) -> impl Future<Output = ()> + Send + 'static {
        self.splice.activity()
    }
}

/// `slot` as an `Option<T>`, when `S` is `T`.
fn as_slot<T: 'static, S: 'static>(slot: &mut Option<S>) -> Option<&mut Option<T>> {
    (slot as &mut dyn Any).downcast_mut::<Option<T>>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::{NetAcceptor, NetPortDialer};
    use pinhole_forward::{Acceptor, Dialer, RangeDialer, TcpDialer, TcpPortRange};
    use std::any::TypeId;
    use tokio::net::TcpListener;

    /// The stream types the services really pass (a forward: `TcpPortRange` accepting,
    /// `RangeDialer<NetPortDialer>` dialing; an expose: `NetAcceptor`, `RangeDialer<TcpDialer>`),
    /// so that a change of either type cannot quietly turn the stack's splice off.
    type ServiceForward = (
        Rewind<<TcpPortRange as Acceptor>::Stream>,
        <RangeDialer<NetPortDialer> as Dialer>::Stream,
    );
    type ServiceExpose = (
        Rewind<<NetAcceptor as Acceptor>::Stream>,
        <RangeDialer<TcpDialer> as Dialer>::Stream,
    );

    /// A SOCKS exit's: `serve` hands it the expose's accepted stream, which it wraps in one
    /// more `Rewind`, and it dials a kernel socket itself.
    type ServiceSocks = (Rewind<Rewind<<NetAcceptor as Acceptor>::Stream>>, TcpStream);

    #[test]
    fn the_services_stream_types_are_the_ones_the_stack_takes() {
        let taken = TypeId::of::<(ForwardAccepted, ForwardDialed)>();
        assert_eq!(TypeId::of::<ServiceForward>(), taken);
        let taken = TypeId::of::<(ExposeAccepted, ExposeDialed)>();
        assert_eq!(TypeId::of::<ServiceExpose>(), taken);
        let taken = TypeId::of::<(SocksAccepted, ExposeDialed)>();
        assert_eq!(TypeId::of::<ServiceSocks>(), taken);
    }

    /// Two ends of a loopback TCP connection.
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialed = TcpStream::connect(listener.local_addr().unwrap());
        let (dialed, accepted) = tokio::join!(dialed, listener.accept());
        (dialed.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn kernel_sockets_on_both_sides_go_through_pipes() {
        // A TUN-stack forward: a forward's types, but the dialed side is a kernel socket, told
        // apart from the userspace stack's only by value. It goes to the pipes, with the bytes
        // read past a PROXY header.
        let (x, y) = tcp_pair().await;
        let mut a = Some(Rewind::new(x, b"early".to_vec()));
        let mut b = Some(NetStream::Right(y));
        let Some(Taken::Kernels((_, _, unread))) = take_sides(&mut a, &mut b) else {
            panic!("a TUN forward's sockets are spliced through pipes");
        };
        assert_eq!(unread, b"early");
        assert!(a.is_none() && b.is_none(), "both sides taken");
        // A TUN-stack expose: the overlay connection is a kernel socket too.
        let (x, y) = tcp_pair().await;
        let mut a = Some(Rewind::new(NetStream::Right(x), Vec::new()));
        let mut b = Some(y);
        assert!(matches!(
            take_sides(&mut a, &mut b),
            Some(Taken::Kernels(_))
        ));
        // A SOCKS exit on the TUN stack: the bytes read past the request come first, then
        // what the inner `Rewind` (after a PROXY header) still holds.
        let (x, y) = tcp_pair().await;
        let inner = Rewind::new(NetStream::Right(x), b"held".to_vec());
        let mut a = Some(Rewind::new(inner, b"past the request, ".to_vec()));
        let mut b = Some(y);
        let Some(Taken::Kernels((_, _, unread))) = take_sides(&mut a, &mut b) else {
            panic!("a TUN SOCKS exit's sockets are spliced through pipes");
        };
        assert_eq!(unread, b"past the request, held");
        // Other types (no `Rewind`, sides swapped) are not taken.
        let (x, y) = tcp_pair().await;
        let (mut a, mut b) = (Some(x), Some(NetStream::Right(y)));
        assert!(take_sides(&mut a, &mut b).is_none());
        assert!(a.is_some() && b.is_some(), "both sides left in place");
        let (x, y) = tcp_pair().await;
        let (mut a, mut b) = (Some(NetStream::Right(x)), Some(Rewind::new(y, Vec::new())));
        assert!(take_sides(&mut a, &mut b).is_none());
        assert!(a.is_some() && b.is_some());
    }
}
