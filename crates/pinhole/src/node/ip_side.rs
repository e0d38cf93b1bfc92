//! The IP side of the node loop: what takes the decrypted packets and gives
//! back packets to encrypt. Either the embedded stack (userspace) or a kernel
//! TUN device; the loop calls the same four steps on both.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use pinhole_netstack::Stack;
use pinhole_tun::offload::{self, Coalescer, OffloadError, VNET_HDR_LEN};
use pinhole_tun::Tun;
use pinhole_wg::Wg;

use super::ToBatch;

/// Extra packets read from the TUN device without yielding after a readable
/// device wakes the loop, like the UDP side's batch.
const TUN_BATCH: usize = 64;

/// With offloads one read can be a 64 KiB super-packet (~45 packets): stop
/// the batch once this many packets went to the engine, so one turn of the
/// loop stays about as long as without offloads.
const TUN_BATCH_PACKETS: usize = 256;

/// A read buffer for a device with offloads: the header, the largest
/// super-packet (64 KiB of IPv6 payload plus its header) and a little more,
/// so that a frame filling the buffer shows as truncated.
const OFFLOAD_BUF: usize = VNET_HDR_LEN + 65_535 + 40 + 64;

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
    /// One packet (with offloads: a header and a packet or super-packet) read
    /// from the device, waiting for [`IpSide::outbound_to`].
    buf: Vec<u8>,
    pending: Option<usize>,
    /// With offloads: where super-packets are cut to this MTU, one segment at
    /// a time in `scratch`, and where decrypted packets wait to be coalesced
    /// and written at the end of the loop's turn ([`IpSide::poll`]).
    mtu: usize,
    scratch: Vec<u8>,
    gro: Coalescer,
    /// Decrypted packets the kernel refused (not valid IP) or that could not be written.
    dropped: u64,
    last_error_log: Option<Instant>,
    /// Frames read from the device that could not be split (see [`OffloadError`]).
    bad_frames: u64,
}

impl IpSide {
    /// The TUN side over `tun`, with read buffers for packets up to `mtu` bytes.
    pub fn tun(tun: Tun, mtu: u16) -> IpSide {
        let buf = if tun.offload() {
            vec![0u8; OFFLOAD_BUF]
        } else {
            // A little over the MTU so an oversized packet shows as such, not truncated.
            vec![0u8; usize::from(mtu).max(1500) + 64]
        };
        let gro = Coalescer::new().joining_udp(tun.udp_offload());
        IpSide::Tun(TunSide {
            tun,
            buf,
            pending: None,
            mtu: usize::from(mtu),
            scratch: Vec::new(),
            gro,
            dropped: 0,
            last_error_log: None,
            bad_frames: 0,
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
    /// arrived on the device (kept for `IpSide::outbound_to`). Cancel-safe. An error is a device
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
                if !t.gro.is_empty() {
                    // The end-of-turn flush found the device full: finish it first.
                    return t.flush_waiting().await;
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

    /// Hands one decrypted packet to the IP side. The embedded stack takes the
    /// buffer itself (no copy) and leaves a spare one, possibly empty, in
    /// `packet` for the engine's pool. With TUN offloads the packet waits to be
    /// coalesced with the turn's other packets and written in [`IpSide::poll`].
    pub async fn deliver(&mut self, packet: &mut Vec<u8>) {
        match self {
            IpSide::Userspace(stack) => stack.handle_inbound_owned(packet),
            IpSide::Tun(t) if t.tun.offload() => {
                if !t.gro.has_room(packet.len()) {
                    // Only errors that end the loop come back; `wait` reports those.
                    let _ = t.flush_waiting().await;
                }
                t.gro.push(packet);
            }
            IpSide::Tun(t) => t.write(packet).await,
        }
    }

    /// Runs the stack's timers and socket work; for a device with offloads,
    /// writes the packets [`IpSide::deliver`] collected this turn.
    pub fn poll(&mut self, now: Instant) {
        match self {
            IpSide::Userspace(stack) => stack.poll(now),
            // A full device (practically never) leaves the rest to `wait`.
            IpSide::Tun(t) => {
                let _ = t.flush_now();
            }
        }
    }

    /// Seals every packet the IP side has for the tunnel into `out`: the stack's output,
    /// or the packet read by [`IpSide::wait`] (if any) and a batch more from the device.
    /// Returns true when the stack's output stopped at a full `out` (more may be
    /// waiting): send, then call again. A device is simply read again next turn.
    pub(crate) fn outbound_to(&mut self, wg: &mut Wg, out: &mut ToBatch<'_>, now: Instant) -> bool {
        match self {
            IpSide::Userspace(stack) => {
                while !out.full() {
                    let Some(packet) = stack.poll_outbound() else {
                        return false;
                    };
                    wg.seal_outbound(&packet, now, out);
                    stack.recycle(packet);
                }
                true
            }
            IpSide::Tun(t) => {
                let mut packets = 0;
                if let Some(n) = t.pending.take() {
                    packets += t.outbound(n, wg, out, now);
                }
                // Every turn, not only after the device woke us: a busy UDP side (first in
                // the loop's `select!`) must not starve this direction. Cheap when there is
                // nothing: tokio knows the device is not readable and skips the read.
                for _ in 0..TUN_BATCH {
                    if packets >= TUN_BATCH_PACKETS || out.full() {
                        break;
                    }
                    match t.tun.try_recv(&mut t.buf) {
                        Ok(n) => packets += t.outbound(n, wg, out, now),
                        // WouldBlock, or an error the next `recv` reports.
                        Err(_) => break,
                    }
                }
                false
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
    /// Has `wg` seal the `n` bytes read into `buf` into `out`: the packet itself, or
    /// with offloads the packets cut from it. Returns how many packets that was.
    fn outbound(&mut self, n: usize, wg: &mut Wg, out: &mut ToBatch<'_>, now: Instant) -> usize {
        if !self.tun.offload() {
            wg.seal_outbound(&self.buf[..n], now, out);
            return 1;
        }
        let result = if n >= self.buf.len() {
            // Cannot happen with a 64 KiB GSO limit; a cut super-packet must not pass.
            Err(None)
        } else {
            offload::segment(&mut self.buf[..n], self.mtu, &mut self.scratch, |p| {
                wg.seal_outbound(p, now, out)
            })
            .map_err(Some)
        };
        result.unwrap_or_else(|e: Option<OffloadError>| {
            self.bad_frames += 1;
            let error = e.map_or_else(
                || "frame larger than the buffer".to_owned(),
                |e| e.to_string(),
            );
            tracing::debug!(
                device = self.tun.name(),
                %error,
                bad_frames = self.bad_frames,
                "dropped a frame from the TUN device"
            );
            0
        })
    }

    /// Writes what the coalescer holds without waiting; `WouldBlock` when the
    /// device is full and some is left.
    fn flush_now(&mut self) -> io::Result<()> {
        let TunSide {
            tun,
            gro,
            dropped,
            last_error_log,
            ..
        } = self;
        gro.flush(|iov: &[IoSlice<'_>]| match tun.try_send_vectored(iov) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) => {
                refused(tun, dropped, last_error_log, &e);
                Ok(())
            }
            Ok(_) => Ok(()),
        })
    }

    /// Writes what the coalescer holds, waiting while the device is full.
    /// Cancel-safe: what is written is gone, the rest stays queued.
    async fn flush_waiting(&mut self) -> io::Result<()> {
        loop {
            match self.flush_now() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tun.writable().await?,
                other => return other,
            }
        }
    }

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
            refused(&self.tun, &mut self.dropped, &mut self.last_error_log, &e);
        }
    }
}

/// Counts and (at most every 10 s) logs a packet the device refused.
fn refused(tun: &Tun, dropped: &mut u64, last_error_log: &mut Option<Instant>, e: &io::Error) {
    *dropped += 1;
    let due = last_error_log.is_none_or(|at| at.elapsed() >= TUN_ERROR_LOG_EVERY);
    if due {
        tracing::warn!(
            device = tun.name(),
            error = %e,
            dropped = *dropped,
            "the TUN device refused a packet from the tunnel; dropped (repeats are not logged for 10 s)"
        );
        *last_error_log = Some(Instant::now());
    } else {
        tracing::debug!(device = tun.name(), error = %e, "TUN write failed; dropped");
    }
}
