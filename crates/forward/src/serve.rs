//! The accept loop of one forward or expose: accept, admit (limit, access control, rate),
//! read the PROXY header when the forward accepts one, then hand the stream to a [`Handler`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, info_span, warn, Instrument};

use crate::admission::{Admission, Gate};
use crate::counters::Counters;
use crate::endpoint::{Acceptor, Dialer};
use crate::handler::{ConnInfo, DialSplice, Handler};
use crate::limits::Limits;
use crate::proxy_header::{self, HeaderError};
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::rewind::Rewind;
use crate::task_span;

/// First pause after an accept error that is not about one connection (EMFILE and the like).
///
/// Why: retrying at once would spin the CPU while the process is out of descriptors
/// (tokio#3529); 50 ms lets a finishing connection free one without adding visible latency.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest pause between accept attempts while errors persist: the listener resumes at most
/// 1 s after resources are freed (reliability test C7).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves one forward or expose until `shutdown` is cancelled.
///
/// Each accepted stream is admitted if fewer than `limits.max_connections` are active (else it
/// is closed at once and counted as refused), then dialed with `limits.connect_timeout`, then
/// spliced. Accept errors never end the loop. On cancellation it stops accepting and returns
/// at once (dropping the acceptor, so the port closes); live connections keep running,
/// detached, until they end. Use [`serve_with_tracker`] to wait for them.
///
/// Always returns `Ok(())` today; the `Result` leaves room for setup errors of future
/// acceptors without changing callers.
pub async fn serve<A: Acceptor, D: Dialer>(
    name: &str,
    acceptor: A,
    dialer: D,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    serve_with_tracker(name, acceptor, dialer, limits, counters, shutdown, &tracker).await
}

/// [`serve`], spawning every connection task on `tracker`, so the caller can wait for the
/// drain after shutdown with a bound of its choosing:
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use pinhole_forward::*;
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let target = TcpDialer::new("127.0.0.1", 8000);
/// let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
/// let counters = Arc::new(Counters::default());
/// let limits = Limits::default();
/// serve_with_tracker("web", listener, target, limits, counters, shutdown, &tracker).await?;
/// tracker.close();
/// let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
/// # Ok(())
/// # }
/// ```
///
/// One tracker may be shared by every forward and expose of a process.
pub async fn serve_with_tracker<A: Acceptor, D: Dialer>(
    name: &str,
    acceptor: A,
    dialer: D,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    let options = ServeOptions {
        limits,
        ..ServeOptions::default()
    };
    let handler = DialSplice::new(dialer);
    serve_handler(
        name, acceptor, handler, options, counters, shutdown, tracker,
    )
    .await
}

/// How long a client may take to send its PROXY header when the forward accepts one.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything about one forward's accept side besides its two ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// Time and connection-count bounds.
    pub limits: Limits,
    /// Client address allow/deny and per-source rate of new connections.
    pub admission: Admission,
    /// The forward sits behind a trusted load balancer: every accepted stream MUST start with
    /// a PROXY header (v1 or v2), which is read and stripped, and its source address is the
    /// client for access control, rate limits, logs and any outgoing header. A stream without
    /// a valid header within `proxy_header_timeout` is closed and counted as refused. When
    /// `false`, no client byte is ever read as a header.
    pub accept_proxy_protocol: bool,
    /// Bound on reading the incoming PROXY header; [`PROXY_HEADER_TIMEOUT`] by default.
    pub proxy_header_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            admission: Admission::default(),
            accept_proxy_protocol: false,
            proxy_header_timeout: PROXY_HEADER_TIMEOUT,
        }
    }
}

/// The general form of [`serve_with_tracker`]: each admitted stream goes to `handler`
/// ([`DialSplice`] for a forward or an expose to a fixed target, [`SocksExit`](crate::SocksExit)
/// for a SOCKS exit).
///
/// Admission, in order: the client address against `admission.allow`/`deny` and the rate
/// limit in the accept loop (with `accept_proxy_protocol`, the lists judge the balancer that
/// connected and the rate limit the client its header names, after the header), then
/// `limits.max_connections`. A refused stream is closed at once, counted in `refused`, and
/// logged at most once per 10 s.
pub async fn serve_handler<A: Acceptor, H: Handler>(
    name: &str,
    mut acceptor: A,
    handler: H,
    options: ServeOptions,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    let span = info_span!("forward", name);
    async move {
        let limits = options.limits;
        let shared = Arc::new(Shared {
            handler,
            limits,
            accept_proxy_protocol: options.accept_proxy_protocol,
            proxy_header_timeout: options.proxy_header_timeout,
            gate: Gate::new(options.admission),
            counters,
            refuse_log: LogLimiter::new(LOG_INTERVAL),
        });
        let permits = Arc::new(Semaphore::new(
            limits.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let accept_log = LogLimiter::new(LOG_INTERVAL);
        let mut backoff: Option<Duration> = None;
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = acceptor.accept() => accepted,
            };
            match accepted {
                Ok((stream, client)) => {
                    backoff = None;
                    // Behind a balancer the lists judge the balancer (the TCP peer) and the
                    // rate limit judges the client its header names, once it is read.
                    let admitted = if shared.accept_proxy_protocol {
                        shared.gate.check_access(client.ip())
                    } else {
                        shared.gate.check(client.ip(), std::time::Instant::now())
                    };
                    if let Err(why) = admitted {
                        drop(stream);
                        shared.refused(client, &why.to_string());
                        continue;
                    }
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        drop(stream);
                        shared.refused(client, "too many connections");
                        continue;
                    };
                    let local = if shared.handler.wants_local_addr() {
                        acceptor.stream_local_addr(&stream)
                    } else {
                        None
                    };
                    let conn = connection(stream, client, local, Arc::clone(&shared), permit);
                    tracker.spawn(
                        conn.instrument(task_span::or_current(debug_span!("conn", %client))),
                    );
                }
                Err(e) if is_per_connection(&e) => {
                    debug!(error = %e, "accept failed for one connection");
                }
                Err(e) => {
                    let delay =
                        backoff.map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
                    backoff = Some(delay);
                    if let Some(suppressed) = accept_log.check() {
                        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, suppressed,
                            "accept failed; backing off");
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        debug!("stopped accepting");
        Ok(())
    }
    .instrument(span)
    .await
}

/// What every connection task of one forward shares.
struct Shared<H> {
    handler: H,
    limits: Limits,
    accept_proxy_protocol: bool,
    proxy_header_timeout: Duration,
    gate: Gate,
    counters: Arc<Counters>,
    /// Refusals of one forward log at most one warning per interval.
    refuse_log: LogLimiter,
}

impl<H> Shared<H> {
    fn refused(&self, client: SocketAddr, reason: &str) {
        self.counters.refused(1);
        match self.refuse_log.check() {
            Some(suppressed) => warn!(%client, reason, suppressed, "connection refused"),
            None => debug!(%client, reason, "connection refused"),
        }
    }
}

/// One connection: read the PROXY header when the forward accepts one (and admit its client),
/// then run the handler. Every exit path drops the accepted stream (closing it) and the permit.
async fn connection<S, H>(
    accepted: S,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    shared: Arc<Shared<H>>,
    permit: OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let (stream, client) = if shared.accept_proxy_protocol {
        let read = timeout(
            shared.proxy_header_timeout,
            read_proxy_header(accepted, peer),
        );
        let (stream, client) = match read.await {
            Ok(Ok(got)) => got,
            Ok(Err(why)) => return shared.refused(peer, why),
            Err(_) => return shared.refused(peer, "no PROXY header before the timeout"),
        };
        if let Err(why) = shared
            .gate
            .check_rate(client.ip(), std::time::Instant::now())
        {
            return shared.refused(client, &why.to_string());
        }
        (stream, client)
    } else {
        (Rewind::new(accepted, Vec::new()), peer)
    };
    // Declared in this order so they drop in the reverse one: the permit is released before
    // `active` falls, so a caller that sees `active` fall can connect again at once.
    let _active = shared.counters.admit();
    let _permit = permit;
    let conn = ConnInfo { client, local };
    shared
        .handler
        .handle(stream, conn, shared.limits, &shared.counters)
        .await;
}

/// Reads the PROXY header that MUST start `stream` (never guessing: anything else is refused),
/// and returns the stream with the bytes read past the header put back, and the client address
/// it names (or `peer` for LOCAL and UNKNOWN, as the spec says).
async fn read_proxy_header<S>(
    mut stream: S,
    peer: SocketAddr,
) -> Result<(Rewind<S>, SocketAddr), &'static str>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; proxy_header::V2_MAX_LEN];
    let mut filled = 0;
    loop {
        match proxy_header::parse(&buf[..filled]) {
            Ok((header, len)) => {
                let client = header.addresses.map_or(peer, |(source, _)| source);
                buf.copy_within(len..filled, 0);
                buf.truncate(filled - len);
                return Ok((Rewind::new(stream, buf), client));
            }
            Err(HeaderError::Invalid(why)) => return Err(why),
            Err(HeaderError::Incomplete) => {
                // `check` bounds every header below the buffer size.
                match stream.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return Err("closed before a complete PROXY header"),
                    Ok(n) => filled += n,
                }
            }
        }
    }
}

/// Whether an accept error concerns only the connection being accepted, so the loop should
/// simply accept again. Linux passes pending network errors of the new socket through
/// accept(2) and asks callers to retry on them (see its man page); anything else (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM, or an unknown error) is treated as a lack of resources and backed
/// off, so the loop can neither exit nor spin.
fn is_per_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETDOWN
                | libc::ENETUNREACH
                | libc::EPERM
                | libc::ETIMEDOUT
        )
    )
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_features;
