//! wg-quick `.conf` → Pinhole TOML, parsed the way `wg` and `wg-quick` parse it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pinhole_config::keys::{PresharedKey, PrivateKey, PublicKey};
use pinhole_config::{Cidr, Config, Endpoint};
use toml_edit::{DocumentMut, Value};

use crate::text::{compact, compact_pairs, is_valid_name, toml_key, toml_str, toml_str_array};
use crate::wg_export::{INTERFACE_KEYS, PEER_KEYS, PINHOLE_MARK};
use crate::ProvisionError;

/// The result of [`import_wg`]: the Pinhole config, and what was left out and why.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The Pinhole TOML; it loads with `Config::parse`.
    pub toml: String,
    /// One line per setting that was skipped (`wg0.conf:4: DNS …`), to show the user.
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Iface {
    line: usize,
    private_key: Option<String>,
    listen_port: Option<u16>,
    addresses: Vec<Cidr>,
    mtu: Option<u16>,
    extras: Vec<String>,
}

#[derive(Default)]
struct Peer {
    line: usize,
    name: Option<String>,
    public_key: Option<String>,
    preshared_key: Option<String>,
    allowed_ips: Vec<Cidr>,
    endpoint: Option<Endpoint>,
    keepalive: Option<u16>,
    extras: Vec<String>,
}

enum Section {
    None,
    Interface,
    Peer,
}

/// Why a wg-quick key is skipped: Pinhole has no such setting.
fn unsupported(key: &str) -> Option<&'static str> {
    Some(match key {
        "dns" => "Pinhole sets no DNS servers; set DNS on the host if you need it",
        "table" => "Pinhole adds no routes",
        "preup" | "postup" | "predown" | "postdown" => {
            "Pinhole runs no scripts; run them from your service manager instead"
        }
        "saveconfig" => "Pinhole never writes its config back",
        "fwmark" => "Pinhole sets no firewall mark",
        "includedapplications" | "excludedapplications" => "per-app routing is Android-only",
        _ => return None,
    })
}

/// Converts a wg-quick `.conf` (`path` names it in messages) to a Pinhole config.
///
/// Parsed like `wg`: `#` starts a comment, whitespace inside a line is ignored, section names
/// and keys are case-insensitive, `Address` and `AllowedIPs` may repeat and merge. Keys Pinhole
/// has no use for (DNS, Table, FwMark, Pre/PostUp/Down, SaveConfig) are skipped and listed in
/// [`Imported::warnings`], never silently; an unknown key or section is an error with its line.
/// `# pinhole: …` lines written by [`crate::export_wg`] are read back (peer names, forwards,
/// exposes…), so export then import gives the same config.
pub fn import_wg(conf: &str, path: &Path) -> Result<Imported, ProvisionError> {
    let err = |line: usize, message: String, fix: &str| ProvisionError::WgQuick {
        path: path.to_path_buf(),
        line,
        message,
        fix: fix.to_string(),
    };
    let shown = path.display().to_string();
    let mut warnings = Vec::new();
    let mut skipped = Vec::new();
    let mut iface: Option<Iface> = None;
    let mut peers: Vec<Peer> = Vec::new();
    let mut top_values = Vec::new();
    let mut top_tables = Vec::new();
    let mut section = Section::None;

    for (i, raw) in conf.lines().enumerate() {
        let n = i + 1;
        if let Some(rest) = raw.trim_start().strip_prefix(PINHOLE_MARK) {
            let here = match section {
                Section::None => None,
                Section::Interface => Some("interface"),
                Section::Peer => Some("peer"),
            };
            match pinhole_line(rest.trim()) {
                Some(PinholeLine::Table(header)) if here.is_none() => top_tables.push(header),
                Some(PinholeLine::Value(k, v)) => match (here, &mut iface, peers.last_mut()) {
                    (None, _, _) => top_values.push(format!("{} = {}", toml_key(&k), compact(&v))),
                    (Some("interface"), Some(f), _) if !INTERFACE_KEYS.contains(&k.as_str()) => {
                        f.extras.push(format!("{} = {}", toml_key(&k), compact(&v)))
                    }
                    (Some("peer"), _, Some(p)) if k == "name" => match v.as_str() {
                        Some(name) if is_valid_name(name) => p.name = Some(name.to_string()),
                        _ => warnings.push(format!(
                            "{shown}:{n}: peer name {} is not valid, left out",
                            compact(&v)
                        )),
                    },
                    (Some("peer"), _, Some(p)) if !PEER_KEYS.contains(&k.as_str()) => {
                        p.extras.push(format!("{} = {}", toml_key(&k), compact(&v)))
                    }
                    _ => warnings.push(format!(
                        "{shown}:{n}: `{}` repeats a setting of its section, ignored",
                        raw.trim()
                    )),
                },
                _ => warnings.push(format!(
                    "{shown}:{n}: `{}` is not a Pinhole setting this import understands, ignored",
                    raw.trim()
                )),
            }
            continue;
        }
        let content = raw.split('#').next().unwrap_or("");
        let line: String = content.chars().filter(|c| !c.is_whitespace()).collect();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            match name.to_ascii_lowercase().as_str() {
                "interface" if iface.is_some() => {
                    return Err(err(
                        n,
                        "a second [Interface] section".into(),
                        "keep one [Interface] section",
                    ))
                }
                "interface" => {
                    iface = Some(Iface {
                        line: n,
                        ..Iface::default()
                    });
                    section = Section::Interface;
                }
                "peer" => {
                    peers.push(Peer {
                        line: n,
                        ..Peer::default()
                    });
                    section = Section::Peer;
                }
                _ => {
                    return Err(err(
                        n,
                        format!("unknown section [{name}]"),
                        "a wg-quick file has only [Interface] and [Peer] sections",
                    ))
                }
            }
            continue;
        }
        let Some((key_raw, value)) = line.split_once('=') else {
            return Err(err(
                n,
                format!("`{}` is not a `Key = Value` line", raw.trim()),
                "write `Key = Value`, or start a comment with #",
            ));
        };
        let key = key_raw.to_ascii_lowercase();
        if let Some(why) = unsupported(&key) {
            let w = format!("{shown}:{n}: {key_raw} skipped: {why}");
            skipped.push(format!("line {n}: {} ({why})", raw.trim()));
            warnings.push(w);
            continue;
        }
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            err(
                n,
                format!("{key_raw} `{value}` is not {what}: {e}"),
                "correct the value",
            )
        };
        let one = |slot: bool| {
            if slot {
                Err(err(
                    n,
                    format!("{key_raw} is given twice in this section"),
                    "keep one line",
                ))
            } else if value.is_empty() {
                Err(err(
                    n,
                    format!("{key_raw} has no value"),
                    "give it a value or delete the line",
                ))
            } else {
                Ok(())
            }
        };
        match (&section, key.as_str()) {
            (Section::Interface, k) => {
                // Set together with `section` when the header was read; a missing one is
                // reported, never unwrapped, since this is text from a file.
                let Some(f) = iface.as_mut() else {
                    return Err(err(
                        n,
                        format!("{key_raw} before [Interface]"),
                        "put it under [Interface]",
                    ));
                };
                match k {
                    "privatekey" => {
                        one(f.private_key.is_some())?;
                        PrivateKey::from_base64(value).map_err(|e| bad("a private key", &e))?;
                        f.private_key = Some(value.to_string());
                    }
                    "listenport" => {
                        one(f.listen_port.is_some())?;
                        f.listen_port =
                            Some(number(value).ok_or_else(|| bad("a port", &"use 0 to 65535"))?);
                    }
                    "mtu" => {
                        one(f.mtu.is_some())?;
                        f.mtu =
                            Some(number(value).ok_or_else(|| bad("an MTU", &"use 1280 to 9000"))?);
                    }
                    "address" => f
                        .addresses
                        .extend(cidrs(value).map_err(|e| bad("a list of addresses", &e))?),
                    _ => return Err(unknown(&err, n, key_raw, "[Interface]")),
                }
            }
            (Section::Peer, k) => {
                let Some(p) = peers.last_mut() else {
                    return Err(err(
                        n,
                        format!("{key_raw} before [Peer]"),
                        "put it under a [Peer]",
                    ));
                };
                match k {
                    "publickey" => {
                        one(p.public_key.is_some())?;
                        value
                            .parse::<PublicKey>()
                            .map_err(|e| bad("a public key", &e))?;
                        p.public_key = Some(value.to_string());
                    }
                    "presharedkey" => {
                        one(p.preshared_key.is_some())?;
                        PresharedKey::from_base64(value).map_err(|e| bad("a preshared key", &e))?;
                        p.preshared_key = Some(value.to_string());
                    }
                    "allowedips" => p
                        .allowed_ips
                        .extend(cidrs(value).map_err(|e| bad("a list of prefixes", &e))?),
                    "endpoint" => {
                        one(p.endpoint.is_some())?;
                        p.endpoint = Some(value.parse().map_err(|e| bad("host:port", &e))?);
                    }
                    "persistentkeepalive" => {
                        one(p.keepalive.is_some())?;
                        let secs = if value.eq_ignore_ascii_case("off") {
                            Some(0)
                        } else {
                            number(value)
                        };
                        p.keepalive = Some(secs.ok_or_else(|| {
                            bad("a number of seconds", &"use 1 to 65535, or off")
                        })?);
                    }
                    _ => return Err(unknown(&err, n, key_raw, "[Peer]")),
                }
            }
            (Section::None, _) => {
                return Err(err(
                    n,
                    format!("{key_raw} is outside any section"),
                    "put it under [Interface] or [Peer]",
                ))
            }
        }
    }

    let Some(iface) = iface else {
        return Err(err(
            0,
            "no [Interface] section".into(),
            "a wg-quick file starts with [Interface] and its PrivateKey",
        ));
    };
    let Some(private_key) = &iface.private_key else {
        return Err(err(
            iface.line,
            "[Interface] has no PrivateKey".into(),
            "add `PrivateKey = ` with the key from `wg genkey`",
        ));
    };
    if iface.addresses.is_empty() {
        return Err(err(
            iface.line,
            "[Interface] has no Address, which Pinhole needs".into(),
            "add `Address = ` with this peer's overlay address, e.g. 10.77.0.3/24",
        ));
    }

    let mut s = String::new();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "# Pinhole config imported from {name} by `pinhole import --wg`."
    );
    s.push_str("# It holds a private key: keep it secret (chmod 600). Check it with `pinhole check -c FILE`.\n");
    if !skipped.is_empty() {
        s.push_str("# Not imported, Pinhole has no such setting:\n");
        for l in &skipped {
            let _ = writeln!(s, "#   {l}");
        }
    }
    for l in &top_values {
        let _ = writeln!(s, "{l}");
    }
    s.push_str("\n[interface]\n");
    let _ = writeln!(s, "private_key = {}", toml_str(private_key));
    if let Some(p) = iface.listen_port.filter(|p| *p != 0) {
        let _ = writeln!(s, "listen_port = {p}");
    }
    let _ = writeln!(s, "address = {}", toml_str_array(&iface.addresses));
    if let Some(m) = iface.mtu {
        let _ = writeln!(s, "mtu = {m}");
    }
    for l in &iface.extras {
        let _ = writeln!(s, "{l}");
    }
    for p in &peers {
        let Some(public_key) = &p.public_key else {
            return Err(err(
                p.line,
                "this [Peer] has no PublicKey".into(),
                "add `PublicKey = ` with the peer's public key",
            ));
        };
        if p.allowed_ips.is_empty() {
            return Err(err(
                p.line,
                "this [Peer] has no AllowedIPs, which Pinhole needs".into(),
                "add `AllowedIPs = ` with the peer's overlay address, e.g. 10.77.0.1/32",
            ));
        }
        s.push_str("\n[[peer]]\n");
        if let Some(n) = &p.name {
            let _ = writeln!(s, "name = {}", toml_str(n));
        }
        let _ = writeln!(s, "public_key = {}", toml_str(public_key));
        if let Some(k) = &p.preshared_key {
            let _ = writeln!(s, "preshared_key = {}", toml_str(k));
        }
        let _ = writeln!(s, "allowed_ips = {}", toml_str_array(&p.allowed_ips));
        if let Some(e) = &p.endpoint {
            let _ = writeln!(s, "endpoint = {}", toml_str(&e.to_string()));
        }
        if let Some(k) = p.keepalive.filter(|k| *k != 0) {
            let _ = writeln!(s, "persistent_keepalive = {k}");
        }
        for l in &p.extras {
            let _ = writeln!(s, "{l}");
        }
    }
    for t in &top_tables {
        let _ = write!(s, "\n{t}");
    }

    let toml_path: PathBuf = path.with_extension("toml");
    Config::parse(&s, &toml_path).map_err(|source| ProvisionError::Converted {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Imported { toml: s, warnings })
}

fn unknown(
    err: &impl Fn(usize, String, &str) -> ProvisionError,
    n: usize,
    key: &str,
    section: &str,
) -> ProvisionError {
    err(
        n,
        format!("unknown key {key} in {section}"),
        "[Interface] takes PrivateKey, ListenPort, Address, MTU (and DNS, Table, FwMark, \
         PreUp/PostUp/PreDown/PostDown, SaveConfig, which are skipped); [Peer] takes PublicKey, \
         PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive",
    )
}

/// A decimal number (wg also takes service names for ports; Pinhole does not guess).
fn number(s: &str) -> Option<u16> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A comma list of prefixes; empty items are ignored, as wg does.
fn cidrs(s: &str) -> Result<Vec<Cidr>, pinhole_config::CidrError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

enum PinholeLine {
    /// `[[name]] k = v, …` or `[name] k = v, …`, rendered as a TOML table.
    Table(String),
    /// `key = value`.
    Value(String, Value),
}

/// Reads one `# pinhole:` line (the text after the mark).
fn pinhole_line(rest: &str) -> Option<PinholeLine> {
    let (open, close) = if rest.starts_with("[[") {
        ("[[", "]]")
    } else {
        ("[", "]")
    };
    if let Some(after) = rest.strip_prefix(open) {
        let (name, body) = after.split_once(close)?;
        let doc: DocumentMut = format!("x = {{ {body} }}").parse().ok()?;
        let t = doc.get("x")?.as_inline_table()?;
        let name = name.trim();
        let mut out = format!("{open}{name}{close}\n");
        for (k, v) in t.iter() {
            let _ = writeln!(out, "{}", compact_pairs(std::iter::once((k, v))));
        }
        return Some(PinholeLine::Table(out));
    }
    let doc: DocumentMut = rest.parse().ok()?;
    let mut it = doc.iter();
    let (k, item) = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(PinholeLine::Value(k.to_string(), item.as_value()?.clone()))
}
