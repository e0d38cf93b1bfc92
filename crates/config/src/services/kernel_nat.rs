//! `kernel_nat = true`: the kernel forwards a service's packets by NAT into or out of the TUN
//! device, and Pinhole only encrypts them. Pinhole then never sees the service's connections,
//! so what only Pinhole could do for them is refused here, at load. `allow` and `deny` stay:
//! the rule itself matches the client's address.

use std::net::{IpAddr, SocketAddr};

use crate::error::{Report, Span};
use crate::raw::{Field, RawService};

/// Why a key cannot go with `kernel_nat`, in the words of its fix.
const FIX: &str = "remove it, or remove kernel_nat to let Pinhole carry the connections itself";

/// `kernel_nat` of one service: `Some(false)` when absent or false, `Some(true)` when it can
/// be honoured, `None` when an error was reported. `tun` is whether `[interface] netstack` is
/// "tun" (`None` when `[interface]` itself was broken, so that is not reported twice).
pub(super) fn kernel_nat(
    r: &RawService,
    path: &str,
    tun: Option<bool>,
    report: &mut Report<'_>,
) -> Option<bool> {
    let key = |k: &str| format!("{path}.{k}");
    let span = match &r.kernel_nat {
        Field::Ok(v) if v.value => v.span.clone(),
        Field::Bad => return None,
        _ => return Some(false),
    };
    let mut ok = true;
    if tun == Some(false) {
        report.error(
            &span,
            &key("kernel_nat"),
            "kernel_nat needs [interface] netstack = \"tun\": the kernel can only route a service's packets into a TUN device",
            "set netstack = \"tun\" in [interface] (needs CAP_NET_ADMIN), or remove kernel_nat",
        );
        ok = false;
    }
    let given = [
        ("connect_timeout", r.connect_timeout.span()),
        ("idle_timeout", r.idle_timeout.span()),
        ("max_connections", r.max_connections.span()),
        ("max_sessions", r.max_sessions.span()),
        ("rate_limit", r.rate_limit.span()),
        ("proxy_protocol", r.proxy_protocol.span()),
        (
            "accept_proxy_protocol",
            match &r.accept_proxy_protocol {
                Field::Ok(v) if v.value => Some(v.span.clone()),
                _ => None,
            },
        ),
    ];
    for (name, at) in given {
        if let Some(at) = at {
            report.error(
                &at,
                &key(name),
                format!(
                    "{name} does not apply with kernel_nat: the kernel forwards these packets and Pinhole never sees the connections"
                ),
                FIX,
            );
            ok = false;
        }
    }
    ok.then_some(true)
}

/// A kernel NAT rule is written for IPv4 with a fixed port; true when `addr`, written at
/// `span` as `path.field`, is one, else the problem is reported there.
pub(super) fn ipv4_with_port(
    report: &mut Report<'_>,
    span: &Span,
    path: &str,
    field: &str,
    addr: SocketAddr,
) -> bool {
    let problem = match addr {
        SocketAddr::V6(_) => Some("kernel_nat is IPv4 only"),
        SocketAddr::V4(a) if a.port() == 0 => Some("kernel_nat needs a fixed port, not 0"),
        SocketAddr::V4(_) => None,
    };
    if let Some(problem) = problem {
        report.error(
            span,
            &format!("{path}.{field}"),
            format!("{problem} ({field} is {addr})"),
            "use an IPv4 address and a port, e.g. \"0.0.0.0:8080\", or remove kernel_nat",
        );
    }
    problem.is_none()
}

/// An expose's target under kernel NAT must be an IPv4 address, since the rule is written
/// once, at load, and a host name could change under it; true when `host`, written at `span`,
/// is one, else the problem is reported there.
pub(super) fn ipv4_target(report: &mut Report<'_>, span: &Span, path: &str, host: &str) -> bool {
    let ok = host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4());
    if !ok {
        report.error(
            span,
            &format!("{path}.to"),
            format!("kernel_nat needs an IPv4 address as the target, not {host:?}"),
            "write the target's IPv4 address, e.g. \"127.0.0.1:80\", or remove kernel_nat",
        );
    }
    ok
}
