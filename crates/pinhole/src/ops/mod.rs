//! Seeing a peer run: `pinhole status`, `pinhole reload`, `wg show` and Prometheus.
//!
//! Everything here works on plain data handed over by the running peer, so it
//! depends on nothing inside the engine, the stack or the forwarders:
//!
//! - [`status`]: the [`Status`](status::Status) snapshot (the `--json` contract)
//!   and its renderers: `wg show`-like text and Prometheus text format.
//! - [`control`]: the per-peer control socket (`status`, `reload`) and its client.
//! - [`uapi`]: WireGuard's cross-platform UAPI, `get=1` only, so `wg show` works.
//! - [`metrics`]: a minimal HTTP server for `GET /metrics`.
//!
//! Every server takes an already bound listener and a `CancellationToken`
//! from the caller (tests bind temp paths and port 0), and bounds what one
//! client can cost: request size, read time and concurrent connections
//! (the accept loop they share is in `server`).

pub mod control;
pub mod metrics;
mod server;
pub mod status;
pub mod uapi;

use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;

/// How long a client may take to send its request.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read our answer.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once per server; more wait in the kernel's backlog.
pub(crate) const MAX_CLIENTS: usize = 16;
/// After shutdown, how long requests already being answered may take to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds a Unix stream socket at `path` that only its owner can connect to.
///
/// - The parent directory is created with `dir_mode` if missing (an existing
///   directory is left as it is).
/// - A socket file already at `path` is probed: if a process accepts the
///   connection, binding fails with [`io::ErrorKind::AddrInUse`] (another peer
///   is running there); if nobody answers it is stale and is removed. Anything
///   at `path` that is not a socket is never removed: that fails with
///   [`io::ErrorKind::AlreadyExists`].
/// - Mode 0600 is set before anyone can connect, without touching the
///   process-wide umask (other threads may be creating files): the socket's
///   own inode is `fchmod`ed to 0600 *before* `bind`, and Linux creates the
///   file with that mode (masked by the umask, which can only remove bits).
///   On systems where that has no effect, the file is `chmod`ed right after
///   `bind`, and the mode is checked either way; a socket that cannot be
///   made 0600 is not served.
///
/// Must be called from within a Tokio runtime.
pub(crate) fn bind_private_socket(path: &Path, dir_mode: u32) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(dir_mode)
                .create(parent)
                .map_err(|e| with_path(e, "cannot create the directory", parent))?;
            // The umask may have removed bits the caller asked for (0755 for wg's directory).
            std::fs::set_permissions(parent, Permissions::from_mode(dir_mode))
                .map_err(|e| with_path(e, "cannot set the mode of", parent))?;
        }
    }
    remove_if_stale(path)?;

    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    // fchmod on the unbound socket: Linux gives the socket file this mode at bind time.
    let fd: std::os::fd::OwnedFd = socket.try_clone()?.into();
    let _ = std::fs::File::from(fd).set_permissions(Permissions::from_mode(0o600));
    let address = socket2::SockAddr::unix(path)?;
    socket
        .bind(&address)
        .map_err(|e| with_path(e, "cannot bind the socket", path))?;
    let owner_only = || -> io::Result<()> {
        let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            std::fs::set_permissions(path, Permissions::from_mode(0o600))?;
        }
        Ok(())
    };
    if let Err(e) = owner_only() {
        let _ = std::fs::remove_file(path);
        return Err(with_path(
            e,
            "cannot make the socket owner-only (0600)",
            path,
        ));
    }
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    let std_listener: std::os::unix::net::UnixListener = std::os::fd::OwnedFd::from(socket).into();
    UnixListener::from_std(std_listener)
}

/// Removes `path` if it is a socket nobody answers on; see [`bind_private_socket`].
fn remove_if_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, "cannot inspect", path)),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it or choose another path",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use: another running peer answers on it (stop it first, or choose another socket path)",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::debug!(path = %path.display(), "removing a stale socket left by a peer that stopped");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(with_path(e, "cannot remove the stale socket", path))
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(with_path(e, "cannot probe the existing socket", path)),
    }
}

/// The path a listener from [`bind_private_socket`] was bound to.
pub(crate) fn listener_path(listener: &UnixListener) -> Option<PathBuf> {
    listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
}

/// Removes the socket file a server was bound to, when it stops.
pub(crate) fn remove_socket_file(path: Option<&Path>) {
    let Some(path) = path else { return };
    // Only a socket: never a file someone put there after we started.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("ph-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::TempDir;
    use super::*;

    #[tokio::test]
    async fn socket_is_owner_only_and_parent_is_created_with_mode() {
        let tmp = TempDir::new("bind");
        let path = tmp.0.join("sub/dir/x.sock");
        let listener = bind_private_socket(&path, 0o700).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir = std::fs::metadata(tmp.0.join("sub/dir")).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        assert_eq!(listener_path(&listener).as_deref(), Some(path.as_path()));
    }

    #[tokio::test]
    async fn live_socket_is_refused_and_stale_one_replaced() {
        let tmp = TempDir::new("stale");
        let path = tmp.0.join("p.sock");
        let live = bind_private_socket(&path, 0o700).unwrap();
        let err = bind_private_socket(&path, 0o700).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        let _again = bind_private_socket(&path, 0o700).unwrap();
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
    }

    #[tokio::test]
    async fn a_regular_file_is_never_removed() {
        let tmp = TempDir::new("file");
        let path = tmp.0.join("not-a-socket");
        std::fs::write(&path, b"keep me").unwrap();
        let err = bind_private_socket(&path, 0o700).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
