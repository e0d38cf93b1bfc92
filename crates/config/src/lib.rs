//! Pinhole's configuration: a TOML file turned, once, into checked and typed values.
//!
//! "Parse, don't validate": [`Config::load`] either returns a [`Config`] in which every address,
//! key, port and cross-reference has been checked (a forward's target is covered by a peer, an
//! expose listens on one of our own addresses, no two peers claim the same IPs…), or returns
//! every problem found, each with its file, line, column, key and a fix. Nothing downstream
//! re-checks, and nothing in a `Config` is left to interpret at runtime.
//!
//! Unknown keys and tables are refused, never ignored: a silently ignored setting is how
//! tunnels and proxies end up open (see `docs/config.md`).
#![deny(missing_docs)]

mod cidr;
mod describe;
pub mod duration;
mod endpoint;
mod error;
mod fields;
mod interface;
pub mod keys;
mod netstack;
mod paths;
mod peers;
mod policy;
mod raw;
mod schema;
mod services;
mod validate;

#[cfg(test)]
mod forwarding_golden_tests;
#[cfg(test)]
mod forwarding_tests;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod kernel_nat_tests;
#[cfg(test)]
mod load_tests;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cidr::{Cidr, CidrError};
pub use endpoint::{Endpoint, EndpointError};
pub use error::{ConfigError, Problem};
use keys::{PresharedKey, PrivateKey, PublicKey};
pub use paths::{MAX_INTERFACE_NAME, UAPI_DIR};
pub use policy::{Access, DestinationError, DestinationRule, Rate, RateError, MAX_RATE_COUNT};

/// MTU used when `[interface] mtu` is absent: WireGuard's usual 1420 fits a 1500-byte path
/// with room for the IPv6 and WireGuard headers.
pub const DEFAULT_MTU: u16 = 1420;
/// Smallest accepted MTU: IPv6 requires every link to carry 1280-byte packets.
pub const MIN_MTU: u16 = 1280;
/// Largest accepted MTU: jumbo frames; anything above is surely a typo.
pub const MAX_MTU: u16 = 9000;
/// Default time allowed to open the far side of a forwarded connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a TCP connection may carry no bytes either way before both sides are closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time a UDP session may see no datagram either way before it is forgotten: long
/// enough for a game's quiet moments, short enough that DNS-like flows do not pile up.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on simultaneous UDP sessions (client addresses) per forward or expose.
pub const DEFAULT_MAX_SESSIONS: usize = 1024;
/// Most ports one forward or expose may name in a range: enough for game servers, FTP passive
/// and media ranges, and a bound on what one line of config can make a peer listen on.
pub const MAX_PORT_RANGE: u16 = 10_000;
/// Default cap on simultaneous connections per forward or expose.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Highest accepted `max_connections` and `max_sessions`: far above what one process serves, and small enough
/// for any semaphore or buffer sized from it.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Most TCP connections the userspace stack carries at once, and `[interface]
/// max_connections`'s default and ceiling: every connection it opens takes one of the 16,384
/// ephemeral ports 49152-65535 (the kernel's `ip_local_port_range` is a similar budget).
pub const MAX_STACK_CONNECTIONS: usize = 16_384;
/// Largest config file read: a real one is a few KiB; this bounds memory on a wrong path.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A checked config: what this peer is, whom it talks to, and what it forwards.
///
/// `PartialEq` compares everything (keys in constant time), so a reload can tell what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from (used in messages and by `pinhole check`).
    pub path: PathBuf,
    /// This peer's own identity and tunnel settings.
    pub interface: Interface,
    /// The WireGuard peers, in file order; [`Forward::peer`] indexes into this.
    pub peers: Vec<Peer>,
    /// Real sockets here carried into the overlay.
    pub forwards: Vec<Forward>,
    /// Overlay sockets here carried out to real targets.
    pub exposes: Vec<Expose>,
    /// `[metrics]`: where to serve Prometheus text, when asked for.
    pub metrics: Option<Metrics>,
}

/// `[metrics]`: the same figures as `pinhole status`, in Prometheus text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// The real TCP socket to serve `GET /metrics` on (an IP, port not 0).
    pub listen: SocketAddr,
}

/// `[interface]`: this peer's key, tunnel addresses and local sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Our secret key (read inline or from `private_key_file`).
    pub private_key: PrivateKey,
    /// The UDP port to listen on; `None` (absent or 0) means any free port.
    pub listen_port: Option<u16>,
    /// Our overlay addresses, host bits kept (`10.77.0.1/24` = we are 10.77.0.1). Never empty.
    pub addresses: Vec<Cidr>,
    /// The tunnel MTU, within [`MIN_MTU`]..=[`MAX_MTU`].
    pub mtu: u16,
    /// Pass overlay packets from one peer to another (by their allowed_ips), as a WireGuard
    /// hub does. Off by default.
    pub route_between_peers: bool,
    /// `control_socket` as written, made relative to the config file's directory; `None`
    /// means derived (see [`Config::control_socket_path`]).
    pub control_socket: Option<PathBuf>,
    /// `uapi_socket` as written, made relative to the config file's directory; `None` means
    /// `/var/run/wireguard/NAME.sock` (see [`Config::uapi_socket_path`]).
    pub uapi_socket: Option<PathBuf>,
    /// Which TCP/IP stack carries the overlay (`netstack`, with `tun_name`).
    pub netstack: Netstack,
    /// `max_connections`: most TCP connections the userspace stack carries at once, all
    /// forwards and exposes together (connections still closing count too), within
    /// 1..=[`MAX_STACK_CONNECTIONS`]; that ceiling when absent, so each forward's and
    /// expose's own `max_connections` is what limits. Only with the userspace stack.
    pub max_connections: usize,
}

/// `[interface] netstack`: what turns the tunnel's IP packets into TCP and UDP streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Netstack {
    /// An embedded TCP/IP stack in the process: no root, no device (the default).
    #[default]
    Userspace,
    /// A kernel TUN device; the kernel does TCP and UDP. Needs CAP_NET_ADMIN.
    Tun {
        /// `tun_name`: at most [`MAX_INTERFACE_NAME`] bytes of `[a-zA-Z0-9_.-]`, where `%d`
        /// asks the kernel for the first free number; `None` means the stack's default.
        name: Option<String>,
    },
}

impl std::fmt::Display for Netstack {
    /// `userspace`, `tun`, or `tun (device NAME)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Netstack::Userspace => f.write_str("userspace"),
            Netstack::Tun { name: None } => f.write_str("tun"),
            Netstack::Tun { name: Some(n) } => write!(f, "tun (device {n})"),
        }
    }
}

/// One `[[peer]]`: another WireGuard node and the overlay addresses it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// A unique name for logs and messages (`peer1`, `peer2`… when not given).
    pub name: String,
    /// The peer's identity; never low-order, never our own.
    pub public_key: PublicKey,
    /// Optional extra symmetric key for this pair.
    pub preshared_key: Option<PresharedKey>,
    /// The overlay prefixes this peer may send from and that we route to it, host bits cleared.
    /// Never empty, and disjoint from every other peer's.
    pub allowed_ips: Vec<Cidr>,
    /// Where to send the first handshake; `None` means wait for the peer to reach us.
    pub endpoint: Option<Endpoint>,
    /// Seconds between keepalives to hold a NAT mapping open; `None` when 0 or absent.
    pub persistent_keepalive: Option<u16>,
}

/// The transport a forward or expose carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Stream connections.
    Tcp,
    /// Datagrams; each client address is its own session.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
        }
    }
}

/// The PROXY protocol header a TCP forward prepends, carrying the public client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

impl std::fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyProtocol::V1 => f.write_str("v1"),
            ProxyProtocol::V2 => f.write_str("v2"),
        }
    }
}

/// One `[[forward]]`: listen on a real socket here, carry each connection into the overlay.
///
/// A port range is `listen`/`to` (the first ports) and `port_count`: listen port
/// `listen.port() + i` goes to `to.port() + i` (see [`Forward::target_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Unique among forwards.
    pub name: String,
    /// The transport.
    pub protocol: Protocol,
    /// The real socket to listen on (port 0: any free port, only when `port_count` is 1);
    /// the first port of a range.
    pub listen: SocketAddr,
    /// The overlay address and port to connect to (port never 0); the first port of a range.
    pub to: SocketAddr,
    /// How many consecutive ports `listen` and `to` name: 1 for a single port, at most
    /// [`MAX_PORT_RANGE`], and never past port 65535.
    pub port_count: u16,
    /// Index into [`Config::peers`] of the peer whose allowed_ips cover `to` (longest prefix).
    pub peer: usize,
    /// How long opening the overlay side may take (TCP only).
    pub connect_timeout: Duration,
    /// How long a connection (TCP) or session (UDP) may be silent both ways before it is
    /// closed; defaults differ: [`DEFAULT_IDLE_TIMEOUT`], [`DEFAULT_UDP_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Simultaneous TCP connections allowed, at least 1 (unused for UDP).
    pub max_connections: usize,
    /// Simultaneous UDP sessions allowed, at least 1 (unused for TCP).
    pub max_sessions: usize,
    /// Which client addresses may connect.
    pub access: Access,
    /// New connections (TCP) or sessions (UDP) allowed per client address.
    pub rate_limit: Option<Rate>,
    /// Prepend a PROXY protocol header toward the overlay (TCP only).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Read a PROXY protocol header from each client (a trusted load balancer) (TCP only).
    pub accept_proxy_protocol: bool,
    /// The kernel forwards this service's packets by NAT into the TUN device, and Pinhole only
    /// encrypts them: no socket here, and no connection for Pinhole to count, limit or time
    /// out (those keys are refused; `access` is written into the rule). IPv4 only; needs
    /// `netstack = "tun"`.
    pub kernel_nat: bool,
}

impl Forward {
    /// The overlay target for a connection that arrived on listen port `port`; `None` when the
    /// port is outside the listen range. With `listen` port 0 (any free port, never a range),
    /// whatever port was bound maps to `to`.
    pub fn target_for(&self, port: u16) -> Option<SocketAddr> {
        if self.listen.port() == 0 {
            return Some(self.to);
        }
        let i = range_index(self.listen.port(), self.port_count, port)?;
        let mut to = self.to;
        to.set_port(self.to.port().checked_add(i)?);
        Some(to)
    }

    /// `listen` as written (`0.0.0.0:27015-27030` for a range), for messages and status.
    pub fn show_listen(&self) -> String {
        show_socket_range(self.listen, self.port_count)
    }

    /// `to` as written (`10.77.0.2:27015-27030` for a range), for messages and status.
    pub fn show_to(&self) -> String {
        show_socket_range(self.to, self.port_count)
    }
}

/// Where an expose sends what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExposeTarget {
    /// A fixed `host:port` (the first port of a range); a host name is resolved at each
    /// connection.
    Addr(Endpoint),
    /// `to = "socks"`: a SOCKS5 server whose clients say where to connect.
    Socks(Socks),
}

impl std::fmt::Display for ExposeTarget {
    /// `host:port` (the first port of a range; see [`Expose::show_to`]) or `socks`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExposeTarget::Addr(e) => write!(f, "{e}"),
            ExposeTarget::Socks(_) => f.write_str("socks"),
        }
    }
}

/// A SOCKS5 exit's settings.
///
/// The exit policy: a destination matching `deny_destinations` is refused; else one matching
/// `allow_destinations` is allowed; else the built-in refusals apply (loopback, private,
/// link-local, unspecified, multicast and the overlay itself); else it is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Socks {
    /// RFC 1929 username/password required of clients; `None` means no authentication.
    pub auth: Option<SocksAuth>,
    /// Destinations allowed even though the built-in policy refuses them.
    pub allow_destinations: Vec<DestinationRule>,
    /// Destinations refused, whatever else says.
    pub deny_destinations: Vec<DestinationRule>,
}

/// SOCKS5 username/password (RFC 1929): each 1 to 255 bytes. The password never prints
/// (`Debug` redacts it), compares in constant time and is zeroed on drop.
#[derive(Clone)]
pub struct SocksAuth {
    /// The username clients must send.
    pub username: String,
    /// The password clients must send.
    pub password: String,
}

impl SocksAuth {
    /// True when a client's `username` and `password` are these (compared in constant time).
    pub fn accepts(&self, username: &[u8], password: &[u8]) -> bool {
        // Both comparisons always run, so timing does not say which one failed.
        let user = policy::ct_eq(self.username.as_bytes(), username);
        let pass = policy::ct_eq(self.password.as_bytes(), password);
        user & pass
    }
}

impl PartialEq for SocksAuth {
    fn eq(&self, other: &Self) -> bool {
        self.accepts(other.username.as_bytes(), other.password.as_bytes())
    }
}

impl Eq for SocksAuth {}

impl std::fmt::Debug for SocksAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Drop for SocksAuth {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

/// One `[[expose]]`: listen on one of our overlay addresses, carry each connection out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expose {
    /// Unique among exposes.
    pub name: String,
    /// The transport (always TCP for a SOCKS exit).
    pub protocol: Protocol,
    /// The overlay socket to listen on: the IP is one of [`Interface::addresses`], port not 0;
    /// the first port of a range.
    pub listen: SocketAddr,
    /// The real target, or a SOCKS exit.
    pub to: ExposeTarget,
    /// How many consecutive ports `listen` and `to` name: 1 for a single port (always 1 for a
    /// SOCKS exit); listen port `listen.port() + i` goes to port `to.port + i`.
    pub port_count: u16,
    /// How long connecting to the target may take (TCP only).
    pub connect_timeout: Duration,
    /// How long a connection (TCP) or session (UDP) may be silent both ways before it is
    /// closed.
    pub idle_timeout: Duration,
    /// Simultaneous TCP connections allowed, at least 1 (unused for UDP).
    pub max_connections: usize,
    /// Simultaneous UDP sessions allowed, at least 1 (unused for TCP).
    pub max_sessions: usize,
    /// Which peers' overlay addresses may connect.
    pub access: Access,
    /// New connections (TCP) or sessions (UDP) allowed per client address.
    pub rate_limit: Option<Rate>,
    /// The kernel forwards this service's packets by NAT out of the TUN device to `to`, an
    /// IPv4 address; Pinhole never sees the connections (see [`Forward::kernel_nat`]).
    pub kernel_nat: bool,
}

impl Expose {
    /// The target for a connection that arrived on overlay port `port`; `None` for a SOCKS
    /// exit or a port outside the listen range.
    pub fn target_for(&self, port: u16) -> Option<Endpoint> {
        let i = range_index(self.listen.port(), self.port_count, port)?;
        match &self.to {
            ExposeTarget::Addr(e) => Some(Endpoint {
                host: e.host.clone(),
                port: e.port.checked_add(i)?,
            }),
            ExposeTarget::Socks(_) => None,
        }
    }

    /// `listen` as written (`10.77.0.2:27015-27030` for a range).
    pub fn show_listen(&self) -> String {
        show_socket_range(self.listen, self.port_count)
    }

    /// `to` as written: `host:port`, `host:first-last` for a range, or `socks`.
    pub fn show_to(&self) -> String {
        match &self.to {
            ExposeTarget::Addr(e) => show_endpoint_range(e, self.port_count),
            ExposeTarget::Socks(_) => "socks".to_string(),
        }
    }
}

/// The offset of `port` in the range starting at `first` of `count` ports.
fn range_index(first: u16, count: u16, port: u16) -> Option<u16> {
    let i = port.checked_sub(first)?;
    (i < count).then_some(i)
}

/// `ip:port`, or `ip:first-last` when `count` is more than 1.
pub(crate) fn show_socket_range(addr: SocketAddr, count: u16) -> String {
    if count > 1 {
        format!("{addr}-{}", u32::from(addr.port()) + u32::from(count) - 1)
    } else {
        addr.to_string()
    }
}

/// `host:port`, or `host:first-last` when `count` is more than 1.
pub(crate) fn show_endpoint_range(e: &Endpoint, count: u16) -> String {
    if count > 1 {
        format!("{e}-{}", u32::from(e.port) + u32::from(count) - 1)
    } else {
        e.to_string()
    }
}

/// A loaded config plus the risks worth telling the user about that do not stop it from running.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked config.
    pub config: Config,
    /// Non-fatal problems (e.g. a key file readable by others), to print or log.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads and checks the config at `path`, including its `private_key_file` if any.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let problem = |offset: usize, message: String, fix: &str| {
            let lossy = String::from_utf8_lossy(&bytes[..offset.min(bytes.len())]).into_owned();
            let mut report = error::Report::new(path, &lossy);
            report.error(&(lossy.len()..lossy.len()), "", message, fix);
            ConfigError::Invalid(report.errors)
        };
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(problem(
                0,
                format!("file is larger than {MAX_CONFIG_BYTES} bytes"),
                "check the path: a config is a few KiB",
            ));
        }
        match std::str::from_utf8(&bytes) {
            Ok(text) => Config::parse(text, path),
            Err(e) => Err(problem(
                e.valid_up_to(),
                "file is not UTF-8 text".into(),
                "save the file as UTF-8",
            )),
        }
    }

    /// Checks config `text`; `path` names it in messages and anchors a relative
    /// `private_key_file` (which is read here).
    pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let mut report = error::Report::new(path, text);
        let config =
            raw::read(text, &mut report).and_then(|raw| validate::build(raw, path, &mut report));
        match config {
            Some(config) if report.errors.is_empty() => {
                report.warnings.sort_by_key(|p| (p.line, p.column));
                Ok(Loaded {
                    config,
                    warnings: report.warnings,
                })
            }
            _ => {
                if report.errors.is_empty() {
                    // Unreachable by construction; never return an empty list of problems.
                    report.error(
                        &(0..0),
                        "",
                        "config could not be built",
                        "report this as a bug in pinhole",
                    );
                }
                // Report in file order, whatever order the checks ran in.
                report.errors.sort_by_key(|p| (p.line, p.column));
                Err(ConfigError::Invalid(report.errors))
            }
        }
    }

    /// What `pinhole check` prints: the interface, each peer, forward and expose, one fact per
    /// line. Never includes private or preshared keys.
    pub fn describe(&self) -> String {
        describe::describe(self)
    }

    /// The control socket `pinhole status` and `pinhole reload` talk to: `[interface]
    /// control_socket` when set, else `$XDG_RUNTIME_DIR/pinhole/NAME.sock` when that variable
    /// is set, else `/run/pinhole/NAME.sock` for root, else `/tmp/pinhole-UID/NAME.sock`.
    /// NAME is the config file's stem, `-`, and 8 hex digits of a hash of its canonical path,
    /// so two `relay.toml` in different folders do not collide. The directory may not exist
    /// yet: whoever binds creates it (mode 0700).
    pub fn control_socket_path(&self) -> PathBuf {
        match &self.interface.control_socket {
            Some(p) => p.clone(),
            None => paths::default_control_socket(
                &self.path,
                std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
                paths::euid(),
            ),
        }
    }

    /// The wg-quick style name of this peer: the config file's stem with characters outside
    /// `[a-zA-Z0-9_=+.-]` replaced by `_`, at most [`MAX_INTERFACE_NAME`] characters
    /// (`relay` for `/etc/pinhole/relay.toml`). `wg show NAME` uses it.
    pub fn interface_name(&self) -> String {
        paths::interface_name(&self.path)
    }

    /// The WireGuard UAPI socket: `[interface] uapi_socket` when set, else
    /// `/var/run/wireguard/NAME.sock` with NAME from [`Config::interface_name`].
    pub fn uapi_socket_path(&self) -> PathBuf {
        match &self.interface.uapi_socket {
            Some(p) => p.clone(),
            None => Path::new(UAPI_DIR).join(format!("{}.sock", self.interface_name())),
        }
    }
}
