//! Step two of loading: raw tables to typed values. `[interface]` is checked in `interface`,
//! `[[peer]]` in `peers`, `[[forward]]`, `[[expose]]` and `[metrics]` in `services`; this
//! module puts them together and holds the checks they share (names, small integers,
//! `host:port` fixes, paths relative to the config file).
//!
//! Defaults are filled here, in one place. Every check records its problem and carries on, so
//! one run reports everything; a typed [`Config`] is produced only when nothing was wrong.

use std::path::{Path, PathBuf};

use crate::error::Report;
use crate::interface::{interface, InterfaceParts};
use crate::peers::{check_peers_together, peer};
use crate::raw::{RawConfig, Sp};
use crate::{services, Config, EndpointError};

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
    let tun = parts
        .interface
        .as_ref()
        .map(|i| matches!(i.netstack, crate::Netstack::Tun { .. }));
    let forwards = services::forwards(raw.forwards, &infos, own.unwrap_or_default(), tun, report);
    let exposes = services::exposes(raw.exposes, own, tun, report);
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

/// `given` as written in the config, a relative path taken from the config file's directory.
pub(crate) fn relative_to_config(config_path: &Path, given: &str) -> PathBuf {
    let given = PathBuf::from(given);
    if given.is_absolute() {
        given
    } else {
        config_path.parent().unwrap_or(Path::new("")).join(given)
    }
}
