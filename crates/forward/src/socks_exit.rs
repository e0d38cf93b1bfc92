//! The SOCKS5 exit: an expose with `to = "socks"` runs this handler on every stream.
//!
//! Per connection: read the handshake within `handshake_timeout` into a bounded buffer,
//! authenticate, resolve a name *here* (the client leaks no DNS), check every resolved address
//! against the [`ExitPolicy`] and connect only to a checked one (DNS rebinding cannot slip a
//! private address in), reply with the proper code at once, then splice.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, info};

use crate::counters::Counters;
use crate::exit_policy::{ExitPolicy, Refusal};
use crate::handler::{ConnInfo, CopySplicer, Handler, Splicer};
use crate::limits::Limits;
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::rewind::Rewind;
use crate::socks5::{encode_reply, Credentials, Destination, Handshake, Reply, SocksError, Step};

/// How long a client may take for the whole handshake. Why 10 s: a real client sends it in
/// one round trip or three; a slow or silent one (reliability notes D5) is closed in bounded
/// time.
pub const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake buffer: the largest legal message plus 1 KiB, so a client that sends its
/// greeting, authentication and request in one write (all three fit) is served, and no client
/// can make the exit hold more.
const HANDSHAKE_BUFFER: usize = crate::socks5::MAX_MESSAGE + 1024;

/// The SOCKS5 exit handler (CONNECT only).
#[derive(Debug)]
pub struct SocksExit<P = CopySplicer> {
    policy: ExitPolicy,
    credentials: Option<Credentials>,
    handshake_timeout: Duration,
    log: LogLimiter,
    /// How the client and the destination are spliced once connected.
    splicer: P,
}

/// Why a SOCKS connection ended before the splice, for the log.
#[derive(Debug)]
enum Failure {
    Handshake(&'static str),
    Refused(Refusal, SocketAddr),
    Resolve(io::Error),
    Connect(io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Handshake(why) => write!(f, "handshake: {why}"),
            Failure::Refused(r, addr) => write!(f, "destination {addr} refused: {r}"),
            Failure::Resolve(e) => write!(f, "name did not resolve: {e}"),
            Failure::Connect(e) => write!(f, "connect failed: {e}"),
        }
    }
}

impl SocksExit {
    /// An exit applying `policy`, requiring `credentials` when given; it copies in the
    /// connection's task.
    pub fn new(policy: ExitPolicy, credentials: Option<Credentials>) -> Self {
        Self {
            policy,
            credentials,
            handshake_timeout: SOCKS_HANDSHAKE_TIMEOUT,
            log: LogLimiter::new(LOG_INTERVAL),
            splicer: CopySplicer,
        }
    }
}

impl<P: Splicer> SocksExit<P> {
    /// Splices with `splicer` instead. The accepted side it gets is the client in a
    /// [`Rewind`] that holds the bytes sent after the request.
    pub fn with_splicer<Q: Splicer>(self, splicer: Q) -> SocksExit<Q> {
        SocksExit {
            policy: self.policy,
            credentials: self.credentials,
            handshake_timeout: self.handshake_timeout,
            log: self.log,
            splicer,
        }
    }

    /// Replaces the handshake timeout ([`SOCKS_HANDSHAKE_TIMEOUT`] by default).
    pub fn with_handshake_timeout(mut self, handshake_timeout: Duration) -> Self {
        self.handshake_timeout = handshake_timeout;
        self
    }

    fn log(&self, client: SocketAddr, what: &Failure) {
        match self.log.check() {
            Some(suppressed) => info!(%client, reason = %what, suppressed, "socks request failed"),
            None => debug!(%client, reason = %what, "socks request failed"),
        }
    }

    /// Reads and answers the handshake; returns the destination and any bytes the client sent
    /// after its request (its first payload, to pass on).
    async fn handshake<S>(&self, client: &mut S) -> Result<(Destination, Vec<u8>), Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut hs = Handshake::new(self.credentials.clone());
        let mut buf = vec![0u8; HANDSHAKE_BUFFER];
        let mut filled = 0;
        let io_fail = |_| Failure::Handshake("connection lost");
        loop {
            match hs.advance(&buf[..filled]) {
                Ok((step, used)) => {
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                    match step {
                        Step::Send(bytes) => client.write_all(&bytes).await.map_err(io_fail)?,
                        Step::Refuse(bytes) => {
                            client.write_all(&bytes).await.map_err(io_fail)?;
                            let _ = client.shutdown().await;
                            return Err(Failure::Handshake("refused (method, auth or command)"));
                        }
                        Step::Connect(dest) => {
                            buf.truncate(filled);
                            return Ok((dest, buf));
                        }
                    }
                }
                Err(SocksError::Invalid(why)) => return Err(Failure::Handshake(why)),
                Err(SocksError::Incomplete) => {
                    if filled == buf.len() {
                        return Err(Failure::Handshake("message too long"));
                    }
                    match client.read(&mut buf[filled..]).await.map_err(io_fail)? {
                        0 => return Err(Failure::Handshake("closed during the handshake")),
                        n => filled += n,
                    }
                }
            }
        }
    }

    /// Resolves, checks and connects, within `deadline`.
    async fn connect(&self, dest: &Destination, deadline: Instant) -> Result<TcpStream, Failure> {
        let candidates: Vec<SocketAddr> = match dest {
            Destination::Ip(addr) => vec![*addr],
            Destination::Domain(name, port) => {
                let looked_up =
                    timeout_at(deadline, tokio::net::lookup_host((name.as_str(), *port)));
                match looked_up.await {
                    Ok(Ok(addrs)) => addrs.collect(),
                    Ok(Err(e)) => return Err(Failure::Resolve(e)),
                    Err(_) => return Err(Failure::Resolve(io::ErrorKind::TimedOut.into())),
                }
            }
        };
        if candidates.is_empty() {
            return Err(Failure::Resolve(io::ErrorKind::NotFound.into()));
        }
        let mut first_refusal = None;
        let mut last_error = None;
        for addr in candidates {
            if let Err(r) = self.policy.check(addr) {
                first_refusal.get_or_insert((r, addr));
                continue;
            }
            match timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    last_error = Some(io::ErrorKind::TimedOut.into());
                    break;
                }
            }
        }
        match (last_error, first_refusal) {
            (Some(e), _) => Err(Failure::Connect(e)),
            (None, Some((r, addr))) => Err(Failure::Refused(r, addr)),
            (None, None) => Err(Failure::Resolve(io::ErrorKind::NotFound.into())),
        }
    }
}

impl<P: Splicer> Handler for SocksExit<P> {
    async fn handle<S>(&self, mut client: S, conn: ConnInfo, limits: Limits, counters: &Counters)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (dest, early) = match timeout(self.handshake_timeout, self.handshake(&mut client)).await
        {
            Ok(Ok(done)) => done,
            Ok(Err(f)) => {
                counters.failed();
                return self.log(conn.client, &f);
            }
            Err(_) => {
                counters.failed();
                return self.log(conn.client, &Failure::Handshake("handshake timeout"));
            }
        };
        let deadline = Instant::now() + limits.connect_timeout;
        let upstream = match self.connect(&dest, deadline).await {
            Ok(s) => s,
            Err(f) => {
                let rep = match &f {
                    Failure::Refused(..) => Reply::NotAllowed,
                    Failure::Resolve(_) => Reply::HostUnreachable,
                    Failure::Connect(e) => Reply::for_error(e),
                    Failure::Handshake(_) => Reply::GeneralFailure,
                };
                let _ = timeout(limits.connect_timeout, async {
                    client.write_all(&encode_reply(rep, None)).await?;
                    client.shutdown().await
                })
                .await;
                counters.failed();
                return self.log(conn.client, &f);
            }
        };
        let bound = upstream.local_addr().ok();
        let sent = timeout(
            limits.connect_timeout,
            client.write_all(&encode_reply(Reply::Succeeded, bound)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        debug!(client = %conn.client, destination = ?dest, "socks connect");
        let report = self
            .splicer
            .splice(
                Rewind::new(client, early),
                upstream,
                limits.idle_timeout,
                limits.half_close_timeout,
                counters,
            )
            .await;
        debug!(rx_bytes = report.a_to_b, tx_bytes = report.b_to_a, end = ?report.end, "socks connection ended");
    }
}

#[cfg(test)]
mod tests;
