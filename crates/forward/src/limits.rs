//! The explicit bounds of one forward or expose: time and connection count.

use std::time::Duration;

/// Bounds applied to every connection of one forward or expose.
///
/// Why explicit: a forwarder without them leaks sockets (CLOSE_WAIT forever, rathole#460),
/// hangs on dead targets, or is exhausted by a connection flood. Every field is configurable;
/// the defaults suit a port forwarder exposed to the Internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a dial to the other side may take before the accepted stream is closed.
    /// Default 10 s: enough for a WireGuard handshake plus a TCP handshake on a lossy link.
    pub connect_timeout: Duration,
    /// A connection where no byte moves in either direction for this long is closed.
    /// Default 5 min: frees half-open connections (a client that vanished without a FIN)
    /// without cutting interactive sessions that pause briefly.
    pub idle_timeout: Duration,
    /// After one direction has finished (its FIN was passed on), the other direction is closed
    /// once it has been idle this long. Default 60 s: a bounded linger, so a peer that never
    /// closes its side cannot hold a socket in CLOSE_WAIT forever.
    pub half_close_timeout: Duration,
    /// At most this many connections are served at once; more are closed right after accept
    /// and counted as refused. Default 1024: well under a typical 1024..65536 fd limit once
    /// both sides of every connection are counted, and bounded memory per forward.
    /// Zero refuses every connection.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5 * 60),
            half_close_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let l = Limits::default();
        assert_eq!(l.connect_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(300));
        assert_eq!(l.half_close_timeout, Duration::from_secs(60));
        assert_eq!(l.max_connections, 1024);
    }
}
