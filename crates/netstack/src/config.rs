//! Configuration of the userspace stack, and every limit that bounds its memory and time.
//!
//! Public `DEFAULT_*`/`MIN_*`/`MAX_*` constants describe what a [`StackConfig`] may hold;
//! crate-private constants are the fixed limits of the implementation. Each one says why.

use std::net::IpAddr;
use std::time::Duration;

/// Default TCP receive buffer per connection: 512 KiB. It is the largest window we advertise
/// (window scale shift 4), so one connection can carry about 400 Mbit/s at 10 ms RTT.
pub const DEFAULT_TCP_RX_BUFFER: usize = 512 * 1024;
/// Default TCP send buffer per connection: 512 KiB, the most unacknowledged data in flight,
/// sized like the receive buffer so a fast link is not throttled by our own sender.
pub const DEFAULT_TCP_TX_BUFFER: usize = 512 * 1024;
/// Default cap on TCP sockets (connections plus embryonic accepts and closing ones): as many
/// as the stack can hold, [`MAX_CONNECTIONS_LIMIT`]; callers bound their own connections
/// (Pinhole: each forward's and expose's `max_connections`) and may lower it. A socket costs
/// its buffers' address space (1 MiB with defaults) but only the pages data has touched.
pub const DEFAULT_MAX_CONNECTIONS: usize = MAX_CONNECTIONS_LIMIT;
/// Smallest MTU accepted: IPv4's minimum datagram every host must handle (RFC 791).
pub const MIN_MTU: usize = 576;
/// Largest MTU accepted: the largest IPv4 total length.
pub const MAX_MTU: usize = 65_535;
/// Smallest TCP buffer accepted: below a few segments TCP degenerates into stop-and-wait.
pub const MIN_TCP_BUFFER: usize = 4 * 1024;
/// Largest TCP buffer accepted: 64 MiB (smoltcp panics above 1 GiB; more is never useful here).
pub const MAX_TCP_BUFFER: usize = 64 * 1024 * 1024;
/// Most addresses the interface holds: smoltcp's `iface-max-addr-count-8` feature.
pub const MAX_ADDRESSES: usize = 8;
/// Largest `max_connections` accepted: the size of the ephemeral port range, so that every
/// outbound connection can get a distinct local port.
pub const MAX_CONNECTIONS_LIMIT: usize =
    EPHEMERAL_PORTS.1 as usize - EPHEMERAL_PORTS.0 as usize + 1;

/// Keep-alive interval on established connections: an idle connection sends one empty ACK
/// this often, so a dead peer is noticed (see [`DEAD_PEER_TIMEOUT`]).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// A connection whose peer has sent nothing for this long while we were talking to it
/// (keep-alives or data) is aborted: three missed keep-alives. Bounds how long a dead peer
/// holds a socket.
pub(crate) const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(180);
/// An outbound SYN (or an accepted SYN whose handshake never completes) is given up after
/// this long. Callers wanting a shorter connect timeout wrap `connect` in their own timeout;
/// dropping the future frees the socket.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// After its stream is dropped, a connection gets this long to deliver its data and FIN
/// (like Linux's `tcp_fin_timeout`) before it is aborted with a RST.
pub(crate) const LINGER: Duration = Duration::from_secs(30);
/// Largest chunk moved through a stream channel. Bounds the memory of a channel to
/// `CHANNEL_CHUNKS * MAX_CHUNK` per direction while letting bulk data move in big pieces.
pub(crate) const MAX_CHUNK: usize = 32 * 1024;
/// Chunks a stream channel holds in each direction (so at most 256 KiB per direction on
/// top of the TCP buffers). It decouples the stream task from the driver task, nothing more:
/// the real window is the smoltcp buffer.
pub(crate) const CHANNEL_CHUNKS: usize = 8;
/// Pending `connect`/`listen` requests; a caller beyond that waits in `send().await`.
pub(crate) const COMMAND_CAPACITY: usize = 64;
/// Established connections waiting in a listener's accept queue. Beyond it a new
/// connection is reset, like a full backlog.
pub(crate) const ACCEPT_BACKLOG: usize = 256;
/// Inbound IP packets queued between two `poll` calls; more are dropped (TCP recovers).
/// The driver polls after every datagram, so this is only reached by a misbehaving caller.
pub(crate) const MAX_INBOUND_QUEUE: usize = 1024;
/// Outbound IP packets queued until the driver takes them; smoltcp stops emitting at this
/// point and resumes on the next poll (its `poll_at` then says "now").
pub(crate) const MAX_OUTBOUND_QUEUE: usize = 1024;
/// Rounds of (service handles, ingress, egress) in one `poll`: bounds the work per call;
/// what is left makes `poll_at` return "now".
pub(crate) const MAX_POLL_ROUNDS: usize = 8;
/// Datagrams a UDP socket's inbound queue holds (like a kernel socket buffer); beyond it
/// arriving datagrams are dropped and counted ([`crate::OverlayUdpSocket::dropped`]).
/// Worst case per socket: this many datagrams of up to one MTU each (~350 KiB at 1420).
pub(crate) const UDP_INBOUND_QUEUE: usize = 256;
/// Packets a UDP socket may have built and queued for the driver; a sender beyond it waits
/// in `send_to().await` (back-pressure, instead of dropping like a kernel would).
pub(crate) const UDP_OUTBOUND_QUEUE: usize = 16;
/// Most UDP sockets (single ports or ranges) at once: the size of the ephemeral range, so a
/// relay can hold one socket per public client up to that. Beyond it `bind_udp` fails.
pub(crate) const MAX_UDP_SOCKETS: usize = MAX_CONNECTIONS_LIMIT;
/// Ephemeral ports for outbound connections and UDP sockets (IANA dynamic range).
pub(crate) const EPHEMERAL_PORTS: (u16, u16) = (49_152, 65_535);

/// What the userspace stack needs to know: its overlay addresses, the tunnel MTU and its
/// limits. Build it with [`StackConfig::new`] and adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// This peer's overlay addresses with their prefix lengths (at most [`MAX_ADDRESSES`]).
    /// The stack answers on these and connects from them.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Tunnel MTU: the largest IP packet the stack emits; TCP's MSS follows from it.
    pub mtu: usize,
    /// TCP receive buffer per connection in bytes (the advertised window).
    pub tcp_rx_buffer: usize,
    /// TCP send buffer per connection in bytes (unacknowledged data in flight).
    pub tcp_tx_buffer: usize,
    /// Most TCP sockets at once; SYNs beyond it are answered with RST, connects fail.
    pub max_connections: usize,
}

impl StackConfig {
    /// A configuration with buffers sized for a fast link and the default connection cap.
    pub fn new(addresses: Vec<(IpAddr, u8)>, mtu: usize) -> Self {
        Self {
            addresses,
            mtu,
            tcp_rx_buffer: DEFAULT_TCP_RX_BUFFER,
            tcp_tx_buffer: DEFAULT_TCP_TX_BUFFER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Every problem with this configuration, so a config checker can report them before the
    /// stack starts. [`crate::new`] does not fail: it clamps and skips what this reports.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.addresses.is_empty() {
            errors.push(ConfigError::NoAddress);
        }
        if self.addresses.len() > MAX_ADDRESSES {
            errors.push(ConfigError::TooManyAddresses(self.addresses.len()));
        }
        for &(addr, prefix) in &self.addresses {
            if !address_usable(addr, prefix) {
                errors.push(ConfigError::BadAddress(addr, prefix));
            }
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            errors.push(ConfigError::Mtu(self.mtu));
        }
        for size in [self.tcp_rx_buffer, self.tcp_tx_buffer] {
            if !(MIN_TCP_BUFFER..=MAX_TCP_BUFFER).contains(&size) {
                errors.push(ConfigError::Buffer(size));
            }
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            errors.push(ConfigError::MaxConnections(self.max_connections));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The configuration the stack actually runs with: values clamped into range and unusable
    /// addresses dropped (each logged at warn).
    pub(crate) fn sanitized(&self) -> Self {
        if let Err(errors) = self.validate() {
            for error in errors {
                tracing::warn!(%error, "netstack config adjusted");
            }
        }
        let addresses = self
            .addresses
            .iter()
            .copied()
            .filter(|&(addr, prefix)| address_usable(addr, prefix))
            .take(MAX_ADDRESSES)
            .collect();
        Self {
            addresses,
            mtu: self.mtu.clamp(MIN_MTU, MAX_MTU),
            tcp_rx_buffer: self.tcp_rx_buffer.clamp(MIN_TCP_BUFFER, MAX_TCP_BUFFER),
            tcp_tx_buffer: self.tcp_tx_buffer.clamp(MIN_TCP_BUFFER, MAX_TCP_BUFFER),
            max_connections: self.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT),
        }
    }
}

/// Whether an address can be an interface address: unicast, with a prefix that fits.
fn address_usable(addr: IpAddr, prefix: u8) -> bool {
    let unicast = !(addr.is_unspecified() || addr.is_multicast());
    let v4_broadcast = matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    let max_prefix = if addr.is_ipv4() { 32 } else { 128 };
    unicast && !v4_broadcast && prefix <= max_prefix
}

/// A problem in a [`StackConfig`], as reported by [`StackConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Without an address the stack can neither accept nor connect.
    #[error("no overlay address")]
    NoAddress,
    /// smoltcp's interface holds a fixed number of addresses.
    #[error("{0} overlay addresses; at most {MAX_ADDRESSES} are supported")]
    TooManyAddresses(usize),
    /// Not a unicast address, or a prefix longer than the address.
    #[error("{0}/{1} is not a usable unicast address and prefix")]
    BadAddress(IpAddr, u8),
    /// The MTU is outside what IP allows.
    #[error("mtu {0} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu(usize),
    /// A TCP buffer size is outside the supported range.
    #[error("tcp buffer of {0} bytes is outside {MIN_TCP_BUFFER}..={MAX_TCP_BUFFER}")]
    Buffer(usize),
    /// The connection cap is zero or larger than the ephemeral port range.
    #[error("max_connections {0} is outside 1..={MAX_CONNECTIONS_LIMIT}")]
    MaxConnections(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = StackConfig::new(vec![("10.0.0.1".parse().unwrap(), 24)], 1420);
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.sanitized(), config);
    }

    #[test]
    fn bad_values_are_reported_and_clamped() {
        let mut config = StackConfig::new(
            vec![
                ("10.0.0.1".parse().unwrap(), 40),
                ("224.0.0.1".parse().unwrap(), 4),
                ("fd00::1".parse().unwrap(), 64),
            ],
            10,
        );
        config.tcp_rx_buffer = 2 << 30;
        config.max_connections = 0;
        let errors = config.validate().unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        let sane = config.sanitized();
        assert_eq!(sane.addresses, vec![("fd00::1".parse().unwrap(), 64)]);
        assert_eq!(sane.mtu, MIN_MTU);
        assert_eq!(sane.tcp_rx_buffer, MAX_TCP_BUFFER);
        assert_eq!(sane.max_connections, 1);
        assert_eq!(sane.validate(), Ok(()));
    }
}
