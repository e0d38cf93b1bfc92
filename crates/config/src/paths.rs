//! Where a running peer's sockets live when the config does not say: the control socket
//! (for `pinhole status` and `reload`) and the WireGuard UAPI socket (for `wg show`).
//!
//! Derived from the config file so that `pinhole status -c relay.toml` finds the peer that
//! `pinhole up -c relay.toml` started, and so that two `relay.toml` in different folders get
//! different sockets.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where wg(8) looks for userspace implementations' UAPI sockets.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// Longest interface name Linux accepts (IFNAMSIZ - 1), which wg-quick also enforces.
pub const MAX_INTERFACE_NAME: usize = 15;

/// The config file's stem with every character outside `[a-zA-Z0-9_=+.-]` replaced by `_`
/// (`pinhole` when there is no stem).
fn sanitized_stem(config: &Path) -> String {
    let stem = config
        .file_stem()
        .map(OsStr::to_string_lossy)
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_=+.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "pinhole".to_string()
    } else {
        name
    }
}

/// The wg-quick style interface name of the config at `config`: its stem, sanitized, at most
/// [`MAX_INTERFACE_NAME`] characters.
pub(crate) fn interface_name(config: &Path) -> String {
    sanitized_stem(config)
        .chars()
        .take(MAX_INTERFACE_NAME)
        .collect()
}

/// 32-bit FNV-1a: tiny, stable across Rust versions and platforms (unlike `DefaultHasher`),
/// which a name other processes must derive the same way needs.
pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

fn path_bytes(path: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        path.to_string_lossy().into_owned().into_bytes()
    }
}

/// The config path made absolute and free of symlinks when it exists, absolute otherwise, so
/// `relay.toml` and `./relay.toml` and `/etc/pinhole/relay.toml` name the same peer.
fn canonical(config: &Path) -> PathBuf {
    std::fs::canonicalize(config).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(config))
            .unwrap_or_else(|_| config.to_path_buf())
    })
}

/// `STEM-XXXXXXXX.sock`: the sanitized stem and 8 hex digits of FNV-1a over the canonical path.
pub(crate) fn socket_file_name(config: &Path) -> String {
    let hash = fnv1a(&path_bytes(&canonical(config)));
    format!("{}-{hash:08x}.sock", sanitized_stem(config))
}

/// The default control socket: under `$XDG_RUNTIME_DIR/pinhole/` when that is set (to an
/// absolute path), else `/run/pinhole/` for root, else `/tmp/pinhole-UID/`.
pub(crate) fn default_control_socket(
    config: &Path,
    xdg_runtime_dir: Option<&OsStr>,
    euid: Option<u32>,
) -> PathBuf {
    let file = socket_file_name(config);
    let xdg = xdg_runtime_dir.map(Path::new).filter(|p| p.is_absolute()); // the XDG spec: ignore a relative path
    match (xdg, euid) {
        (Some(dir), _) => dir.join("pinhole").join(file),
        (None, Some(0)) => Path::new("/run/pinhole").join(file),
        (None, Some(uid)) => PathBuf::from(format!("/tmp/pinhole-{uid}")).join(file),
        (None, None) => PathBuf::from("/tmp/pinhole-user").join(file),
    }
}

/// The effective user id, from `/proc/self/status` (no libc needed); `None` where that file
/// does not exist.
pub(crate) fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // From the FNV reference test suite (fnv1a32).
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn interface_names_are_like_wg_quick() {
        let n = |p: &str| interface_name(Path::new(p));
        assert_eq!(n("/etc/pinhole/relay.toml"), "relay");
        assert_eq!(n("my relay (2).toml"), "my_relay__2_");
        assert_eq!(n("a-very-long-config-name.toml"), "a-very-long-con");
        assert_eq!(n("wg0+x=y.z.toml"), "wg0+x=y.z");
        assert_eq!(n("héllo.toml"), "h_llo");
        assert_eq!(n("/"), "pinhole");
        assert!(n("a-very-long-config-name.toml").len() <= MAX_INTERFACE_NAME);
    }

    #[test]
    fn control_socket_is_derived_from_the_config_path() {
        let p = Path::new("/nonexistent/a/relay.toml");
        let q = Path::new("/nonexistent/b/relay.toml");
        let name = socket_file_name(p);
        assert_eq!(
            name,
            format!("relay-{:08x}.sock", fnv1a(b"/nonexistent/a/relay.toml"))
        );
        assert_ne!(name, socket_file_name(q), "same stem, other folder");
        assert_eq!(name.len(), "relay-".len() + 8 + ".sock".len());
        let xdg = Some(OsStr::new("/run/user/1000"));
        assert_eq!(
            default_control_socket(p, xdg, Some(1000)),
            Path::new("/run/user/1000/pinhole").join(&name)
        );
        assert_eq!(
            default_control_socket(p, None, Some(0)),
            Path::new("/run/pinhole").join(&name)
        );
        assert_eq!(
            default_control_socket(p, None, Some(1000)),
            Path::new("/tmp/pinhole-1000").join(&name)
        );
        assert_eq!(
            default_control_socket(p, Some(OsStr::new("relative")), Some(1000)),
            Path::new("/tmp/pinhole-1000").join(&name),
            "a relative XDG_RUNTIME_DIR is ignored"
        );
        // A relative config path is made absolute first, so it names the same peer.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            socket_file_name(Path::new("nonexistent-x.toml")),
            socket_file_name(&cwd.join("nonexistent-x.toml"))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn euid_is_read() {
        assert!(euid().is_some());
    }
}
