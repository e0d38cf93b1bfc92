//! What the config asks of the engine and the IP side, built: the WireGuard engine's peer
//! list (endpoints resolved), and the embedded stack or the TUN device with its routes.

use std::net::IpAddr;

use anyhow::{Context, Result};
use pinhole_config::{Config, Netstack};
use pinhole_netstack::StackConfig;
use pinhole_tun::{Tun, TunConfig};
use pinhole_wg::{PeerConfig, WgConfig};

use crate::node::IpSide;
use crate::overlay::Net;

/// The IP side `[interface] netstack` asks for, and the services' view of it. A TUN device
/// is created here, up with its addresses, MTU and routes when this returns; without
/// CAP_NET_ADMIN this fails with pinhole-tun's message, which says how to grant it.
pub(super) fn ip_side(config: &Config) -> Result<(IpSide, Net, Option<String>)> {
    let i = &config.interface;
    let addresses: Vec<_> = i.addresses.iter().map(|c| (c.addr(), c.prefix())).collect();
    match &i.netstack {
        Netstack::Userspace => {
            let (stack, overlay) = pinhole_netstack::new(stack_config(config, addresses));
            Ok((stack.into(), Net::Userspace(overlay), None))
        }
        Netstack::Tun { name } => {
            let tun = Tun::create(&TunConfig {
                name: name.clone(),
                addresses,
                mtu: i.mtu,
                routes: tun_routes(config),
            })
            .with_context(|| {
                format!(
                    "[interface] netstack = \"tun\" in {}",
                    config.path.display()
                )
            })?;
            tracing::info!(device = tun.name(), mtu = i.mtu, "TUN device up");
            let device = tun.name().to_string();
            Ok((IpSide::tun(tun, i.mtu), Net::Kernel, Some(device)))
        }
    }
}

/// The userspace stack's settings: `[interface]`'s addresses, MTU and connection cap; buffer
/// sizes are the stack's defaults.
fn stack_config(config: &Config, addresses: Vec<(IpAddr, u8)>) -> StackConfig {
    let i = &config.interface;
    let mut stack = StackConfig::new(addresses, usize::from(i.mtu));
    stack.max_connections = i.max_connections;
    stack
}

/// Routes into the TUN device: every peer's allowed_ips (pinhole-tun skips those inside an
/// address prefix). A catch-all (`/0`) is skipped with a warning: it would route the
/// tunnel's own UDP into the tunnel.
fn tun_routes(config: &Config) -> Vec<(IpAddr, u8)> {
    let mut routes = Vec::new();
    for p in &config.peers {
        for c in &p.allowed_ips {
            if c.prefix() == 0 {
                tracing::warn!(
                    peer = %p.name,
                    "allowed_ips {c}: no route added to the TUN device (a catch-all route would \
                     send the tunnel's own packets into the tunnel); traffic to it from this host \
                     does not enter the tunnel unless you route it yourself"
                );
                continue;
            }
            routes.push((c.addr(), c.prefix()));
        }
    }
    routes
}

/// Translates the checked config into the engine's terms, resolving endpoint
/// host names now (WireGuard resolves once at start, too).
pub(super) async fn wg_config(config: &Config) -> Result<WgConfig> {
    let mut peers = Vec::with_capacity(config.peers.len());
    for p in &config.peers {
        let endpoint = match &p.endpoint {
            Some(ep) => {
                let ep = ep.clone();
                let shown = ep.to_string();
                let resolved = tokio::task::spawn_blocking(move || ep.resolve())
                    .await
                    .context("resolver task failed")?
                    .with_context(|| {
                        format!("peer {:?}: cannot resolve endpoint {shown}", p.name)
                    })?;
                Some(pinhole_udpio::canonical(resolved))
            }
            None => None,
        };
        peers.push(PeerConfig {
            public_key: *p.public_key.as_bytes(),
            preshared_key: p.preshared_key.as_ref().map(|k| *k.as_bytes()),
            allowed_ips: p
                .allowed_ips
                .iter()
                .map(|c| (c.addr(), c.prefix()))
                .collect(),
            endpoint,
            persistent_keepalive: p.persistent_keepalive,
        });
    }
    let own_addresses: Vec<IpAddr> = config
        .interface
        .addresses
        .iter()
        .map(|c| c.addr())
        .collect();
    Ok(WgConfig {
        private_key: *config.interface.private_key.as_bytes(),
        own_addresses,
        peers,
        route_between_peers: config.interface.route_between_peers,
    })
}

#[cfg(test)]
pub(super) fn test_config(netstack: &str, allowed_ips: &str) -> Config {
    const KEY: &str = "kJu76ItB5eMx/kpPdwx/SWBE9JnWORoU8w8orX7+3HE=";
    const PEER: &str = "pMe7GSRZIfTPEhITGJtPve7EX0hebHAN/1nFnUcEqAU=";
    let text = format!(
        "[interface]\nprivate_key = \"{KEY}\"\naddress = [\"10.77.0.3/32\", \"fd77::3/128\"]\n\
         {netstack}\n[[peer]]\npublic_key = \"{PEER}\"\nallowed_ips = {allowed_ips}\n"
    );
    Config::parse(&text, std::path::Path::new("laptop.toml"))
        .unwrap()
        .config
}

#[cfg(test)]
mod tests {
    use super::test_config as config;
    use super::*;

    #[test]
    fn tun_routes_are_the_peers_allowed_ips_without_catch_alls() {
        let c = config(
            "netstack = \"tun\"",
            "[\"10.77.0.0/24\", \"0.0.0.0/0\", \"::/0\", \"fd77::/64\"]",
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            tun_routes(&c),
            vec![(ip("10.77.0.0"), 24), (ip("fd77::"), 64)]
        );
    }

    #[test]
    fn the_stack_holds_as_many_connections_as_the_config_says() {
        // The config's ceiling is what the stack can hold, so the default is never clamped.
        assert_eq!(
            pinhole_config::MAX_STACK_CONNECTIONS,
            pinhole_netstack::MAX_CONNECTIONS_LIMIT
        );
        let default = config("", "[\"10.77.0.0/24\"]");
        let stack = stack_config(&default, vec![]);
        assert_eq!(stack.max_connections, pinhole_config::MAX_STACK_CONNECTIONS);
        let lowered = config("max_connections = 10000", "[\"10.77.0.0/24\"]");
        assert_eq!(stack_config(&lowered, vec![]).max_connections, 10_000);
    }
}
