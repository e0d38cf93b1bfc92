//! What went wrong while making or converting a config, with the file and what to do.

use std::io;
use std::path::PathBuf;

use pinhole_config::ConfigError;

/// Why a set-up command failed. Every message names the file (when there is one) and says what
/// to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A `--forward` argument is not `PUBLIC_PORT:HOST:PORT`.
    #[error(
        "--forward {spec:?}: {reason}; fix: write PUBLIC_PORT:HOST:PORT, e.g. \
         8080:127.0.0.1:80, 443:nas.lan:443 or 2222:[::1]:22"
    )]
    ForwardSpec {
        /// The argument as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option given to a command cannot work (a subnet too small, a port given twice…).
    #[error("{message}; fix: {fix}")]
    Options {
        /// What is wrong.
        message: String,
        /// What to do about it.
        fix: String,
    },
    /// The config file to read or change does not load; every problem is listed.
    #[error(
        "{} is not a valid Pinhole config:\n{source}\nfix: correct it (`pinhole check -c {}` \
         lists every problem) and run the command again",
        path.display(),
        path.display()
    )]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// Every problem found in it.
        source: ConfigError,
    },
    /// A file that would be written already exists; nothing was overwritten.
    #[error(
        "{} already exists, refusing to overwrite it; fix: move it away or choose another \
         output directory",
        path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// `add-peer` was given a name that a peer of the relay already has.
    #[error(
        "{}: a peer named {name:?} already exists; fix: choose another --name, or remove that \
         [[peer]] first",
        path.display()
    )]
    DuplicatePeer {
        /// The relay config.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// Every address of the relay's overlay subnet is taken.
    #[error(
        "{}: no free address left in the overlay subnet {subnet}; fix: remove a peer you no \
         longer use, or give the relay a larger subnet in [interface] address (e.g. /16) and \
         update the other peers' allowed_ips to match",
        path.display()
    )]
    SubnetFull {
        /// The relay config.
        path: PathBuf,
        /// The subnet, as the relay's first interface address (`10.77.0.1/24`).
        subnet: String,
    },
    /// A wg-quick `.conf` line cannot be imported.
    #[error("{}:{line}: {message}; fix: {fix}", path.display())]
    WgQuick {
        /// The `.conf` file.
        path: PathBuf,
        /// 1-based line number (0 when the problem is the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
        /// What to do about it.
        fix: String,
    },
    /// A wg-quick `.conf` read fine but does not make a valid Pinhole config.
    #[error(
        "{} converts to a Pinhole config with these problems (lines are those of the converted \
         TOML):\n{source}\nfix: correct {} and import it again",
        path.display(),
        path.display()
    )]
    Converted {
        /// The `.conf` file.
        path: PathBuf,
        /// The problems of the converted config.
        source: ConfigError,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}: {source}; fix: check the path and its permissions", path.display())]
    Io {
        /// What we were doing ("read", "create", "rename into place"…).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// A config Pinhole generated does not load: a bug in Pinhole, never the user's doing.
    #[error("pinhole made a {what} that does not load, which is a bug in pinhole (please report it):\n{source}")]
    Generated {
        /// Which config it was.
        what: &'static str,
        /// Its problems.
        source: ConfigError,
    },
    /// The text does not fit in a QR code.
    #[error(
        "cannot draw a QR code of {len} bytes: {reason}; fix: import the .conf file instead, or \
         remove its comments to make it shorter"
    )]
    Qr {
        /// Length of the text.
        len: usize,
        /// The encoder's reason.
        reason: String,
    },
}

impl ProvisionError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ProvisionError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
