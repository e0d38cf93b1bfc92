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
pub mod keys;
mod raw;
mod services;
mod validate;

#[cfg(test)]
mod golden_tests;
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

/// MTU used when `[interface] mtu` is absent: WireGuard's usual 1420 fits a 1500-byte path
/// with room for the IPv6 and WireGuard headers.
pub const DEFAULT_MTU: u16 = 1420;
/// Smallest accepted MTU: IPv6 requires every link to carry 1280-byte packets.
pub const MIN_MTU: u16 = 1280;
/// Largest accepted MTU: jumbo frames; anything above is surely a typo.
pub const MAX_MTU: u16 = 9000;
/// Default time allowed to open the far side of a forwarded connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may carry no bytes either way before both sides are closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default cap on simultaneous connections per forward or expose.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Highest accepted `max_connections`: far above what one process serves, and small enough
/// for any semaphore or buffer sized from it.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Largest config file read: a real one is a few KiB; this bounds memory on a wrong path.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A checked config: what this peer is, whom it talks to, and what it forwards.
#[derive(Debug, Clone)]
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
}

/// `[interface]`: this peer's key and tunnel addresses.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Our secret key (read inline or from `private_key_file`).
    pub private_key: PrivateKey,
    /// The UDP port to listen on; `None` (absent or 0) means any free port.
    pub listen_port: Option<u16>,
    /// Our overlay addresses, host bits kept (`10.77.0.1/24` = we are 10.77.0.1). Never empty.
    pub addresses: Vec<Cidr>,
    /// The tunnel MTU, within [`MIN_MTU`]..=[`MAX_MTU`].
    pub mtu: u16,
}

/// One `[[peer]]`: another WireGuard node and the overlay addresses it may use.
#[derive(Debug, Clone)]
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

/// The transport a forward or expose carries. Only TCP for now; UDP is refused at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Stream connections.
    Tcp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
        }
    }
}

/// One `[[forward]]`: listen on a real socket here, carry each connection into the overlay.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Unique among forwards.
    pub name: String,
    /// The transport.
    pub protocol: Protocol,
    /// The real socket to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The overlay address and port to connect to (port never 0).
    pub to: SocketAddr,
    /// Index into [`Config::peers`] of the peer whose allowed_ips cover `to` (longest prefix).
    pub peer: usize,
    /// How long opening the overlay side may take.
    pub connect_timeout: Duration,
    /// How long a connection may be silent both ways before it is closed.
    pub idle_timeout: Duration,
    /// Simultaneous connections allowed, at least 1.
    pub max_connections: usize,
}

/// One `[[expose]]`: listen on one of our overlay addresses, carry each connection out.
#[derive(Debug, Clone)]
pub struct Expose {
    /// Unique among exposes.
    pub name: String,
    /// The transport.
    pub protocol: Protocol,
    /// The overlay socket to listen on: the IP is one of [`Interface::addresses`], port not 0.
    pub listen: SocketAddr,
    /// The real target; a host name is resolved at each connection.
    pub to: Endpoint,
    /// How long connecting to `to` may take.
    pub connect_timeout: Duration,
    /// How long a connection may be silent both ways before it is closed.
    pub idle_timeout: Duration,
    /// Simultaneous connections allowed, at least 1.
    pub max_connections: usize,
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
}
