//! Step two of loading: raw tables to typed values, `[interface]` and `[[peer]]` here,
//! `[[forward]]` and `[[expose]]` in `services`.
//!
//! Defaults are filled here, in one place. Every check records its problem and carries on, so
//! one run reports everything; a typed [`Config`] is produced only when nothing was wrong.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::{Report, Span};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::raw::{Field, RawConfig, RawInterface, RawPeer, Sp};
use crate::{
    services, Cidr, Config, Endpoint, EndpointError, Interface, Peer, DEFAULT_MTU, MAX_MTU, MIN_MTU,
};

/// Largest key file read: a key is 44 characters plus a newline.
const MAX_KEY_FILE_BYTES: u64 = 4096;

const KEY_FIX: &str = "paste the 44-character output of `pinhole genkey` (or `wg genkey`)";

/// Builds the typed config, or `None` when any error was reported.
pub(crate) fn build(raw: RawConfig, path: &Path, report: &mut Report<'_>) -> Option<Config> {
    let parts = match raw.interface {
        Some(i) => interface(i, path, report),
        None => {
            report.error(
                &(0..0),
                "interface",
                "missing [interface] table",
                "add [interface] with private_key (or private_key_file) and address",
            );
            InterfaceParts::default()
        }
    };
    let mut peers = Vec::new();
    let mut infos = Vec::new();
    for (index, raw) in raw.peers.into_iter().enumerate() {
        let (peer, info) = peer(raw, index, parts.public_key.as_ref(), report);
        peers.extend(peer);
        infos.push(info);
    }
    let peers_ok = peers.len() == infos.len();
    check_peers_together(&infos, report);
    let own = parts.addresses.as_deref();
    let forwards = services::forwards(raw.forwards, &infos, own.unwrap_or_default(), report);
    let exposes = services::exposes(raw.exposes, own, report);
    let metrics = raw.metrics.map(|m| services::metrics(m, report));
    if !report.errors.is_empty() || !peers_ok {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        interface: parts.interface?,
        peers,
        forwards,
        exposes,
        metrics: match metrics {
            None => None,
            Some(m) => Some(m?),
        },
    })
}

/// Names for messages: `peer1`, `web`… limited to a safe set so they can go in logs and
/// `pinhole status` columns without quoting.
pub(crate) fn check_name(report: &mut Report<'_>, name: &Sp<String>, key: &str) -> bool {
    let n = &name.value;
    let ok = !n.is_empty()
        && n.len() <= 32
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        report.error(
            &name.span,
            key,
            format!("name {n:?} must be 1 to 32 letters, digits, '.', '_' or '-'"),
            "choose a short name such as \"web\" or \"home-ssh\"",
        );
    }
    ok
}

/// An integer key that must fit a `u16`.
pub(crate) fn u16_field(
    report: &mut Report<'_>,
    v: &Sp<i64>,
    key: &str,
    what: &str,
    fix: &str,
) -> Option<u16> {
    match u16::try_from(v.value) {
        Ok(n) => Some(n),
        Err(_) => {
            report.error(&v.span, key, format!("{} is not {what}", v.value), fix);
            None
        }
    }
}

/// What `[interface]` yielded: the whole of it when all is well, and otherwise the parts that
/// were good, so peers and exposes can still be checked against them in the same pass.
#[derive(Default)]
struct InterfaceParts {
    interface: Option<Interface>,
    public_key: Option<PublicKey>,
    addresses: Option<Vec<Cidr>>,
}

fn interface(raw: RawInterface, config_path: &Path, report: &mut Report<'_>) -> InterfaceParts {
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
    let public_key = private_key.as_ref().map(PrivateKey::public_key);
    let interface = match (
        private_key,
        listen_port,
        addresses.clone(),
        mtu,
        control_socket,
        uapi_socket,
    ) {
        (
            Some(private_key),
            Some(listen_port),
            Some(addresses),
            Some(mtu),
            Some(control_socket),
            Some(uapi_socket),
        ) if !bad_bool => Some(Interface {
            private_key,
            listen_port,
            addresses,
            mtu,
            route_between_peers: route_between_peers.unwrap_or(false),
            control_socket,
            uapi_socket,
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
    let given = PathBuf::from(&v.value);
    let path = if given.is_absolute() {
        given
    } else {
        config_path.parent().unwrap_or(Path::new("")).join(given)
    };
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
    let given = PathBuf::from(&f.value);
    let path = if given.is_absolute() {
        given
    } else {
        config_path.parent().unwrap_or(Path::new("")).join(given)
    };
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

/// What is known of one `[[peer]]` even when some of its keys are wrong, so checks across
/// peers and forwards still run (and report) in the same pass.
pub(crate) struct PeerInfo {
    /// The peer's name (given or default).
    pub name: String,
    name_span: Span,
    public_key: Option<(PublicKey, Span)>,
    /// The allowed_ips that parsed, host bits cleared, with where each was written.
    pub allowed_ips: Vec<(Cidr, Span)>,
}

fn peer(
    raw: RawPeer,
    index: usize,
    own: Option<&PublicKey>,
    report: &mut Report<'_>,
) -> (Option<Peer>, PeerInfo) {
    let p = |k: &str| format!("peer[{index}].{k}");
    let span = raw.span.clone();
    let name_sp = raw.name.ok().unwrap_or(Sp {
        value: format!("peer{}", index + 1),
        span: span.clone(),
    });
    let name_ok = check_name(report, &name_sp, &p("name"));
    let public_key = raw
        .public_key
        .required(report, &span, &p("public_key"), "add public_key = \"<the peer's `pinhole pubkey` output>\"")
        .and_then(|k| {
            let parsed = k.value.trim().parse::<PublicKey>();
            match parsed {
                Ok(key) if Some(&key) == own => {
                    report.error(
                        &k.span,
                        &p("public_key"),
                        "this is our own public key (from [interface])",
                        "use the other peer's public key: run `pinhole pubkey < its.key` there",
                    );
                    None
                }
                Ok(key) => Some((key, k.span)),
                Err(e) => {
                    report.error(&k.span, &p("public_key"), format!("not a public key: {e}"), "paste the 44-character output of `pinhole pubkey` (or `wg pubkey`) run on that peer");
                    None
                }
            }
        });
    let preshared_key = match raw.preshared_key.ok() {
        None => Some(None),
        Some(k) => match PresharedKey::from_base64(k.value.trim()) {
            Ok(key) => Some(Some(key)),
            Err(e) => {
                report.error(
                    &k.span,
                    &p("preshared_key"),
                    format!("not a preshared key: {e}"),
                    "use the output of `wg genpsk`, the same on both peers",
                );
                None
            }
        },
    };
    let allowed = raw
        .allowed_ips
        .required(
            report,
            &span,
            &p("allowed_ips"),
            "add the peer's overlay address, e.g. allowed_ips = [\"10.77.0.2/32\"]",
        )
        .and_then(|list| allowed_ips(list, &p("allowed_ips"), report));
    let endpoint = match raw.endpoint.ok() {
        None => Some(None),
        Some(e) => match e.value.parse::<Endpoint>() {
            Ok(ep) => Some(Some(ep)),
            Err(err) => {
                report.error(
                    &e.span,
                    &p("endpoint"),
                    err.to_string(),
                    endpoint_fix(&err, "relay.example.com:51820"),
                );
                None
            }
        },
    };
    let keepalive = match raw.persistent_keepalive.ok() {
        None => Some(None),
        Some(v) => u16_field(
            report,
            &v,
            &p("persistent_keepalive"),
            "a number of seconds (0 to 65535)",
            "use 25 behind NAT, or 0 to turn it off",
        )
        .map(|s| (s != 0).then_some(s)),
    };
    let (allowed_ips, allowed_ok) = allowed.unwrap_or_default();
    let info = PeerInfo {
        name: name_sp.value.clone(),
        name_span: name_sp.span,
        public_key: public_key.clone(),
        allowed_ips: allowed_ips.clone(),
    };
    let peer = (|| {
        if !name_ok || !allowed_ok {
            return None;
        }
        Some(Peer {
            name: name_sp.value,
            public_key: public_key?.0,
            preshared_key: preshared_key?,
            allowed_ips: allowed_ips.into_iter().map(|(c, _)| c).collect(),
            endpoint: endpoint?,
            persistent_keepalive: keepalive?,
        })
    })();
    (peer, info)
}

/// Suggestions for `host:port` mistakes.
pub(crate) fn endpoint_fix(err: &EndpointError, example: &str) -> String {
    match err {
        EndpointError::MissingPort(text) => format!(
            "add the port, e.g. \"{text}:{}\"",
            example.rsplit(':').next().unwrap_or("80")
        ),
        EndpointError::BadPort(_) => "use a port from 1 to 65535".to_string(),
        EndpointError::BadHost(_) => format!("use an IP address or a DNS name, e.g. \"{example}\""),
        EndpointError::Ipv6NeedsBrackets => "write \"[fd00::1]:51820\"".to_string(),
    }
}

/// The prefixes that parsed (with their spans), and whether all did.
fn allowed_ips(
    list: Sp<Vec<Sp<String>>>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<(Vec<(Cidr, Span)>, bool)> {
    if list.value.is_empty() {
        report.error(
            &list.span,
            key,
            "no allowed_ips: this peer could send and receive nothing",
            "add the peer's overlay address, e.g. [\"10.77.0.2/32\"]",
        );
        return None;
    }
    let mut cidrs = Vec::new();
    let mut ok = true;
    for item in list.value {
        match item.value.parse::<Cidr>() {
            Ok(c) => {
                let net = c.to_network();
                if net != c {
                    report.warn(
                        &item.span,
                        key,
                        format!("{c} has host bits set and means {net}"),
                        format!(
                            "write \"{net}\", or \"{}/{}\" for the single address",
                            c.addr(),
                            if c.addr().is_ipv4() { 32 } else { 128 }
                        ),
                    );
                }
                cidrs.push((net, item.span));
            }
            Err(e) => {
                report.error(
                    &item.span,
                    key,
                    e.to_string(),
                    "write a prefix such as \"10.77.0.2/32\" or \"fd77::2/128\"",
                );
                ok = false;
            }
        }
    }
    Some((cidrs, ok))
}

/// Checks between peers: unique names, unique keys, no two peers claiming the same IPs
/// (WireGuard would silently give the address to whichever peer was configured last).
fn check_peers_together(peers: &[PeerInfo], report: &mut Report<'_>) {
    for (j, b) in peers.iter().enumerate() {
        for a in peers.iter().take(j) {
            if a.name == b.name {
                report.error(&b.name_span, &format!("peer[{j}].name"), format!("peer name {:?} is used twice", b.name), "give each peer its own name (a peer without a name is called peer1, peer2… by its position)");
            }
            if let (Some((ka, _)), Some((kb, kb_span))) = (&a.public_key, &b.public_key) {
                if ka == kb {
                    report.error(
                        kb_span,
                        &format!("peer[{j}].public_key"),
                        format!(
                            "peers {:?} and {:?} have the same public key",
                            a.name, b.name
                        ),
                        "a peer is its key: merge the two [[peer]] entries",
                    );
                }
            }
            for (cb, span) in &b.allowed_ips {
                if let Some((ca, _)) = a.allowed_ips.iter().find(|(ca, _)| ca.overlaps(cb)) {
                    report.error(
                        span,
                        &format!("peer[{j}].allowed_ips"),
                        format!("{cb} of peer {:?} overlaps {ca} of peer {:?}", b.name, a.name),
                        "give each peer its own addresses; an address must route to exactly one peer",
                    );
                }
            }
        }
    }
}
