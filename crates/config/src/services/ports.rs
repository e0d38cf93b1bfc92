//! Listen and target sockets: `ip:port` and `ip:first-last` port ranges, and the check that
//! a listener and its target name the same number of ports.

use std::net::SocketAddr;

use super::{spanned, Ranged};
use crate::error::{Report, Span};
use crate::raw::Field;
use crate::validate::endpoint_fix;
use crate::{show_socket_range, Endpoint, EndpointError, MAX_PORT_RANGE};

/// `listen` and `to` name the same number of ports; reported at `to` (`to_count` ports from
/// port `to_first`, shown by `show_to(count)`) with a corrected `to` when the range still
/// fits below 65536.
pub(super) fn same_length(
    report: &mut Report<'_>,
    key: &str,
    listen: &Ranged<SocketAddr>,
    to_span: &Span,
    to_count: u16,
    show_to: impl Fn(u16) -> String,
    to_first: u32,
) -> bool {
    let (listen_first, listen_count) = listen.value;
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
            "{} has {} but listen {} has {}",
            show_to(to_count),
            ports_word(to_count),
            show_socket_range(listen_first, listen_count),
            ports_word(listen_count)
        ),
        fix,
    );
    false
}

/// "1 port", "16 ports".
fn ports_word(n: u16) -> String {
    if n == 1 {
        "1 port".to_string()
    } else {
        format!("{n} ports")
    }
}

/// Splits `HOST:LOW-HIGH` into `HOST:LOW` (parsed as usual) and the range's end; `None` when
/// the text names a single port.
pub(super) fn split_range(text: &str) -> Option<(String, &str, &str)> {
    let (host, ports) = text.rsplit_once(':')?;
    let (low, high) = ports.split_once('-')?;
    Some((format!("{host}:{low}"), host, high))
}

/// How many ports `LOW-HIGH` names, or what is wrong with it.
pub(super) fn range_count(low: u16, host: &str, high_text: &str) -> Result<u16, (String, String)> {
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
pub(super) fn socket_range(
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
    spanned(report, key, v.span, parsed)
}

/// One `ip:port`: the message and fix when it is not one.
pub(super) fn parse_socket_addr(
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
