//! What `serve` does with each admitted connection: the seam between the accept loop (limits,
//! access control, PROXY header in) and the work on one stream.
//!
//! Two handlers exist: [`DialSplice`] (dial the target, optionally send a PROXY header, splice:
//! every forward and every expose to a fixed target) and [`SocksExit`](crate::SocksExit) (an
//! expose with `to = "socks"`). Why a trait rather than an enum: the overlay crate can add its
//! own without touching this one, and each stays a small, separately tested piece.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};
use tracing::{debug, info};

use crate::counters::Counters;
use crate::endpoint::Dialer;
use crate::limits::Limits;
use crate::proxy_header::{encode, ProxyVersion};
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::splice::{splice_counted, SpliceReport};

/// The addresses of one admitted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client: the accepted peer, or the source of the PROXY header read from it when the
    /// forward accepts one. Access control, rate limits, logs and outgoing headers use this.
    pub client: SocketAddr,
    /// The local address the connection arrived on, when the acceptor knows it and the
    /// handler wants it ([`Handler::wants_local_addr`]).
    pub local: Option<SocketAddr>,
}

/// Serves one admitted connection until it ends.
///
/// The handler owns the stream: dropping it closes the connection. It bounds every wait with
/// `limits` and counts what it moves in `counters` (the accept loop has already counted the
/// connection as active and holds its slot until this returns).
pub trait Handler: Send + Sync + 'static {
    /// Serves `stream`.
    fn handle<S>(
        &self,
        stream: S,
        conn: ConnInfo,
        limits: Limits,
        counters: &Counters,
    ) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Whether [`ConnInfo::local`] is used. Why ask: the accept loop finds it with a system
    /// call (`getsockname`) per connection, skipped when nobody reads it.
    fn wants_local_addr(&self) -> bool {
        true
    }
}

/// How [`DialSplice`] moves bytes between the accepted and the dialed stream.
///
/// Why a trait: the copy loop of [`splice_counted`] works for any two streams, but a caller
/// that knows its stream types may have a faster way (the userspace stack splices a kernel
/// socket with an overlay connection in its own loop). It must keep the same contract:
/// half-close passed on, the two timeouts, both streams closed when it returns, and bytes
/// added to `counters` (`a` is the accepted side: its bytes are `rx`).
pub trait Splicer: Send + Sync + 'static {
    /// Splices `a` (accepted) and `b` (dialed) until both directions end, one fails, or a
    /// timeout fires.
    fn splice<A, B>(
        &self,
        a: A,
        b: B,
        idle_timeout: Duration,
        half_close_timeout: Duration,
        counters: &Counters,
    ) -> impl Future<Output = SpliceReport> + Send
    where
        A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        B: AsyncRead + AsyncWrite + Unpin + Send + 'static;
}

/// The splice that copies in the connection's task: [`splice_counted`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CopySplicer;

impl Splicer for CopySplicer {
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
        splice_counted(a, b, idle_timeout, half_close_timeout, counters).await
    }
}

/// Dials the other side, writes the PROXY header when asked, then splices.
#[derive(Debug)]
pub struct DialSplice<D, P = CopySplicer> {
    dialer: D,
    proxy_protocol: Option<ProxyVersion>,
    /// Dial failures of one forward log at most one info line per interval.
    dial_log: LogLimiter,
    splicer: P,
}

impl<D: Dialer> DialSplice<D> {
    /// Dials with `dialer`; sends no PROXY header; copies in the connection's task.
    pub fn new(dialer: D) -> Self {
        Self {
            dialer,
            proxy_protocol: None,
            dial_log: LogLimiter::new(LOG_INTERVAL),
            splicer: CopySplicer,
        }
    }
}

impl<D: Dialer, P: Splicer> DialSplice<D, P> {
    /// Splices with `splicer` instead.
    pub fn with_splicer<Q: Splicer>(self, splicer: Q) -> DialSplice<D, Q> {
        DialSplice {
            dialer: self.dialer,
            proxy_protocol: self.proxy_protocol,
            dial_log: self.dial_log,
            splicer,
        }
    }

    /// Sends exactly one PROXY header of `version` (or none, for `None`) on each dialed stream
    /// before any client byte, carrying [`ConnInfo::client`] and [`ConnInfo::local`] (when the
    /// local address is unknown, the unspecified address and port 0 of the client's family).
    pub fn with_proxy_protocol(mut self, version: Option<ProxyVersion>) -> Self {
        self.proxy_protocol = version;
        self
    }

    fn failed(&self, counters: &Counters, client: SocketAddr, reason: &str) {
        counters.failed();
        match self.dial_log.check() {
            Some(suppressed) => {
                info!(%client, reason, suppressed, "dial failed; connection closed")
            }
            None => debug!(%client, reason, "dial failed; connection closed"),
        }
    }
}

impl<D: Dialer, P: Splicer> Handler for DialSplice<D, P> {
    /// Only a PROXY header (which names the address the client reached) and a port range
    /// (which maps the port it arrived on) need it.
    fn wants_local_addr(&self) -> bool {
        self.proxy_protocol.is_some() || self.dialer.wants_local_addr()
    }

    async fn handle<S>(&self, accepted: S, conn: ConnInfo, limits: Limits, counters: &Counters)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = Instant::now();
        let dial = async {
            let mut dialed = self.dialer.dial_for(conn.local).await?;
            if let Some(version) = self.proxy_protocol {
                let local = conn.local.unwrap_or_else(|| unspecified_like(conn.client));
                dialed
                    .write_all(&encode(version, conn.client, local))
                    .await?;
            }
            Ok::<_, std::io::Error>(dialed)
        };
        let dialed = match timeout(limits.connect_timeout, dial).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.failed(counters, conn.client, &e.to_string()),
            Err(_) => return self.failed(counters, conn.client, "connect timeout"),
        };
        let report = self
            .splicer
            .splice(
                accepted,
                dialed,
                limits.idle_timeout,
                limits.half_close_timeout,
                counters,
            )
            .await;
        debug!(
            rx_bytes = report.a_to_b,
            tx_bytes = report.b_to_a,
            duration_ms = started.elapsed().as_millis() as u64,
            end = ?report.end,
            "connection ended"
        );
    }
}

/// The unspecified address, port 0, of `addr`'s family.
fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match addr {
        SocketAddr::V4(_) => [0u8; 4].into(),
        SocketAddr::V6(_) => [0u8; 16].into(),
    };
    SocketAddr::new(ip, 0)
}
