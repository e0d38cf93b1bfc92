//! The human summary `pinhole check` prints: what this config would do, and nothing secret.

use std::fmt::Write as _;

use crate::{duration, Config};

/// Renders `config` as aligned text; private and preshared keys never appear (only whether a
/// preshared key is set).
pub(crate) fn describe(config: &Config) -> String {
    let mut s = String::new();
    let i = &config.interface;
    let addresses: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
    let _ = writeln!(s, "interface");
    let _ = writeln!(s, "  public key     {}", i.private_key.public_key());
    let _ = writeln!(
        s,
        "  listen port    {}",
        i.listen_port
            .map_or_else(|| "random".to_string(), |p| p.to_string())
    );
    let _ = writeln!(s, "  addresses      {}", addresses.join(", "));
    let _ = writeln!(s, "  mtu            {}", i.mtu);
    for p in &config.peers {
        let allowed: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "peer {}", p.name);
        let _ = writeln!(s, "  public key     {}", p.public_key);
        let _ = writeln!(s, "  allowed ips    {}", allowed.join(", "));
        let _ = writeln!(
            s,
            "  endpoint       {}",
            p.endpoint.as_ref().map_or_else(
                || "none (waits for the peer to connect)".to_string(),
                ToString::to_string
            )
        );
        let _ = writeln!(
            s,
            "  keepalive      {}",
            p.persistent_keepalive
                .map_or_else(|| "off".to_string(), |k| format!("{k}s"))
        );
        let _ = writeln!(
            s,
            "  preshared key  {}",
            if p.preshared_key.is_some() {
                "yes"
            } else {
                "no"
            }
        );
    }
    let width = config
        .forwards
        .iter()
        .map(|f| f.name.len())
        .chain(config.exposes.iter().map(|e| e.name.len()))
        .max()
        .unwrap_or(0);
    if !config.forwards.is_empty() {
        let _ = writeln!(s, "forwards");
    }
    for f in &config.forwards {
        let peer = config.peers.get(f.peer).map_or("?", |p| p.name.as_str());
        let _ = writeln!(
            s,
            "  {:<width$}  {} {} -> {} via peer {peer}  (connect {}, idle {}, max {})",
            f.name,
            f.protocol,
            f.listen,
            f.to,
            duration::format(f.connect_timeout),
            duration::format(f.idle_timeout),
            f.max_connections,
        );
    }
    if !config.exposes.is_empty() {
        let _ = writeln!(s, "exposes");
    }
    for e in &config.exposes {
        let _ = writeln!(
            s,
            "  {:<width$}  {} {} -> {}  (connect {}, idle {}, max {})",
            e.name,
            e.protocol,
            e.listen,
            e.to,
            duration::format(e.connect_timeout),
            duration::format(e.idle_timeout),
            e.max_connections,
        );
    }
    s
}
