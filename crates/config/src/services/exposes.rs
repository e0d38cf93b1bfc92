//! `[[expose]]`: a socket on one of our overlay addresses carried out to a real target (a
//! host name is resolved at each connection) or into a SOCKS exit.

use std::net::IpAddr;

use super::ports::{range_count, same_length, split_range};
use super::socks::socks;
use super::{check_each, common, kernel_nat, spanned, Head};
use crate::error::{Report, Span};
use crate::raw::{Field, RawService, Sp};
use crate::validate::endpoint_fix;
use crate::{show_endpoint_range, Cidr, Endpoint, EndpointError, Expose, ExposeTarget};

/// Checks every `[[expose]]` against our own addresses (`own` is `None` when `[interface]
/// address` itself was broken, so that is not reported twice).
pub(crate) fn exposes(
    raw: Vec<RawService>,
    own: Option<&[Cidr]>,
    tun: Option<bool>,
    report: &mut Report<'_>,
) -> Vec<Expose> {
    check_each(
        raw,
        "expose",
        false,
        "10.77.0.2:80",
        report,
        |r, head, listeners, report| {
            let Head {
                index,
                path,
                proto,
                listen,
            } = head;
            let key = |k: &str| format!("{path}.{k}");
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
            let common = common(r, &path, proto.as_ref(), report);
            let target = match &to {
                None => None,
                Some(Sp {
                    value: RawTarget::Socks,
                    span,
                }) => socks(r, &path, proto.as_ref(), listen.as_ref(), span, report)
                    .map(ExposeTarget::Socks),
                Some(Sp {
                    value: RawTarget::Addr(e, count),
                    span,
                }) => {
                    let no_socks_keys = not_socks(r, &path, report);
                    let lengths_ok = match &listen {
                        Some(l) => same_length(
                            report,
                            &key("to"),
                            l,
                            span,
                            *count,
                            |n| show_endpoint_range(e, n),
                            u32::from(e.port),
                        ),
                        None => true,
                    };
                    (no_socks_keys && lengths_ok).then(|| ExposeTarget::Addr(e.clone()))
                }
            };
            let nat = kernel_nat::kernel_nat(r, &path, tun, report).filter(|&nat| {
                if !nat {
                    return true;
                }
                let listen_ok = listen.as_ref().is_none_or(|l| {
                    kernel_nat::ipv4_with_port(report, &l.span, &path, "listen", l.value.0)
                });
                let to_ok = match &to {
                    Some(Sp {
                        value: RawTarget::Addr(e, _),
                        span,
                    }) => kernel_nat::ipv4_target(report, span, &path, &e.host),
                    Some(Sp {
                        value: RawTarget::Socks,
                        span,
                    }) => {
                        report.error(
                            span,
                            &key("to"),
                            "a SOCKS exit cannot be a kernel_nat expose: the exit reads each client's request",
                            "remove kernel_nat from this expose",
                        );
                        false
                    }
                    None => true,
                };
                listen_ok && to_ok
            });
            listeners.check(
                report,
                index,
                listen.as_ref(),
                common.as_ref(),
                proto.as_ref(),
            );
            let (Some(listen), Some(target), Some(c), Some(p), Some(kernel_nat)) =
                (listen, target, common, proto, nat)
            else {
                return None;
            };
            Some(Expose {
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
                kernel_nat,
            })
        },
    )
}

/// An expose's `to` as written: a (ranged) endpoint, or `socks`.
enum RawTarget {
    Addr(Endpoint, u16),
    Socks,
}

const SOCKS_KEYS_FIX: &str = "remove it, or set to = \"socks\" to make this expose a SOCKS5 exit";

/// On an expose that is not a SOCKS exit, the SOCKS keys are mistakes; true when none is set.
fn not_socks(r: &RawService, path: &str, report: &mut Report<'_>) -> bool {
    let mut ok = true;
    let spans = [
        ("username", r.username.span()),
        ("password", r.password.span()),
        ("allow_destinations", r.allow_destinations.span()),
        ("deny_destinations", r.deny_destinations.span()),
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

/// An IP as it is written before `:port`.
fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
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
    spanned(report, key, v.span, parsed)
}
