//! What a running peer reports about itself, and the ways it is shown.
//!
//! [`Status`] is the snapshot the running peer hands over; its JSON form is
//! what `pinhole status --json` prints, and its keys are a contract:
//! `{"peers":[{"name","public_key","endpoint","latest_handshake","rx_bytes","tx_bytes",…}],
//!   "forwards":[{"name","protocol","listen","to","active","total","refused","rx_bytes","tx_bytes"}],
//!   "exposes":[…same keys…], "interface":{…}}`. Keys may be added, never renamed.
//!
//! Renderers are pure: [`render_text`] (like `wg show`, plus a table of
//! forwards and exposes) and [`render_prometheus`] (text format 0.0.4).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A snapshot of one running peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub interface: InterfaceStatus,
    pub peers: Vec<PeerStatus>,
    pub forwards: Vec<ServiceStatus>,
    pub exposes: Vec<ServiceStatus>,
    /// The WireGuard engine's counters: packets dropped per reason (garbage, floods,
    /// routing) and events (cookie replies, probes, forced handshakes). Not a drop is
    /// ever logged per packet; this is where they show.
    #[serde(default)]
    pub engine: EngineCounters,
}

/// The engine's drop reasons and events with their counts, in a stable order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EngineCounters {
    /// `(reason, packets)`.
    pub dropped: Vec<(String, u64)>,
    /// `(event, count)`.
    pub events: Vec<(String, u64)>,
}

/// This peer's own identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// A display name (the config's name, or its file stem).
    pub name: String,
    /// Base64, as `wg` prints it.
    pub public_key: String,
    /// The WireGuard UDP port actually bound (0 if none).
    pub listen_port: u16,
    /// Overlay addresses in CIDR form, e.g. `10.77.0.1/24`.
    pub addresses: Vec<String>,
}

/// One configured WireGuard peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    pub name: String,
    /// Base64.
    pub public_key: String,
    /// `ip:port` (`[v6]:port`) last seen or configured; `null` if unknown.
    pub endpoint: Option<String>,
    /// Seconds since the Unix epoch of the latest completed handshake; `null` if none.
    pub latest_handshake: Option<u64>,
    /// Bytes received from this peer (WireGuard datagrams, as `wg show` counts).
    pub rx_bytes: u64,
    /// Bytes sent to this peer.
    pub tx_bytes: u64,
    /// Seconds; `null` when off.
    pub persistent_keepalive: Option<u16>,
    /// CIDRs, e.g. `10.77.0.2/32`.
    pub allowed_ips: Vec<String>,
}

/// One `[[forward]]` or `[[expose]]` and its counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Where it accepts: a real `ip:port` for a forward, an overlay `ip:port` for an expose.
    pub listen: String,
    /// Where it connects: an overlay `ip:port`, a `host:port`, or `socks`.
    pub to: String,
    /// Connections (or UDP sessions) open now.
    pub active: u64,
    /// Accepted since start.
    pub total: u64,
    /// Turned away (limits, policy, failed dials).
    pub refused: u64,
    /// Bytes from clients towards the target.
    pub rx_bytes: u64,
    /// Bytes from the target back to clients.
    pub tx_bytes: u64,
}

impl Status {
    /// The `--json` document: one object, pretty-printed, ending in a newline.
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a Status always serializes");
        s.push('\n');
        s
    }
}

/// Renders `status` the way `wg show` does, then forwards and exposes as a table.
///
/// `now` is passed in so the output ("1 minute, 3 seconds ago") is testable.
pub fn render_text(status: &Status, now: SystemTime) -> String {
    let mut out = String::new();
    let i = &status.interface;
    let _ = writeln!(out, "interface: {}", i.name);
    let _ = writeln!(out, "  public key: {}", i.public_key);
    let _ = writeln!(out, "  listening port: {}", i.listen_port);
    if !i.addresses.is_empty() {
        let _ = writeln!(out, "  address: {}", i.addresses.join(", "));
    }
    let dropped: Vec<String> = status
        .engine
        .dropped
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !dropped.is_empty() {
        let _ = writeln!(out, "  dropped: {}", dropped.join(", "));
    }
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for p in &status.peers {
        out.push('\n');
        let _ = writeln!(out, "peer: {}", p.name);
        let _ = writeln!(out, "  public key: {}", p.public_key);
        let _ = writeln!(
            out,
            "  endpoint: {}",
            p.endpoint.as_deref().unwrap_or("(none)")
        );
        let ips = if p.allowed_ips.is_empty() {
            "(none)".to_string()
        } else {
            p.allowed_ips.join(", ")
        };
        let _ = writeln!(out, "  allowed ips: {ips}");
        let handshake = match p.latest_handshake {
            None => "(none)".to_string(),
            Some(t) => ago(t, now_secs),
        };
        let _ = writeln!(out, "  latest handshake: {handshake}");
        let _ = writeln!(
            out,
            "  transfer: {} received, {} sent",
            human_bytes(p.rx_bytes),
            human_bytes(p.tx_bytes)
        );
        match p.persistent_keepalive {
            Some(s) if s > 0 => {
                let _ = writeln!(
                    out,
                    "  persistent keepalive: every {}",
                    duration_words(u64::from(s))
                );
            }
            _ => {
                let _ = writeln!(out, "  persistent keepalive: off");
            }
        }
    }
    for (title, services) in [("forwards", &status.forwards), ("exposes", &status.exposes)] {
        out.push('\n');
        if services.is_empty() {
            let _ = writeln!(out, "{title}: (none)");
        } else {
            let _ = writeln!(out, "{title}:");
            out.push_str(&service_table(services));
        }
    }
    out
}

/// `1 minute, 3 seconds ago`, `Now`, as `wg show` words it.
fn ago(then: u64, now: u64) -> String {
    match now.checked_sub(then) {
        Some(0) => "Now".to_string(),
        Some(left) => format!("{} ago", duration_words(left)),
        None => "in the future (is the system clock right?)".to_string(),
    }
}

/// `1 year, 2 days, 3 hours, 1 minute, 5 seconds`, zero parts left out.
fn duration_words(secs: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (365 * 24 * 3600, "year"),
        (24 * 3600, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut left = secs;
    let mut parts = Vec::new();
    for (size, unit) in UNITS {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        "0 seconds".to_string()
    } else {
        parts.join(", ")
    }
}

/// `512 B`, `1.21 MiB`, as `wg show` prints transfer figures.
pub fn human_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.2} KiB", f / KIB)
    } else if f < KIB * KIB * KIB {
        format!("{:.2} MiB", f / (KIB * KIB))
    } else if f < KIB * KIB * KIB * KIB {
        format!("{:.2} GiB", f / (KIB * KIB * KIB))
    } else {
        format!("{:.2} TiB", f / (KIB * KIB * KIB * KIB))
    }
}

fn service_table(services: &[ServiceStatus]) -> String {
    const HEADER: [&str; 9] = [
        "NAME", "PROTO", "LISTEN", "TO", "ACTIVE", "TOTAL", "REFUSED", "RX", "TX",
    ];
    // Numbers are right-aligned, text left-aligned.
    const RIGHT: [bool; 9] = [false, false, false, false, true, true, true, true, true];
    let rows: Vec<[String; 9]> = services
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.protocol.clone(),
                s.listen.clone(),
                s.to.clone(),
                s.active.to_string(),
                s.total.to_string(),
                s.refused.to_string(),
                human_bytes(s.rx_bytes),
                human_bytes(s.tx_bytes),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            l.push_str("  ");
            if RIGHT[i] {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// Renders `status` in the Prometheus text exposition format, version 0.0.4.
///
/// Peers: `pinhole_peer_{rx_bytes_total,tx_bytes_total,latest_handshake_seconds}{peer,public_key}`
/// (`latest_handshake_seconds` is 0 when there has been none, as the usual
/// WireGuard exporters do, so `time() - x > 180` alerts on it).
/// Forwards and exposes: `pinhole_{forward,expose}_{connections_active,
/// connections_total,connections_refused_total,rx_bytes_total,tx_bytes_total}{name,protocol,listen}`.
pub fn render_prometheus(status: &Status) -> String {
    let mut out = String::new();
    type PeerValue = fn(&PeerStatus) -> u64;
    let peer_metrics: [(&str, &str, &str, PeerValue); 3] = [
        (
            "pinhole_peer_rx_bytes_total",
            "counter",
            "Bytes received from the peer.",
            |p| p.rx_bytes,
        ),
        (
            "pinhole_peer_tx_bytes_total",
            "counter",
            "Bytes sent to the peer.",
            |p| p.tx_bytes,
        ),
        (
            "pinhole_peer_latest_handshake_seconds",
            "gauge",
            "Unix time of the latest completed handshake with the peer, 0 if none.",
            |p| p.latest_handshake.unwrap_or(0),
        ),
    ];
    for (name, kind, help, value) in peer_metrics {
        header(&mut out, name, kind, help);
        for p in &status.peers {
            let _ = writeln!(
                out,
                "{name}{{peer=\"{}\",public_key=\"{}\"}} {}",
                escape_label(&p.name),
                escape_label(&p.public_key),
                value(p)
            );
        }
    }
    type ServiceValue = fn(&ServiceStatus) -> u64;
    let service_metrics: [(&str, &str, &str, ServiceValue); 5] = [
        (
            "connections_active",
            "gauge",
            "Connections open now.",
            |s| s.active,
        ),
        (
            "connections_total",
            "counter",
            "Connections accepted.",
            |s| s.total,
        ),
        (
            "connections_refused_total",
            "counter",
            "Connections turned away by limits, policy or a failed dial.",
            |s| s.refused,
        ),
        (
            "rx_bytes_total",
            "counter",
            "Bytes from clients towards the target.",
            |s| s.rx_bytes,
        ),
        (
            "tx_bytes_total",
            "counter",
            "Bytes from the target back to clients.",
            |s| s.tx_bytes,
        ),
    ];
    for (kind_name, services) in [("forward", &status.forwards), ("expose", &status.exposes)] {
        for (suffix, kind, help, value) in service_metrics {
            let name = format!("pinhole_{kind_name}_{suffix}");
            header(
                &mut out,
                &name,
                kind,
                &format!("{help} Per [[{kind_name}]]."),
            );
            for s in services.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{name=\"{}\",protocol=\"{}\",listen=\"{}\"}} {}",
                    escape_label(&s.name),
                    escape_label(&s.protocol),
                    escape_label(&s.listen),
                    value(s)
                );
            }
        }
    }
    for (name, help, label, values) in [
        (
            "pinhole_wg_dropped_packets_total",
            "Datagrams and packets the WireGuard engine dropped, by reason.",
            "reason",
            &status.engine.dropped,
        ),
        (
            "pinhole_wg_events_total",
            "WireGuard engine events: cookie replies, probes, forced handshakes, routed packets.",
            "event",
            &status.engine.events,
        ),
    ] {
        if values.is_empty() {
            continue;
        }
        header(&mut out, name, "counter", help);
        for (key, n) in values {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape_label(key));
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value per the text format: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) fn sample() -> Status {
    Status {
        engine: EngineCounters {
            dropped: vec![("bad_mac".into(), 3), ("no_route".into(), 0)],
            events: vec![("probes_sent".into(), 2)],
        },
        interface: InterfaceStatus {
            name: "relay".into(),
            public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into(),
            listen_port: 51820,
            addresses: vec!["10.77.0.1/24".into()],
        },
        peers: vec![
            PeerStatus {
                name: "home".into(),
                public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
                endpoint: Some("192.0.2.7:40000".into()),
                latest_handshake: Some(1_700_000_000),
                rx_bytes: 1_268_777,
                tx_bytes: 3_565_158,
                persistent_keepalive: Some(25),
                allowed_ips: vec!["10.77.0.2/32".into()],
            },
            PeerStatus {
                name: "phone \"a\"\\b\nc".into(),
                public_key: "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=".into(),
                endpoint: None,
                latest_handshake: None,
                rx_bytes: 0,
                tx_bytes: 512,
                persistent_keepalive: None,
                allowed_ips: vec![],
            },
        ],
        forwards: vec![ServiceStatus {
            name: "web".into(),
            protocol: "tcp".into(),
            listen: "0.0.0.0:8080".into(),
            to: "10.77.0.2:80".into(),
            active: 3,
            total: 1204,
            refused: 2,
            rx_bytes: 1_268_777,
            tx_bytes: 1_073_741_824,
        }],
        exposes: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_has_the_contract_keys_and_null_handshake() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json_pretty()).unwrap();
        let peer = &v["peers"][0];
        for key in [
            "name",
            "public_key",
            "endpoint",
            "latest_handshake",
            "rx_bytes",
            "tx_bytes",
        ] {
            assert!(peer.get(key).is_some(), "peer key {key} missing in {peer}");
        }
        assert_eq!(peer["latest_handshake"], 1_700_000_000u64);
        assert!(v["peers"][1]["latest_handshake"].is_null());
        assert!(v["peers"][1]["endpoint"].is_null());
        let fwd = &v["forwards"][0];
        for key in [
            "name", "protocol", "listen", "to", "active", "total", "refused", "rx_bytes",
            "tx_bytes",
        ] {
            assert!(fwd.get(key).is_some(), "forward key {key} missing in {fwd}");
        }
        assert!(v["exposes"].as_array().unwrap().is_empty());
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn text_reads_like_wg_show() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_063);
        let text = render_text(&sample(), now);
        assert!(
            text.starts_with("interface: relay\n  public key: HIgo9x"),
            "{text}"
        );
        assert!(text.contains("  listening port: 51820\n"), "{text}");
        // Only non-zero drop reasons are shown.
        assert!(text.contains("  dropped: bad_mac 3\n"), "{text}");
        assert!(text.contains("peer: home\n  public key: xTIBA5"), "{text}");
        assert!(text.contains("  endpoint: 192.0.2.7:40000\n"), "{text}");
        assert!(text.contains("  allowed ips: 10.77.0.2/32\n"), "{text}");
        assert!(
            text.contains("  latest handshake: 1 minute, 3 seconds ago\n"),
            "{text}"
        );
        assert!(
            text.contains("  transfer: 1.21 MiB received, 3.40 MiB sent\n"),
            "{text}"
        );
        assert!(
            text.contains("  persistent keepalive: every 25 seconds\n"),
            "{text}"
        );
        assert!(text.contains("  latest handshake: (none)\n"), "{text}");
        assert!(
            text.contains("  transfer: 0 B received, 512 B sent\n"),
            "{text}"
        );
        assert!(text.contains("exposes: (none)\n"), "{text}");
        // The table: a header and one aligned row.
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "forwards:")
            .skip(1)
            .take(2)
            .collect();
        assert!(lines[0].trim_start().starts_with("NAME"), "{text}");
        assert!(
            lines[1].contains("web")
                && lines[1].contains("0.0.0.0:8080")
                && lines[1].contains("1.00 GiB")
        );
        let col = |l: &str, word: &str| l.find(word).unwrap() + word.len();
        assert_eq!(
            col(lines[0], "TOTAL"),
            col(lines[1], "1204"),
            "numbers right-aligned under headers:\n{text}"
        );
    }

    #[test]
    fn durations_and_sizes_in_words() {
        assert_eq!(ago(100, 100), "Now");
        assert_eq!(ago(0, 3600 * 25 + 1), "1 day, 1 hour, 1 second ago");
        assert_eq!(ago(0, 2 * 365 * 24 * 3600 + 120), "2 years, 2 minutes ago");
        assert!(ago(10, 5).contains("future"));
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.00 KiB");
        assert_eq!(human_bytes(5 << 40), "5.00 TiB");
    }

    #[test]
    fn prometheus_text_format() {
        let text = render_prometheus(&sample());
        assert!(
            text.contains("# HELP pinhole_peer_rx_bytes_total "),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pinhole_peer_rx_bytes_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "pinhole_peer_rx_bytes_total{peer=\"home\",public_key=\"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"} 1268777\n"
        ));
        assert!(text.contains("pinhole_peer_latest_handshake_seconds{peer=\"home\",public_key=\"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"} 1700000000\n"));
        // Escaping of \, " and newline in label values.
        assert!(
            text.contains("{peer=\"phone \\\"a\\\"\\\\b\\nc\","),
            "{text}"
        );
        assert!(text.contains("# TYPE pinhole_forward_connections_active gauge\n"));
        assert!(text.contains(
            "pinhole_forward_connections_total{name=\"web\",protocol=\"tcp\",listen=\"0.0.0.0:8080\"} 1204\n"
        ));
        assert!(text.contains("pinhole_forward_connections_refused_total{name=\"web\",protocol=\"tcp\",listen=\"0.0.0.0:8080\"} 2\n"));
        assert!(text.contains("pinhole_forward_tx_bytes_total{name=\"web\",protocol=\"tcp\",listen=\"0.0.0.0:8080\"} 1073741824\n"));
        assert!(text.contains("# TYPE pinhole_expose_rx_bytes_total counter\n"));
        // Every sample line is `name{labels} value`, every metric has HELP and TYPE once.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        // 13 for peers and services, 2 for the engine's drops and events.
        assert_eq!((types, helps), (15, 15));
        assert!(text.contains("pinhole_wg_dropped_packets_total{reason=\"bad_mac\"} 3\n"));
        assert!(text.contains("pinhole_wg_events_total{event=\"probes_sent\"} 2\n"));
        assert!(text.ends_with('\n'));
    }
}
