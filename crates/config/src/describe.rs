//! The human summary `pinhole check` prints: what this config would do, and nothing secret.

use std::fmt::Write as _;

use crate::{duration, Access, Config, ExposeTarget, Protocol, Rate};

/// Renders `config` as aligned text; private and preshared keys and SOCKS passwords never
/// appear (only whether a preshared key is set, and the SOCKS username).
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
    let _ = writeln!(s, "  netstack       {}", i.netstack);
    if i.netstack == crate::Netstack::Userspace {
        let _ = writeln!(
            s,
            "  max conns      {} (all forwards and exposes)",
            i.max_connections
        );
    }
    let _ = writeln!(
        s,
        "  peer routing   {}",
        if i.route_between_peers { "on" } else { "off" }
    );
    if let Some(p) = &i.control_socket {
        let _ = writeln!(s, "  control socket {}", p.display());
    }
    if let Some(p) = &i.uapi_socket {
        let _ = writeln!(s, "  uapi socket    {}", p.display());
    }
    if let Some(m) = &config.metrics {
        let _ = writeln!(s, "  metrics        {}", m.listen);
    }
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
        // A kernel NAT forward has none of Pinhole's limits or PROXY settings (load refuses them).
        let mut limits = if f.kernel_nat {
            "kernel NAT".to_string()
        } else {
            limits(
                f.protocol,
                f.connect_timeout,
                f.idle_timeout,
                f.max_connections,
                f.max_sessions,
                f.rate_limit,
            )
        };
        if let Some(v) = f.proxy_protocol {
            limits.push_str(&format!(", proxy protocol {v}"));
        }
        if f.accept_proxy_protocol {
            limits.push_str(", reads proxy protocol");
        }
        let _ = writeln!(
            s,
            "  {:<width$}  {} {} -> {} via peer {peer}  ({limits})",
            f.name,
            f.protocol,
            f.show_listen(),
            f.show_to(),
        );
        access(&mut s, width, &f.access);
    }
    if !config.exposes.is_empty() {
        let _ = writeln!(s, "exposes");
    }
    for e in &config.exposes {
        let limits = if e.kernel_nat {
            "kernel NAT".to_string()
        } else {
            limits(
                e.protocol,
                e.connect_timeout,
                e.idle_timeout,
                e.max_connections,
                e.max_sessions,
                e.rate_limit,
            )
        };
        let _ = writeln!(
            s,
            "  {:<width$}  {} {} -> {}  ({limits})",
            e.name,
            e.protocol,
            e.show_listen(),
            e.show_to(),
        );
        access(&mut s, width, &e.access);
        if let ExposeTarget::Socks(socks) = &e.to {
            let auth = socks
                .auth
                .as_ref()
                .map_or_else(|| "none".to_string(), |a| format!("user {:?}", a.username));
            let _ = writeln!(s, "  {:<width$}  socks login {auth}", "");
            list(
                &mut s,
                width,
                "allow destinations",
                &socks.allow_destinations,
            );
            list(&mut s, width, "deny destinations", &socks.deny_destinations);
        }
    }
    s
}

/// The parenthesised limits: what applies to the protocol, and nothing that does not.
fn limits(
    protocol: Protocol,
    connect: std::time::Duration,
    idle: std::time::Duration,
    max_connections: usize,
    max_sessions: usize,
    rate: Option<Rate>,
) -> String {
    let mut out = match protocol {
        Protocol::Tcp => format!(
            "connect {}, idle {}, max {max_connections}",
            duration::format(connect),
            duration::format(idle)
        ),
        Protocol::Udp => format!(
            "idle {}, max {max_sessions} sessions",
            duration::format(idle)
        ),
    };
    if let Some(r) = rate {
        out.push_str(&format!(", rate {r} per client"));
    }
    out
}

fn access(s: &mut String, width: usize, a: &Access) {
    list(s, width, "allow from", &a.allow);
    list(s, width, "deny from", &a.deny);
}

fn list<T: std::fmt::Display>(s: &mut String, width: usize, label: &str, items: &[T]) {
    if !items.is_empty() {
        let items: Vec<String> = items.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "  {:<width$}  {label} {}", "", items.join(", "));
    }
}
