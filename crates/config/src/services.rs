//! `[[forward]]` and `[[expose]]`: the two directions of one splice, checked against the
//! peers (a forward must reach some peer) and our own addresses (an expose must listen on one),
//! plus what a public listener needs: UDP sessions, port ranges, PROXY protocol, access
//! lists, rate limits, and the SOCKS exit. Also `[metrics]`, which is one more listener.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::{Report, Span};
use crate::raw::{Field, RawDuration, RawMetrics, RawService, Sp};
use crate::validate::{check_name, endpoint_fix, PeerInfo};
use crate::{
    duration, show_socket_range, Access, Cidr, DestinationRule, Endpoint, EndpointError, Expose,
    ExposeTarget, Forward, Metrics, Protocol, ProxyProtocol, Rate, Socks, SocksAuth,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_SESSIONS,
    DEFAULT_UDP_IDLE_TIMEOUT, MAX_MAX_CONNECTIONS, MAX_PORT_RANGE,
};

/// The keys forwards and exposes share, checked.
struct Common {
    name: Sp<String>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_sessions: usize,
    access: Access,
    rate_limit: Option<Rate>,
}

/// The transport and where it was written (`None` when defaulted).
#[derive(Clone)]
struct Proto {
    protocol: Protocol,
    span: Option<Span>,
}

/// A socket address with the number of consecutive ports it names.
type Ranged<T> = Sp<(T, u16)>;

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
        let key = |k: &str| format!("{path}.{k}");
        let proto = protocol(&r, &path, report);
        let listen = socket_range(
            report,
            r.listen.clone(),
            &r.span,
            &key("listen"),
            true,
            "0.0.0.0:8080",
        );
        let to = match r.to.clone() {
            Field::Ok(v) if v.value.trim() == "socks" => {
                report.error(
                    &v.span,
                    &key("to"),
                    "a forward cannot be a SOCKS exit",
                    "to = \"socks\" belongs in an [[expose]] on the exit peer; forward to that expose's overlay address, e.g. to = \"10.77.0.1:1080\"",
                );
                None
            }
            field => socket_range(report, field, &r.span, &key("to"), false, "10.77.0.2:80"),
        };
        let common = common(&r, &path, proto.as_ref(), report);
        let to = to.filter(|to| {
            let ip = to.value.0.ip();
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
                    &key("to"),
                    format!("{ip} {why}"),
                    "point `to` at another peer's overlay address, e.g. \"10.77.0.2:80\"",
                );
            }
            usable && !ours
        });
        // A range is one IP, so the peer that covers it covers every port of it.
        let peer = to.as_ref().and_then(|to| {
            let found = route(peers, to.value.0.ip());
            if found.is_none() {
                let ip = to.value.0.ip();
                let bits = if ip.is_ipv4() { 32 } else { 128 };
                report.error(
                    &to.span,
                    &key("to"),
                    format!("{} is not covered by any peer's allowed_ips", show_socket_range(to.value.0, to.value.1)),
                    format!("add {ip}/{bits} to a peer's allowed_ips, or point `to` at a peer's overlay address"),
                );
            }
            found
        });
        let lengths_ok = match (&listen, &to) {
            (Some(l), Some(t)) => same_length(
                report,
                &key("to"),
                &t.span,
                &show_socket_range(l.value.0, l.value.1),
                l.value.1,
                &show_socket_range(t.value.0, t.value.1),
                t.value.1,
                |count| show_socket_range(t.value.0, count),
                u32::from(t.value.0.port()),
            ),
            _ => true,
        };
        let proxy = proxy_settings(&r, &path, proto.as_ref(), report);
        if let (Some(listen), Some(c), Some(p)) = (&listen, &common, &proto) {
            check_unique(report, &mut seen, &c.name, listen, p.protocol, "forward", i);
        }
        let (Some(listen), Some(to), Some(peer), Some(c), Some(p), Some((proxy_protocol, accept))) =
            (listen, to, peer, common, proto, proxy)
        else {
            continue;
        };
        if !lengths_ok {
            continue;
        }
        out.push(Forward {
            name: c.name.value,
            protocol: p.protocol,
            listen: listen.value.0,
            to: to.value.0,
            port_count: listen.value.1,
            peer,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
            max_sessions: c.max_sessions,
            access: c.access,
            rate_limit: c.rate_limit,
            proxy_protocol,
            accept_proxy_protocol: accept,
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

/// `listen` and `to` name the same number of ports; reported at `to` with a corrected `to`
/// (built by `show_to(count)` when the range still fits below 65536).
#[allow(clippy::too_many_arguments)]
fn same_length(
    report: &mut Report<'_>,
    key: &str,
    to_span: &Span,
    listen_shown: &str,
    listen_count: u16,
    to_shown: &str,
    to_count: u16,
    show_to: impl Fn(u16) -> String,
    to_first: u32,
) -> bool {
    if listen_count == to_count {
        return true;
    }
    let fix = if to_first + u32::from(listen_count) - 1 <= 65535 {
        format!(
            "give both the same number of ports, e.g. to = \"{}\"",
            show_to(listen_count)
        )
    } else {
        "give listen and to the same number of ports".to_string()
    };
    report.error(
        to_span,
        key,
        format!(
            "{to_shown} has {} but listen {listen_shown} has {}",
            ports_word(to_count),
            ports_word(listen_count)
        ),
        fix,
    );
    false
}

fn ports_word(n: u16) -> String {
    if n == 1 {
        "1 port".to_string()
    } else {
        format!("{n} ports")
    }
}

/// `proxy_protocol` and `accept_proxy_protocol` (forwards only; TCP only).
fn proxy_settings(
    r: &RawService,
    path: &str,
    proto: Option<&Proto>,
    report: &mut Report<'_>,
) -> Option<(Option<ProxyProtocol>, bool)> {
    let udp = proto.is_some_and(|p| p.protocol == Protocol::Udp);
    let proxy_protocol = match r.proxy_protocol.clone() {
        Field::Missing => Some(None),
        Field::Bad => None,
        Field::Ok(v) => {
            let parsed = match v.value.as_str() {
                "v1" => Some(ProxyProtocol::V1),
                "v2" => Some(ProxyProtocol::V2),
                other => {
                    report.error(
                        &v.span,
                        &format!("{path}.proxy_protocol"),
                        format!("unknown proxy_protocol {other:?}"),
                        "use proxy_protocol = \"v1\" (text) or \"v2\" (binary), as the backend expects",
                    );
                    None
                }
            };
            if udp {
                report.error(
                    &v.span,
                    &format!("{path}.proxy_protocol"),
                    "proxy_protocol applies only to tcp",
                    "remove it: a PROXY header starts a TCP stream, and udp forwards send none",
                );
                return None;
            }
            parsed.map(Some)
        }
    };
    let accept = match r.accept_proxy_protocol.clone() {
        Field::Missing => Some(false),
        Field::Bad => None,
        Field::Ok(v) if v.value && udp => {
            report.error(
                &v.span,
                &format!("{path}.accept_proxy_protocol"),
                "accept_proxy_protocol applies only to tcp",
                "remove it: only TCP clients send a PROXY header",
            );
            None
        }
        Field::Ok(v) => Some(v.value),
    };
    Some((proxy_protocol?, accept?))
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
        let key = |k: &str| format!("{path}.{k}");
        let proto = protocol(&r, &path, report);
        let listen = socket_range(
            report,
            r.listen.clone(),
            &r.span,
            &key("listen"),
            false,
            "10.77.0.2:80",
        );
        let listen = listen.filter(|l| {
            let ip = l.value.0.ip();
            let own_known = own.is_some();
            let mine = own.unwrap_or_default().iter().any(|c| c.addr() == ip);
            if !mine && own_known {
                let own = own.unwrap_or_default();
                let list: Vec<String> = own.iter().map(|c| c.addr().to_string()).collect();
                report.error(
                    &l.span,
                    &key("listen"),
                    format!("{ip} is not one of this peer's addresses ({})", list.join(", ")),
                    format!(
                        "listen on an [interface] address, e.g. \"{}:{}\", or add {ip} to [interface] address",
                        own.first().map_or_else(|| "10.77.0.2".to_string(), |c| bracket(c.addr())),
                        l.value.0.port()
                    ),
                );
            }
            mine
        });
        let to = expose_to(report, r.to.clone(), &r.span, &key("to"));
        let common = common(&r, &path, proto.as_ref(), report);
        let target = match &to {
            None => None,
            Some(Sp {
                value: RawTarget::Socks,
                span,
            }) => socks(&r, &path, proto.as_ref(), listen.as_ref(), span, report)
                .map(ExposeTarget::Socks),
            Some(Sp {
                value: RawTarget::Addr(e, count),
                span,
            }) => {
                let no_socks_keys = not_socks(&r, &path, report);
                let lengths_ok = match &listen {
                    Some(l) => same_length(
                        report,
                        &key("to"),
                        span,
                        &show_socket_range(l.value.0, l.value.1),
                        l.value.1,
                        &show_endpoint_range(e, *count),
                        *count,
                        |n| show_endpoint_range(e, n),
                        u32::from(e.port),
                    ),
                    None => true,
                };
                (no_socks_keys && lengths_ok).then(|| ExposeTarget::Addr(e.clone()))
            }
        };
        if let (Some(listen), Some(c), Some(p)) = (&listen, &common, &proto) {
            check_unique(report, &mut seen, &c.name, listen, p.protocol, "expose", i);
        }
        let (Some(listen), Some(target), Some(c), Some(p)) = (listen, target, common, proto) else {
            continue;
        };
        out.push(Expose {
            name: c.name.value,
            protocol: p.protocol,
            listen: listen.value.0,
            to: target,
            port_count: listen.value.1,
            connect_timeout: c.connect_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
            max_sessions: c.max_sessions,
            access: c.access,
            rate_limit: c.rate_limit,
        });
    }
    out
}

/// An expose's `to` as written: a (ranged) endpoint, or `socks`.
enum RawTarget {
    Addr(Endpoint, u16),
    Socks,
}

fn show_endpoint_range(e: &Endpoint, count: u16) -> String {
    if count > 1 {
        format!("{e}-{}", u32::from(e.port) + u32::from(count) - 1)
    } else {
        e.to_string()
    }
}

const SOCKS_KEYS_FIX: &str = "remove it, or set to = \"socks\" to make this expose a SOCKS5 exit";

/// On an expose that is not a SOCKS exit, the SOCKS keys are mistakes; true when none is set.
fn not_socks(r: &RawService, path: &str, report: &mut Report<'_>) -> bool {
    let mut ok = true;
    let spans = [
        ("username", field_span(&r.username)),
        ("password", field_span(&r.password)),
        ("allow_destinations", field_span(&r.allow_destinations)),
        ("deny_destinations", field_span(&r.deny_destinations)),
    ];
    for (name, span) in spans {
        if let Some(span) = span {
            report.error(
                &span,
                &format!("{path}.{name}"),
                format!("{name} is only for a SOCKS exit (to = \"socks\")"),
                SOCKS_KEYS_FIX,
            );
            ok = false;
        }
    }
    ok
}

fn field_span<T>(f: &Field<T>) -> Option<Span> {
    match f {
        Field::Ok(v) => Some(v.span.clone()),
        Field::Missing | Field::Bad => None,
    }
}

/// `to = "socks"`: TCP only, one port, optional RFC 1929 login, destination rules.
fn socks(
    r: &RawService,
    path: &str,
    proto: Option<&Proto>,
    listen: Option<&Ranged<SocketAddr>>,
    to_span: &Span,
    report: &mut Report<'_>,
) -> Option<Socks> {
    let key = |k: &str| format!("{path}.{k}");
    let mut ok = true;
    if let Some(p) = proto.filter(|p| p.protocol == Protocol::Udp) {
        report.error(
            p.span.as_ref().unwrap_or(to_span),
            &key("protocol"),
            "a SOCKS exit is tcp only",
            "remove protocol = \"udp\": SOCKS5 clients connect over TCP",
        );
        ok = false;
    }
    if let Some(l) = listen.filter(|l| l.value.1 > 1) {
        report.error(
            &l.span,
            &key("listen"),
            format!(
                "a SOCKS exit listens on one port, not the range {}",
                show_socket_range(l.value.0, l.value.1)
            ),
            format!("write listen = \"{}\"", l.value.0),
        );
        ok = false;
    }
    let auth = match (r.username.clone(), r.password.clone()) {
        (Field::Ok(u), Field::Ok(p)) => {
            let user = login_part(report, &u, &key("username"), "username");
            let pass = login_part(report, &p, &key("password"), "password");
            match (user, pass) {
                (Some(username), Some(password)) => Some(Some(SocksAuth { username, password })),
                _ => None,
            }
        }
        (Field::Ok(u), Field::Missing) => {
            report.error(
                &u.span,
                &key("username"),
                "username is set but password is not",
                "add password = \"...\" (SOCKS5 login needs both), or remove username",
            );
            None
        }
        (Field::Missing, Field::Ok(p)) => {
            report.error(
                &p.span,
                &key("password"),
                "password is set but username is not",
                "add username = \"...\" (SOCKS5 login needs both), or remove password",
            );
            None
        }
        (Field::Missing, Field::Missing) => Some(None),
        _ => None, // a wrong type, already reported
    };
    let allow = destination_rules(
        report,
        r.allow_destinations.clone(),
        &key("allow_destinations"),
    );
    let deny = destination_rules(
        report,
        r.deny_destinations.clone(),
        &key("deny_destinations"),
    );
    let socks = Socks {
        auth: auth?,
        allow_destinations: allow?,
        deny_destinations: deny?,
    };
    ok.then_some(socks)
}

/// A username or password: 1 to 255 bytes (RFC 1929 has one length byte for each).
fn login_part(report: &mut Report<'_>, v: &Sp<String>, key: &str, what: &str) -> Option<String> {
    let n = v.value.len();
    if (1..=255).contains(&n) {
        return Some(v.value.clone());
    }
    report.error(
        &v.span,
        key,
        format!("{what} is {n} bytes; SOCKS5 allows 1 to 255"),
        format!("use a {what} of 1 to 255 bytes"),
    );
    None
}

fn destination_rules(
    report: &mut Report<'_>,
    field: Field<Vec<Sp<String>>>,
    key: &str,
) -> Option<Vec<DestinationRule>> {
    let list = match field {
        Field::Missing => return Some(Vec::new()),
        Field::Bad => return None,
        Field::Ok(list) => list,
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in list.value {
        match item.value.trim().parse::<DestinationRule>() {
            Ok(rule) => out.push(rule),
            Err(e) => {
                report.error(
                    &item.span,
                    key,
                    format!("bad destination rule {:?}: {e}", item.value),
                    "write \"CIDR\", \"CIDR:PORT\", \"CIDR:LOW-HIGH\" or \"*:PORT\", e.g. \"10.0.0.0/8\", \"192.168.1.5:22\", \"[fd00::/8]:443\"",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Unique names, and no two listeners of one protocol sharing a port (on the same address, or
/// one on a wildcard address), which would fail at bind time with a less helpful message.
/// Ranges clash when they share any port.
fn check_unique(
    report: &mut Report<'_>,
    seen: &mut Vec<(String, SocketAddr, u16, Protocol, usize)>,
    name: &Sp<String>,
    listen: &Ranged<SocketAddr>,
    protocol: Protocol,
    kind: &str,
    index: usize,
) {
    let (a, a_count) = listen.value;
    for (other_name, b, b_count, other_protocol, other_index) in seen.iter() {
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
        let last = |p: u16, n: u16| u32::from(p) + u32::from(n) - 1;
        let ports_meet = u32::from(a.port()) <= last(b.port(), *b_count)
            && u32::from(b.port()) <= last(a.port(), a_count);
        let clash = protocol == *other_protocol
            && a.port() != 0
            && b.port() != 0
            && ports_meet
            && a.is_ipv4() == b.is_ipv4()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
        if clash {
            report.error(
                &listen.span,
                &format!("{kind}[{index}].listen"),
                format!(
                    "{} clashes with {} of {kind}[{other_index}] ({other_name})",
                    show_socket_range(a, a_count),
                    show_socket_range(*b, *b_count)
                ),
                "use a different port for one of them",
            );
        }
    }
    seen.push((name.value.clone(), a, a_count, protocol, index));
}

/// `protocol`, `"tcp"` when absent.
fn protocol(r: &RawService, path: &str, report: &mut Report<'_>) -> Option<Proto> {
    match r.protocol.clone() {
        Field::Missing => Some(Proto {
            protocol: Protocol::Tcp,
            span: None,
        }),
        Field::Bad => None,
        Field::Ok(p) => {
            let protocol = match p.value.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => {
                    report.error(
                        &p.span,
                        &format!("{path}.protocol"),
                        format!("unknown protocol {other:?}"),
                        "use protocol = \"tcp\" (the default) or \"udp\"",
                    );
                    return None;
                }
            };
            Some(Proto {
                protocol,
                span: Some(p.span),
            })
        }
    }
}

/// name, timeouts, limits, access lists and rate, with their defaults (which depend on the
/// protocol: `proto` is `None` when it was wrong, and then the TCP defaults are used).
fn common(
    r: &RawService,
    path: &str,
    proto: Option<&Proto>,
    report: &mut Report<'_>,
) -> Option<Common> {
    let key = |k: &str| format!("{path}.{k}");
    let udp = proto.is_some_and(|p| p.protocol == Protocol::Udp);
    let tcp = proto.is_some_and(|p| p.protocol == Protocol::Tcp);
    let name = r
        .name
        .clone()
        .required(
            report,
            &r.span,
            &key("name"),
            "add name = \"web\" (any short unique name)",
        )
        .filter(|n| check_name(report, n, &key("name")));
    let mut ok = true;
    if let (true, Some(span)) = (udp, field_span(&r.connect_timeout)) {
        report.error(
            &span,
            &key("connect_timeout"),
            "connect_timeout does not apply to udp: there is no connection to open",
            "remove it; idle_timeout is what ends a quiet UDP session",
        );
        ok = false;
    }
    if let (true, Some(span)) = (udp, field_span(&r.max_connections)) {
        report.error(
            &span,
            &key("max_connections"),
            "max_connections does not apply to udp",
            format!("use max_sessions = {DEFAULT_MAX_SESSIONS} to cap the number of UDP sessions"),
        );
        ok = false;
    }
    if let (true, Some(span)) = (tcp, field_span(&r.max_sessions)) {
        report.error(
            &span,
            &key("max_sessions"),
            "max_sessions applies only to udp",
            format!("use max_connections = {DEFAULT_MAX_CONNECTIONS} to cap simultaneous TCP connections"),
        );
        ok = false;
    }
    let connect_timeout = timeout(
        report,
        r.connect_timeout.clone(),
        &key("connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
    );
    let idle_default = if udp {
        DEFAULT_UDP_IDLE_TIMEOUT
    } else {
        DEFAULT_IDLE_TIMEOUT
    };
    let idle_timeout = timeout(
        report,
        r.idle_timeout.clone(),
        &key("idle_timeout"),
        idle_default,
    );
    let max_connections = limit(
        report,
        r.max_connections.clone(),
        &key("max_connections"),
        "max_connections",
        DEFAULT_MAX_CONNECTIONS,
    );
    let max_sessions = limit(
        report,
        r.max_sessions.clone(),
        &key("max_sessions"),
        "max_sessions",
        DEFAULT_MAX_SESSIONS,
    );
    let allow = cidr_list(report, r.allow.clone(), &key("allow"), true);
    let deny = cidr_list(report, r.deny.clone(), &key("deny"), false);
    let rate_limit = match r.rate_limit.clone().ok() {
        None => Some(None),
        Some(v) => match v.value.trim().parse::<Rate>() {
            Ok(rate) => Some(Some(rate)),
            Err(e) => {
                let what = if udp { "sessions" } else { "connections" };
                report.error(
                    &v.span,
                    &key("rate_limit"),
                    e.to_string(),
                    format!("write e.g. rate_limit = \"20/s\" (new {what} per second from one client address) or \"600/m\""),
                );
                None
            }
        },
    };
    let common = Common {
        name: name?,
        connect_timeout: connect_timeout?,
        idle_timeout: idle_timeout?,
        max_connections: max_connections?,
        max_sessions: max_sessions?,
        access: Access {
            allow: allow?,
            deny: deny?,
        },
        rate_limit: rate_limit?,
    };
    ok.then_some(common)
}

fn limit(
    report: &mut Report<'_>,
    field: Field<i64>,
    key: &str,
    what: &str,
    default: usize,
) -> Option<usize> {
    match field.ok() {
        None => Some(default),
        Some(v) => match usize::try_from(v.value) {
            Ok(n) if (1..=MAX_MAX_CONNECTIONS).contains(&n) => Some(n),
            _ => {
                report.error(
                    &v.span,
                    key,
                    format!("{what} {} is outside 1..={MAX_MAX_CONNECTIONS}", v.value),
                    format!("use a positive limit, e.g. {default} (the default)"),
                );
                None
            }
        },
    }
}

/// `allow` or `deny`: prefixes (a bare IP is one address), host bits cleared. An empty
/// `allow` list would read as "nobody" but mean "everybody", so it is refused.
fn cidr_list(
    report: &mut Report<'_>,
    field: Field<Vec<Sp<String>>>,
    key: &str,
    is_allow: bool,
) -> Option<Vec<Cidr>> {
    let list = match field {
        Field::Missing => return Some(Vec::new()),
        Field::Bad => return None,
        Field::Ok(list) => list,
    };
    if is_allow && list.value.is_empty() {
        report.error(
            &list.span,
            key,
            "an empty allow list would let every address in",
            "list the client addresses to let in, e.g. allow = [\"203.0.113.0/24\"], or remove allow to let everyone in",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in list.value {
        match item.value.trim().parse::<Cidr>() {
            Ok(c) => out.push(c.to_network()),
            Err(e) => {
                report.error(
                    &item.span,
                    key,
                    e.to_string(),
                    "write a prefix such as \"203.0.113.0/24\" or one address such as \"198.51.100.7\"",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
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

/// Splits `HOST:LOW-HIGH` into `HOST:LOW` (parsed as usual) and the range's end; `None` when
/// the text names a single port.
fn split_range(text: &str) -> Option<(String, &str, &str)> {
    let (host, ports) = text.rsplit_once(':')?;
    let (low, high) = ports.split_once('-')?;
    Some((format!("{host}:{low}"), host, high))
}

/// How many ports `LOW-HIGH` names, or what is wrong with it.
fn range_count(low: u16, host: &str, high_text: &str) -> Result<u16, (String, String)> {
    let range = format!("{low}-{high_text}");
    if low == 0 {
        return Err((
            format!("port range {range} starts at port 0"),
            "start the range at port 1 or above".to_string(),
        ));
    }
    if high_text.is_empty() || !high_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err((
            format!("port `{high_text}` is not a number from 1 to 65535"),
            format!("write a range as FIRST-LAST, e.g. \"{host}:27015-27030\""),
        ));
    }
    let high = high_text.parse::<u32>().unwrap_or(u32::MAX);
    if high > 65535 {
        return Err((
            format!("port range {range} goes past port 65535"),
            "end the range at port 65535 or below".to_string(),
        ));
    }
    if high < u32::from(low) {
        return Err((
            format!("port range {range} ends before it starts"),
            format!("write the lower port first: \"{host}:{high}-{low}\""),
        ));
    }
    let count = high - u32::from(low) + 1;
    if count > u32::from(MAX_PORT_RANGE) {
        return Err((
            format!("port range {range} has {count} ports; at most {MAX_PORT_RANGE} are allowed"),
            format!("split it into entries of at most {MAX_PORT_RANGE} ports each"),
        ));
    }
    Ok(u16::try_from(count).unwrap_or(MAX_PORT_RANGE))
}

/// A literal `ip:port` (listeners bind to addresses, and a forward's target is an overlay IP,
/// so host names are refused here), or `ip:first-last`. `port_zero_ok` is true only for
/// forward listeners, and only for a single port.
fn socket_range(
    report: &mut Report<'_>,
    field: Field<String>,
    table_span: &Span,
    key: &str,
    port_zero_ok: bool,
    example: &str,
) -> Option<Ranged<SocketAddr>> {
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
    let parsed = match split_range(text) {
        None => parse_socket_addr(text, port_zero_ok, example).map(|a| (a, 1)),
        Some((first, host, high)) => parse_socket_addr(&first, port_zero_ok, example)
            .and_then(|a| range_count(a.port(), host, high).map(|n| (a, n))),
    };
    match parsed {
        Ok(value) => Some(Sp {
            value,
            span: v.span,
        }),
        Err((message, fix)) => {
            report.error(&v.span, key, message, fix);
            None
        }
    }
}

/// One `ip:port`: the message and fix when it is not one.
fn parse_socket_addr(
    text: &str,
    port_zero_ok: bool,
    example: &str,
) -> Result<SocketAddr, (String, String)> {
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 && !port_zero_ok => Err((
            format!("{a} has port 0"),
            format!("use a real port, e.g. \"{example}\""),
        )),
        Ok(a) => Ok(a),
        Err(_) => Err(match text.parse::<Endpoint>() {
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
        }),
    }
}

/// An expose target: `socks`, or `host:port` (or `host:first-last`), where host may be a name
/// resolved at each connection.
fn expose_to(
    report: &mut Report<'_>,
    field: Field<String>,
    table_span: &Span,
    key: &str,
) -> Option<Sp<RawTarget>> {
    let v = field.required(
        report,
        table_span,
        key,
        "add to = \"127.0.0.1:8000\" (the real service), or to = \"socks\" for a SOCKS5 exit",
    )?;
    let text = v.value.trim();
    if text == "socks" {
        return Some(Sp {
            value: RawTarget::Socks,
            span: v.span,
        });
    }
    let (first, range) = match split_range(text) {
        None => (text.to_string(), None),
        Some((first, host, high)) => (first, Some((host, high))),
    };
    let parsed = match first.parse::<Endpoint>() {
        Err(EndpointError::BadPort(p)) if p == "0" => Err((
            format!("{first} has port 0"),
            "use the service's real port, e.g. \"127.0.0.1:8000\"".to_string(),
        )),
        Err(e) => Err((e.to_string(), endpoint_fix(&e, "127.0.0.1:8000"))),
        Ok(e) => match range {
            None => Ok(RawTarget::Addr(e, 1)),
            Some((host, high)) => range_count(e.port, host, high).map(|n| RawTarget::Addr(e, n)),
        },
    };
    match parsed {
        Ok(value) => Some(Sp {
            value,
            span: v.span,
        }),
        Err((message, fix)) => {
            report.error(&v.span, key, message, fix);
            None
        }
    }
}

/// `[metrics] listen`: an IP and a real port; a warning when it is reachable from elsewhere.
pub(crate) fn metrics(raw: RawMetrics, report: &mut Report<'_>) -> Option<Metrics> {
    let key = "metrics.listen";
    let example = "127.0.0.1:9100";
    let v = raw.listen.required(
        report,
        &raw.span,
        key,
        &format!("add listen = \"{example}\""),
    )?;
    match parse_socket_addr(v.value.trim(), false, example) {
        Ok(listen) => {
            if !listen.ip().to_canonical().is_loopback() {
                report.warn(
                    &v.span,
                    key,
                    format!("metrics on {listen} can be read by anyone who can reach this host"),
                    format!(
                        "listen on \"{example}\", or firewall port {}",
                        listen.port()
                    ),
                );
            }
            Some(Metrics { listen })
        }
        Err((message, fix)) => {
            report.error(&v.span, key, message, fix);
            None
        }
    }
}
