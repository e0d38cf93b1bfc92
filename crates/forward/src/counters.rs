//! Live per-forward counters, shared between the accept loop, every connection task and `status`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Live figures for one forward or expose.
///
/// Why atomics: every connection task updates them as bytes move, and `pinhole status` reads
/// them at any time, without a lock on the data path. Relaxed ordering is enough: each figure
/// is independent and only ever read for display.
#[derive(Debug, Default)]
pub struct Counters {
    active: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
}

/// A point-in-time copy of [`Counters`], for display and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Connections being served now (dialing or splicing).
    pub active: u64,
    /// Connections admitted since start (not counting refused ones).
    pub total: u64,
    /// Connections closed at accept: `max_connections` already active, the client refused by
    /// `allow`/`deny` or the rate limit, or (with `accept_proxy_protocol`) no valid PROXY
    /// header. For UDP: datagrams of new clients turned away (same reasons, `max_sessions`).
    pub refused: u64,
    /// Connections whose dial failed or timed out; for a SOCKS exit also failed handshakes and
    /// refused destinations; for UDP, sessions whose upstream socket could not be opened.
    pub failed: u64,
    /// Bytes received from the accepted side's client and delivered to the dialed side.
    pub rx_bytes: u64,
    /// Bytes sent to the accepted side's client (from the dialed side).
    pub tx_bytes: u64,
}

impl Counters {
    /// Copies every figure, so a caller can print a consistent-looking line.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            active: self.active.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
        }
    }

    /// Adds bytes received from the accepted side's client; public for [`Splicer`]s
    /// outside this crate.
    ///
    /// [`Splicer`]: crate::Splicer
    pub fn add_rx(&self, n: u64) {
        self.rx_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds bytes sent to the accepted side's client; see [`Counters::add_rx`].
    pub fn add_tx(&self, n: u64) {
        self.tx_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` refused connections or datagrams.
    pub(crate) fn refused(&self, n: u64) {
        self.refused.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a newly admitted connection; the returned guard decrements `active` when dropped,
    /// so the figure stays right even if the connection task panics or is aborted.
    pub(crate) fn admit(self: &Arc<Self>) -> ActiveGuard {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Holds one unit of `Counters::active`; see [`Counters::admit`].
pub(crate) struct ActiveGuard(Arc<Counters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_follows_the_guard() {
        let c = Arc::new(Counters::default());
        {
            let _g = c.admit();
            let _h = c.admit();
            assert_eq!(c.snapshot().active, 2);
        }
        let s = c.snapshot();
        assert_eq!((s.active, s.total), (0, 2));
        c.add_rx(5);
        c.add_tx(7);
        c.refused(1);
        c.failed();
        let s = c.snapshot();
        assert_eq!((s.rx_bytes, s.tx_bytes, s.refused, s.failed), (5, 7, 1, 1));
    }
}
