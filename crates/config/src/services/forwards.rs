//! `[[forward]]`: a real socket here carried into the overlay, to a target some peer's
//! allowed_ips cover, with its PROXY protocol settings.

use std::net::{IpAddr, SocketAddr};

use super::ports::{same_length, socket_range};
use super::{check_each, common, kernel_nat, Head, Proto, Ranged};
use crate::error::Report;
use crate::peers::PeerInfo;
use crate::raw::{Field, RawService};
use crate::{show_socket_range, Cidr, Forward, Protocol, ProxyProtocol};

/// Checks every `[[forward]]`; `peers` holds what is known of every `[[peer]]`, in file order,
/// and `own` our interface addresses (a forward to ourselves would loop).
pub(crate) fn forwards(
    raw: Vec<RawService>,
    peers: &[PeerInfo],
    own: &[Cidr],
    tun: Option<bool>,
    report: &mut Report<'_>,
) -> Vec<Forward> {
    check_each(
        raw,
        "forward",
        true,
        "0.0.0.0:8080",
        report,
        |r, head, listeners, report| {
            let Head {
                index,
                path,
                proto,
                listen,
            } = head;
            let key = |k: &str| format!("{path}.{k}");
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
            let common = common(r, &path, proto.as_ref(), report);
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
                    l,
                    &t.span,
                    t.value.1,
                    |count| show_socket_range(t.value.0, count),
                    u32::from(t.value.0.port()),
                ),
                _ => true,
            };
            let proxy = proxy_settings(r, &path, proto.as_ref(), report);
            let nat = kernel_nat::kernel_nat(r, &path, tun, report).filter(|&nat| {
                if !nat {
                    return true;
                }
                let mut v4 = |field, at: &Ranged<SocketAddr>| {
                    kernel_nat::ipv4_with_port(report, &at.span, &path, field, at.value.0)
                };
                let listen_ok = listen.as_ref().is_none_or(|l| v4("listen", l));
                let to_ok = to.as_ref().is_none_or(|t| v4("to", t));
                listen_ok && to_ok
            });
            listeners.check(
                report,
                index,
                listen.as_ref(),
                common.as_ref(),
                proto.as_ref(),
            );
            let (
                Some(listen),
                Some(to),
                Some(peer),
                Some(c),
                Some(p),
                Some((proxy_protocol, accept)),
                Some(kernel_nat),
            ) = (listen, to, peer, common, proto, proxy, nat)
            else {
                return None;
            };
            if !lengths_ok {
                return None;
            }
            Some(Forward {
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
                kernel_nat,
            })
        },
    )
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
