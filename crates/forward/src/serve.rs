//! The accept loop of one forward or expose: accept, admit within the limit, dial, splice.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::counters::Counters;
use crate::endpoint::{Acceptor, Dialer};
use crate::limits::Limits;
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::splice::splice_counted;

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
    mut acceptor: A,
    dialer: D,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    let span = info_span!("forward", name);
    async move {
        let shared = Arc::new(Shared {
            dialer,
            limits,
            counters,
            dial_log: LogLimiter::new(LOG_INTERVAL),
        });
        let permits = Arc::new(Semaphore::new(
            limits.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let accept_log = LogLimiter::new(LOG_INTERVAL);
        let refuse_log = LogLimiter::new(LOG_INTERVAL);
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
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        drop(stream);
                        shared.counters.refused();
                        if let Some(suppressed) = refuse_log.check() {
                            warn!(%client, max_connections = limits.max_connections, suppressed,
                                "connection refused: too many connections");
                        }
                        continue;
                    };
                    let conn = connection(stream, client, Arc::clone(&shared), permit);
                    tracker.spawn(conn.instrument(info_span!("conn", %client)));
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
struct Shared<D> {
    dialer: D,
    limits: Limits,
    counters: Arc<Counters>,
    /// Dial failures of one forward log at most one info line per interval.
    dial_log: LogLimiter,
}

/// One connection: dial the other side within the connect timeout, then splice.
/// Every exit path drops the accepted stream (closing it) and the permit.
async fn connection<S, D>(
    accepted: S,
    client: SocketAddr,
    shared: Arc<Shared<D>>,
    permit: OwnedSemaphorePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    D: Dialer,
{
    // Declared in this order so they drop in the reverse one: the permit is released before
    // `active` falls, so a caller that sees `active` fall can connect again at once.
    let _active = shared.counters.admit();
    let _permit = permit;
    let started = Instant::now();
    let dialed = match timeout(shared.limits.connect_timeout, shared.dialer.dial()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            drop(accepted);
            return dial_failed(&shared, client, &e.to_string());
        }
        Err(_) => {
            drop(accepted);
            return dial_failed(&shared, client, "connect timeout");
        }
    };
    let report = splice_counted(
        accepted,
        dialed,
        shared.limits.idle_timeout,
        shared.limits.half_close_timeout,
        &shared.counters,
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

fn dial_failed<D>(shared: &Shared<D>, client: SocketAddr, reason: &str) {
    shared.counters.failed();
    match shared.dial_log.check() {
        Some(suppressed) => info!(%client, reason, suppressed, "dial failed; connection closed"),
        None => debug!(%client, reason, "dial failed; connection closed"),
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
