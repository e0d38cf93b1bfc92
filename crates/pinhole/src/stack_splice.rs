//! The splicer of forwards and exposes: when one side of a connection is a kernel TCP socket
//! and the other an overlay connection of the userspace stack (a forward's public client and
//! its overlay connection, an expose's overlay connection and its local target), the stack
//! splices the two in its own loop ([`OverlayStream::splice_kernel`]); any other pair (the
//! TUN stack's kernel sockets, a SOCKS exit) is copied by the connection's task as before.
//!
//! Why: copied by a task, every request and reply crossed a channel to the stack as a fresh
//! allocation and woke one more task on each peer; the stack reads and writes the kernel
//! socket itself with no copy of its own (docs/benchmarks.md has the figures).
//!
//! The connection's task still owns the timeouts and the live byte counts
//! ([`pinhole_forward::supervise`]), and sleeps in between.

use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pinhole_forward::{
    splice_counted, supervise, Counters, OffloadProgress, Offloaded, Rewind, SpliceEnd,
    SpliceReport, Splicer,
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
        let timeouts = (idle_timeout, half_close_timeout);
        // Each side sits in an `Option`, so that it can be looked at as its concrete type and
        // taken only once both sides are known to fit.
        let (mut a, mut b) = (Some(a), Some(b));
        match route::<A, B>() {
            // A forward: a client accepted by a kernel listener, dialed into the overlay.
            Route::Forward => {
                if let (Some(accepted), Some(dialed)) = (
                    as_slot::<Rewind<TcpStream>, _>(&mut a),
                    as_slot::<NetStream, _>(&mut b),
                ) {
                    if let (Some(_), Some(Either::Left(_))) = (&accepted, &dialed) {
                        if let (Some(kernel), Some(Either::Left(overlay))) =
                            (accepted.take(), dialed.take())
                        {
                            let (kernel, unread) = kernel.into_parts();
                            return offload(kernel, overlay, Side::A, unread, timeouts, counters)
                                .await;
                        }
                    }
                }
            }
            // An expose: an overlay connection accepted, a kernel socket dialed.
            Route::Expose => {
                if let (Some(accepted), Some(dialed)) = (
                    as_slot::<Rewind<NetStream>, _>(&mut a),
                    as_slot::<TcpStream, _>(&mut b),
                ) {
                    if let (Some(overlay), Some(_)) = (&accepted, &dialed) {
                        if matches!(overlay.get_ref(), Either::Left(_)) {
                            if let (Some(accepted), Some(kernel)) = (accepted.take(), dialed.take())
                            {
                                if let (Either::Left(overlay), unread) = accepted.into_parts() {
                                    return offload(
                                        kernel,
                                        overlay,
                                        Side::B,
                                        unread,
                                        timeouts,
                                        counters,
                                    )
                                    .await;
                                }
                            }
                        }
                    }
                }
            }
            Route::Copy => {}
        }
        match (a, b) {
            (Some(a), Some(b)) => {
                splice_counted(a, b, idle_timeout, half_close_timeout, counters).await
            }
            // Not reached: a side is taken only when both fit, and then offloaded.
            _ => SpliceReport {
                a_to_b: 0,
                b_to_a: 0,
                end: SpliceEnd::ErrorA(std::io::ErrorKind::Other),
            },
        }
    }
}

/// What a pair of stream types can be, before looking at the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// A forward's: a client from a kernel listener, and a dial into the overlay (the stack's
    /// when the dialed value is its stream).
    Forward,
    /// An expose's: an accepted overlay connection (the stack's, when the value is its
    /// stream), and a kernel socket to the target.
    Expose,
    /// Anything else: copied by the task.
    Copy,
}

/// The route of an accepted stream of type `A` (as `serve` passes it, in a [`Rewind`]) and a
/// dialed stream of type `B`.
fn route<A: 'static, B: 'static>() -> Route {
    let (a, b) = (TypeId::of::<A>(), TypeId::of::<B>());
    if a == TypeId::of::<Rewind<TcpStream>>() && b == TypeId::of::<NetStream>() {
        Route::Forward
    } else if a == TypeId::of::<Rewind<NetStream>>() && b == TypeId::of::<TcpStream>() {
        Route::Expose
    } else {
        Route::Copy
    }
}

/// Which side of the splice (`a`, accepted; `b`, dialed) the kernel socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// Hands `kernel` and `overlay` to the stack, after `unread` (bytes the accepted side's reader
/// took past a PROXY header), and watches the timeouts until the splice ends.
async fn offload(
    mut kernel: TcpStream,
    mut overlay: OverlayStream,
    kernel_side: Side,
    unread: Vec<u8>,
    (idle_timeout, half_close_timeout): (Duration, Duration),
    counters: &Counters,
) -> SpliceReport {
    if !unread.is_empty() {
        // The unread bytes came from the accepted side and go to the other one first.
        let written = match kernel_side {
            Side::A => overlay.write_all(&unread).await,
            Side::B => kernel.write_all(&unread).await,
        };
        if let Err(e) = written {
            return SpliceReport {
                a_to_b: 0,
                b_to_a: 0,
                end: SpliceEnd::ErrorB(e.kind()),
            };
        }
    }
    let offloaded = Offload {
        splice: overlay.splice_kernel(kernel),
        kernel_side,
        unread: unread.len() as u64,
    };
    supervise(offloaded, idle_timeout, half_close_timeout, counters).await
}

/// A [`KernelSplice`] in the terms of the forwarding layer: sides `a` and `b` instead of
/// kernel and overlay.
struct Offload {
    splice: KernelSplice,
    kernel_side: Side,
    /// Bytes of `a` delivered before the handover.
    unread: u64,
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
            a_to_b: self.unread + a_to_b,
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

    /// The stream types the services really pass (a forward: `TcpPortRange` accepting,
    /// `RangeDialer<NetPortDialer>` dialing; an expose: `NetAcceptor`, `RangeDialer<TcpDialer>`),
    /// so that a change of either type cannot quietly turn the stack's splice off.
    type ForwardAccepted = Rewind<<TcpPortRange as Acceptor>::Stream>;
    type ForwardDialed = <RangeDialer<NetPortDialer> as Dialer>::Stream;
    type ExposeAccepted = Rewind<<NetAcceptor as Acceptor>::Stream>;
    type ExposeDialed = <RangeDialer<TcpDialer> as Dialer>::Stream;

    #[test]
    fn forwards_and_exposes_are_routed_to_the_stack_and_nothing_else_is() {
        assert_eq!(route::<ForwardAccepted, ForwardDialed>(), Route::Forward);
        assert_eq!(route::<ExposeAccepted, ExposeDialed>(), Route::Expose);
        // Two kernel sockets (a TUN-stack forward's dialed side is a `NetStream` too, and is
        // told apart by its value), a stream without `Rewind`, and the sides swapped.
        assert_eq!(route::<ForwardAccepted, TcpStream>(), Route::Copy);
        assert_eq!(route::<TcpStream, ForwardDialed>(), Route::Copy);
        assert_eq!(route::<ForwardDialed, ForwardAccepted>(), Route::Copy);
    }
}
