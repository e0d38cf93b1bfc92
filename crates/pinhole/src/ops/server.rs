//! The bounded accept loop every ops server runs: at most [`MAX_CLIENTS`]
//! clients at once (more wait in the kernel's backlog), a pause of
//! [`ACCEPT_BACKOFF`] after a failed `accept`, one task per client, and on
//! shutdown the listener closed first, then clients given [`SHUTDOWN_GRACE`]
//! to finish before they are dropped.
//!
//! Each server keeps its own protocol (and its read and write timeouts) in
//! the handler it passes to [`serve_clients`].

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ACCEPT_BACKOFF, MAX_CLIENTS, SHUTDOWN_GRACE};

/// A bound listener [`serve_clients`] takes connections from.
pub(crate) trait Listener: Send + 'static {
    /// One accepted connection.
    type Stream: Send + 'static;
    /// Waits for the next connection.
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Stops listening; called once, when shutdown comes.
    fn close(self);
}

/// A socket from `bind_private_socket`: closing it also removes its file.
impl Listener for UnixListener {
    type Stream = UnixStream;

    async fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }

    fn close(self) {
        let path = super::listener_path(&self);
        drop(self);
        super::remove_socket_file(path.as_deref());
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept_stream(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }

    fn close(self) {
        drop(self);
    }
}

/// What shutdown does to a client still being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnShutdown {
    /// Drop it at once: it only reads state, so nothing is lost.
    Drop,
    /// Let it finish within [`SHUTDOWN_GRACE`] (the handler itself stops
    /// waiting for a request when shutdown comes).
    Finish,
}

/// Serves `listener` until `shutdown` is cancelled, running `handle` on each
/// connection (with a clone of `state`) in its own task. `name` starts the
/// log lines ("control socket", "metrics"); a handler's error only drops its
/// client, at debug level.
pub(crate) async fn serve_clients<L, S, H, F>(
    listener: L,
    name: &'static str,
    shutdown: CancellationToken,
    on_shutdown: OnShutdown,
    state: Arc<S>,
    handle: H,
) where
    L: Listener,
    H: Fn(L::Stream, Arc<S>) -> F,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished handlers so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept_stream() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "{name}: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let client = handle(stream, state.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let done = match on_shutdown {
                OnShutdown::Finish => client.await,
                OnShutdown::Drop => tokio::select! {
                    _ = shutdown.cancelled() => Ok(()),
                    done = client => done,
                },
            };
            if let Err(e) = done {
                tracing::debug!(error = %e, "{name}: client dropped");
            }
            drop(permit);
        });
    }
    listener.close();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tasks.abort_all();
    }
}
