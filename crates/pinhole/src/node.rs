//! The node loop: the one task that owns the WireGuard engine, the IP side
//! (the embedded TCP/IP stack, or a kernel TUN device) and the UDP socket, and
//! moves packets between them.
//!
//! Nothing here is shared behind a lock: the engine and the IP side are plain
//! values owned by this task. With the embedded stack, forward and expose
//! tasks reach it only through its `Overlay` handle (bounded channels), and it
//! wakes this loop through `Stack::wait`; with a TUN device they use kernel
//! sockets and the kernel's packets wake the loop. Time is read once per turn
//! and passed down.

mod ip_side;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use ip_side::{IpSide, TunSide};
use pinhole_udpio::{SendBatch, UdpIo};
use pinhole_wg::{DatagramSink, DropCounters, PeerStats, UpdateReport, Wg, WgConfig, WgError};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the rest of the process may ask of the node loop. The engine is owned
/// by the loop, so questions about it and changes to it travel as messages.
pub enum Command {
    /// Every peer's public key and figures, in config order (for `status`).
    Peers(oneshot::Sender<Vec<([u8; 32], PeerStats)>>),
    /// The engine's drop and event counters (for status and metrics).
    Counters(oneshot::Sender<DropCounters>),
    /// Apply a changed peer list, keeping the sessions of unchanged peers (reload).
    Update(WgConfig, oneshot::Sender<Result<UpdateReport, WgError>>),
}

/// Room for a few outstanding commands; they come from people and reloads,
/// not from traffic, so a small bound is plenty.
pub const COMMAND_QUEUE: usize = 16;

/// Most datagrams taken from the socket per turn of the loop: a burst costs
/// a few turns, not one per packet, while timers and the stack still run at
/// least this often under load.
const RECV_BUDGET: usize = 512;

/// Encrypted bytes gathered before they are sent within one turn, so a turn
/// in which the stack emits a lot holds at most this much before the socket.
const SEND_FLUSH_BYTES: usize = 256 * 1024;

/// Runs the data plane until `shutdown` is cancelled.
///
/// The caller binds `udp` (so tests use port 0) and owns the shutdown signal.
pub async fn run(
    udp: UdpSocket,
    mut wg: Wg,
    mut ip: IpSide,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut udp = UdpIo::new(udp)?;
    let mut batch = SendBatch::new();
    let far = Duration::from_secs(3600);
    // One timer for the life of the loop, moved only when the deadline moves: a
    // fresh timer per turn re-registers with the runtime every packet, and one
    // earlier than the driver's planned wake-up costs a wake-up of its own.
    let timer = tokio::time::sleep_until(Instant::now() + far);
    tokio::pin!(timer);
    // Waited on across turns, for the same reason: a fresh wait per turn would join and
    // leave the token's list of waiters for every packet.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);

    loop {
        // The wait below polls the token last, only when nothing else is ready, so a
        // loop that always has work checks it here.
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let now = Instant::now();
        let wg_at = Instant::from_std(wg.poll_timeout());
        let ip_at = ip
            .poll_at(now.into_std())
            .map(Instant::from_std)
            .unwrap_or(now + far);
        let deadline = wg_at.min(ip_at);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }

        tokio::select! {
            biased;
            // Polled in place: the socket's reader slot, not a waiter joining a list.
            readable = std::future::poll_fn(|cx| udp.poll_readable(cx)) => {
                readable?;
                let now = std::time::Instant::now();
                let mut taken = 0;
                while taken < RECV_BUDGET {
                    match udp.try_recv(|from, datagram| wg.handle_datagram(from, datagram, now)) {
                        Ok(n) => taken += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP errors surface here on Linux (e.g. a peer's port is closed);
                        // they are no reason to stop serving everyone else.
                        Err(e) => {
                            tracing::debug!(error = %e, "udp receive error");
                            break;
                        }
                    }
                }
            }
            woke = ip.wait() => woke?,
            Some(command) = commands.recv() => match command {
                Command::Peers(reply) => {
                    let _ = reply.send(wg.peers().map(|(_, key, stats)| (key, stats)).collect());
                }
                Command::Counters(reply) => {
                    let _ = reply.send(wg.drops().clone());
                }
                Command::Update(config, reply) => {
                    let _ = reply.send(wg.update(config, std::time::Instant::now()));
                }
            },
            _ = &mut timer => {}
            () = &mut cancelled => return Ok(()),
        }

        let now = std::time::Instant::now();
        if now >= wg.poll_timeout() {
            wg.handle_timeout(now);
        }
        while let Some(mut packet) = wg.poll_inbound() {
            ip.deliver(&mut packet).await;
            wg.recycle(packet);
        }
        ip.poll(now);
        // The engine's own datagrams first (handshakes, keepalives, packets it held
        // until a handshake completed), then the IP side's packets, sealed straight
        // into the batch (sealing queues nothing: even a handshake it starts goes to
        // the batch); a full batch is sent before sealing goes on.
        queue_transmits(&mut wg, &mut batch, &mut udp).await;
        while ip.outbound_to(
            &mut wg,
            &mut ToBatch {
                batch: &mut batch,
                udp: &udp,
            },
            now,
        ) {
            udp.send(&mut batch).await;
        }
        if !batch.is_empty() {
            udp.send(&mut batch).await;
        }
    }
}

/// Moves the engine's queued datagrams into `batch`, sending whenever it is full.
async fn queue_transmits(wg: &mut Wg, batch: &mut SendBatch, udp: &mut UdpIo) {
    while let Some(transmit) = wg.poll_transmit() {
        let max_segments = udp.max_segments_to(transmit.dst);
        batch.push(transmit.dst, &transmit.payload, max_segments);
        wg.recycle(transmit.payload);
        if batch.bytes() >= SEND_FLUSH_BYTES {
            udp.send(batch).await;
        }
    }
}

/// The send batch as the engine's [`DatagramSink`]: the IP side's packets are
/// sealed straight into the buffer the socket sends from, so no copy is made
/// between the cipher and the kernel.
pub(crate) struct ToBatch<'a> {
    batch: &'a mut SendBatch,
    udp: &'a UdpIo,
}

impl ToBatch<'_> {
    /// Whether the batch should be sent before more is sealed into it.
    fn full(&self) -> bool {
        self.batch.bytes() >= SEND_FLUSH_BYTES
    }
}

impl DatagramSink for ToBatch<'_> {
    fn room(&mut self, len: usize) -> &mut [u8] {
        self.batch.room(len)
    }

    fn commit(&mut self, dst: SocketAddr, len: usize) {
        let max_segments = self.udp.max_segments_to(dst);
        self.batch.commit(dst, len, max_segments);
    }
}
