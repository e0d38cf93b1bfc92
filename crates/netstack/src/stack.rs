//! `Stack`: the sans-IO core. IP packets in (`handle_inbound`), IP packets out
//! (`poll_outbound`), time passed in (`poll(now)`, `poll_at(now)`), and one future (`wait`)
//! that resolves when a stream, listener, connect or UDP socket asked something of the stack.
//!
//! One driver task owns the `Stack` (and the WireGuard engine) and calls it in a loop; no
//! lock is taken anywhere. Work per `poll` is bounded by [`MAX_POLL_ROUNDS`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::mpsc;

use crate::ack_seq::AckSeq;
use crate::buffers::{Buffers, Pair};
use crate::config::{
    StackConfig, COMMAND_CAPACITY, EPHEMERAL_PORTS, LINGER, MAX_POLL_ROUNDS, MAX_UDP_SOCKETS,
};
use crate::conn::{Conn, Step};
use crate::device::VecDevice;
use crate::keys::{IdMap, Tuple};
use crate::listener::Listening;
use crate::overlay::{Command, Overlay};
use crate::packet::{parse_syn, parse_udp};
use crate::ports::PortMap;
use crate::shared::{HandleId, WakeQueue};
use crate::udp_stack::UdpTable;

/// Room in the wake queue beyond one slot per socket: listeners and handles racing their
/// own removal.
const WAKE_SLACK: usize = 256;

/// How long returned socket buffers wait before their pages are given back: long enough
/// that at a high connection rate most are lent again first (no system call), short
/// enough that memory after a burst of traffic goes back at once for a human.
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// The userspace TCP/IP stack: smoltcp on an in-memory device, plus the bookkeeping that
/// connects its sockets to [`crate::OverlayStream`]s. Created by [`crate::new`].
pub struct Stack {
    pub(crate) iface: Interface,
    pub(crate) device: VecDevice,
    pub(crate) sockets: SocketSet<'static>,
    /// The buffers the TCP sockets borrow, kept for reuse when a socket goes. Only
    /// freed after `sockets` is emptied (see `Drop`).
    buffers: Buffers,
    socket_count: usize,
    config: StackConfig,
    epoch: Instant,
    /// The `now` of the current (or last) `poll`.
    pub(crate) now: Instant,
    pub(crate) conns: IdMap<HandleId, Conn>,
    pub(crate) listeners: IdMap<HandleId, Listening>,
    /// TCP ports and port ranges listened on.
    pub(crate) listen_ports: PortMap,
    /// Accepted connections by (local, remote), so retransmitted SYNs add no socket.
    pub(crate) by_tuple: HashMap<Tuple, HandleId>,
    used_ports: HashSet<u16>,
    next_port: u16,
    /// Orphaned connections and when to reset them if they have not closed.
    lingering: Vec<(Instant, HandleId)>,
    /// UDP sockets and their ports.
    pub(crate) udp: UdpTable,
    /// Handles to service on the next round.
    pub(crate) ready: Vec<HandleId>,
    pub(crate) wake: Arc<WakeQueue>,
    wake_rx: mpsc::Receiver<HandleId>,
    /// The wait for an overflowed wake queue, registered once and renewed only when it
    /// fires, so that waiting costs no new registration per turn of the driver.
    overflowed: Pin<Box<OwnedNotified>>,
    commands: mpsc::Receiver<Command>,
    pending_command: Option<Command>,
    next_poll: Option<Instant>,
    /// When to trim the socket buffers kept since the last trim (see `buffers.rs`).
    trim_at: Option<Instant>,
    at_limit: bool,
    /// The highest sequence number sent per connection, for the pure ACKs we send.
    ack_seq: AckSeq,
}

/// Creates a stack for `config` and the [`Overlay`] handle that opens and accepts
/// connections on it. Out-of-range values are clamped (see [`StackConfig::validate`]).
pub fn new(config: StackConfig) -> (Stack, Overlay) {
    Stack::new(config)
}

impl Stack {
    /// Same as [`crate::new`].
    pub fn new(config: StackConfig) -> (Stack, Overlay) {
        let config = config.sanitized();
        let epoch = Instant::now();
        let mut device = VecDevice::new(config.mtu);
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = random_u64();
        let mut iface = Interface::new(iface_config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            for &(addr, prefix) in &config.addresses {
                let _ = addrs.push(IpCidr::new(addr.into(), prefix));
            }
        });
        // Any destination is reachable: the WireGuard engine routes by allowed IPs. With
        // `Medium::Ip` the gateway is never used as a next hop; it only has to exist.
        for &(addr, _) in &config.addresses {
            let _ = match addr {
                IpAddr::V4(v4) if iface.routes().get_default_ipv4_route().is_none() => {
                    iface.routes_mut().add_default_ipv4_route(v4).map(drop)
                }
                IpAddr::V6(v6) if iface.routes().get_default_ipv6_route().is_none() => {
                    iface.routes_mut().add_default_ipv6_route(v6).map(drop)
                }
                _ => Ok(()),
            };
        }
        let handles = config.max_connections + MAX_UDP_SOCKETS + WAKE_SLACK;
        let (wake, wake_rx) = WakeQueue::new(handles);
        let (commands_tx, commands) = mpsc::channel(COMMAND_CAPACITY);
        let overlay = Overlay::new(commands_tx, Arc::clone(&wake));
        let span = EPHEMERAL_PORTS.1 - EPHEMERAL_PORTS.0;
        let next_port = EPHEMERAL_PORTS.0 + (random_u64() % u64::from(span)) as u16;
        let next_udp_port = EPHEMERAL_PORTS.0 + (random_u64() % u64::from(span)) as u16;
        let stack = Stack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            buffers: Buffers::new(config.tcp_rx_buffer, config.tcp_tx_buffer),
            socket_count: 0,
            config,
            epoch,
            now: epoch,
            conns: IdMap::default(),
            listeners: IdMap::default(),
            listen_ports: PortMap::default(),
            by_tuple: HashMap::new(),
            used_ports: HashSet::new(),
            next_port,
            lingering: Vec::new(),
            udp: UdpTable::new(next_udp_port),
            ready: Vec::new(),
            overflowed: Box::pin(Arc::clone(&wake.notify).notified_owned()),
            wake,
            wake_rx,
            commands,
            pending_command: None,
            next_poll: None,
            trim_at: None,
            at_limit: false,
            ack_seq: AckSeq::default(),
        };
        (stack, overlay)
    }

    /// Queues an IP packet that arrived through the tunnel; the next `poll` processes it.
    /// Any bytes are accepted: malformed packets are dropped by the parsers, never panic.
    pub fn handle_inbound(&mut self, ip_packet: &[u8]) {
        if !ip_packet.is_empty() {
            let queued = self.device.push_inbound(ip_packet);
            self.trace_full_inbound(queued);
        }
    }

    /// [`Stack::handle_inbound`] without the copy: the packet's buffer is queued as it is and
    /// `packet` is left holding a spare buffer of the stack's (empty if it has none), for
    /// the caller's own pool. Decrypted packets arrive in buffers the driver owns, so each
    /// one saves a copy of the packet on the way in.
    pub fn handle_inbound_owned(&mut self, packet: &mut Vec<u8>) {
        if !packet.is_empty() {
            let queued = self.device.push_inbound_owned(packet);
            self.trace_full_inbound(queued);
        }
    }

    fn trace_full_inbound(&self, queued: bool) {
        if !queued {
            tracing::trace!(
                dropped = self.device.dropped_inbound(),
                "inbound queue full"
            );
        }
    }

    /// Runs the stack: requests from handles, queued inbound packets, timers, data between
    /// sockets and streams, and packets to send. Call it after `handle_inbound`, when
    /// `wait` resolved, and at `poll_at`.
    pub fn poll(&mut self, now: Instant) {
        self.now = now;
        let timestamp = self.timestamp(now);
        self.take_commands();
        self.take_wakes();
        for _ in 0..MAX_POLL_ROUNDS {
            self.service_ready();
            self.iface.poll_maintenance(timestamp);
            self.ingress(timestamp);
            while self
                .iface
                .poll_egress(timestamp, &mut self.device, &mut self.sockets)
                == PollResult::SocketStateChanged
            {}
            self.expire_lingering(now);
            self.take_wakes();
            if self.ready.is_empty() {
                break;
            }
        }
        match self.trim_at {
            Some(at) if at <= now => {
                self.buffers.trim_kept();
                self.trim_at = None;
            }
            None if self.buffers.untrimmed() > 0 => self.trim_at = Some(now + TRIM_DELAY),
            _ => {}
        }
        self.next_poll = self
            .iface
            .poll_at(timestamp, &self.sockets)
            .map(|at| self.epoch + Duration::from_micros(at.total_micros().max(0) as u64));
    }

    /// The next IP packet to send into the tunnel. Drain it after every `poll`.
    pub fn poll_outbound(&mut self) -> Option<Vec<u8>> {
        let mut packet = self.device.pop_outbound()?;
        self.ack_seq.outbound(&mut packet);
        Some(packet)
    }

    /// Hands back a packet from [`poll_outbound`](Self::poll_outbound) once it has been
    /// encrypted, so the next one reuses its buffer instead of allocating.
    pub fn recycle(&mut self, packet: Vec<u8>) {
        self.device.recycle(packet);
    }

    /// When `poll` must run next for TCP timers (retransmits, delayed ACKs, keep-alives,
    /// lingering closes); `None` means only input can create work. Returns `now` when work
    /// is already waiting.
    pub fn poll_at(&self, now: Instant) -> Option<Instant> {
        if !self.ready.is_empty() || self.pending_command.is_some() || self.device.has_inbound() {
            return Some(now);
        }
        let linger = self.lingering.iter().map(|&(deadline, _)| deadline).min();
        [self.next_poll, linger, self.trim_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Resolves when a stream, listener, pending connect or UDP socket needs the stack; then
    /// call `poll`. Cancel-safe: nothing is lost when the future is dropped (e.g. in
    /// `select!`).
    pub async fn wait(&mut self) {
        std::future::poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// [`Stack::wait`] as a poll: each source is polled in place, so a driver that waits
    /// every turn builds no futures and joins no lists of waiters.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.ready.is_empty() || self.pending_command.is_some() {
            return Poll::Ready(());
        }
        if let Poll::Ready(Some(id)) = self.wake_rx.poll_recv(cx) {
            self.ready.push(id);
            return Poll::Ready(());
        }
        // `None`: every `Overlay` handle is gone; only the other sources are left.
        if let Poll::Ready(Some(command)) = self.commands.poll_recv(cx) {
            self.pending_command = Some(command);
            return Poll::Ready(());
        }
        if self.overflowed.as_mut().poll(cx).is_ready() {
            let next = Arc::clone(&self.wake.notify).notified_owned();
            self.overflowed.set(next);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// TCP sockets currently allocated (connections, embryonic accepts, closing ones).
    /// Returns to 0 once every stream is dropped and closed: a leak check.
    pub fn socket_count(&self) -> usize {
        self.socket_count
    }

    /// Connections with a stream (or a pending connect) that the stack still tracks.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn has_socket_room(&mut self) -> bool {
        let room = self.socket_count < self.config.max_connections;
        if room == self.at_limit {
            self.at_limit = !room;
            tracing::debug!(
                limit = self.config.max_connections,
                at_limit = self.at_limit,
                "overlay connection limit"
            );
        }
        room
    }

    /// A TCP socket and the buffers it borrows: pass both to [`Stack::add_socket`], or
    /// to [`Stack::discard_socket`] if it is not used after all.
    pub(crate) fn new_tcp_socket(&mut self) -> (tcp::Socket<'static>, Pair) {
        self.buffers.socket()
    }

    pub(crate) fn add_socket(
        &mut self,
        socket: tcp::Socket<'static>,
        buffers: Pair,
    ) -> SocketHandle {
        self.socket_count += 1;
        let handle = self.sockets.add(socket);
        self.buffers.lent(handle, buffers);
        handle
    }

    /// Drops a socket from [`Stack::new_tcp_socket`] that was never added.
    pub(crate) fn discard_socket(&mut self, socket: tcp::Socket<'static>, buffers: Pair) {
        self.buffers.discard(socket, buffers);
    }

    pub(crate) fn remove_socket(&mut self, handle: SocketHandle) {
        self.socket_count -= 1;
        let removed = self.sockets.remove(handle);
        self.buffers.reclaim(handle, removed);
    }

    pub(crate) fn allocate_port(&mut self) -> Option<u16> {
        let (first, last) = EPHEMERAL_PORTS;
        for _ in first..=last {
            let port = self.next_port;
            self.next_port = if port >= last { first } else { port + 1 };
            if self.used_ports.insert(port) {
                return Some(port);
            }
        }
        None
    }

    pub(crate) fn release_port(&mut self, port: u16) {
        self.used_ports.remove(&port);
    }

    /// The tunnel MTU the stack runs with.
    pub(crate) fn config_mtu(&self) -> usize {
        self.config.mtu
    }

    /// The address to bind for `ip`: `ip` itself if it is ours, our first address of its
    /// family if it is unspecified; `AddrNotAvailable` otherwise.
    pub(crate) fn local_ip(&self, ip: IpAddr) -> io::Result<IpAddr> {
        let found = if ip.is_unspecified() {
            self.config
                .addresses
                .iter()
                .map(|&(addr, _)| addr)
                .find(|addr| addr.is_ipv4() == ip.is_ipv4())
        } else {
            self.iface.has_ip_addr(ip).then_some(ip)
        };
        found.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{ip} is not an overlay address of this peer"),
            )
        })
    }

    /// Acts on what servicing a connection decided.
    pub(crate) fn apply(&mut self, id: HandleId, step: Step) {
        match step {
            Step::Keep => {}
            Step::Orphaned => self.lingering.push((self.now + LINGER, id)),
            Step::Remove(reason) => self.remove_conn(id, reason),
        }
    }

    fn remove_conn(&mut self, id: HandleId, reason: &'static str) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        conn.shared.retire();
        self.remove_socket(conn.handle);
        self.by_tuple.remove(&Tuple::new(conn.local, conn.remote));
        if let Some(port) = conn.ephemeral_port {
            self.release_port(port);
        }
        self.lingering.retain(|&(_, lingering)| lingering != id);
        self.ack_seq.forget(conn.local, conn.remote);
        if self.ack_seq.len() > 2 * self.socket_count + 64 {
            self.prune_ack_seq();
        }
        tracing::debug!(local = %conn.local, remote = %conn.remote, reason, "overlay connection closed");
    }

    /// Forgets the sequence numbers of connections that have no socket any more (accepts
    /// that never completed, refused connects).
    fn prune_ack_seq(&mut self) {
        let mut live: HashSet<Tuple> = self
            .conns
            .values()
            .map(|c| Tuple::new(c.local, c.remote))
            .collect();
        for listening in self.listeners.values() {
            for &handle in listening.sockets() {
                let socket = self.sockets.get::<tcp::Socket>(handle);
                if let (Some(local), Some(remote)) =
                    (socket.local_endpoint(), socket.remote_endpoint())
                {
                    live.insert(Tuple::new(local.into(), remote.into()));
                }
            }
        }
        self.ack_seq.retain(|key| live.contains(key));
    }

    fn timestamp(&self, now: Instant) -> smoltcp::time::Instant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    fn take_commands(&mut self) {
        if let Some(command) = self.pending_command.take() {
            self.handle_command(command);
        }
        for _ in 0..COMMAND_CAPACITY {
            let Ok(command) = self.commands.try_recv() else {
                break;
            };
            self.handle_command(command);
        }
    }

    fn take_wakes(&mut self) {
        while let Ok(id) = self.wake_rx.try_recv() {
            self.ready.push(id);
        }
        if self.wake.take_overflow() {
            let handles = self.conns.keys().chain(self.listeners.keys());
            self.ready
                .extend(handles.chain(self.udp.bound.keys()).copied());
        }
    }

    fn service_ready(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        for id in ready.drain(..) {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.shared.clear_queued();
                let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                let step = conn.service(socket, self.now);
                self.apply(id, step);
            } else if self.listeners.contains_key(&id) {
                self.service_listener(id);
            } else if self.udp.bound.contains_key(&id) {
                self.service_udp(id);
            }
        }
        if self.ready.is_empty() {
            self.ready = ready;
        }
    }

    /// Feeds queued packets to smoltcp one at a time, so a SYN for a listener finds exactly
    /// the listening socket prepared for it. UDP datagrams go to their sockets instead and
    /// never reach smoltcp.
    fn ingress(&mut self, timestamp: smoltcp::time::Instant) {
        while let Some(packet) = self.device.peek_inbound() {
            if let Some(datagram) = parse_udp(packet) {
                self.udp.deliver(datagram);
                self.device.discard_inbound();
                continue;
            }
            let prepared = parse_syn(packet).and_then(|syn| self.prepare_accept(syn));
            let result =
                self.iface
                    .poll_ingress_single(timestamp, &mut self.device, &mut self.sockets);
            if let Some((listener, handle)) = prepared {
                self.finish_accept(listener, handle);
            }
            if result == PollIngressSingleResult::None {
                break;
            }
        }
    }

    fn expire_lingering(&mut self, now: Instant) {
        if !self.lingering.iter().any(|&(deadline, _)| deadline <= now) {
            return;
        }
        let (expired, waiting) = self
            .lingering
            .drain(..)
            .partition(|&(deadline, _)| deadline <= now);
        self.lingering = waiting;
        for (_, id) in expired {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
            let step = conn.expire(socket, now);
            self.apply(id, step);
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for conn in self.conns.values_mut() {
            conn.fail();
        }
        // The sockets borrow their buffers from `buffers`: they go first, whatever the
        // order of the fields.
        self.sockets = SocketSet::new(Vec::new());
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("addresses", &self.config.addresses)
            .field("sockets", &self.socket_count)
            .field("connections", &self.conns.len())
            .field("listeners", &self.listeners.len())
            .field("udp_sockets", &self.udp.bound.len())
            .finish_non_exhaustive()
    }
}

/// A seed that differs per call and per process (smoltcp's ISNs, first ephemeral port),
/// without a dependency: std's `RandomState` is randomly keyed.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StackConfig;
    use std::task::Waker;

    #[test]
    fn kept_socket_buffers_are_trimmed_a_second_later_even_on_an_idle_stack() {
        let config = StackConfig::new(vec![("10.77.0.1".parse().unwrap(), 24)], 1420);
        let (mut stack, _overlay) = Stack::new(config);
        let now = Instant::now();
        stack.poll(now);
        assert_eq!(stack.poll_at(now), None);
        let (socket, pair) = stack.new_tcp_socket();
        stack.discard_socket(socket, pair);
        stack.poll(now);
        // Nothing else to do: the driver still wakes for the trim.
        assert_eq!(stack.poll_at(now), Some(now + TRIM_DELAY));
        stack.poll(now + TRIM_DELAY);
        assert_eq!(stack.buffers.untrimmed(), 0);
        assert_eq!(stack.poll_at(now + TRIM_DELAY), None);
    }

    #[test]
    fn an_overflowed_wake_queue_wakes_the_stack_every_time() {
        let config = StackConfig::new(vec![("10.77.0.1".parse().unwrap(), 24)], 1420);
        let (mut stack, _overlay) = Stack::new(config);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(stack.poll_wait(&mut cx).is_pending());
        for _ in 0..2 {
            // What a waker does when the queue is full, seen after the stack drained it:
            // the race the notification is there for.
            stack.wake.notify.notify_one();
            assert!(stack.poll_wait(&mut cx).is_ready());
            assert!(stack.poll_wait(&mut cx).is_pending());
        }
    }
}
