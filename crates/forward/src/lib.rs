//! Pinhole's forwarding layer: accept a stream on one side, dial the other side, splice them.
//!
//! Both primitives of Pinhole have this one shape, whatever network stack is underneath:
//! - **forward**: accept on a real TCP listener, dial an overlay address;
//! - **expose**: accept on an overlay listener, dial a real `host:port` ([`TcpDialer`]), or
//!   act as a SOCKS5 exit ([`SocksExit`]).
//!
//! The pieces, each in its own module:
//! - [`Acceptor`] and [`Dialer`] (`endpoint.rs`): the two ends, generic over the stream type;
//! - [`serve`] and [`serve_handler`] (`serve.rs`): the accept loop, with the connection
//!   limit, access control and rate limit ([`Admission`]), the incoming PROXY header, EMFILE
//!   back-off and graceful shutdown;
//! - [`Handler`] (`handler.rs`): what runs on each admitted stream: [`DialSplice`] (dial, send
//!   the PROXY header when asked, splice) or [`SocksExit`] (`socks_exit.rs`);
//! - [`splice`] (`splice.rs`): both directions at once, half-close, idle and linger timeouts;
//!   a [`Splicer`] may run the copy elsewhere (the userspace stack does), and [`supervise`]
//!   (`offload.rs`) keeps the same timeouts and counters for it; [`PipeSplice`] (`pipe.rs`)
//!   splices two kernel sockets through a pipe, so the bytes stay in the kernel;
//! - [`Limits`] (`limits.rs`) and [`Counters`] (`counters.rs`): the bounds and live figures;
//! - pure codecs and rules: [`proxy_header`], [`socks5`], [`exit_policy`], [`admission`];
//! - UDP ([`serve_udp`], `udp.rs`, with the pure session table in `udp_sessions.rs`);
//! - port ranges ([`TcpPortRange`], [`UdpPortRange`], [`RangeDialer`], `range.rs`).
#![deny(missing_docs)]

pub mod admission;
mod cidr;
mod counters;
mod endpoint;
pub mod exit_policy;
mod handler;
mod limits;
mod offload;
#[cfg(target_os = "linux")]
mod pipe;
pub mod proxy_header;
mod range;
mod ratelimit;
mod rewind;
mod serve;
pub mod socks5;
mod socks_exit;
mod splice;
mod task_span;
#[cfg(test)]
mod test_util;
mod udp;
mod udp_sessions;

/// Locks `m`, taking over a lock poisoned by a panicking holder. Why that is sound here: this
/// crate's locks guard lists and tables (sessions, free pipes, rate buckets) that every
/// holder leaves consistent between statements; a panic elsewhere must not take them down.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub use admission::{Admission, Rate, Refused, MAX_TRACKED_SOURCES};
pub use cidr::Cidr;
pub use counters::{Counters, CountersSnapshot};
pub use endpoint::{Acceptor, Dialer, TcpDialer};
pub use exit_policy::{DestinationRule, ExitPolicy, Refusal};
pub use handler::{ConnInfo, CopySplicer, DialSplice, Handler, Splicer};
pub use limits::Limits;
pub use offload::{supervise, OffloadProgress, Offloaded, LIVE_COUNTERS};
#[cfg(target_os = "linux")]
pub use pipe::{PipePool, PipeSplice};
pub use proxy_header::ProxyVersion;
pub use range::{DatagramPortDialer, PortDialer, PortMap, RangeDialer, TcpPortRange, UdpPortRange};
pub use rewind::Rewind;
pub use serve::{serve, serve_handler, serve_with_tracker, ServeOptions, PROXY_HEADER_TIMEOUT};
pub use socks5::Credentials;
pub use socks_exit::{SocksExit, SOCKS_HANDSHAKE_TIMEOUT};
pub use splice::{splice, splice_counted, SpliceEnd, SpliceReport, INITIAL_BUFFER, MAX_BUFFER};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
pub use udp::{
    serve_udp, Datagram, DatagramDialer, DatagramListener, DatagramSocket, RecvBatch, UdpDialer,
    UdpOptions, BATCH_SLOTS, MAX_DATAGRAM,
};
