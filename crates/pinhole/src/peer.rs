//! One running peer: everything a config file asks for, wired together.
//!
//! The caller binds the sockets ([`Sockets::bind`], or its own on port 0 in
//! tests) and owns the shutdown signal; [`run`] returns once every task it
//! started has stopped.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pinhole_config::{Config, Forward, Expose};
use pinhole_forward::{serve_with_tracker, Counters, Limits, TaskTracker, TcpDialer};
use pinhole_netstack::{Overlay, StackConfig};
use pinhole_wg::{PeerConfig, Wg, WgConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node;
use crate::overlay::{OverlayAcceptor, OverlayDialer};

/// How long live connections may take to finish after a shutdown signal
/// before the tunnel is torn down under them.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// The real sockets a peer serves on, bound before it starts so that binding
/// errors are reported up front and tests can bind port 0.
pub struct Sockets {
    /// The WireGuard UDP socket.
    pub udp: UdpSocket,
    /// One listener per `[[forward]]`, in config order.
    pub forwards: Vec<TcpListener>,
}

impl Sockets {
    /// Binds every socket the config names, with errors that say which.
    pub async fn bind(config: &Config) -> Result<Sockets> {
        let port = config.interface.listen_port.unwrap_or(0);
        let udp = node::bind_udp(port)
            .with_context(|| format!("binding the WireGuard UDP port {port} ([interface] listen_port)"))?;
        let mut forwards = Vec::with_capacity(config.forwards.len());
        for f in &config.forwards {
            let listener = TcpListener::bind(f.listen).await.with_context(|| {
                format!("forward {:?}: cannot listen on {} (is another program using it?)", f.name, f.listen)
            })?;
            forwards.push(listener);
        }
        Ok(Sockets { udp, forwards })
    }
}

/// Runs the peer described by `config` on `sockets` until `shutdown` is cancelled.
///
/// On shutdown it stops accepting, gives live connections [`DRAIN_GRACE`] to
/// finish, then stops the tunnel.
pub async fn run(config: Config, sockets: Sockets, shutdown: CancellationToken) -> Result<()> {
    let wg = Wg::new(wg_config(&config).await?, Instant::now()).context("starting the WireGuard engine")?;
    let addresses = config
        .interface
        .addresses
        .iter()
        .map(|c| (c.addr(), c.prefix()))
        .collect();
    let (stack, overlay) = pinhole_netstack::new(StackConfig::new(addresses, usize::from(config.interface.mtu)));

    let node_stop = CancellationToken::new();
    let local = sockets.udp.local_addr()?;
    let mut node_task = tokio::spawn(node::run(sockets.udp, wg, stack, node_stop.clone()));
    tracing::info!(
        public_key = %config.interface.private_key.public_key(),
        udp = %local,
        peers = config.peers.len(),
        "pinhole is up"
    );

    let accept_stop = shutdown.child_token();
    let mut servers = JoinSet::new();
    for (f, listener) in config.forwards.iter().zip(sockets.forwards) {
        start_forward(&mut servers, f, listener, &overlay, &accept_stop)?;
    }
    for e in &config.exposes {
        start_expose(&mut servers, e, &overlay, &accept_stop).await?;
    }

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        ended = &mut node_task => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the tunnel stopped")),
            Err(e) => Err(anyhow::Error::new(e).context("the tunnel task failed")),
        },
        Some(ended) = servers.join_next() => match ended {
            Ok(Ok(tracker)) => { tracker.close(); Ok(()) }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::Error::new(e).context("a forwarding task failed")),
        },
    };

    accept_stop.cancel();
    let mut trackers = Vec::new();
    while let Some(ended) = servers.join_next().await {
        if let Ok(Ok(tracker)) = ended {
            trackers.push(tracker);
        }
    }
    let drained = async {
        for t in &trackers {
            t.close();
            t.wait().await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
        tracing::warn!("live connections did not finish within {DRAIN_GRACE:?}; closing them");
    }
    node_stop.cancel();
    if !node_task.is_finished() {
        let _ = node_task.await;
    }
    outcome
}

type Server = anyhow::Result<TaskTracker>;

fn start_forward(
    servers: &mut JoinSet<Server>,
    f: &Forward,
    listener: TcpListener,
    overlay: &Overlay,
    stop: &CancellationToken,
) -> Result<()> {
    let listen = listener.local_addr()?;
    tracing::info!(name = %f.name, %listen, to = %f.to, "forward ready");
    let name = f.name.clone();
    let dialer = OverlayDialer::new(overlay.clone(), f.to);
    let limits = limits(f.connect_timeout, f.idle_timeout, f.max_connections);
    let stop = stop.clone();
    servers.spawn(async move {
        let tracker = TaskTracker::new();
        let counters = Arc::new(Counters::default());
        serve_with_tracker(&name, listener, dialer, limits, counters, stop, &tracker)
            .await
            .with_context(|| format!("forward {name:?} stopped"))?;
        Ok(tracker)
    });
    Ok(())
}

async fn start_expose(
    servers: &mut JoinSet<Server>,
    e: &Expose,
    overlay: &Overlay,
    stop: &CancellationToken,
) -> Result<()> {
    let listener = overlay
        .listen(e.listen)
        .await
        .with_context(|| format!("expose {:?}: cannot listen on overlay {}", e.name, e.listen))?;
    tracing::info!(name = %e.name, listen = %e.listen, to = %e.to, "expose ready");
    let name = e.name.clone();
    let dialer = TcpDialer::new(e.to.host.clone(), e.to.port);
    let limits = limits(e.connect_timeout, e.idle_timeout, e.max_connections);
    let stop = stop.clone();
    servers.spawn(async move {
        let tracker = TaskTracker::new();
        let counters = Arc::new(Counters::default());
        let acceptor = OverlayAcceptor(listener);
        serve_with_tracker(&name, acceptor, dialer, limits, counters, stop, &tracker)
            .await
            .with_context(|| format!("expose {name:?} stopped"))?;
        Ok(tracker)
    });
    Ok(())
}

fn limits(connect_timeout: Duration, idle_timeout: Duration, max_connections: usize) -> Limits {
    Limits {
        connect_timeout,
        idle_timeout,
        max_connections,
        ..Limits::default()
    }
}

/// Translates the checked config into the engine's terms, resolving endpoint
/// host names now (WireGuard resolves once at start, too).
async fn wg_config(config: &Config) -> Result<WgConfig> {
    let mut peers = Vec::with_capacity(config.peers.len());
    for p in &config.peers {
        let endpoint = match &p.endpoint {
            Some(ep) => {
                let ep = ep.clone();
                let shown = ep.to_string();
                let resolved = tokio::task::spawn_blocking(move || ep.resolve())
                    .await
                    .context("resolver task failed")?
                    .with_context(|| format!("peer {:?}: cannot resolve endpoint {shown}", p.name))?;
                Some(node::canonical(resolved))
            }
            None => None,
        };
        peers.push(PeerConfig {
            public_key: *p.public_key.as_bytes(),
            preshared_key: p.preshared_key.as_ref().map(|k| *k.as_bytes()),
            allowed_ips: p.allowed_ips.iter().map(|c| (c.addr(), c.prefix())).collect(),
            endpoint,
            persistent_keepalive: p.persistent_keepalive,
        });
    }
    let own_addresses: Vec<IpAddr> = config.interface.addresses.iter().map(|c| c.addr()).collect();
    Ok(WgConfig {
        private_key: *config.interface.private_key.as_bytes(),
        own_addresses,
        peers,
    })
}
