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
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use ip_side::{IpSide, TunSide};
use pinhole_wg::{DropCounters, PeerStats, UpdateReport, Wg, WgConfig, WgError};
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

/// Largest datagram we accept: a UDP payload can be no larger.
const MAX_DATAGRAM: usize = 65_535;

/// How many extra datagrams we drain without yielding after a readable
/// socket wakes us, so a burst costs one turn of the loop, not one per packet,
/// while timers and the stack still run at least this often under load.
const RECV_BATCH: usize = 64;

/// At most one warning per this period for send failures, so a dead route
/// cannot flood the log.
const SEND_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

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
    let dual_stack = udp.local_addr()?.is_ipv6();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_send_error_log: Option<Instant> = None;
    let far = Duration::from_secs(3600);

    loop {
        let now = Instant::now();
        let wg_at = Instant::from_std(wg.poll_timeout());
        let ip_at = ip
            .poll_at(now.into_std())
            .map(Instant::from_std)
            .unwrap_or(now + far);
        let deadline = wg_at.min(ip_at);

        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            received = udp.recv_from(&mut buf) => {
                let now = std::time::Instant::now();
                match received {
                    Ok((n, from)) => {
                        wg.handle_datagram(canonical(from), &buf[..n], now);
                        for _ in 0..RECV_BATCH {
                            match udp.try_recv_from(&mut buf) {
                                Ok((n, from)) => wg.handle_datagram(canonical(from), &buf[..n], now),
                                Err(_) => break,
                            }
                        }
                    }
                    // ICMP errors surface here on Linux (e.g. a peer's port is closed);
                    // they are no reason to stop serving everyone else.
                    Err(e) => tracing::debug!(error = %e, "udp receive error"),
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
            _ = tokio::time::sleep_until(deadline) => {}
        }

        let now = std::time::Instant::now();
        if now >= wg.poll_timeout() {
            wg.handle_timeout(now);
        }
        while let Some(packet) = wg.poll_inbound() {
            ip.deliver(&packet).await;
            wg.recycle(packet);
        }
        ip.poll(now);
        ip.outbound_to(&mut wg, now);
        while let Some(transmit) = wg.poll_transmit() {
            let dst = if dual_stack {
                mapped(transmit.dst)
            } else {
                transmit.dst
            };
            if let Err(e) = udp.send_to(&transmit.payload, dst).await {
                let due = last_send_error_log.is_none_or(|at| at.elapsed() >= SEND_ERROR_LOG_EVERY);
                if due {
                    tracing::warn!(to = %transmit.dst, error = %e, "cannot send to peer (repeats are not logged for 10 s)");
                    last_send_error_log = Some(Instant::now());
                }
            }
            wg.recycle(transmit.payload);
        }
    }
}

/// Turns an IPv4-mapped IPv6 address (what a dual-stack socket reports for an
/// IPv4 sender) back into IPv4, so endpoints read the way people wrote them.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The inverse of [`canonical`]: a dual-stack socket can only send to IPv6
/// addresses, so IPv4 destinations are written in their mapped form.
fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        SocketAddr::V6(_) => addr,
    }
}

/// Binds the WireGuard UDP socket: one socket for IPv4 and IPv6 where the
/// host has IPv6, else IPv4 only. Buffers are enlarged so a burst at line rate
/// is not dropped by the kernel before the loop gets to it.
pub fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    const SOCKET_BUFFER: usize = 4 << 20;
    let socket = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match s.bind(&addr.into()) {
                Ok(()) => s,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
                Err(_) => bind_v4(port)?,
            }
        }
        Err(_) => bind_v4(port)?,
    };
    // Larger buffers are an optimisation; a host that refuses them still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

fn bind_v4(port: u16) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        assert!(mapped(v4).is_ipv6());
        assert_eq!(canonical(mapped(v4)), v4);
        let v6: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        assert_eq!(mapped(v6), v6);
    }
}
