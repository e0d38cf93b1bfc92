//! Pinhole's forwarding layer: accept a stream on one side, dial the other side, splice them.
//!
//! Both primitives of Pinhole have this one shape, whatever network stack is underneath:
//! - **forward**: accept on a real TCP listener, dial an overlay address;
//! - **expose**: accept on an overlay listener, dial a real `host:port` ([`TcpDialer`]).
//!
//! The pieces, each in its own module:
//! - [`Acceptor`] and [`Dialer`] (`endpoint.rs`): the two ends, generic over the stream type;
//! - [`serve`] (`serve.rs`): the accept loop, with the connection limit, connect timeout,
//!   EMFILE back-off and graceful shutdown;
//! - [`splice`] (`splice.rs`): both directions at once, half-close, idle and linger timeouts;
//! - [`Limits`] (`limits.rs`) and [`Counters`] (`counters.rs`): the bounds and live figures.
#![deny(missing_docs)]

mod counters;
mod endpoint;
mod limits;
mod ratelimit;
mod serve;
mod splice;
#[cfg(test)]
mod test_util;

pub use counters::{Counters, CountersSnapshot};
pub use endpoint::{Acceptor, Dialer, TcpDialer};
pub use limits::Limits;
pub use serve::{serve, serve_with_tracker};
pub use splice::{splice, splice_counted, SpliceEnd, SpliceReport, INITIAL_BUFFER, MAX_BUFFER};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
