//! Pinhole TOML → wg-quick `.conf`, in the subset of keys every stock WireGuard app accepts.

use std::fmt::Write as _;
use std::path::Path;

use pinhole_config::{Config, DEFAULT_MTU};
use toml_edit::{DocumentMut, Item, Table};

use crate::text::{compact, compact_pairs, toml_key};
use crate::ProvisionError;

/// Marks a comment line that carries a Pinhole setting wg-quick cannot express. Every stock
/// parser ignores it; [`crate::import_wg`] reads it back.
pub(crate) const PINHOLE_MARK: &str = "# pinhole:";

/// `[interface]` keys that the exported `[Interface]` already expresses.
pub(crate) const INTERFACE_KEYS: &[&str] = &[
    "private_key",
    "private_key_file",
    "listen_port",
    "address",
    "mtu",
];
/// `[[peer]]` keys that the exported `[Peer]` already expresses.
pub(crate) const PEER_KEYS: &[&str] = &[
    "public_key",
    "preshared_key",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
];

/// One wg-quick file, ready to render: only the portable keys exist here.
#[derive(Default)]
pub(crate) struct WgConf {
    /// Comment lines (without `# `) at the top.
    pub header: Vec<String>,
    /// Whole lines (already commented) before `[Interface]`.
    pub top_extras: Vec<String>,
    pub private_key: String,
    pub addresses: Vec<String>,
    pub listen_port: Option<u16>,
    pub mtu: Option<u16>,
    /// Whole lines (already commented) at the end of `[Interface]`.
    pub interface_extras: Vec<String>,
    pub peers: Vec<WgPeer>,
}

/// One `[Peer]`.
#[derive(Default)]
pub(crate) struct WgPeer {
    /// Whole lines (already commented) just after `[Peer]`, so they belong to this peer.
    pub extras: Vec<String>,
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub allowed_ips: Vec<String>,
    pub endpoint: Option<String>,
    /// When there is no endpoint: a comment line telling what to fill in.
    pub endpoint_hint: Option<String>,
    pub keepalive: Option<u16>,
}

impl WgConf {
    /// The `.conf` text: canonical key casing, one line per key, comma lists.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        for h in &self.header {
            let _ = writeln!(s, "# {h}");
        }
        for l in &self.top_extras {
            let _ = writeln!(s, "{l}");
        }
        s.push_str("[Interface]\n");
        let _ = writeln!(s, "PrivateKey = {}", self.private_key);
        if !self.addresses.is_empty() {
            let _ = writeln!(s, "Address = {}", self.addresses.join(", "));
        }
        if let Some(p) = self.listen_port {
            let _ = writeln!(s, "ListenPort = {p}");
        }
        if let Some(m) = self.mtu {
            let _ = writeln!(s, "MTU = {m}");
        }
        for l in &self.interface_extras {
            let _ = writeln!(s, "{l}");
        }
        for p in &self.peers {
            s.push_str("\n[Peer]\n");
            for l in &p.extras {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "PublicKey = {}", p.public_key);
            if let Some(k) = &p.preshared_key {
                let _ = writeln!(s, "PresharedKey = {k}");
            }
            let _ = writeln!(s, "AllowedIPs = {}", p.allowed_ips.join(", "));
            match (&p.endpoint, &p.endpoint_hint) {
                (Some(e), _) => {
                    let _ = writeln!(s, "Endpoint = {e}");
                }
                (None, Some(h)) => {
                    let _ = writeln!(s, "{h}");
                }
                (None, None) => {}
            }
            if let Some(k) = p.keepalive {
                let _ = writeln!(s, "PersistentKeepalive = {k}");
            }
        }
        s
    }
}

/// Converts a Pinhole config to a wg-quick `.conf` that the Linux tools and the Android,
/// Apple and Windows apps all import: `[Interface]` PrivateKey, Address, MTU, ListenPort and
/// `[Peer]` PublicKey, PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive, nothing else.
///
/// `config_toml` must be a valid config (`path` names it in messages and anchors a relative
/// `private_key_file`, whose key is written inline). What wg-quick cannot express (peer names,
/// forwards, exposes, any other Pinhole setting) is kept as `# pinhole: …` comment lines,
/// which stock parsers ignore and [`crate::import_wg`] reads back.
pub fn export_wg(config_toml: &str, path: &Path) -> Result<String, ProvisionError> {
    let config = Config::parse(config_toml, path)
        .map_err(|source| ProvisionError::InvalidConfig {
            path: path.to_path_buf(),
            source,
        })?
        .config;
    // The raw document, for the settings beyond the portable subset; it parsed just above.
    let doc: DocumentMut =
        config_toml
            .parse()
            .map_err(|e: toml_edit::TomlError| ProvisionError::Options {
                message: format!("{}: {}", path.display(), e.message()),
                fix: format!("check it with `pinhole check -c {}`", path.display()),
            })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut wg = WgConf {
        header: vec![
            format!("wg-quick config exported from {name} by `pinhole export --wg`."),
            "It holds a private key: keep it secret (chmod 600).".into(),
        ],
        private_key: config.interface.private_key.to_base64(),
        addresses: config
            .interface
            .addresses
            .iter()
            .map(|a| a.to_string())
            .collect(),
        listen_port: config.interface.listen_port,
        mtu: (config.interface.mtu != DEFAULT_MTU).then_some(config.interface.mtu),
        ..WgConf::default()
    };
    if let Some(iface) = doc.get("interface").and_then(Item::as_table_like) {
        wg.interface_extras = extras(iface.iter(), INTERFACE_KEYS);
    }
    let raw_peers = tables(doc.get("peer"));
    for (i, p) in config.peers.iter().enumerate() {
        let mut extras_here = raw_peers
            .get(i)
            .map(|t| extras(t.iter(), PEER_KEYS))
            .unwrap_or_default();
        // Keep the name even when it was defaulted, so names survive a round trip.
        if !extras_here
            .iter()
            .any(|l| l.starts_with(&format!("{PINHOLE_MARK} name =")))
        {
            extras_here.insert(
                0,
                format!("{PINHOLE_MARK} name = {}", crate::text::toml_str(&p.name)),
            );
        }
        wg.peers.push(WgPeer {
            extras: extras_here,
            public_key: p.public_key.to_base64(),
            preshared_key: p.preshared_key.as_ref().map(|k| k.to_base64()),
            allowed_ips: p.allowed_ips.iter().map(|a| a.to_string()).collect(),
            endpoint: p.endpoint.as_ref().map(|e| e.to_string()),
            endpoint_hint: None,
            keepalive: p.persistent_keepalive,
        });
    }
    // Everything else at the top level: forwards, exposes, and any other section.
    for (key, item) in doc.iter() {
        if key == "interface" || key == "peer" {
            continue;
        }
        let k = toml_key(key);
        match item {
            Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    wg.top_extras
                        .push(format!("{PINHOLE_MARK} [[{k}]] {}", pairs(t)));
                }
            }
            Item::Table(t) => wg
                .top_extras
                .push(format!("{PINHOLE_MARK} [{k}] {}", pairs(t))),
            Item::Value(toml_edit::Value::Array(a))
                if a.iter().all(|v| v.as_inline_table().is_some()) =>
            {
                for v in a.iter().filter_map(|v| v.as_inline_table()) {
                    let body = compact_pairs(v.iter());
                    wg.top_extras.push(format!("{PINHOLE_MARK} [[{k}]] {body}"));
                }
            }
            Item::Value(v) => wg
                .top_extras
                .push(format!("{PINHOLE_MARK} {k} = {}", compact(v))),
            Item::None => {}
        }
    }
    if !wg.top_extras.is_empty() {
        wg.header.push(
            "Lines starting with `# pinhole:` are Pinhole settings wg-quick cannot express \
             (ignored by WireGuard apps)."
                .into(),
        );
    }
    Ok(wg.render())
}

/// The tables of an array of tables, or of an inline array of inline tables.
fn tables(item: Option<&Item>) -> Vec<Table> {
    match item {
        Some(Item::ArrayOfTables(a)) => a.iter().cloned().collect(),
        Some(Item::Value(toml_edit::Value::Array(a))) => a
            .iter()
            .filter_map(|v| v.as_inline_table().map(|t| t.clone().into_table()))
            .collect(),
        _ => Vec::new(),
    }
}

/// `k = v, …` for a whole table (nested tables written inline).
fn pairs(t: &Table) -> String {
    let mut parts = Vec::new();
    for (k, item) in t.iter() {
        let v = match item {
            Item::Value(v) => compact(v),
            Item::Table(inner) => format!("{{ {} }}", pairs(inner)),
            Item::ArrayOfTables(a) => {
                let inner: Vec<String> = a.iter().map(|t| format!("{{ {} }}", pairs(t))).collect();
                format!("[{}]", inner.join(", "))
            }
            Item::None => continue,
        };
        parts.push(format!("{} = {v}", toml_key(k)));
    }
    parts.join(", ")
}

/// One `# pinhole: key = value` line per key not in `known`.
fn extras<'a>(items: impl Iterator<Item = (&'a str, &'a Item)>, known: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, item) in items {
        if known.contains(&k) {
            continue;
        }
        let v = match item {
            Item::Value(v) => compact(v),
            Item::Table(t) => format!("{{ {} }}", pairs(t)),
            _ => continue,
        };
        out.push(format!("{PINHOLE_MARK} {} = {v}", toml_key(k)));
    }
    out
}

#[cfg(test)]
#[path = "wg_tests.rs"]
mod tests;
