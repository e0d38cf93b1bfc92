//! `kernel_nat = true` services on the TUN stack: the kernel forwards their packets by NAT
//! into or out of the TUN device, and Pinhole only encrypts them.
//!
//! A forward on the relay becomes a DNAT of its public port to the peer's overlay address,
//! with the source rewritten to our overlay address (the peer accepts only that). An expose
//! becomes a DNAT of its overlay port to the target; a target on another host is also
//! masqueraded, so its replies come back through us. No connection is ended or copied in user
//! space, which is what makes this the fastest path, and why limits, timeouts and PROXY
//! headers are refused at load for these services; access lists become the rules' own match.
//!
//! [`Plan`] is the pure part: the checked services in, an nftables script out. [`Rules`] is
//! the edge: it runs `nft` at start and at each reload that changes the plan, owns one table
//! named for the device, and deletes it when the peer stops. [`counted`] reads the table's
//! counters for `pinhole status`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use pinhole_config::{Access, Config, ExposeTarget, Protocol};

/// One DNAT: packets to `listen` (and the `count - 1` ports after it) go to `to` (and the
/// ports after it, in step).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dnat {
    name: String,
    /// The table's counter of the flows this rule rewrote (see [`counter_name`]).
    counter: String,
    protocol: Protocol,
    /// `None`: any local address (a forward listening on 0.0.0.0).
    listen_ip: Option<Ipv4Addr>,
    listen_port: u16,
    to_ip: Ipv4Addr,
    to_port: u16,
    count: u16,
    /// The target is another host: the flow is routed on, and masqueraded so that its
    /// replies come back through us (exposes only).
    routed: bool,
    /// Who may connect, as an nft match on the source address (see `who()`); `None` when
    /// nobody can: an `allow` list with no IPv4 entry.
    who: Option<String>,
}

/// `access` as the start of a rule: `ip saddr != { deny } ip saddr { allow } `, either part
/// left out when its list has no IPv4 entry; `None` when `allow` lists only IPv6 prefixes,
/// which no IPv4 client is in. A client the rule does not match is not rewritten: its packet
/// reaches this host's own port, where nothing listens, and is refused there.
fn who(access: &Access) -> Option<String> {
    let v4 = |list: &[pinhole_config::Cidr]| -> Vec<String> {
        list.iter()
            .filter(|c| c.addr().is_ipv4())
            .map(|c| c.to_string())
            .collect()
    };
    let (allow, deny) = (v4(&access.allow), v4(&access.deny));
    if !access.allow.is_empty() && allow.is_empty() {
        return None;
    }
    let mut m = String::new();
    if !deny.is_empty() {
        let _ = write!(m, "ip saddr != {{ {} }} ", deny.join(", "));
    }
    if !allow.is_empty() {
        let _ = write!(m, "ip saddr {{ {} }} ", allow.join(", "));
    }
    Some(m)
}

impl Dnat {
    /// `first` or `first-last`: the listen ports in nft's words.
    fn ports(&self) -> String {
        if self.count > 1 {
            let last = u32::from(self.listen_port) + u32::from(self.count) - 1;
            format!("{}-{last}", self.listen_port)
        } else {
            self.listen_port.to_string()
        }
    }

    /// Matches, in the post-routing hook, the flows this DNAT rewrote: by the destination the
    /// client addressed, which conntrack remembers. Other DNATs on the host (containers'
    /// published ports) are not ours to touch.
    fn ours(&self) -> String {
        let to = match self.listen_ip {
            Some(ip) => format!("ct original ip daddr {ip} "),
            None => String::new(),
        };
        format!(
            "meta l4proto {} {to}ct original proto-dst {} ct status dnat",
            self.protocol,
            self.ports()
        )
    }
}

/// What the kernel is asked to do for one config's kernel NAT services on one TUN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    device: String,
    /// Our overlay address: the source a forwarded connection gets inside the tunnel.
    overlay_ip: Option<Ipv4Addr>,
    forwards: Vec<Dnat>,
    exposes: Vec<Dnat>,
}

impl Plan {
    /// The kernel NAT services of `config` on TUN device `device`; `is_local` says whether an
    /// expose target is an address of this host.
    pub fn new(config: &Config, device: &str, is_local: impl Fn(Ipv4Addr) -> bool) -> Plan {
        let v4 = |a: SocketAddr| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        };
        let overlay_ip = config
            .interface
            .addresses
            .iter()
            .find_map(|c| match c.addr() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            });
        // Load refused anything but IPv4 with a fixed port for these, so `filter_map` drops
        // nothing that was accepted.
        let forwards = config
            .forwards
            .iter()
            .filter(|f| f.kernel_nat)
            .filter_map(|f| {
                Some(Dnat {
                    name: f.name.clone(),
                    counter: counter_name("forward", &f.name),
                    protocol: f.protocol,
                    listen_ip: v4(f.listen).filter(|ip| !ip.is_unspecified()),
                    listen_port: f.listen.port(),
                    to_ip: v4(f.to)?,
                    to_port: f.to.port(),
                    count: f.port_count,
                    routed: false,
                    who: who(&f.access),
                })
            })
            .collect();
        let exposes: Vec<Dnat> = config
            .exposes
            .iter()
            .filter(|e| e.kernel_nat)
            .filter_map(|e| {
                let ExposeTarget::Addr(to) = &e.to else {
                    return None;
                };
                Some(Dnat {
                    name: e.name.clone(),
                    counter: counter_name("expose", &e.name),
                    protocol: e.protocol,
                    listen_ip: v4(e.listen),
                    listen_port: e.listen.port(),
                    to_ip: to.host.parse().ok()?,
                    to_port: to.port,
                    count: e.port_count,
                    routed: false,
                    who: who(&e.access),
                })
            })
            .map(|d: Dnat| Dnat {
                routed: !is_local(d.to_ip),
                ..d
            })
            .collect();
        Plan {
            device: device.to_string(),
            overlay_ip,
            forwards,
            exposes,
        }
    }

    /// True when no service asks for kernel NAT: no table is needed.
    pub fn is_empty(&self) -> bool {
        self.forwards.is_empty() && self.exposes.is_empty()
    }

    /// True when some expose's target is a loopback address: the device needs
    /// `route_localnet`.
    fn exposes_loopback(&self) -> bool {
        self.exposes.iter().any(|d| d.to_ip.is_loopback())
    }

    /// True when packets must be routed between interfaces (forwards, and exposes to other
    /// hosts), which needs `net.ipv4.ip_forward`.
    fn needs_forwarding(&self) -> bool {
        !self.forwards.is_empty() || self.exposes.iter().any(|d| d.routed)
    }

    /// The table's name: `pinhole_` and the device name, one table per running peer.
    pub fn table(&self) -> String {
        let dev: String = self
            .device
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("pinhole_{dev}")
    }

    /// The nftables script that replaces the table in one transaction (an empty plan only
    /// deletes it). Errors only for a device name nft could not quote.
    pub fn script(&self) -> Result<String> {
        let table = self.table();
        // Create, then delete, then define: one transaction that works whether or not a
        // table of that name is left from an earlier run.
        let mut s = format!("table ip {table}\ndelete table ip {table}\n");
        if self.is_empty() {
            return Ok(s);
        }
        let dev = &self.device;
        if dev.is_empty()
            || !dev
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            bail!("TUN device name {dev:?} cannot be written in an nftables rule; set [interface] tun_name to letters, digits, '.', '_' or '-'");
        }
        let _ = writeln!(s, "table ip {table} {{");
        // One counter per service: the nat hooks see only the first packet of a flow, so it
        // counts the connections (UDP sessions) the rule rewrote, for `pinhole status`.
        for d in self.forwards.iter().chain(&self.exposes) {
            let _ = writeln!(s, "    counter {} {{}}", d.counter);
        }
        // Packets from elsewhere: clients of forwards, peers reaching exposes.
        s.push_str(
            "    chain pre {\n        type nat hook prerouting priority dstnat; policy accept;\n",
        );
        for d in &self.forwards {
            let to_here = match d.listen_ip {
                Some(ip) => format!("ip daddr {ip}"),
                None => "fib daddr type local".to_string(),
            };
            rule(&mut s, d, &to_here);
        }
        // An expose listens on one of our overlay addresses (load checks it): it has one.
        for d in &self.exposes {
            if let Some(ip) = d.listen_ip {
                rule(&mut s, d, &format!("iifname \"{dev}\" ip daddr {ip}"));
            }
        }
        s.push_str("    }\n");
        // Connections made on this host, as a listening socket would have accepted them.
        // Loopback is left out: a packet from 127.0.0.1 cannot leave through the tunnel.
        s.push_str("    chain out {\n        type nat hook output priority -100; policy accept;\n");
        for d in &self.forwards {
            let to_here = match d.listen_ip {
                Some(ip) => format!("ip daddr {ip}"),
                None => "fib daddr type local ip daddr != 127.0.0.0/8".to_string(),
            };
            rule(&mut s, d, &to_here);
        }
        for d in &self.exposes {
            if let Some(ip) = d.listen_ip {
                rule(&mut s, d, &format!("ip daddr {ip}"));
            }
        }
        s.push_str("    }\n");
        s.push_str("    chain through {\n        type filter hook forward priority filter; policy accept;\n");
        // The tunnel's MTU is smaller than the client's path: clamp the MSS of every
        // handshake that enters it, instead of relying on ICMP getting back to the client.
        let _ = writeln!(
            s,
            "        oifname \"{dev}\" tcp flags syn / syn,rst tcp option maxseg size set rt mtu"
        );
        if !self.forwards.is_empty() {
            let mut targets: Vec<String> =
                self.forwards.iter().map(|d| d.to_ip.to_string()).collect();
            targets.sort();
            targets.dedup();
            // If the device is gone (a crash left this table), these flows have no route into
            // the tunnel and must not leave through the default route instead.
            let _ = writeln!(
                s,
                "        ct status dnat ip daddr {{ {} }} oifname != \"{dev}\" drop",
                targets.join(", ")
            );
        }
        s.push_str("    }\n");
        s.push_str(
            "    chain post {\n        type nat hook postrouting priority srcnat; policy accept;\n",
        );
        // A forward's flows enter the tunnel from our overlay address: the peer accepts no
        // other source from us.
        for d in &self.forwards {
            let Some(ip) = self.overlay_ip else {
                bail!("a kernel_nat forward needs an IPv4 address in [interface] address: its connections enter the tunnel from that address");
            };
            let _ = writeln!(
                s,
                "        oifname \"{dev}\" {} snat to {ip} comment \"{}\"",
                d.ours(),
                d.name
            );
        }
        // An expose to another host: whether the flow came from the tunnel or from this host,
        // the target must answer us, not an overlay address it has no route to.
        for d in self.exposes.iter().filter(|d| d.routed) {
            let _ = writeln!(s, "        {} masquerade comment \"{}\"", d.ours(), d.name);
        }
        s.push_str("    }\n}\n");
        Ok(s)
    }
}

/// Appends the DNAT rule of `d`, matched on `to_here` and its port(s).
fn rule(s: &mut String, d: &Dnat, to_here: &str) {
    let Some(who) = &d.who else {
        return;
    };
    let proto = d.protocol;
    let ports = d.ports();
    let target = if d.count == 1 {
        format!("dnat to {}:{}", d.to_ip, d.to_port)
    } else if d.listen_port == d.to_port {
        // The same ports: the port is kept.
        format!("dnat to {}", d.to_ip)
    } else {
        let pairs: Vec<String> = (0..d.count)
            .map(|i| {
                let from = u32::from(d.listen_port) + u32::from(i);
                let to = u32::from(d.to_port) + u32::from(i);
                format!("{from} : {} . {to}", d.to_ip)
            })
            .collect();
        format!("dnat ip to {proto} dport map {{ {} }}", pairs.join(", "))
    };
    let _ = writeln!(
        s,
        "        {to_here} {who}{proto} dport {ports} counter name \"{}\" {target} comment \"{}\"",
        d.counter, d.name
    );
}

/// The kernel NAT table of a running peer: installed at start, replaced on reload, deleted
/// when the peer stops (or when this is dropped on an error path).
#[derive(Debug, Default)]
pub struct Rules {
    /// The table we installed, if any.
    table: Option<String>,
}

impl Rules {
    /// Makes the kernel do what `plan` says: checks forwarding, sets `route_localnet` on the
    /// device when an expose targets loopback, and replaces the table (or deletes it when the
    /// plan is empty). Blocking: it runs `nft`.
    pub fn apply(&mut self, plan: &Plan) -> Result<()> {
        if plan.is_empty() {
            return self.remove();
        }
        if plan.needs_forwarding() && !ip_forwarding()? {
            bail!(
                "kernel_nat needs IPv4 forwarding, and net.ipv4.ip_forward is 0; run `sysctl -w net.ipv4.ip_forward=1` (and put net.ipv4.ip_forward = 1 in /etc/sysctl.d/ to keep it), or remove kernel_nat"
            );
        }
        if plan.exposes_loopback() {
            // Only for our device: a loopback target is reached from the tunnel only.
            let path = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", plan.device);
            std::fs::write(&path, "1").with_context(|| {
                format!("kernel_nat to a loopback address needs route_localnet on the TUN device: writing {path}")
            })?;
        }
        nft(&plan.script()?)?;
        tracing::info!(
            table = %plan.table(),
            forwards = plan.forwards.len(),
            exposes = plan.exposes.len(),
            "kernel NAT rules installed"
        );
        self.table = Some(plan.table());
        Ok(())
    }

    /// Deletes the table, if we installed one.
    pub fn remove(&mut self) -> Result<()> {
        if let Some(table) = self.table.take() {
            nft(&format!("delete table ip {table}\n"))
                .with_context(|| format!("deleting the kernel NAT table {table}"))?;
            tracing::info!(%table, "kernel NAT rules removed");
        }
        Ok(())
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!("{e:#}");
        }
    }
}

/// The name of the counter of `kind`'s (`forward`, `expose`) service `name`: config names are
/// letters, digits, `.`, `_` and `-`, which an nft identifier may hold after a letter.
pub fn counter_name(kind: &str, name: &str) -> String {
    format!("{kind}_{name}")
}

/// The counters of `table`: (counter name, flows counted). Blocking: it runs `nft`.
pub fn counted(table: &str) -> Result<Vec<(String, u64)>> {
    let out = Command::new("nft")
        .args(["-j", "list", "counters", "table", "ip", table])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running nft")?;
    if !out.status.success() {
        bail!(
            "nft could not list the counters of {table}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_counters(&out.stdout)
}

/// `nft -j list counters` output to (name, packets) pairs.
fn parse_counters(json: &[u8]) -> Result<Vec<(String, u64)>> {
    let doc: serde_json::Value =
        serde_json::from_slice(json).context("nft's JSON did not parse")?;
    let items = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .context("nft's JSON has no \"nftables\" list")?;
    Ok(items
        .iter()
        .filter_map(|item| {
            let c = item.get("counter")?;
            Some((
                c.get("name")?.as_str()?.to_string(),
                c.get("packets")?.as_u64()?,
            ))
        })
        .collect())
}

/// Whether this network namespace routes IPv4 between interfaces.
fn ip_forwarding() -> Result<bool> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let v = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(v.trim() == "1")
}

/// Whether `ip` is an address of this host: a socket can be bound to it.
pub fn is_local(ip: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Runs `nft -f -` with `script`; its complaint, if any, is the error.
fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "kernel_nat needs the `nft` command, which is not installed (Debian and Ubuntu: apt install nftables)"
            ),
            _ => anyhow::Error::new(e).context("running nft"),
        })?;
    // nft may stop reading early (a syntax error): its complaint is the better error, so a
    // failed write is reported only when nft itself says nothing.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        bail!(
            "nft refused the kernel NAT rules ({}): {}",
            out.status,
            why.trim()
        );
    }
    written.context("writing the rules to nft")?;
    Ok(())
}

#[cfg(test)]
mod tests;
