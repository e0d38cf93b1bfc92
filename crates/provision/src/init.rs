//! `pinhole init`: a matched relay + home pair of configs with fresh keys.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use pinhole_config::keys::PrivateKey;
use pinhole_config::{Cidr, Config, Endpoint};

use crate::alloc::nth_host;
use crate::files::create_private;
use crate::text::toml_str;
use crate::{ForwardSpec, ProvisionError, KEEPALIVE_SECS};

/// The overlay subnet `init` uses when none is given: the relay is .1, home is .2.
pub const DEFAULT_SUBNET: &str = "10.77.0.0/24";

/// What `pinhole init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// `--endpoint HOST:PORT`: where the world and home reach the relay; the relay listens
    /// for WireGuard on this port.
    pub endpoint: Endpoint,
    /// Each `--forward PUBLIC_PORT:HOST:PORT`.
    pub forwards: Vec<ForwardSpec>,
    /// The overlay subnet; [`DEFAULT_SUBNET`] when `None`.
    pub subnet: Option<Cidr>,
}

/// The two configs `init` makes, as TOML text.
#[derive(Debug, Clone)]
pub struct InitPair {
    /// For the public machine.
    pub relay_toml: String,
    /// For the machine with the services.
    pub home_toml: String,
}

/// Makes a relay and a home config that work together as written: fresh keys, the relay at
/// the subnet's first host listening on the endpoint's port, home at the second host dialing
/// the relay with keepalive, and for each forward a relay `[[forward]]` from
/// `0.0.0.0:PUBLIC_PORT` to `HOME:PUBLIC_PORT` plus the home `[[expose]]` from there to the
/// target. Both texts are checked with [`Config::parse`] before they are returned.
pub fn init(opts: &InitOptions) -> Result<InitPair, ProvisionError> {
    let subnet = match opts.subnet {
        Some(s) => s,
        None => DEFAULT_SUBNET.parse().expect("the default subnet parses"),
    };
    let (relay_ip, home_ip) = match (nth_host(&subnet, 1), nth_host(&subnet, 2)) {
        (Some(r), Some(h)) if usable(r) && usable(h) => (r, h),
        _ => {
            return Err(ProvisionError::Options {
                message: format!("subnet {subnet} has no room for a relay and a home address"),
                fix: format!(
                    "give a private subnet with at least 2 host addresses, e.g. {DEFAULT_SUBNET} \
                     or fd77::/64"
                ),
            })
        }
    };
    let mut seen = HashSet::new();
    for f in &opts.forwards {
        if !seen.insert(f.public_port) {
            return Err(ProvisionError::Options {
                message: format!(
                    "public port {} is given in two --forward options",
                    f.public_port
                ),
                fix: "give each --forward its own public port".into(),
            });
        }
    }

    let relay_key = PrivateKey::generate();
    let home_key = PrivateKey::generate();
    let prefix = subnet.prefix();
    let net = subnet.to_network();
    let relay_addr = format!("{relay_ip}/{prefix}");
    let home_addr = format!("{home_ip}/{prefix}");
    let home_host = Cidr::new(home_ip, if home_ip.is_ipv4() { 32 } else { 128 })
        .expect("a host prefix is valid");
    let port = opts.endpoint.port;

    let mut relay = String::new();
    let r = &mut relay;
    let _ = write!(
        r,
        "\
# Pinhole relay config, made by `pinhole init`.
# Run it on the machine with the public address ({endpoint}):  pinhole up -c relay.toml
# After an edit, `pinhole check -c relay.toml` shows what it will do, or every mistake.
# This file holds the relay's private key: keep it secret (mode 0600).

# [interface]: this peer. Its WireGuard key, the UDP port it listens on and its address
# inside the overlay (the /{prefix} is the overlay subnet that every peer's address is in).
[interface]
private_key = {relay_priv}   # public key: {relay_pub}
listen_port = {port}   # open UDP {port} in this machine's firewall
address = [{relay_addr_q}]

# [[peer]]: the home machine. It dials the relay, so there is no endpoint here.
# allowed_ips is the only address home may use in the overlay.
# Add a phone or laptop with `pinhole add-peer -c relay.toml --name NAME`.
[[peer]]
name = \"home\"
public_key = {home_pub}
allowed_ips = [{home_host_q}]
",
        endpoint = opts.endpoint,
        relay_priv = toml_str(&relay_key.to_base64()),
        relay_pub = relay_key.public_key(),
        relay_addr_q = toml_str(&relay_addr),
        home_pub = toml_str(&home_key.public_key().to_base64()),
        home_host_q = toml_str(&home_host.to_string()),
    );
    if !opts.forwards.is_empty() {
        relay.push_str(
            "
# [[forward]]: each one is a public TCP port of this machine, carried through the tunnel
# to the same port on home's overlay address, where the [[expose]] of the same name in
# home.toml takes it to the service. To add a port, copy a [[forward]] here and its
# [[expose]] in home.toml and change the port in both; to stop one, delete both.
",
        );
    }
    for f in &opts.forwards {
        let p = f.public_port;
        let to = SocketAddr::new(home_ip, p);
        let _ = write!(
            relay,
            "[[forward]]
name = \"port-{p}\"
listen = \"0.0.0.0:{p}\"   # the world connects here: open TCP {p} in the firewall
to = {to_q}   # home; home.toml sends it on to {target}

",
            to_q = toml_str(&to.to_string()),
            target = f.target,
        );
    }

    let mut home = String::new();
    let _ = write!(
        home,
        "\
# Pinhole home config, made by `pinhole init`.
# Run it on the machine with the services; it needs no open inbound port:
#   pinhole up -c home.toml
# After an edit, `pinhole check -c home.toml` shows what it will do, or every mistake.
# This file holds home's private key: keep it secret (mode 0600).

# [interface]: this peer. No listen_port: home only dials out, from any free port.
[interface]
private_key = {home_priv}   # public key: {home_pub}
address = [{home_addr_q}]

# [[peer]]: the relay. Home dials it at `endpoint` and sends a keepalive every
# {KEEPALIVE_SECS} seconds so its NAT keeps the way open for the relay's connections.
[[peer]]
name = \"relay\"
public_key = {relay_pub}
allowed_ips = [{net_q}]   # the overlay subnet is reached through the relay
endpoint = {endpoint_q}
persistent_keepalive = {KEEPALIVE_SECS}
",
        home_priv = toml_str(&home_key.to_base64()),
        home_pub = home_key.public_key(),
        home_addr_q = toml_str(&home_addr),
        relay_pub = toml_str(&relay_key.public_key().to_base64()),
        net_q = toml_str(&net.to_string()),
        endpoint_q = toml_str(&opts.endpoint.to_string()),
    );
    if !opts.forwards.is_empty() {
        home.push_str(
            "
# [[expose]]: each one takes the connections the relay's [[forward]] of the same name sends
# to home's overlay address and port, and connects them to a service (`to`: host:port, a
# host name is fine). Point `to` elsewhere to serve another service on that public port.
",
        );
    }
    for f in &opts.forwards {
        let p = f.public_port;
        let _ = write!(
            home,
            "[[expose]]
name = \"port-{p}\"
listen = {listen_q}   # public port {p} on the relay arrives here
to = {target_q}

",
            listen_q = toml_str(&SocketAddr::new(home_ip, p).to_string()),
            target_q = toml_str(&f.target.to_string()),
        );
    }
    trim_trailing_blank(&mut relay);
    trim_trailing_blank(&mut home);

    for (what, text) in [("relay config", &relay), ("home config", &home)] {
        Config::parse(text, Path::new(what))
            .map_err(|source| ProvisionError::Generated { what, source })?;
    }
    Ok(InitPair {
        relay_toml: relay,
        home_toml: home,
    })
}

/// An address a peer can have: not loopback, multicast, unspecified or in IPv4's "this
/// network" 0.0.0.0/8 (the config refuses most of these anyway, with a message about a file
/// the user never wrote).
fn usable(ip: IpAddr) -> bool {
    let this_network = matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 0);
    !(ip.is_loopback() || ip.is_multicast() || ip.is_unspecified() || this_network)
}

fn trim_trailing_blank(s: &mut String) {
    while s.ends_with("\n\n") {
        s.pop();
    }
}

/// Writes `dir/relay.toml` and `dir/home.toml`, creating `dir` (mode 0700) when needed. Each
/// file is created with mode 0600 from the start. Neither is written when either exists.
pub fn write_init(dir: &Path, pair: &InitPair) -> Result<(), ProvisionError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ProvisionError::io("create directory", dir, e))?;
    let relay = dir.join("relay.toml");
    let home = dir.join("home.toml");
    for p in [&relay, &home] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(ProvisionError::Exists { path: p.clone() });
        }
    }
    create_private(&relay, &pair.relay_toml)?;
    if let Err(e) = create_private(&home, &pair.home_toml) {
        // Leave nothing half-done: the relay file is useless without its home file.
        let _ = std::fs::remove_file(&relay);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
#[path = "init_tests.rs"]
mod tests;
