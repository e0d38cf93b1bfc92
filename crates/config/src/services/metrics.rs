//! `[metrics]`: where to serve Prometheus text, and a warning when that is reachable from
//! other hosts.

use super::ports::parse_socket_addr;
use super::spanned;
use crate::error::Report;
use crate::raw::RawMetrics;
use crate::Metrics;

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
    let parsed = parse_socket_addr(v.value.trim(), false, example);
    let listen = spanned(report, key, v.span, parsed)?;
    if !listen.value.ip().to_canonical().is_loopback() {
        report.warn(
            &listen.span,
            key,
            format!(
                "metrics on {} can be read by anyone who can reach this host",
                listen.value
            ),
            format!(
                "listen on \"{example}\", or firewall port {}",
                listen.value.port()
            ),
        );
    }
    Some(Metrics {
        listen: listen.value,
    })
}
