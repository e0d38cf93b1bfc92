//! The two ends of a forward, abstracted so the same code serves a real TCP listener or an
//! overlay listener on one side, and a real target or an overlay address on the other.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Something that yields accepted streams: a tokio `TcpListener`, or an overlay listener.
///
/// Why a trait: forward (real listener → overlay) and expose (overlay listener → real target)
/// are the same loop; only the stream types differ, and the network stack stays hidden.
pub trait Acceptor: Send + 'static {
    /// The accepted stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection; returns the stream and the client's address.
    /// An error here is reported to the accept loop, which never gives up on it.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The local address `stream` arrived on, when known: the destination of an outgoing
    /// PROXY header, and the port a port-range forward maps. The default knows none.
    fn stream_local_addr(&self, stream: &Self::Stream) -> Option<SocketAddr> {
        let _ = stream;
        None
    }
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;

    /// Accepts and sets `TCP_NODELAY`: the splice writes whole reads at once, so Nagle would
    /// only add latency to interactive traffic (SSH, games).
    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
        }
        Ok((stream, addr))
    }

    /// The stream's own local address: the real address the client reached, even when the
    /// listener is bound to a wildcard.
    fn stream_local_addr(&self, stream: &TcpStream) -> Option<SocketAddr> {
        stream.local_addr().ok()
    }
}

/// Opens the other side of one connection; it knows its own target.
///
/// Why a trait: a forward dials an overlay address through the WireGuard stack, an expose
/// dials a real `host:port`; tests dial whatever they need, including a dial that never ends.
pub trait Dialer: Send + Sync + 'static {
    /// The dialed stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens one stream to the target. The caller bounds it with `Limits::connect_timeout`.
    fn dial(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Opens one stream for a connection that arrived on `local` (when known). The default
    /// ignores `local`; a port-range dialer maps its port to the target port.
    fn dial_for(
        &self,
        local: Option<SocketAddr>,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let _ = local;
        self.dial()
    }

    /// Whether [`Dialer::dial_for`] needs the local address. Why ask: finding it costs a
    /// system call (`getsockname`) per accepted connection, which most forwards can skip.
    fn wants_local_addr(&self) -> bool {
        false
    }
}

/// Dials a real `host:port` over TCP: the target of an expose.
///
/// The host is resolved at each dial, not once at start, so a target whose address changes
/// (a DHCP lease, a container restart, dynamic DNS) keeps working without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpDialer {
    host: String,
    port: u16,
}

impl TcpDialer {
    /// A dialer for `host:port`; `host` is a name or an IP literal (IPv6 without brackets).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl Dialer for TcpDialer {
    type Stream = TcpStream;

    /// Tries the resolved addresses in order and returns the first connection, with
    /// `TCP_NODELAY` set; the error of the last attempt when all fail.
    async fn dial(&self) -> io::Result<TcpStream> {
        self.dial_port(self.port).await
    }
}

impl TcpDialer {
    /// Dials this dialer's host on `port`: the same resolution and fallback as `dial`.
    pub(crate) async fn dial_port(&self, port: u16) -> io::Result<TcpStream> {
        let mut last_error = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), port)).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a dialed socket");
                    }
                    return Ok(stream);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolved to no address", self.host),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn tcp_dialer_resolves_and_connects() {
        let mut listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dialer = TcpDialer::new("localhost", port);
        let (dialed, accepted) = timeout(DEADLINE, async {
            tokio::join!(dialer.dial(), Acceptor::accept(&mut listener))
        })
        .await
        .unwrap();
        let dialed = dialed.unwrap();
        let (accepted, peer) = accepted.unwrap();
        assert_eq!(dialed.local_addr().unwrap(), peer);
        assert!(dialed.nodelay().unwrap());
        assert!(accepted.nodelay().unwrap());
    }

    #[tokio::test]
    async fn tcp_dialer_reports_a_refused_target() {
        // Bind then drop to get a port nobody listens on.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let err = timeout(DEADLINE, TcpDialer::new("127.0.0.1", port).dial())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
