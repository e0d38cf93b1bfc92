//! `pinhole add-peer`: one more peer for a relay, appended without touching the rest.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use pinhole_config::keys::{PresharedKey, PrivateKey};
use pinhole_config::{Cidr, Config, Endpoint};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use crate::alloc::next_free_address;
use crate::files::replace_atomically;
use crate::text::{is_valid_name, toml_str};
use crate::wg_export::{WgConf, WgPeer, PINHOLE_MARK};
use crate::{ProvisionError, KEEPALIVE_SECS};

/// What `pinhole add-peer` was asked for.
#[derive(Debug, Clone)]
pub struct AddPeerOptions {
    /// `--name`: 1 to 32 letters, digits, `.`, `_`, `-`; unique among the relay's peers.
    pub name: String,
    /// The relay's public `host:port`, which its own config does not know. `None` writes a
    /// placeholder comment telling the user what to fill in.
    pub endpoint: Option<Endpoint>,
    /// Also make a preshared key for this pair (in both configs).
    pub preshared_key: bool,
}

/// The result of [`add_peer`].
#[derive(Debug, Clone)]
pub struct AddedPeer {
    /// The relay config with the new `[[peer]]` added; every other byte is as it was.
    pub relay_toml: String,
    /// The new peer's config as Pinhole TOML.
    pub peer_toml: String,
    /// The new peer's config as a wg-quick `.conf` that any WireGuard app imports.
    pub peer_wg: String,
    /// The new peer's interface address: its IP with the overlay subnet's prefix
    /// (`10.77.0.3/24`); the relay routes `ADDR/32` (or `/128`) to it.
    pub address: Cidr,
}

/// Adds a peer to the relay config `relay_toml` (read from `relay_path`, which names it in
/// messages): a fresh key pair, the lowest free address of the relay's overlay subnet (the
/// prefix of its first `[interface] address`, skipping the relay's own addresses and every
/// peer's `allowed_ips`), and a `[[peer]]` appended with toml_edit after the last peer, so every
/// comment and the layout of the rest of the file are kept. The relay config must load;
/// its problems are reported otherwise.
pub fn add_peer(
    relay_toml: &str,
    relay_path: &Path,
    opts: &AddPeerOptions,
) -> Result<AddedPeer, ProvisionError> {
    let relay = Config::parse(relay_toml, relay_path)
        .map_err(|source| ProvisionError::InvalidConfig {
            path: relay_path.to_path_buf(),
            source,
        })?
        .config;
    let name = opts.name.as_str();
    if !is_valid_name(name) {
        return Err(ProvisionError::Options {
            message: format!("peer name {name:?} is not valid"),
            fix: "use 1 to 32 letters, digits, `.`, `_` or `-`, e.g. phone or laptop-2".into(),
        });
    }
    if relay.peers.iter().any(|p| p.name == name) {
        return Err(ProvisionError::DuplicatePeer {
            path: relay_path.to_path_buf(),
            name: name.to_string(),
        });
    }
    let subnet = relay.interface.addresses[0];
    let mut used: Vec<Cidr> = relay
        .interface
        .addresses
        .iter()
        .map(|a| host(a.addr()))
        .collect();
    used.extend(
        relay
            .peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied()),
    );
    let ip = next_free_address(subnet, &used).ok_or_else(|| ProvisionError::SubnetFull {
        path: relay_path.to_path_buf(),
        subnet: subnet.to_string(),
    })?;
    let address = Cidr::new(ip, subnet.prefix()).expect("the subnet's prefix fits its family");
    let key = PrivateKey::generate();
    let psk = opts.preshared_key.then(PresharedKey::generate);

    let mut doc: DocumentMut =
        relay_toml
            .parse()
            .map_err(|e: toml_edit::TomlError| ProvisionError::Options {
                message: format!("{}: {}", relay_path.display(), e.message()),
                fix: format!("check it with `pinhole check -c {}`", relay_path.display()),
            })?;
    let mut entry = Table::new();
    entry
        .decor_mut()
        .set_prefix(format!("\n# {name}: added by `pinhole add-peer`.\n"));
    entry.insert("name", value(name));
    entry.insert("public_key", value(key.public_key().to_base64()));
    let mut ips = Array::new();
    ips.push(host(ip).to_string());
    entry.insert("allowed_ips", value(ips));
    if let Some(k) = &psk {
        entry.insert("preshared_key", value(k.to_base64()));
    }
    match doc.get_mut("peer") {
        None => {
            let mut a = ArrayOfTables::new();
            a.push(entry);
            doc.insert("peer", Item::ArrayOfTables(a));
        }
        Some(Item::ArrayOfTables(a)) => a.push(entry),
        Some(Item::Value(Value::Array(a))) => {
            let mut t = InlineTable::new();
            for (k, v) in entry.iter() {
                if let Some(v) = v.as_value() {
                    t.insert(k, v.clone());
                }
            }
            a.push(t);
        }
        Some(_) => {
            // Config::parse accepted the file, so `peer` is one of the two forms above.
            return Err(ProvisionError::Options {
                message: format!(
                    "{}: `peer` is neither [[peer]] tables nor a list",
                    relay_path.display()
                ),
                fix: "write peers as [[peer]] tables".into(),
            });
        }
    }
    let new_relay = doc.to_string();
    Config::parse(&new_relay, relay_path).map_err(|source| ProvisionError::Generated {
        what: "relay config",
        source,
    })?;

    let relay_pub = relay.interface.private_key.public_key().to_base64();
    let net = subnet.to_network();
    let port_hint = relay
        .interface
        .listen_port
        .map_or("PORT".to_string(), |p| p.to_string());
    let relay_file = relay_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut toml = String::new();
    let _ = write!(
        toml,
        "\
# Pinhole config for peer {name:?}, made by `pinhole add-peer` on {relay_file}.
# Run it with `pinhole up -c {name}.toml`. It holds this peer's private key: keep it secret.
[interface]
private_key = {priv_q}   # public key: {pub_key}
address = [{addr_q}]

# [[peer]]: the relay. Traffic to the overlay subnet {net} goes through it.
[[peer]]
name = \"relay\"
public_key = {relay_q}
allowed_ips = [{net_q}]
",
        priv_q = toml_str(&key.to_base64()),
        pub_key = key.public_key(),
        addr_q = toml_str(&address.to_string()),
        relay_q = toml_str(&relay_pub),
        net_q = toml_str(&net.to_string()),
    );
    if let Some(k) = &psk {
        let _ = writeln!(toml, "preshared_key = {}", toml_str(&k.to_base64()));
    }
    match &opts.endpoint {
        Some(e) => {
            let _ = writeln!(toml, "endpoint = {}", toml_str(&e.to_string()));
        }
        None => {
            let _ = writeln!(
                toml,
                "# FILL IN: the relay's public host name or IP and its UDP port, then remove the \
                 leading '#':\n# endpoint = \"your.relay.example:{port_hint}\""
            );
        }
    }
    let _ = writeln!(
        toml,
        "persistent_keepalive = {KEEPALIVE_SECS}   # keeps NAT mappings open"
    );
    Config::parse(&toml, Path::new("new peer config")).map_err(|source| {
        ProvisionError::Generated {
            what: "peer config",
            source,
        }
    })?;

    let wg = WgConf {
        header: vec![format!(
            "WireGuard config for {name:?}, made by `pinhole add-peer`. Keep it secret."
        )],
        private_key: key.to_base64(),
        addresses: vec![address.to_string()],
        peers: vec![WgPeer {
            extras: vec![format!("{PINHOLE_MARK} name = \"relay\"")],
            public_key: relay_pub,
            preshared_key: psk.as_ref().map(|k| k.to_base64()),
            allowed_ips: vec![net.to_string()],
            endpoint: opts.endpoint.as_ref().map(|e| e.to_string()),
            endpoint_hint: Some(format!(
                "# FILL IN, then remove the leading '#': the relay's public address\n\
                 # Endpoint = your.relay.example:{port_hint}"
            )),
            keepalive: Some(KEEPALIVE_SECS),
        }],
        ..WgConf::default()
    };
    Ok(AddedPeer {
        relay_toml: new_relay,
        peer_toml: toml,
        peer_wg: wg.render(),
        address,
    })
}

/// Adds a peer to the relay config file at `path` in place: reads it, runs [`add_peer`], and
/// replaces the file atomically (a temporary file in the same directory with the original's
/// owner, group and mode, renamed over it). On any error the file is unchanged.
pub fn add_peer_to_file(path: &Path, opts: &AddPeerOptions) -> Result<AddedPeer, ProvisionError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProvisionError::io("read", path, e))?;
    let added = add_peer(&text, path, opts)?;
    replace_atomically(path, &added.relay_toml)?;
    Ok(added)
}

/// The single-address prefix of `ip`: /32 or /128.
fn host(ip: IpAddr) -> Cidr {
    Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("a host prefix is valid")
}

#[cfg(test)]
#[path = "add_peer_tests.rs"]
mod tests;
