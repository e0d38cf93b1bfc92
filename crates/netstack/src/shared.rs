//! The one wake-up path from handles (streams, listeners, pending connects, UDP sockets)
//! and from smoltcp's socket wakers into the driver's `Stack::wait`.
//!
//! Each handle owns a [`Shared`] with an "already queued" flag: it enqueues its id only when
//! the flag was clear, and the stack clears it just before servicing the handle. So each
//! handle occupies at most one slot of the bounded queue, however often it wakes. Should the
//! queue still be full (it is sized for every live handle, so this needs dead handles racing
//! the stack), the waker raises an overflow flag and the stack services every handle once.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Wake;

use tokio::sync::{mpsc, Notify};

use crate::splice::Handoff;

/// Identifies a connection or listener inside one stack; never reused.
pub(crate) type HandleId = u64;

/// The stack-wide half of the wake path, shared by every handle.
#[derive(Debug)]
pub(crate) struct WakeQueue {
    ids: mpsc::Sender<HandleId>,
    overflow: AtomicBool,
    pub(crate) notify: Arc<Notify>,
    next_id: AtomicU64,
}

impl WakeQueue {
    /// A queue with room for `capacity` ids, and its receiving end for the stack.
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<HandleId>) {
        let (ids, rx) = mpsc::channel(capacity.max(1));
        let queue = Self {
            ids,
            overflow: AtomicBool::new(false),
            notify: Arc::new(Notify::new()),
            next_id: AtomicU64::new(1),
        };
        (Arc::new(queue), rx)
    }

    /// A fresh handle id.
    pub(crate) fn next_id(&self) -> HandleId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the overflow flag: true means "service every handle".
    pub(crate) fn take_overflow(&self) -> bool {
        self.overflow.swap(false, Ordering::AcqRel)
    }

    fn push(&self, id: HandleId) {
        if self.ids.try_send(id).is_err() {
            self.overflow.store(true, Ordering::Release);
            self.notify.notify_one();
        }
    }
}

/// Error codes stored in [`Shared::error`].
const NO_ERROR: u8 = 0;
const RESET: u8 = 1;
const TIMED_OUT: u8 = 2;
const ABORTED: u8 = 3;

/// Where a stream's handover to a splice waits for the stack (locked once each way per
/// spliced connection, never per packet).
#[derive(Debug, Default)]
enum SpliceSlot {
    #[default]
    Empty,
    Pending(Box<Handoff>),
    /// The stack forgot the handle: a handover would never be taken.
    Closed,
}

/// State shared between one handle and the stack. Only flags: data moves over channels.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The handle's id in the stack.
    pub(crate) id: HandleId,
    queued: AtomicBool,
    dropped: AtomicBool,
    abort: AtomicBool,
    rx_blocked: AtomicBool,
    error: AtomicU8,
    /// Datagrams dropped because a UDP socket's inbound queue was full.
    drops: AtomicU64,
    queue: Arc<WakeQueue>,
    /// A handover is in `splice`: checked on every service without taking the lock.
    splice_pending: AtomicBool,
    splice: Mutex<SpliceSlot>,
}

impl Shared {
    /// New state for a handle with a fresh id.
    pub(crate) fn new(queue: &Arc<WakeQueue>) -> Arc<Self> {
        Arc::new(Self {
            id: queue.next_id(),
            queued: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            rx_blocked: AtomicBool::new(false),
            error: AtomicU8::new(NO_ERROR),
            drops: AtomicU64::new(0),
            queue: Arc::clone(queue),
            splice_pending: AtomicBool::new(false),
            splice: Mutex::new(SpliceSlot::Empty),
        })
    }

    /// Asks the stack to service this handle (at most one queue slot per handle).
    pub(crate) fn wake_stack(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue.push(self.id);
        }
    }

    /// Called by the stack right before servicing, so later events queue the handle again.
    pub(crate) fn clear_queued(&self) {
        self.queued.store(false, Ordering::Release);
    }

    /// Called by the stack when it forgets the handle: no further wakes are queued, and a
    /// handover waiting for it is dropped (its splice resolves with the handle's error).
    pub(crate) fn retire(&self) {
        self.queued.store(true, Ordering::Release);
        let slot = std::mem::replace(&mut *self.lock_splice(), SpliceSlot::Closed);
        drop(slot);
    }

    fn lock_splice(&self) -> std::sync::MutexGuard<'_, SpliceSlot> {
        self.splice.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leaves a handover for the stack and wakes it; gives it back if the stack already
    /// forgot this handle.
    pub(crate) fn offer_splice(&self, handoff: Box<Handoff>) -> Result<(), Box<Handoff>> {
        {
            let mut slot = self.lock_splice();
            if matches!(*slot, SpliceSlot::Closed) {
                return Err(handoff);
            }
            *slot = SpliceSlot::Pending(handoff);
        }
        self.splice_pending.store(true, Ordering::Release);
        self.wake_stack();
        Ok(())
    }

    /// The handover waiting for the stack, if any (one atomic load when there is none).
    pub(crate) fn take_splice(&self) -> Option<Box<Handoff>> {
        if !self.splice_pending.load(Ordering::Acquire) {
            return None;
        }
        self.splice_pending.store(false, Ordering::Release);
        let mut slot = self.lock_splice();
        match std::mem::take(&mut *slot) {
            SpliceSlot::Pending(handoff) => Some(handoff),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// The handle side is gone (stream, listener or connect future dropped).
    pub(crate) fn mark_dropped(&self) {
        self.dropped.store(true, Ordering::Release);
        self.wake_stack();
    }

    /// Whether the handle side is gone.
    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// The stream asked for an abortive close (RST) and is gone.
    pub(crate) fn mark_abort(&self) {
        self.abort.store(true, Ordering::Release);
        self.mark_dropped();
    }

    /// Whether an abortive close was asked for.
    pub(crate) fn wants_abort(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// The stack stopped reading because the stream's channel was full.
    pub(crate) fn set_rx_blocked(&self) {
        self.rx_blocked.store(true, Ordering::SeqCst);
    }

    /// The stack found room after all; no wake needed.
    pub(crate) fn clear_rx_blocked(&self) {
        self.rx_blocked.store(false, Ordering::SeqCst);
    }

    /// Called by the stream after taking a chunk: wakes the stack if it had stopped reading.
    pub(crate) fn on_chunk_taken(&self) {
        if self.rx_blocked.swap(false, Ordering::SeqCst) {
            self.wake_stack();
        }
    }

    /// A UDP socket's inbound queue was full: one datagram dropped.
    pub(crate) fn count_drop(&self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams dropped so far for a full inbound queue.
    pub(crate) fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Records why the connection failed; the stream reports it on its next read or write.
    pub(crate) fn set_error(&self, kind: io::ErrorKind) {
        let code = match kind {
            io::ErrorKind::TimedOut => TIMED_OUT,
            io::ErrorKind::ConnectionAborted => ABORTED,
            _ => RESET,
        };
        let _ = self
            .error
            .compare_exchange(NO_ERROR, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The failure recorded by the stack, if any.
    pub(crate) fn error(&self) -> Option<io::Error> {
        let (kind, text) = match self.error.load(Ordering::Acquire) {
            NO_ERROR => return None,
            TIMED_OUT => (io::ErrorKind::TimedOut, "overlay connection timed out"),
            ABORTED => (io::ErrorKind::ConnectionAborted, "overlay stack stopped"),
            _ => (io::ErrorKind::ConnectionReset, "overlay connection reset"),
        };
        Some(io::Error::new(kind, text))
    }
}

/// smoltcp's socket wakers wake the stack through the same path as the handles.
impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_stack();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_stack();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_queued_once_until_cleared() {
        let (queue, mut rx) = WakeQueue::new(4);
        let shared = Shared::new(&queue);
        shared.wake_stack();
        shared.wake_stack();
        assert_eq!(rx.try_recv().ok(), Some(shared.id));
        assert!(rx.try_recv().is_err());
        shared.clear_queued();
        shared.wake_stack();
        assert_eq!(rx.try_recv().ok(), Some(shared.id));
    }

    #[test]
    fn a_full_queue_raises_overflow() {
        let (queue, _rx) = WakeQueue::new(1);
        let a = Shared::new(&queue);
        let b = Shared::new(&queue);
        a.wake_stack();
        assert!(!queue.take_overflow());
        b.wake_stack();
        assert!(queue.take_overflow());
    }

    #[test]
    fn the_first_error_sticks() {
        let (queue, _rx) = WakeQueue::new(1);
        let shared = Shared::new(&queue);
        assert!(shared.error().is_none());
        shared.set_error(io::ErrorKind::TimedOut);
        shared.set_error(io::ErrorKind::ConnectionReset);
        assert_eq!(shared.error().unwrap().kind(), io::ErrorKind::TimedOut);
    }
}
