//! UDP forwarding, generic over the overlay like TCP: one task reads the public side and routes
//! each datagram by client address to that client's session; each session has its own
//! upstream socket (its own flow, so replies reach the client that asked) and a task that
//! sends the replies back from the public side. Datagrams pass whole (up to 65,507 bytes; the
//! tunnel MTU is the overlay's concern). See `udp_sessions.rs` for the table's rules.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, info_span, warn, Instrument};

use crate::admission::{Admission, Gate};
use crate::cidr::canonical;
use crate::counters::{ActiveGuard, Counters};
use crate::lock;
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::task_span;
use crate::udp_sessions::Sessions;

mod batch;
pub use batch::{RecvBatch, SLOTS as BATCH_SLOTS};

/// The largest UDP payload over IPv4, and so the largest datagram forwarded whole.
pub const MAX_DATAGRAM: usize = 65_507;

/// Receive buffers hold any UDP payload (IPv6's limit is 65,527), so nothing is truncated.
const RECV_BUFFER: usize = 65_536;

/// Idle reply batches kept for reuse. Why a pool: a session waits for replies without a
/// buffer ([`DatagramSocket::readable`]) and borrows a batch only to move a burst, so 4096
/// sessions do not cost 4096 batches. A batch's pages are touched only where datagrams
/// landed: 64 KiB for a burst of small ones, 1 MiB at most.
const POOL_SIZE: usize = 2;

/// A datagram socket: a tokio `UdpSocket`, or an overlay UDP socket.
pub trait DatagramSocket: Send + Sync + 'static {
    /// Sends one datagram to `to`.
    fn send_to(&self, buf: &[u8], to: SocketAddr)
        -> impl Future<Output = io::Result<usize>> + Send;

    /// Receives one datagram; returns its length and sender.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;

    /// Sends each of `bufs` as one datagram to `to`, in as few calls as the socket allows: on
    /// a kernel socket a burst from one client costs a GSO send per run of equal sizes, or a
    /// `sendmmsg`, instead of a call per datagram. The default sends them one by one. A
    /// datagram that fails (too large, say) is skipped and the rest still go; the last such
    /// error is returned.
    fn send_many(
        &self,
        bufs: &[&[u8]],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut failed = Ok(());
            for buf in bufs {
                if let Err(e) = self.send_to(buf, to).await {
                    failed = Err(e);
                }
            }
            failed
        }
    }

    /// Waits until a datagram is probably ready, without holding a buffer. The default is
    /// ready at once (then `recv_from` waits, holding the buffer).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Receives one datagram or more into `batch` (emptied first). The default receives one;
    /// a kernel socket takes a whole burst in one system call.
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            batch.clear();
            let (len, from) = self.recv_from(batch.slot(0)).await?;
            let local_port = None;
            batch.push(
                0,
                Datagram {
                    len,
                    from,
                    local_port,
                },
            );
            Ok(())
        }
    }
}

impl DatagramSocket for UdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf).await
    }

    async fn readable(&self) -> io::Result<()> {
        UdpSocket::readable(self).await
    }

    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        batch::recv_into(self, batch).await
    }

    async fn send_many(&self, bufs: &[&[u8]], to: SocketAddr) -> io::Result<()> {
        batch::send_many(self, bufs, to).await
    }
}

/// One datagram received on the public side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// Its length.
    pub len: usize,
    /// The client that sent it.
    pub from: SocketAddr,
    /// The local port it arrived on, for a listener over a port range.
    pub local_port: Option<u16>,
}

/// The public side of a UDP forward: any [`DatagramSocket`], or a [`UdpPortRange`](crate::UdpPortRange).
pub trait DatagramListener: Send + Sync + 'static {
    /// Receives one datagram.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<Datagram>> + Send;

    /// Receives one datagram or more into `batch` (emptied first). The default receives one.
    fn recv_batch(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            batch.clear();
            let d = self.recv(batch.slot(0)).await?;
            batch.push(0, d);
            Ok(())
        }
    }

    /// Sends replies to `to` from `local_port`, each of `bufs` one datagram, in as few calls
    /// as the listener allows (see [`DatagramSocket::send_many`]). The default sends them one
    /// by one; a datagram that fails is skipped and the last error returned.
    fn send_many(
        &self,
        bufs: &[&[u8]],
        to: SocketAddr,
        local_port: Option<u16>,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            let mut failed = Ok(());
            for buf in bufs {
                if let Err(e) = self.send(buf, to, local_port).await {
                    failed = Err(e);
                }
            }
            failed
        }
    }

    /// Sends a reply to `to` from `local_port` (as received in [`Datagram::local_port`]).
    fn send(
        &self,
        buf: &[u8],
        to: SocketAddr,
        local_port: Option<u16>,
    ) -> impl Future<Output = io::Result<usize>> + Send;
}

impl<T: DatagramSocket> DatagramListener for T {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        let (len, from) = self.recv_from(buf).await?;
        Ok(Datagram {
            len,
            from,
            local_port: None,
        })
    }

    async fn send(&self, buf: &[u8], to: SocketAddr, _: Option<u16>) -> io::Result<usize> {
        self.send_to(buf, to).await
    }

    async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<()> {
        DatagramSocket::recv_batch(self, batch).await
    }

    async fn send_many(&self, bufs: &[&[u8]], to: SocketAddr, _: Option<u16>) -> io::Result<()> {
        DatagramSocket::send_many(self, bufs, to).await
    }
}

/// Opens the upstream socket of one session; it knows its target.
pub trait DatagramDialer: Send + Sync + 'static {
    /// The session socket.
    type Socket: DatagramSocket;

    /// A fresh socket for one session and the address to send to. Replies from any other
    /// address are dropped.
    fn bind_session(&self) -> impl Future<Output = io::Result<(Self::Socket, SocketAddr)>> + Send;

    /// [`bind_session`](Self::bind_session) for a session that arrived on `local_port`; a
    /// port-range dialer maps it to the target port. The default ignores it.
    fn bind_session_for(
        &self,
        local_port: Option<u16>,
    ) -> impl Future<Output = io::Result<(Self::Socket, SocketAddr)>> + Send {
        let _ = local_port;
        self.bind_session()
    }
}

/// Sessions to a real `host:port` over UDP: the target of a UDP expose. The host is resolved
/// for each new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDialer {
    host: String,
    port: u16,
}

impl UdpDialer {
    /// A dialer for `host:port`; `host` is a name or an IP literal (IPv6 without brackets).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Binds an ephemeral socket of the target's family, for `port` on this host.
    pub(crate) async fn bind_port(&self, port: u16) -> io::Result<(UdpSocket, SocketAddr)> {
        let target = tokio::net::lookup_host((self.host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "resolved to no address"))?;
        let any: SocketAddr = if target.is_ipv4() {
            ([0u8; 4], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        Ok((UdpSocket::bind(any).await?, target))
    }
}

impl DatagramDialer for UdpDialer {
    type Socket = UdpSocket;

    async fn bind_session(&self) -> io::Result<(UdpSocket, SocketAddr)> {
        self.bind_port(self.port).await
    }
}

/// The bounds of one UDP forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    /// A session with no datagram in either direction for this long is closed.
    /// Default 60 s, like onetun and conntrack's UDP stream timeout: DNS-like exchanges and
    /// game traffic (several packets a second) both fit.
    pub idle_timeout: Duration,
    /// At most this many sessions at once; a datagram from a new client beyond it is dropped
    /// and counted as refused. Default 4096.
    pub max_sessions: usize,
    /// Client allow/deny and per-source rate of new sessions.
    pub admission: Admission,
    /// Bound on opening one session's upstream socket. Default 10 s.
    pub setup_timeout: Duration,
}

impl Default for UdpOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_sessions: 4096,
            admission: Admission::default(),
            setup_timeout: Duration::from_secs(10),
        }
    }
}

type Key = (Option<u16>, SocketAddr);

struct Session<S> {
    socket: Arc<S>,
    target: SocketAddr,
    stop: CancellationToken,
    _active: ActiveGuard,
}

type Table<S> = Arc<Mutex<Sessions<Key, Session<S>>>>;

/// Serves one UDP forward or expose until `shutdown` is cancelled, then closes every session
/// and returns once their tasks have ended.
///
/// Counters: `active` is live sessions, `total` sessions created, `refused` datagrams of new
/// clients turned away (access control, rate, `max_sessions`), `failed` sessions whose
/// upstream socket could not be opened, `rx_bytes`/`tx_bytes` datagram payload bytes.
pub async fn serve_udp<L: DatagramListener, D: DatagramDialer>(
    name: &str,
    listener: L,
    dialer: D,
    options: UdpOptions,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let span = info_span!("udp_forward", name);
    run(listener, dialer, options, counters, shutdown)
        .instrument(span)
        .await
}

async fn run<L: DatagramListener, D: DatagramDialer>(
    listener: L,
    dialer: D,
    options: UdpOptions,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let listener = Arc::new(listener);
    let table: Table<D::Socket> = Arc::new(Mutex::new(Sessions::new(
        options.max_sessions,
        options.idle_timeout,
    )));
    let gate = Gate::new(options.admission.clone());
    let pool = Arc::new(BatchPool::default());
    let tracker = TaskTracker::new();
    let refuse_log = LogLimiter::new(LOG_INTERVAL);
    let error_log = LogLimiter::new(LOG_INTERVAL);
    let mut batch = RecvBatch::new();
    // One timer, re-armed only when the earliest expiry changes; it may fire early (a session
    // was touched since), which costs one scan and re-arms it.
    let mut sweep_at: Option<tokio::time::Instant> = None;
    let sweep = sleep_until(tokio::time::Instant::now());
    tokio::pin!(sweep);
    loop {
        let got = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = &mut sweep, if sweep_at.is_some() => {
                let mut t = lock(&table);
                for s in t.expire(std::time::Instant::now()) {
                    s.stop.cancel();
                }
                sweep_at = t.next_expiry().map(tokio::time::Instant::from_std);
                if let Some(at) = sweep_at {
                    sweep.as_mut().reset(at);
                }
                continue;
            }
            got = listener.recv_batch(&mut batch) => got,
        };
        if let Err(e) = got {
            if let Some(suppressed) = error_log.check() {
                warn!(error = %e, suppressed, "udp receive failed");
            }
            // A persistent error must not spin the CPU.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        }
        let mut next = 0;
        while next < batch.len() {
            // A run of datagrams from one client (a burst) goes upstream in one call.
            let first = next;
            next = batch.run_end(first);
            let (d, _) = batch.get(first);
            let key: Key = (d.local_port, d.from);
            let now = std::time::Instant::now();
            let known = lock(&table)
                .touch(&key, now)
                .map(|s| (Arc::clone(&s.socket), s.target));
            let (socket, target) = match known {
                Some(found) => found,
                None => {
                    let refusal = if lock(&table).is_full() {
                        Some("too many sessions".to_owned())
                    } else {
                        gate.check(d.from.ip(), now).err().map(|r| r.to_string())
                    };
                    if let Some(reason) = refusal {
                        // The whole run is refused, and `refused` counts datagrams.
                        counters.refused((next - first) as u64);
                        match refuse_log.check() {
                            Some(suppressed) => {
                                warn!(client = %d.from, reason, suppressed, "udp datagram refused")
                            }
                            None => debug!(client = %d.from, reason, "udp datagram refused"),
                        }
                        continue;
                    }
                    let bound =
                        timeout(options.setup_timeout, dialer.bind_session_for(d.local_port));
                    let (socket, target) = match bound.await {
                        Ok(Ok(pair)) => pair,
                        Ok(Err(e)) => {
                            counters.failed();
                            debug!(client = %d.from, error = %e, "udp session setup failed");
                            continue;
                        }
                        Err(_) => {
                            counters.failed();
                            debug!(client = %d.from, "udp session setup timed out");
                            continue;
                        }
                    };
                    let socket = Arc::new(socket);
                    let stop = shutdown.child_token();
                    let session = Session {
                        socket: Arc::clone(&socket),
                        target,
                        stop: stop.clone(),
                        _active: counters.admit(),
                    };
                    let mut t = lock(&table);
                    if t.insert(key, session, now).is_err() {
                        continue; // cannot happen: checked above, and only this task inserts
                    }
                    if sweep_at.is_none() {
                        sweep_at = t.next_expiry().map(tokio::time::Instant::from_std);
                        if let Some(at) = sweep_at {
                            sweep.as_mut().reset(at);
                        }
                    }
                    drop(t);
                    let replies = Replies {
                        listener: Arc::clone(&listener),
                        socket: Arc::clone(&socket),
                        target,
                        key,
                        table: Arc::clone(&table),
                        pool: Arc::clone(&pool),
                        counters: Arc::clone(&counters),
                    };
                    tracker.spawn(
                        replies.run(stop).instrument(task_span::or_current(
                            debug_span!("udp", client = %d.from),
                        )),
                    );
                    (socket, target)
                }
            };
            let mut run: [&[u8]; batch::SLOTS] = [&[]; batch::SLOTS];
            for (slot, i) in run.iter_mut().zip(first..next) {
                *slot = batch.get(i).1;
            }
            let run = &run[..next - first];
            counters.add_rx(run.iter().map(|d| d.len() as u64).sum());
            // Inline: a UDP send waits only while the socket buffer is full, and waiting then is
            // the back-pressure there is (UDP would drop the datagram anyway).
            if let Err(e) = DatagramSocket::send_many(&*socket, run, target).await {
                debug!(client = %d.from, error = %e, "udp send upstream failed");
            }
            // The runtime's fairness budget counts calls, not datagrams. Count the rest of the
            // run too, so a forward moving a flood yields to the other tasks (the node loop
            // above all) as often as when it sent one datagram per call. Without this, a TUN
            // relay batching into the overlay overran the TUN device's queue, which pushes back
            // on nobody, before the node loop had a turn to drain it.
            for _ in first + 1..next {
                tokio::task::coop::consume_budget().await;
            }
        }
    }
    for s in lock(&table).drain() {
        s.stop.cancel();
    }
    tracker.close();
    tracker.wait().await;
    debug!("udp forward stopped");
    Ok(())
}

/// The reply path of one session: upstream socket → public side, to the session's client.
struct Replies<L, S: DatagramSocket> {
    listener: Arc<L>,
    socket: Arc<S>,
    target: SocketAddr,
    key: Key,
    table: Table<S>,
    pool: Arc<BatchPool>,
    counters: Arc<Counters>,
}

impl<L: DatagramListener, S: DatagramSocket> Replies<L, S> {
    async fn run(self, stop: CancellationToken) {
        let (local_port, client) = self.key;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                ready = self.socket.readable() => if ready.is_err() { return },
            }
            let mut batch = self.pool.take();
            let got = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                got = self.socket.recv_batch(&mut batch) => Some(got),
            };
            match got {
                None => return,
                Some(Ok(())) => {
                    // The burst goes to the client in one call, as the other way.
                    let mut replies: [&[u8]; batch::SLOTS] = [&[]; batch::SLOTS];
                    let (mut n, mut bytes) = (0, 0);
                    for i in 0..batch.len().min(batch::SLOTS) {
                        let (d, data) = batch.get(i);
                        if canonical(d.from.ip()) == canonical(self.target.ip())
                            && d.from.port() == self.target.port()
                        {
                            replies[n] = data;
                            n += 1;
                            bytes += d.len;
                        } else {
                            debug!(from = %d.from, "udp datagram not from the target dropped");
                        }
                    }
                    if n > 0 {
                        lock(&self.table).touch(&self.key, std::time::Instant::now());
                        self.counters.add_tx(bytes as u64);
                        let sent = self.listener.send_many(&replies[..n], client, local_port);
                        if let Err(e) = sent.await {
                            debug!(error = %e, "udp reply to the client failed");
                        }
                        // Fairness counted per datagram, as on the way in.
                        for _ in 1..n {
                            tokio::task::coop::consume_budget().await;
                        }
                    }
                }
                Some(Err(e)) => {
                    // Do not spin on a broken socket: end this session, so the client's next
                    // datagram opens a fresh one.
                    debug!(error = %e, "udp receive from upstream failed; session closed");
                    let mut table = lock(&self.table);
                    if !stop.is_cancelled() {
                        drop(table.remove(&self.key));
                    }
                    return;
                }
            }
            self.pool.give(batch);
        }
    }
}

/// Reusable reply batches; see [`POOL_SIZE`].
#[derive(Default)]
struct BatchPool(Mutex<Vec<RecvBatch>>);

impl BatchPool {
    fn take(&self) -> RecvBatch {
        lock(&self.0).pop().unwrap_or_default()
    }

    fn give(&self, batch: RecvBatch) {
        let mut free = lock(&self.0);
        if free.len() < POOL_SIZE {
            free.push(batch);
        }
    }
}

#[cfg(test)]
mod tests;
