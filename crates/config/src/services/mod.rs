//! `[[forward]]` and `[[expose]]`: the two directions of one splice, checked against the
//! peers (a forward must reach some peer) and our own addresses (an expose must listen on one),
//! plus what a public listener needs: UDP sessions, port ranges, PROXY protocol, access
//! lists, rate limits, and the SOCKS exit. Also `[metrics]`, which is one more listener.
//!
//! This module holds what forwards and exposes share: the protocol, name, timeouts, limits,
//! access lists and rate limit, and the check that no two listeners clash.

mod exposes;
mod forwards;
mod kernel_nat;
mod metrics;
mod ports;
mod socks;

use std::net::SocketAddr;
use std::time::Duration;

pub(crate) use exposes::exposes;
pub(crate) use forwards::forwards;
pub(crate) use metrics::metrics;

use crate::error::{Report, Span};
use crate::raw::{Field, RawDuration, RawService, Sp};
use crate::validate::check_name;
use crate::{
    duration, show_socket_range, Access, Cidr, Protocol, Rate, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_SESSIONS, DEFAULT_UDP_IDLE_TIMEOUT,
    MAX_MAX_CONNECTIONS,
};
use ports::socket_range;

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

/// Checks each entry of `raw`, all of one `kind` (`forward`, `expose`): reads its head (see
/// [`Head::read`]), then `check` reads the rest and returns what it built, or `None` when
/// anything was wrong. `listeners` is shared by the entries, to find clashes between them.
fn check_each<T>(
    raw: Vec<RawService>,
    kind: &'static str,
    port_zero_ok: bool,
    example: &str,
    report: &mut Report<'_>,
    mut check: impl FnMut(&RawService, Head, &mut Listeners, &mut Report<'_>) -> Option<T>,
) -> Vec<T> {
    let mut listeners = Listeners::new(kind);
    let mut out = Vec::new();
    for (index, r) in raw.iter().enumerate() {
        let head = Head::read(r, kind, index, port_zero_ok, example, report);
        out.extend(check(r, head, &mut listeners, report));
    }
    out
}

/// The start of checking one `[[forward]]` or `[[expose]]`.
struct Head {
    /// Its position among its kind.
    index: usize,
    /// `forward[0]`, `expose[1]`…: what keys are prefixed with in messages.
    path: String,
    proto: Option<Proto>,
    /// `listen`, read with `port_zero_ok` and `example` as in [`socket_range`].
    listen: Option<Ranged<SocketAddr>>,
}

impl Head {
    /// Reads entry `index` of `kind`'s `protocol` and `listen`.
    fn read(
        r: &RawService,
        kind: &str,
        index: usize,
        port_zero_ok: bool,
        example: &str,
        report: &mut Report<'_>,
    ) -> Head {
        let path = format!("{kind}[{index}]");
        let proto = protocol(r, &path, report);
        let listen = socket_range(
            report,
            r.listen.clone(),
            &r.span,
            &format!("{path}.listen"),
            port_zero_ok,
            example,
        );
        Head {
            index,
            path,
            proto,
            listen,
        }
    }
}

/// `parsed` with `span`, or its problem (message, fix) reported at `span`.
fn spanned<T>(
    report: &mut Report<'_>,
    key: &str,
    span: Span,
    parsed: Result<T, (String, String)>,
) -> Option<Sp<T>> {
    match parsed {
        Ok(value) => Some(Sp { value, span }),
        Err((message, fix)) => {
            report.error(&span, key, message, fix);
            None
        }
    }
}

/// An optional list of strings, each turned by `parse` into a value or the message of its
/// problem (reported with `fix`): empty when absent, `None` when any entry is wrong.
fn parsed_list<T>(
    report: &mut Report<'_>,
    field: Field<Vec<Sp<String>>>,
    key: &str,
    fix: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let list = match field {
        Field::Missing => return Some(Vec::new()),
        Field::Bad => return None,
        Field::Ok(list) => list,
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in list.value {
        match parse(&item.value) {
            Ok(value) => out.push(value),
            Err(message) => {
                report.error(&item.span, key, message, fix);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// The listeners of one kind seen so far: unique names, and no two listeners of one protocol
/// sharing a port (on the same address, or one on a wildcard address), which would fail at
/// bind time with a less helpful message. Ranges clash when they share any port.
struct Listeners {
    kind: &'static str,
    seen: Vec<(String, SocketAddr, u16, Protocol, usize)>,
}

impl Listeners {
    fn new(kind: &'static str) -> Listeners {
        Listeners {
            kind,
            seen: Vec::new(),
        }
    }

    /// Checks entry `index` against those before it, when its name, listen and protocol are
    /// all good.
    fn check(
        &mut self,
        report: &mut Report<'_>,
        index: usize,
        listen: Option<&Ranged<SocketAddr>>,
        common: Option<&Common>,
        proto: Option<&Proto>,
    ) {
        let (Some(listen), Some(Common { name, .. }), Some(Proto { protocol, .. })) =
            (listen, common, proto)
        else {
            return;
        };
        let protocol = *protocol;
        let kind = self.kind;
        let (a, a_count) = listen.value;
        for (other_name, b, b_count, other_protocol, other_index) in self.seen.iter() {
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
        self.seen
            .push((name.value.clone(), a, a_count, protocol, index));
    }
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
    if let (true, Some(span)) = (udp, r.connect_timeout.span()) {
        report.error(
            &span,
            &key("connect_timeout"),
            "connect_timeout does not apply to udp: there is no connection to open",
            "remove it; idle_timeout is what ends a quiet UDP session",
        );
        ok = false;
    }
    if let (true, Some(span)) = (udp, r.max_connections.span()) {
        report.error(
            &span,
            &key("max_connections"),
            "max_connections does not apply to udp",
            format!("use max_sessions = {DEFAULT_MAX_SESSIONS} to cap the number of UDP sessions"),
        );
        ok = false;
    }
    if let (true, Some(span)) = (tcp, r.max_sessions.span()) {
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
    if let (true, Field::Ok(list)) = (is_allow, &field) {
        if list.value.is_empty() {
            report.error(
                &list.span,
                key,
                "an empty allow list would let every address in",
                "list the client addresses to let in, e.g. allow = [\"203.0.113.0/24\"], or remove allow to let everyone in",
            );
            return None;
        }
    }
    parsed_list(
        report,
        field,
        key,
        "write a prefix such as \"203.0.113.0/24\" or one address such as \"198.51.100.7\"",
        |text| match text.trim().parse::<Cidr>() {
            Ok(c) => Ok(c.to_network()),
            Err(e) => Err(e.to_string()),
        },
    )
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
