//! `[interface]`: this peer's private key (inline or from a file), overlay addresses, port,
//! MTU, local socket paths and network stack.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::{Report, Span};
use crate::keys::{PrivateKey, PublicKey};
use crate::netstack::{netstack, stack_connections};
use crate::raw::{Field, RawInterface, Sp};
use crate::validate::{relative_to_config, u16_field};
use crate::{Cidr, Interface, DEFAULT_MTU, MAX_MTU, MIN_MTU};

/// Largest key file read: a key is 44 characters plus a newline.
const MAX_KEY_FILE_BYTES: u64 = 4096;

const KEY_FIX: &str = "paste the 44-character output of `pinhole genkey` (or `wg genkey`)";

/// What `[interface]` yielded: the whole of it when all is well, and otherwise the parts that
/// were good, so peers and exposes can still be checked against them in the same pass.
#[derive(Default)]
pub(crate) struct InterfaceParts {
    pub interface: Option<Interface>,
    pub public_key: Option<PublicKey>,
    pub addresses: Option<Vec<Cidr>>,
}

/// Checks `[interface]`; a relative `private_key_file` or socket path is taken from
/// `config_path`'s directory.
pub(crate) fn interface(
    raw: RawInterface,
    config_path: &Path,
    report: &mut Report<'_>,
) -> InterfaceParts {
    let span = raw.span.clone();
    let private_key = private_key(&raw, config_path, report);
    let listen_port = match raw.listen_port.ok() {
        None => Some(None),
        Some(v) => u16_field(
            report,
            &v,
            "interface.listen_port",
            "a UDP port (0 to 65535)",
            "use a port such as 51820, or remove the key for a random port",
        )
        .map(|p| (p != 0).then_some(p)),
    };
    let addresses = match raw.address.required(
        report,
        &span,
        "interface.address",
        "add this peer's overlay address, e.g. address = [\"10.77.0.1/24\"]",
    ) {
        Some(list) => addresses(list, report),
        None => None,
    };
    let mtu = match raw.mtu.ok() {
        None => Some(DEFAULT_MTU),
        Some(v) => match u16::try_from(v.value) {
            Ok(m) if (MIN_MTU..=MAX_MTU).contains(&m) => Some(m),
            _ => {
                report.error(
                    &v.span,
                    "interface.mtu",
                    format!("mtu {} is outside {MIN_MTU}..={MAX_MTU}", v.value),
                    format!("use {DEFAULT_MTU} (the default) unless the path needs less; IPv6 needs at least {MIN_MTU}"),
                );
                None
            }
        },
    };
    let route_between_peers = raw.route_between_peers.clone().ok().map(|b| b.value);
    let bad_bool = matches!(raw.route_between_peers, Field::Bad);
    let control_socket = socket_path(
        raw.control_socket.clone(),
        "interface.control_socket",
        "/run/pinhole/relay.sock",
        config_path,
        report,
    );
    let uapi_socket = socket_path(
        raw.uapi_socket.clone(),
        "interface.uapi_socket",
        "/var/run/wireguard/relay.sock",
        config_path,
        report,
    );
    let netstack = netstack(&raw.netstack, &raw.tun_name, report);
    let max_connections = stack_connections(&raw.max_connections, netstack.as_ref(), report);
    let public_key = private_key.as_ref().map(PrivateKey::public_key);
    let interface = match (
        private_key,
        listen_port,
        addresses.clone(),
        mtu,
        (control_socket, uapi_socket),
        (netstack, max_connections),
    ) {
        (
            Some(private_key),
            Some(listen_port),
            Some(addresses),
            Some(mtu),
            (Some(control_socket), Some(uapi_socket)),
            (Some(netstack), Some(max_connections)),
        ) if !bad_bool => Some(Interface {
            private_key,
            listen_port,
            addresses,
            mtu,
            route_between_peers: route_between_peers.unwrap_or(false),
            control_socket,
            uapi_socket,
            netstack,
            max_connections,
        }),
        _ => None,
    };
    InterfaceParts {
        interface,
        public_key,
        addresses,
    }
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `control_socket` or `uapi_socket`: a path, relative to the config file's directory.
/// `Some(None)` when absent, `None` when wrong (reported).
fn socket_path(
    field: Field<String>,
    key: &str,
    example: &str,
    config_path: &Path,
    report: &mut Report<'_>,
) -> Option<Option<PathBuf>> {
    let v = match field {
        Field::Missing => return Some(None),
        Field::Bad => return None,
        Field::Ok(v) => v,
    };
    let fix_empty = format!("give a path such as \"{example}\", or remove the key for the default");
    if v.value.trim().is_empty() || v.value.contains('\0') {
        report.error(&v.span, key, "not a usable path", fix_empty);
        return None;
    }
    let path = relative_to_config(config_path, &v.value);
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        report.error(
            &v.span,
            key,
            format!(
                "{} is {len} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}",
                path.display()
            ),
            "use a shorter path (a relative path is taken from the config file's directory)",
        );
        return None;
    }
    Some(Some(path))
}

fn addresses(list: Sp<Vec<Sp<String>>>, report: &mut Report<'_>) -> Option<Vec<Cidr>> {
    let key = "interface.address";
    if list.value.is_empty() {
        report.error(
            &list.span,
            key,
            "no addresses",
            "add this peer's overlay address, e.g. [\"10.77.0.1/24\"]",
        );
        return None;
    }
    let mut out: Vec<Cidr> = Vec::new();
    let mut ok = true;
    for item in &list.value {
        let cidr = match item.value.parse::<Cidr>() {
            Ok(c) => c,
            Err(e) => {
                report.error(
                    &item.span,
                    key,
                    e.to_string(),
                    "write an address with its prefix, e.g. \"10.77.0.1/24\" or \"fd77::1/64\"",
                );
                ok = false;
                continue;
            }
        };
        let ip = cidr.addr();
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            report.error(
                &item.span,
                key,
                format!("{ip} cannot be a tunnel address"),
                "use a private address of the overlay, e.g. \"10.77.0.1/24\"",
            );
            ok = false;
        } else if out.iter().any(|c| c.addr() == ip) {
            report.error(
                &item.span,
                key,
                format!("{ip} is listed twice"),
                "remove the duplicate",
            );
            ok = false;
        } else {
            out.push(cidr);
        }
    }
    ok.then_some(out)
}

fn private_key(
    raw: &RawInterface,
    config_path: &Path,
    report: &mut Report<'_>,
) -> Option<PrivateKey> {
    let inline = raw.private_key.clone();
    let file = raw.private_key_file.clone();
    match (inline, file) {
        (Field::Missing, Field::Missing) => {
            report.error(
                &raw.span,
                "interface.private_key",
                "missing required key",
                "add private_key = \"<output of `pinhole genkey`>\", or private_key_file = \"FILE\"",
            );
            None
        }
        (Field::Ok(_), Field::Ok(f)) => {
            report.error(
                &f.span,
                "interface.private_key_file",
                "both private_key and private_key_file are set",
                "keep only one of them",
            );
            None
        }
        (Field::Ok(k), _) => {
            let key = PrivateKey::from_base64(k.value.trim())
                .map_err(|e| {
                    report.error(
                        &k.span,
                        "interface.private_key",
                        format!("not a private key: {e}"),
                        KEY_FIX,
                    )
                })
                .ok()?;
            check_not_zero(key, &k.span, "interface.private_key", report)
        }
        (_, Field::Ok(f)) => key_file(&f, config_path, report),
        _ => None, // a wrong type, already reported
    }
}

/// An all-zero private key is a placeholder left in a template, not a secret.
fn check_not_zero(
    key: PrivateKey,
    span: &Span,
    name: &str,
    report: &mut Report<'_>,
) -> Option<PrivateKey> {
    if key.as_bytes().iter().all(|b| *b == 0) {
        report.error(
            span,
            name,
            "the private key is all zeros (a placeholder)",
            KEY_FIX,
        );
        return None;
    }
    Some(key)
}

/// Reads `private_key_file` (relative to the config file's directory) and warns when the
/// file is readable by group or others.
fn key_file(f: &Sp<String>, config_path: &Path, report: &mut Report<'_>) -> Option<PrivateKey> {
    let key = "interface.private_key_file";
    let path = relative_to_config(config_path, &f.value);
    let shown = path.display().to_string();
    let read = std::fs::File::open(&path).and_then(|file| {
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(std::io::Error::other("it is a directory"));
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text)?;
        Ok((text, meta))
    });
    let (text, meta) = match read {
        Ok(v) => v,
        Err(e) => {
            report.error(
                &f.span,
                key,
                format!("cannot read private key file {shown}: {e}"),
                format!(
                    "create it with `pinhole genkey > {shown} && chmod 600 {shown}`, or fix the path \
                     (a relative path is taken from the config file's directory)"
                ),
            );
            return None;
        }
    };
    let text = zeroize::Zeroizing::new(text);
    let pk = match PrivateKey::from_base64(text.trim()) {
        Ok(k) => k,
        Err(e) => {
            report.error(
                &f.span,
                key,
                format!("{shown} does not hold a private key: {e}"),
                format!("write one with `pinhole genkey > {shown}`"),
            );
            return None;
        }
    };
    warn_if_shared(&meta, &shown, &f.span, report);
    check_not_zero(pk, &f.span, key, report)
}

#[cfg(unix)]
fn warn_if_shared(meta: &std::fs::Metadata, shown: &str, span: &Span, report: &mut Report<'_>) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        report.warn(
            span,
            "interface.private_key_file",
            format!("private key file {shown} is readable by group or others (mode {mode:03o})"),
            format!("chmod 600 {shown}"),
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &std::fs::Metadata, _: &str, _: &Span, _: &mut Report<'_>) {}
