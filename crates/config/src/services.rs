//! `[[forward]]` and `[[expose]]`: the two directions of one splice, checked against the
//! peers (a forward must reach some peer) and our own addresses (an expose must listen on one).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::{Report, Span};
use crate::raw::{Field, RawDuration, RawService, Sp};
use crate::validate::{check_name, endpoint_fix, PeerInfo};
use crate::{
    duration, Cidr, Endpoint, EndpointError, Expose, Forward, Protocol, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS,
};

/// The keys forwards and exposes share, checked.
struct Common {
    name: Sp<String>,
    protocol: Protocol,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

/// Checks every `[[forward]]`; `peers` holds what is known of every `[[peer]]`, in file order,
/// and `own` our interface addresses (a forward to ourselves would loop).
pub(crate) fn forwards(
    raw: Vec<RawService>,
    peers: &[PeerInfo],
    own: &[Cidr],
    report: &mut Report<'_>,
) -> Vec<Forward> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let path = format!("forward[{i}]");
        let listen = socket_addr(
            report,
            r.listen.clone(),
            &r.span,
            &format!("{path}.listen"),
            true,
            "0.0.0.0:8080",
        );
        let to = socket_addr(
            report,
            r.to.clone(),
            &r.span,
            &format!("{path}.to"),
            false,
            "10.77.0.2:80",
        );
        let common = common(r, &path, report);
        let to = to.filter(|to| {
            let ip = to.value.ip();
            let usable = !(ip.is_unspecified()
                || ip.is_multicast()
                || ip == IpAddr::from([255, 255, 255, 255]));
            let ours = own.iter().any(|c| c.addr() == ip);
            if !usable || ours {
                let why = if ours {
                    "is this peer's own address"
                } else {
                    "is not a peer's address"
                };
                report.error(
                    &to.span,
                    &format!("{path}.to"),
                    format!("{ip} {why}"),
                    "point `to` at another peer's overlay address, e.g. \"10.77.0.2:80\"",
                );
            }
            usable && !ours
        });
        let peer = to.as_ref().and_then(|to| {
            let found = route(peers, to.value.ip());
            if found.is_none() {
                let ip = to.value.ip();
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                report.error(
                    &to.span,
                    &format!("{path}.to"),
                    format!("{} is not covered by any peer's allowed_ips", to.value),
                    format!("add {ip}/{bits} to a peer's allowed_ips, or point `to` at a peer's overlay address"),
                );
            }
            found
        });
        if let (Some(listen), Some(c)) = (&listen, &common) {
            check_unique(report, &mut seen, &c.name, listen, c.protocol, "forward", i);
        }
        let (Some(listen), Some(to), Some(peer), Some(c)) = (listen, to, peer, common) else {
            continue;
        };
        out.push(Forward {
            name: c.name.value,
            protocol: c.protocol,
            listen: listen.value,
            to: to.value,
            peer,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
        });
    }
    out
}

/// The peer whose allowed_ips cover `ip`, by longest prefix, as WireGuard routes.
fn route(peers: &[PeerInfo], ip: IpAddr) -> Option<usize> {
    peers
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.allowed_ips.iter().map(move |(c, _)| (i, c)))
        .filter(|(_, c)| c.contains(ip))
        .max_by_key(|(_, c)| c.prefix())
        .map(|(i, _)| i)
}

/// Checks every `[[expose]]` against our own addresses (`own` is `None` when `[interface]
/// address` itself was broken, so that is not reported twice).
pub(crate) fn exposes(
    raw: Vec<RawService>,
    own: Option<&[Cidr]>,
    report: &mut Report<'_>,
) -> Vec<Expose> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let path = format!("expose[{i}]");
        let listen = socket_addr(
            report,
            r.listen.clone(),
            &r.span,
            &format!("{path}.listen"),
            false,
            "10.77.0.2:80",
        );
        let listen = listen.filter(|l| {
            let ip = l.value.ip();
            let own_known = own.is_some();
            let mine = own.unwrap_or_default().iter().any(|c| c.addr() == ip);
            if !mine && own_known {
                let own = own.unwrap_or_default();
                let list: Vec<String> = own.iter().map(|c| c.addr().to_string()).collect();
                report.error(
                    &l.span,
                    &format!("{path}.listen"),
                    format!("{ip} is not one of this peer's addresses ({})", list.join(", ")),
                    format!(
                        "listen on an [interface] address, e.g. \"{}:{}\", or add {ip} to [interface] address",
                        own.first().map_or_else(|| "10.77.0.2".to_string(), |c| bracket(c.addr())),
                        l.value.port()
                    ),
                );
            }
            mine
        });
        let to = endpoint(report, r.to.clone(), &r.span, &format!("{path}.to"));
        let common = common(r, &path, report);
        if let (Some(listen), Some(c)) = (&listen, &common) {
            check_unique(report, &mut seen, &c.name, listen, c.protocol, "expose", i);
        }
        let (Some(listen), Some(to), Some(c)) = (listen, to, common) else {
            continue;
        };
        out.push(Expose {
            name: c.name.value,
            protocol: c.protocol,
            listen: listen.value,
            to,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
        });
    }
    out
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Unique names, and no two listeners on the same address (or one on a wildcard address and
/// another on the same port), which would fail at bind time with a less helpful message.
fn check_unique(
    report: &mut Report<'_>,
    seen: &mut Vec<(String, SocketAddr, Protocol, usize)>,
    name: &Sp<String>,
    listen: &Sp<SocketAddr>,
    protocol: Protocol,
    kind: &str,
    index: usize,
) {
    for (other_name, other, other_protocol, other_index) in seen.iter() {
        if *other_name == name.value {
            report.error(
                &name.span,
                &format!("{kind}[{index}].name"),
                format!(
                    "{kind} name {:?} is also used by {kind}[{other_index}]",
                    name.value
                ),
                format!("give each {kind} its own name"),
            );
        }
        let (a, b) = (listen.value, *other);
        let clash = protocol == *other_protocol
            && a.port() != 0
            && a.port() == b.port()
            && a.is_ipv4() == b.is_ipv4()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
        if clash {
            report.error(
                &listen.span,
                &format!("{kind}[{index}].listen"),
                format!("{a} clashes with {b} of {kind}[{other_index}] ({other_name})"),
                "use a different port for one of them",
            );
        }
    }
    seen.push((name.value.clone(), listen.value, protocol, index));
}

/// name, protocol, timeouts and max_connections, with their defaults.
fn common(r: RawService, path: &str, report: &mut Report<'_>) -> Option<Common> {
    let key = |k: &str| format!("{path}.{k}");
    let name = r
        .name
        .required(
            report,
            &r.span,
            &key("name"),
            "add name = \"web\" (any short unique name)",
        )
        .filter(|n| check_name(report, n, &key("name")));
    let protocol = match r.protocol.ok() {
        None => Some(Protocol::Tcp),
        Some(p) => match p.value.as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => {
                report.error(
                    &p.span,
                    &key("protocol"),
                    "udp is not supported yet",
                    "use protocol = \"tcp\", or remove this entry until udp support lands",
                );
                None
            }
            other => {
                report.error(
                    &p.span,
                    &key("protocol"),
                    format!("unknown protocol {other:?}"),
                    "use protocol = \"tcp\"",
                );
                None
            }
        },
    };
    let connect_timeout = timeout(
        report,
        r.connect_timeout,
        &key("connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let idle_timeout = timeout(
        report,
        r.idle_timeout,
        &key("idle_timeout"),
        DEFAULT_IDLE_TIMEOUT,
    );
    let max_connections = match r.max_connections.ok() {
        None => Some(DEFAULT_MAX_CONNECTIONS),
        Some(v) => match usize::try_from(v.value) {
            Ok(n) if (1..=MAX_MAX_CONNECTIONS).contains(&n) => Some(n),
            _ => {
                report.error(
                    &v.span,
                    &key("max_connections"),
                    format!(
                        "max_connections {} is outside 1..={MAX_MAX_CONNECTIONS}",
                        v.value
                    ),
                    format!("use a positive limit, e.g. {DEFAULT_MAX_CONNECTIONS} (the default)"),
                );
                None
            }
        },
    };
    Some(Common {
        name: name?,
        protocol: protocol?,
        connect_timeout: connect_timeout?,
        idle_timeout: idle_timeout?,
        max_connections: max_connections?,
    })
}

fn timeout(
    report: &mut Report<'_>,
    field: Field<RawDuration>,
    key: &str,
    default: Duration,
) -> Option<Duration> {
    let Some(v) = field.ok() else {
        return Some(default);
    };
    let parsed = match &v.value {
        RawDuration::Secs(s) => duration::from_secs(*s),
        RawDuration::Text(t) => duration::parse(t),
    };
    let fix = format!(
        "write e.g. \"{}\" (units: ms, s, m, h, d; a bare number means seconds)",
        duration::format(default)
    );
    match parsed {
        Ok(d) if d.is_zero() => {
            report.error(&v.span, key, "must be more than zero", fix);
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            report.error(&v.span, key, e.to_string(), fix);
            None
        }
    }
}

/// A literal `ip:port`: listeners bind to addresses, and a forward's target is an overlay IP,
/// so host names are refused here. `port_zero_ok` is true only for forward listeners.
fn socket_addr(
    report: &mut Report<'_>,
    field: Field<String>,
    table_span: &Span,
    key: &str,
    port_zero_ok: bool,
    example: &str,
) -> Option<Sp<SocketAddr>> {
    let v = field.required(
        report,
        table_span,
        key,
        &format!(
            "add {} = \"{example}\"",
            key.rsplit('.').next().unwrap_or(key)
        ),
    )?;
    let text = v.value.trim();
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 && !port_zero_ok => {
            report.error(
                &v.span,
                key,
                format!("{a} has port 0"),
                format!("use a real port, e.g. \"{example}\""),
            );
            None
        }
        Ok(a) => Some(Sp {
            value: a,
            span: v.span,
        }),
        Err(_) => {
            let (message, fix) = match text.parse::<Endpoint>() {
                // A port of 0 parses as a socket address, so an endpoint error here is about text.
                Err(EndpointError::BadPort(p)) if p == "0" => (
                    format!("{text} has port 0"),
                    format!("use a real port, e.g. \"{example}\""),
                ),
                Err(e) => (e.to_string(), endpoint_fix(&e, example)),
                Ok(ep) => (
                    format!("{:?} is a host name; an IP address is needed here", ep.host),
                    format!("write an IP and port, e.g. \"{example}\""),
                ),
            };
            report.error(&v.span, key, message, fix);
            None
        }
    }
}

/// An expose target: `host:port`, where host may be a name resolved at each connection.
fn endpoint(
    report: &mut Report<'_>,
    field: Field<String>,
    table_span: &Span,
    key: &str,
) -> Option<Endpoint> {
    let v = field.required(
        report,
        table_span,
        key,
        "add to = \"127.0.0.1:8000\" (the real service)",
    )?;
    match v.value.trim().parse::<Endpoint>() {
        Ok(e) => Some(e),
        Err(EndpointError::BadPort(p)) if p == "0" => {
            report.error(
                &v.span,
                key,
                format!("{} has port 0", v.value.trim()),
                "use the service's real port, e.g. \"127.0.0.1:8000\"",
            );
            None
        }
        Err(e) => {
            report.error(
                &v.span,
                key,
                e.to_string(),
                endpoint_fix(&e, "127.0.0.1:8000"),
            );
            None
        }
    }
}
