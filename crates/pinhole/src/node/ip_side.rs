//! The IP side of the node loop: what takes the decrypted packets and gives
//! back packets to encrypt. Either the embedded stack (userspace) or a kernel
//! TUN device; the loop calls the same four steps on both.

use std::io;
use std::time::{Duration, Instant};

use pinhole_netstack::Stack;
use pinhole_tun::Tun;
use pinhole_wg::Wg;

/// Extra packets read from the TUN device without yielding after a readable
/// device wakes the loop, like the UDP side's batch.
const TUN_BATCH: usize = 64;

/// At most one warning per this period for packets the TUN device refuses.
const TUN_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// What carries the overlay's TCP and UDP: the embedded stack or the kernel.
// One per process, owned by the loop task: boxing the stack would only add a
// pointer to chase on every packet of the default path.
#[allow(clippy::large_enum_variant)]
pub enum IpSide {
    /// The embedded TCP/IP stack (the default): no root, no device.
    Userspace(Stack),
    /// A kernel TUN device: the kernel does TCP and UDP.
    Tun(TunSide),
}

/// A TUN device with the loop's state for it.
pub struct TunSide {
    tun: Tun,
    /// One packet read from the device, waiting for [`IpSide::outbound_to`].
    buf: Vec<u8>,
    pending: Option<usize>,
    /// Decrypted packets the kernel refused (not valid IP) or that could not be written.
    dropped: u64,
    last_error_log: Option<Instant>,
}

impl IpSide {
    /// The TUN side over `tun`, with read buffers for packets up to `mtu` bytes.
    pub fn tun(tun: Tun, mtu: u16) -> IpSide {
        IpSide::Tun(TunSide {
            tun,
            // A little over the MTU so an oversized packet shows as such, not truncated.
            buf: vec![0u8; usize::from(mtu).max(1500) + 64],
            pending: None,
            dropped: 0,
            last_error_log: None,
        })
    }

    /// When the loop must wake for this side's own timers; `None` when only input creates work.
    pub fn poll_at(&self, now: Instant) -> Option<Instant> {
        match self {
            IpSide::Userspace(stack) => stack.poll_at(now),
            IpSide::Tun(_) => None,
        }
    }

    /// Resolves when this side has work: a socket of the stack needs it, or a packet
    /// arrived on the device (kept for [`IpSide::outbound_to`]). Cancel-safe. An error is a device
    /// that can no longer be read, which ends the loop.
    pub async fn wait(&mut self) -> io::Result<()> {
        match self {
            IpSide::Userspace(stack) => {
                stack.wait().await;
                Ok(())
            }
            IpSide::Tun(t) => {
                if t.pending.is_some() {
                    return Ok(());
                }
                let n = t.tun.recv(&mut t.buf).await.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("reading the TUN device {}: {e}", t.tun.name()),
                    )
                })?;
                t.pending = Some(n);
                Ok(())
            }
        }
    }

    /// Hands one decrypted packet to the IP side.
    pub async fn deliver(&mut self, packet: &[u8]) {
        match self {
            IpSide::Userspace(stack) => stack.handle_inbound(packet),
            IpSide::Tun(t) => t.write(packet).await,
        }
    }

    /// Runs the stack's timers and socket work (nothing to do for a device).
    pub fn poll(&mut self, now: Instant) {
        if let IpSide::Userspace(stack) = self {
            stack.poll(now);
        }
    }

    /// Passes every packet the IP side has for the tunnel to `wg`: the stack's output, or
    /// the packet read by [`IpSide::wait`] (if any) and a batch more from the device.
    pub fn outbound_to(&mut self, wg: &mut Wg, now: Instant) {
        match self {
            IpSide::Userspace(stack) => {
                while let Some(packet) = stack.poll_outbound() {
                    wg.handle_outbound(&packet, now);
                    stack.recycle(packet);
                }
            }
            IpSide::Tun(t) => {
                if let Some(n) = t.pending.take() {
                    wg.handle_outbound(&t.buf[..n], now);
                }
                // Every turn, not only after the device woke us: a busy UDP side (first in
                // the loop's `select!`) must not starve this direction. Cheap when there is
                // nothing: tokio knows the device is not readable and skips the read.
                for _ in 0..TUN_BATCH {
                    match t.tun.try_recv(&mut t.buf) {
                        Ok(n) => wg.handle_outbound(&t.buf[..n], now),
                        // WouldBlock, or an error the next `recv` reports.
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

impl From<Stack> for IpSide {
    fn from(stack: Stack) -> IpSide {
        IpSide::Userspace(stack)
    }
}

impl TunSide {
    /// Writes one packet to the device without waiting when it can take it (practically
    /// always); waits only when the write would block. A packet the kernel refuses is
    /// dropped and counted: it came from an authenticated peer, but that is no reason to
    /// stop serving the others.
    async fn write(&mut self, packet: &[u8]) {
        let result = match self.tun.try_send(packet) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tun.send(packet).await,
            other => other,
        };
        if let Err(e) = result {
            self.dropped += 1;
            let due = self
                .last_error_log
                .is_none_or(|at| at.elapsed() >= TUN_ERROR_LOG_EVERY);
            if due {
                tracing::warn!(
                    device = self.tun.name(),
                    error = %e,
                    dropped = self.dropped,
                    "the TUN device refused a packet from the tunnel; dropped (repeats are not logged for 10 s)"
                );
                self.last_error_log = Some(Instant::now());
            } else {
                tracing::debug!(device = self.tun.name(), error = %e, "TUN write failed; dropped");
            }
        }
    }
}
