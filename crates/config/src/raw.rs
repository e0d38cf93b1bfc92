//! Step one of loading: TOML text to raw tables whose values keep their byte spans.
//!
//! This step checks only shape: that each table and key is one we know, and that each value has
//! the TOML type we expect (string, integer, array of strings). Meaning (is this an address? a
//! key?) is checked in `validate`. We walk `toml_edit`'s span-preserving tree rather than use
//! serde's `deny_unknown_fields`, because serde stops at the first problem and we report all.

use toml_edit::{ImDocument, Item, TableLike, Value};

use crate::error::{Report, Span};
use crate::fields::{item_kind, span_of, value_kind, Fields};
use crate::schema::{
    suggest, EXPOSE_KEYS, FORWARD_KEYS, INTERFACE_KEYS, METRICS_KEYS, NOT_IN_EXPOSE,
    NOT_IN_FORWARD, PEER_KEYS, TOP_KEYS,
};

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Sp<T> {
    pub value: T,
    pub span: Span,
}

/// A key as found in a table: absent, present but of the wrong type (already reported), or good.
#[derive(Debug, Clone)]
pub(crate) enum Field<T> {
    Missing,
    Bad,
    Ok(Sp<T>),
}

impl<T> Field<T> {
    /// The value if present and well-typed; `Bad` was already reported, so both give `None`.
    pub(crate) fn ok(self) -> Option<Sp<T>> {
        match self {
            Field::Ok(v) => Some(v),
            Field::Missing | Field::Bad => None,
        }
    }

    /// Where the value was written, when present and well-typed.
    pub(crate) fn span(&self) -> Option<Span> {
        match self {
            Field::Ok(v) => Some(v.span.clone()),
            Field::Missing | Field::Bad => None,
        }
    }

    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, Field::Missing)
    }

    /// The value of a required key; reports it as missing (at `table_span`) when absent.
    pub(crate) fn required(
        self,
        report: &mut Report<'_>,
        table_span: &Span,
        key: &str,
        fix: &str,
    ) -> Option<Sp<T>> {
        if self.is_missing() {
            report.error(table_span, key, "missing required key", fix);
        }
        self.ok()
    }
}

/// A duration as written: TOML integer seconds or a string with a unit.
#[derive(Debug, Clone)]
pub(crate) enum RawDuration {
    Secs(i64),
    Text(String),
}

/// `[interface]` as written.
#[derive(Debug)]
pub(crate) struct RawInterface {
    pub span: Span,
    pub private_key: Field<String>,
    pub private_key_file: Field<String>,
    pub listen_port: Field<i64>,
    pub address: Field<Vec<Sp<String>>>,
    pub mtu: Field<i64>,
    pub route_between_peers: Field<bool>,
    pub control_socket: Field<String>,
    pub uapi_socket: Field<String>,
    pub netstack: Field<String>,
    pub tun_name: Field<String>,
    pub max_connections: Field<i64>,
}

/// `[metrics]` as written.
#[derive(Debug)]
pub(crate) struct RawMetrics {
    pub span: Span,
    pub listen: Field<String>,
}

/// One `[[peer]]` as written.
#[derive(Debug)]
pub(crate) struct RawPeer {
    pub span: Span,
    pub name: Field<String>,
    pub public_key: Field<String>,
    pub preshared_key: Field<String>,
    pub allowed_ips: Field<Vec<Sp<String>>>,
    pub endpoint: Field<String>,
    pub persistent_keepalive: Field<i64>,
}

/// One `[[forward]]` or `[[expose]]` as written. Keys of the other kind only (proxy keys on
/// an expose, SOCKS keys on a forward) were refused while reading and stay `Missing`.
#[derive(Debug)]
pub(crate) struct RawService {
    pub span: Span,
    pub name: Field<String>,
    pub protocol: Field<String>,
    pub listen: Field<String>,
    pub to: Field<String>,
    pub connect_timeout: Field<RawDuration>,
    pub idle_timeout: Field<RawDuration>,
    pub max_connections: Field<i64>,
    pub max_sessions: Field<i64>,
    pub allow: Field<Vec<Sp<String>>>,
    pub deny: Field<Vec<Sp<String>>>,
    pub rate_limit: Field<String>,
    pub proxy_protocol: Field<String>,
    pub accept_proxy_protocol: Field<bool>,
    pub kernel_nat: Field<bool>,
    pub username: Field<String>,
    pub password: Field<String>,
    pub allow_destinations: Field<Vec<Sp<String>>>,
    pub deny_destinations: Field<Vec<Sp<String>>>,
}

/// The whole file as written.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub interface: Option<RawInterface>,
    pub peers: Vec<RawPeer>,
    pub forwards: Vec<RawService>,
    pub exposes: Vec<RawService>,
    pub metrics: Option<RawMetrics>,
}

/// Parses `text` and reads its tables. `None` means a TOML syntax error, already reported:
/// nothing else can be said about a file that does not parse.
pub(crate) fn read(text: &str, report: &mut Report<'_>) -> Option<RawConfig> {
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().replace('\n', "; ");
            let fix = syntax_fix(text, &message, &span);
            report.error(&span, "", format!("TOML syntax error: {message}"), fix);
            return None;
        }
    };
    let root = doc.as_table();
    let mut raw = RawConfig::default();
    let root_span = 0..0;
    for (name, item) in root.iter() {
        let key_span = span_of(root.key(name).and_then(|k| k.span()), &root_span);
        match name {
            "interface" => raw.interface = read_interface(item, &key_span, report),
            "metrics" => raw.metrics = read_metrics(item, &key_span, report),
            "peer" => {
                for (i, (table, span)) in array_of_tables(item, "peer", &key_span, report)
                    .into_iter()
                    .enumerate()
                {
                    raw.peers.push(read_peer(table, span, i, report));
                }
            }
            "forward" | "expose" => {
                for (i, (table, span)) in array_of_tables(item, name, &key_span, report)
                    .into_iter()
                    .enumerate()
                {
                    let service = read_service(table, span, &format!("{name}[{i}]"), name, report);
                    if name == "forward" {
                        raw.forwards.push(service);
                    } else {
                        raw.exposes.push(service);
                    }
                }
            }
            other => {
                let shown = match item {
                    Item::Table(_) => format!("table [{other}]"),
                    Item::ArrayOfTables(_) => format!("table [[{other}]]"),
                    _ => format!("key `{other}`"),
                };
                let hint = match suggest(other, TOP_KEYS) {
                    Some(s @ ("interface" | "metrics")) => format!("did you mean [{s}]? "),
                    Some(s) => format!("did you mean [[{s}]]? "),
                    None => String::new(),
                };
                report.error(
                    &key_span,
                    other,
                    format!("unknown {shown}"),
                    format!("{hint}the file may only have [interface], [[peer]], [[forward]], [[expose]] and [metrics]"),
                );
            }
        }
    }
    Some(raw)
}

/// A hint for the common syntax slips: a key given twice, or a string value left unquoted.
fn syntax_fix(text: &str, message: &str, span: &Span) -> String {
    if message.starts_with("duplicate key") {
        return "each key and table may appear only once; remove or rename one of them".to_string();
    }
    let line = text
        .get(..span.start.min(text.len()))
        .and_then(|before| text.lines().nth(before.matches('\n').count()))
        .unwrap_or("");
    let value = line.split_once('=').map_or("", |(_, v)| v.trim());
    let looks_like_number_or_bool = value.parse::<i64>().is_ok()
        || value.parse::<f64>().is_ok()
        || value == "true"
        || value == "false";
    let bare =
        !value.contains('"') && value.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[');
    if bare && !looks_like_number_or_bool {
        "put string values in double quotes, e.g. to = \"10.77.0.2:80\"".to_string()
    } else {
        "correct the TOML syntax at this position (see https://toml.io)".to_string()
    }
}

/// `item` as the single table `[name]` (`fix` says how to write it when it is not one), with
/// its span and its keys checked against `allowed`.
fn single_table<'a>(
    item: &'a Item,
    name: &str,
    allowed: &'a [&'a str],
    key_span: &Span,
    fix: &str,
    report: &mut Report<'_>,
) -> Option<(Fields<'a>, Span)> {
    let Some(table) = item.as_table_like() else {
        report.error(key_span, name, "must be a single table", fix);
        return None;
    };
    let span = span_of(item.span(), key_span);
    let fields = Fields::new(
        table,
        name,
        &format!("[{name}]"),
        allowed,
        &[],
        &span,
        report,
    );
    Some((fields, span))
}

fn read_interface(item: &Item, key_span: &Span, report: &mut Report<'_>) -> Option<RawInterface> {
    let fix = if matches!(item, Item::ArrayOfTables(_)) {
        "write [interface] (there is exactly one), not [[interface]]"
    } else {
        "write a table: [interface] on its own line, then its keys"
    };
    let (f, span) = single_table(item, "interface", INTERFACE_KEYS, key_span, fix, report)?;
    Some(RawInterface {
        private_key: f.string("private_key", report),
        private_key_file: f.string("private_key_file", report),
        listen_port: f.integer("listen_port", report),
        address: f.string_list("address", report),
        mtu: f.integer("mtu", report),
        route_between_peers: f.boolean("route_between_peers", report),
        control_socket: f.string("control_socket", report),
        uapi_socket: f.string("uapi_socket", report),
        netstack: f.string("netstack", report),
        tun_name: f.string("tun_name", report),
        max_connections: f.integer("max_connections", report),
        span,
    })
}

fn read_metrics(item: &Item, key_span: &Span, report: &mut Report<'_>) -> Option<RawMetrics> {
    let fix = "write [metrics] on its own line, then listen = \"127.0.0.1:9100\"";
    let (f, span) = single_table(item, "metrics", METRICS_KEYS, key_span, fix, report)?;
    Some(RawMetrics {
        listen: f.string("listen", report),
        span,
    })
}

/// The tables of `[[name]]` (or `name = [{..}, {..}]`), each with its span.
fn array_of_tables<'a>(
    item: &'a Item,
    name: &str,
    key_span: &Span,
    report: &mut Report<'_>,
) -> Vec<(&'a dyn TableLike, Span)> {
    let mut out: Vec<(&'a dyn TableLike, Span)> = Vec::new();
    match item {
        Item::ArrayOfTables(aot) => {
            for t in aot.iter() {
                out.push((t, span_of(t.span(), key_span)));
            }
        }
        Item::Value(Value::Array(arr)) => {
            for v in arr.iter() {
                let span = span_of(v.span(), key_span);
                match v {
                    Value::InlineTable(t) => out.push((t, span)),
                    _ => report.error(
                        &span,
                        name,
                        format!("expected a table, found {}", value_kind(v)),
                        format!("write each entry as [[{name}]] followed by its keys"),
                    ),
                }
            }
        }
        _ => report.error(
            key_span,
            name,
            format!("must be an array of tables, found {}", item_kind(item)),
            format!("write [[{name}]] (double brackets), once per {name}"),
        ),
    }
    out
}

fn read_peer(table: &dyn TableLike, span: Span, index: usize, report: &mut Report<'_>) -> RawPeer {
    let path = format!("peer[{index}]");
    let f = Fields::new(table, &path, "[[peer]]", PEER_KEYS, &[], &span, report);
    RawPeer {
        name: f.string("name", report),
        public_key: f.string("public_key", report),
        preshared_key: f.string("preshared_key", report),
        allowed_ips: f.string_list("allowed_ips", report),
        endpoint: f.string("endpoint", report),
        persistent_keepalive: f.integer("persistent_keepalive", report),
        span,
    }
}

fn read_service(
    table: &dyn TableLike,
    span: Span,
    path: &str,
    kind: &str,
    report: &mut Report<'_>,
) -> RawService {
    let (keys, misplaced) = if kind == "forward" {
        (FORWARD_KEYS, NOT_IN_FORWARD)
    } else {
        (EXPOSE_KEYS, NOT_IN_EXPOSE)
    };
    let f = Fields::new(
        table,
        path,
        &format!("[[{kind}]]"),
        keys,
        misplaced,
        &span,
        report,
    );
    // Keys of the other kind only read as absent (see `Fields`).
    RawService {
        name: f.string("name", report),
        protocol: f.string("protocol", report),
        listen: f.string("listen", report),
        to: f.string("to", report),
        connect_timeout: f.duration("connect_timeout", report),
        idle_timeout: f.duration("idle_timeout", report),
        max_connections: f.integer("max_connections", report),
        max_sessions: f.integer("max_sessions", report),
        allow: f.string_list("allow", report),
        deny: f.string_list("deny", report),
        rate_limit: f.string("rate_limit", report),
        proxy_protocol: f.string("proxy_protocol", report),
        accept_proxy_protocol: f.boolean("accept_proxy_protocol", report),
        kernel_nat: f.boolean("kernel_nat", report),
        username: f.string("username", report),
        password: f.string("password", report),
        allow_destinations: f.string_list("allow_destinations", report),
        deny_destinations: f.string_list("deny_destinations", report),
        span,
    }
}
