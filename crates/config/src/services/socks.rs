//! `to = "socks"`: an expose that is a SOCKS5 exit, with its optional RFC 1929 login and its
//! destination rules.

use std::net::SocketAddr;

use super::{parsed_list, Proto, Ranged};
use crate::error::{Report, Span};
use crate::raw::{Field, RawService, Sp};
use crate::{show_socket_range, DestinationRule, Protocol, Socks, SocksAuth};

/// `to = "socks"`: TCP only, one port, optional RFC 1929 login, destination rules.
pub(super) fn socks(
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

/// `allow_destinations` or `deny_destinations`.
fn destination_rules(
    report: &mut Report<'_>,
    field: Field<Vec<Sp<String>>>,
    key: &str,
) -> Option<Vec<DestinationRule>> {
    parsed_list(
        report,
        field,
        key,
        "write \"CIDR\", \"CIDR:PORT\", \"CIDR:LOW-HIGH\" or \"*:PORT\", e.g. \"10.0.0.0/8\", \"192.168.1.5:22\", \"[fd00::/8]:443\"",
        |text| {
            text.trim()
                .parse::<DestinationRule>()
                .map_err(|e| format!("bad destination rule {text:?}: {e}"))
        },
    )
}
