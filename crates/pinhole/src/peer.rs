//! One running peer: everything a config file asks for, wired together, and
//! changed in place on reload.
//!
//! The caller binds the sockets ([`Sockets::bind`], or its own on port 0 in
//! tests) and owns the shutdown signal; [`run`] returns once every task it
//! started has stopped.

mod build;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pinhole_config::{Config, Expose, Forward, Protocol};
use pinhole_forward::TaskTracker;
use pinhole_wg::Wg;
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::kernel_nat;
use crate::node::{self, Command};
use crate::ops;
use crate::overlay::Net;
use crate::services::{self, ForwardSockets, Running};
use crate::view::{ServiceView, Snapshot, View};
use build::{ip_side, wg_config};

/// How long live connections may take to finish after a shutdown signal
/// before the tunnel is torn down under them.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The real sockets a peer serves on, bound before it starts so that binding
/// errors are reported up front and tests can bind port 0.
pub struct Sockets {
    /// The WireGuard UDP socket.
    pub udp: UdpSocket,
    /// The sockets of each `[[forward]]` without `kernel_nat`, in config order.
    pub forwards: Vec<ForwardSockets>,
    /// The control socket (`pinhole status`, `pinhole reload`), if any.
    pub control: Option<UnixListener>,
    /// WireGuard's UAPI socket (`wg show`), if any.
    pub uapi: Option<UnixListener>,
    /// The Prometheus endpoint (`[metrics] listen`), if any.
    pub metrics: Option<TcpListener>,
}

impl Sockets {
    /// Binds every socket the config names, with errors that say which.
    pub async fn bind(config: &Config) -> Result<Sockets> {
        let port = config.interface.listen_port.unwrap_or(0);
        let udp = pinhole_udpio::bind_socket(port).with_context(|| {
            format!(
                "binding the WireGuard UDP port {port} ([interface] listen_port in {})",
                config.path.display()
            )
        })?;
        let mut forwards = Vec::with_capacity(config.forwards.len());
        // A kernel NAT forward has no socket: the kernel rewrites its packets before any
        // socket would see them.
        for f in config.forwards.iter().filter(|f| !f.kernel_nat) {
            forwards.push(services::bind_forward(f).await?);
        }
        let control_path = config.control_socket_path();
        let control = ops::control::bind_control(&control_path).with_context(|| {
            format!(
                "binding the control socket {} (set [interface] control_socket to choose another path)",
                control_path.display()
            )
        })?;
        let uapi_path = config.uapi_socket_path();
        let uapi = match ops::uapi::bind_uapi(&uapi_path) {
            Ok(l) => Some(l),
            Err(e) if config.interface.uapi_socket.is_some() => {
                return Err(e)
                    .with_context(|| format!("binding the UAPI socket {}", uapi_path.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::warn!(
                    "another running peer already answers `wg show {}` on {}; set [interface] uapi_socket in {} to give this one its own",
                    config.interface_name(),
                    uapi_path.display(),
                    config.path.display()
                );
                None
            }
            Err(e) => {
                tracing::debug!(path = %uapi_path.display(), error = %e, "no UAPI socket: `wg show` will not see this peer");
                None
            }
        };
        let metrics = match &config.metrics {
            Some(m) => Some(
                TcpListener::bind(m.listen)
                    .await
                    .with_context(|| format!("[metrics] listen: cannot listen on {}", m.listen))?,
            ),
            None => None,
        };
        Ok(Sockets {
            udp,
            forwards,
            control: Some(control),
            uapi,
            metrics,
        })
    }

    /// Only the WireGuard socket and the forwards' sockets: what tests and
    /// embedders use when they want no control, UAPI or metrics sockets.
    pub fn new(udp: UdpSocket, forwards: Vec<ForwardSockets>) -> Sockets {
        Sockets {
            udp,
            forwards,
            control: None,
            uapi: None,
            metrics: None,
        }
    }
}

/// Asks a running peer to re-read its config file; the answer says what changed.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// Runs the peer described by `config` on `sockets` until `shutdown` is cancelled.
///
/// `reload` (SIGHUP) makes it re-read its config file and apply what changed.
/// On shutdown it stops accepting, gives live connections `DRAIN_GRACE` to
/// finish, then stops the tunnel.
pub async fn run(config: Config, sockets: Sockets, shutdown: CancellationToken) -> Result<()> {
    run_with_reload(config, sockets, shutdown, Arc::new(Notify::new())).await
}

/// [`run`], plus reloads whenever `reload` is notified (main wires SIGHUP to it).
pub async fn run_with_reload(
    config: Config,
    sockets: Sockets,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> Result<()> {
    let wg = Wg::new(wg_config(&config).await?, Instant::now())
        .context("starting the WireGuard engine")?;
    // A TUN device is up, with its addresses and routes, before any expose binds them.
    let (ip, net, device) = ip_side(&config)?;

    let node_stop = CancellationToken::new();
    let local = sockets.udp.local_addr()?;
    let (node_tx, node_rx) = mpsc::channel(node::COMMAND_QUEUE);
    let mut node_task = tokio::spawn(node::run(sockets.udp, wg, ip, node_rx, node_stop.clone()));
    tracing::info!(
        public_key = %config.interface.private_key.public_key(),
        udp = %local,
        netstack = %config.interface.netstack,
        peers = config.peers.len(),
        "pinhole is up"
    );

    let mut peer = Peer {
        config,
        net,
        forwards: Vec::new(),
        exposes: Vec::new(),
        draining: Vec::new(),
        device,
        nat: None,
        rules: kernel_nat::Rules::default(),
    };
    let path = peer.config.path.display().to_string();
    peer.apply_kernel_nat()
        .await
        .with_context(|| format!("kernel_nat services in {path}"))?;
    let carried = |f: &&Forward| !f.kernel_nat;
    for (f, s) in peer
        .config
        .forwards
        .clone()
        .iter()
        .filter(carried)
        .zip(sockets.forwards)
    {
        peer.forwards
            .push((f.clone(), services::start_forward(f, s, &peer.net)?));
    }
    for e in peer
        .config
        .exposes
        .clone()
        .into_iter()
        .filter(|e| !e.kernel_nat)
    {
        let running =
            services::start_expose(&e, &peer.net, &peer.config.interface.addresses).await?;
        peer.exposes.push((e, running));
    }

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let view = Arc::new(View::new(
        node_tx.clone(),
        reload_tx,
        local.port(),
        peer.snapshot(),
    ));
    let ops_stop = CancellationToken::new();
    let mut ops_tasks = tokio::task::JoinSet::new();
    if let Some(l) = sockets.control {
        ops_tasks.spawn(ops::control::serve_control(
            l,
            view.clone(),
            ops_stop.clone(),
        ));
    }
    if let Some(l) = sockets.uapi {
        ops_tasks.spawn(ops::uapi::serve_uapi(l, view.clone(), ops_stop.clone()));
    }
    if let Some(l) = sockets.metrics {
        ops_tasks.spawn(ops::metrics::serve_metrics(
            l,
            view.clone(),
            ops_stop.clone(),
        ));
    }

    let outcome = loop {
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            ended = &mut node_task => break match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the tunnel stopped")),
                Err(e) => Err(anyhow::Error::new(e).context("the tunnel task failed")),
            },
            // SIGHUP has nobody to answer; `pinhole reload` waits for the outcome.
            _ = reload.notified() => None,
            Some(reply) = reload_rx.recv() => Some(reply),
        };
        let result = peer.reload(&node_tx).await;
        match &result {
            Ok(changes) => tracing::info!("reloaded {}: {changes}", peer.config.path.display()),
            Err(why) => tracing::warn!("reload refused, nothing changed: {why}"),
        }
        // Status shows the reload before its caller hears it is done: a `status` sent right
        // after the answer, served by another thread, saw the old forwards.
        view.set(peer.snapshot());
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    };

    peer.stop_accepting().await;
    // New kernel NAT connections stop here too; live ones keep their conntrack entries.
    let rules = std::mem::take(&mut peer.rules);
    let removed = tokio::task::spawn_blocking(move || {
        let mut rules = rules;
        rules.remove()
    })
    .await;
    if let Ok(Err(e)) = removed {
        tracing::warn!("{e:#}");
    }
    if tokio::time::timeout(DRAIN_GRACE, peer.drain())
        .await
        .is_err()
    {
        tracing::warn!("live connections did not finish within {DRAIN_GRACE:?}; closing them");
    }
    ops_stop.cancel();
    while ops_tasks.join_next().await.is_some() {}
    node_stop.cancel();
    if !node_task.is_finished() {
        let _ = node_task.await;
    }
    outcome
}

/// The parts of a running peer that a reload may change.
struct Peer {
    config: Config,
    net: Net,
    forwards: Vec<(Forward, Running)>,
    exposes: Vec<(Expose, Running)>,
    /// Connections of replaced services, still finishing.
    draining: Vec<TaskTracker>,
    /// The TUN device, when the stack is "tun": what kernel NAT rules route through.
    device: Option<String>,
    /// What the kernel NAT rules in force do (`None` before the first apply).
    nat: Option<kernel_nat::Plan>,
    rules: kernel_nat::Rules,
}

impl Peer {
    /// What status shows, in config order so that it reads like the file. A kernel NAT
    /// service has no task and no connection of ours to count: the kernel counts it (`to` says
    /// so, and status reads the table's counter).
    fn snapshot(&self) -> Snapshot {
        // The table of the kernel NAT rules in force, if there are any.
        let table = (self.nat.as_ref())
            .filter(|p| !p.is_empty())
            .map(kernel_nat::Plan::table);
        let view = |kind: &str,
                    name: &str,
                    protocol: Protocol,
                    listen: String,
                    to: String,
                    kernel_nat,
                    running: Option<&Running>| {
            let (counters, listen, to, counted) = match running {
                Some(r) => (r.counters.clone(), r.listen.clone(), to, None),
                None if kernel_nat => (
                    Arc::default(),
                    listen,
                    format!("{to} (kernel NAT)"),
                    Some((table.clone()?, kernel_nat::counter_name(kind, name))),
                ),
                None => return None,
            };
            Some(ServiceView {
                name: name.to_string(),
                protocol: protocol.to_string(),
                listen,
                to,
                counters,
                kernel_nat: counted,
            })
        };
        let forwards = self.config.forwards.iter().filter_map(|f| {
            let r = self.forwards.iter().find(|(g, _)| g.name == f.name);
            view(
                "forward",
                &f.name,
                f.protocol,
                f.show_listen(),
                f.show_to(),
                f.kernel_nat,
                r.map(|(_, r)| r),
            )
        });
        let exposes = self.config.exposes.iter().filter_map(|e| {
            let r = self.exposes.iter().find(|(g, _)| g.name == e.name);
            view(
                "expose",
                &e.name,
                e.protocol,
                e.show_listen(),
                e.show_to(),
                e.kernel_nat,
                r.map(|(_, r)| r),
            )
        });
        (
            Arc::new(self.config.clone()),
            forwards.collect(),
            exposes.collect(),
        )
    }

    /// Brings the kernel NAT rules in line with the config: installs, replaces or deletes
    /// the table when what it should do changed. Without a TUN device there is nothing to
    /// route through, and load refused kernel_nat already unless the stack is "tun".
    async fn apply_kernel_nat(&mut self) -> Result<Option<String>> {
        let Some(device) = self.device.clone() else {
            return Ok(None);
        };
        let plan = kernel_nat::Plan::new(&self.config, &device, kernel_nat::is_local);
        if self.nat.as_ref() == Some(&plan) || (self.nat.is_none() && plan.is_empty()) {
            return Ok(None);
        }
        let mut rules = std::mem::take(&mut self.rules);
        let (rules, applied) = tokio::task::spawn_blocking(move || {
            let applied = rules.apply(&plan).map(|()| plan);
            (rules, applied)
        })
        .await
        .context("the task that runs nft failed")?;
        self.rules = rules;
        let plan = applied?;
        let what = if plan.is_empty() {
            "kernel NAT rules removed"
        } else {
            "kernel NAT rules replaced"
        };
        self.nat = Some(plan);
        Ok(Some(what.to_string()))
    }

    /// Re-reads the config file and applies what changed: peers in the
    /// engine (sessions of unchanged peers kept), forwards and exposes by
    /// name (unchanged ones untouched, live connections of changed ones left
    /// to finish). A file that does not load changes nothing.
    async fn reload(&mut self, node: &mpsc::Sender<Command>) -> Result<String, String> {
        let path = self.config.path.clone();
        let loaded = pinhole_config::Config::load(&path).map_err(|e| format!("{e:#}"))?;
        let new = loaded.config;
        let wg = wg_config(&new).await.map_err(|e| format!("{e:#}"))?;
        let (tx, rx) = oneshot::channel();
        node.send(Command::Update(wg, tx))
            .await
            .map_err(|_| "the tunnel has stopped".to_string())?;
        let report = rx
            .await
            .map_err(|_| "the tunnel has stopped".to_string())?
            .map_err(|e| format!("{e}"))?;

        let mut changes = Vec::new();
        if report.private_key_changed {
            changes.push("new private key".to_string());
        }
        if self.config.interface.route_between_peers != new.interface.route_between_peers {
            let now = if new.interface.route_between_peers {
                "on"
            } else {
                "off"
            };
            changes.push(format!("routing between peers {now}"));
        }
        for (what, n) in [
            ("added", report.added.len()),
            ("removed", report.removed.len()),
            ("re-keyed", report.restarted.len()),
        ] {
            if n > 0 {
                changes.push(format!("peers {what}: {n}"));
            }
        }
        let restart = restart_needed(&self.config, &new);

        let old_forwards = std::mem::take(&mut self.forwards);
        let mut starting = Vec::new();
        for (f, mut running) in old_forwards {
            match new.forwards.iter().find(|n| n.name == f.name) {
                Some(n) if *n == f => self.forwards.push((f, running)),
                _ => {
                    running.stop_accepting().await;
                    self.draining.push(running.tracker.clone());
                    changes.push(format!("forward {:?} stopped", f.name));
                }
            }
        }
        for f in new.forwards.iter().filter(|f| !f.kernel_nat) {
            if self.forwards.iter().any(|(old, _)| old.name == f.name) {
                continue;
            }
            let started = match services::bind_forward(f).await {
                Ok(sockets) => services::start_forward(f, sockets, &self.net),
                Err(e) => Err(e),
            };
            match started {
                Ok(running) => {
                    starting.push(f.name.clone());
                    self.forwards.push((f.clone(), running));
                }
                Err(e) => changes.push(format!("forward {:?} NOT started: {e:#}", f.name)),
            }
        }
        let old_exposes = std::mem::take(&mut self.exposes);
        for (e, mut running) in old_exposes {
            match new.exposes.iter().find(|n| n.name == e.name) {
                Some(n) if *n == e => self.exposes.push((e, running)),
                _ => {
                    running.stop_accepting().await;
                    self.draining.push(running.tracker.clone());
                    changes.push(format!("expose {:?} stopped", e.name));
                }
            }
        }
        for e in new.exposes.iter().filter(|e| !e.kernel_nat) {
            if self.exposes.iter().any(|(old, _)| old.name == e.name) {
                continue;
            }
            match services::start_expose(e, &self.net, &self.config.interface.addresses).await {
                Ok(running) => {
                    starting.push(e.name.clone());
                    self.exposes.push((e.clone(), running));
                }
                Err(err) => changes.push(format!("expose {:?} NOT started: {err:#}", e.name)),
            }
        }
        // Keep config order, so status reads like the file.
        self.forwards
            .sort_by_key(|(f, _)| new.forwards.iter().position(|n| n.name == f.name));
        self.exposes
            .sort_by_key(|(e, _)| new.exposes.iter().position(|n| n.name == e.name));
        for name in starting {
            changes.push(format!("{name:?} started"));
        }
        for w in &loaded.warnings {
            changes.push(format!("warning: {w}"));
        }
        if !restart.is_empty() {
            changes.push(format!("restart needed to apply: {}", restart.join(", ")));
        }
        // The interface keeps its running values until a restart.
        let interface = self.config.interface.clone();
        self.config = new;
        self.config.interface.addresses = interface.addresses;
        self.config.interface.mtu = interface.mtu;
        self.config.interface.listen_port = interface.listen_port;
        self.config.interface.netstack = interface.netstack;
        self.config.interface.max_connections = interface.max_connections;
        // Without a TUN device (a file that switched to netstack = "tun") this does nothing;
        // the restart it needs is among `restart` above.
        match self.apply_kernel_nat().await {
            Ok(Some(what)) => changes.push(what),
            Ok(None) => {}
            Err(e) => changes.push(format!("kernel NAT rules NOT changed: {e:#}")),
        }
        Ok(if changes.is_empty() {
            "nothing changed".to_string()
        } else {
            changes.join("; ")
        })
    }

    async fn stop_accepting(&mut self) {
        let forwards = self.forwards.iter_mut().map(|(_, r)| r);
        for r in forwards.chain(self.exposes.iter_mut().map(|(_, r)| r)) {
            r.stop_accepting().await;
        }
    }

    async fn drain(&self) {
        let trackers = self
            .forwards
            .iter()
            .map(|(_, r)| &r.tracker)
            .chain(self.exposes.iter().map(|(_, r)| &r.tracker))
            .chain(self.draining.iter());
        for t in trackers {
            t.close();
            t.wait().await;
        }
    }
}

/// Interface settings that the running stack and sockets cannot change in place.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.interface, &new.interface);
    let mut out = Vec::new();
    if o.addresses != n.addresses {
        out.push("[interface] address");
    }
    if o.mtu != n.mtu {
        out.push("[interface] mtu");
    }
    if o.listen_port != n.listen_port {
        out.push("[interface] listen_port");
    }
    if o.netstack != n.netstack {
        out.push("[interface] netstack or tun_name");
    }
    if o.max_connections != n.max_connections {
        out.push("[interface] max_connections");
    }
    if o.control_socket != n.control_socket
        || o.uapi_socket != n.uapi_socket
        || old.metrics != new.metrics
    {
        out.push("control, UAPI or metrics sockets");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::build::test_config as config;
    use super::*;

    #[test]
    fn a_changed_connection_cap_needs_a_restart() {
        let default = config("", "[\"10.77.0.0/24\"]");
        let lowered = config("max_connections = 10000", "[\"10.77.0.0/24\"]");
        assert_eq!(
            restart_needed(&default, &lowered),
            vec!["[interface] max_connections"]
        );
    }

    #[test]
    fn a_changed_netstack_needs_a_restart() {
        let user = config("", "[\"10.77.0.0/24\"]");
        let tun = config("netstack = \"tun\"", "[\"10.77.0.0/24\"]");
        assert!(restart_needed(&user, &user).is_empty());
        assert_eq!(
            restart_needed(&user, &tun),
            vec!["[interface] netstack or tun_name"]
        );
    }
}
