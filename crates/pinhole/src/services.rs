//! Forwards and exposes as running services: the config's words turned into
//! `pinhole-forward` tasks on real sockets and overlay sockets.
//!
//! Each service runs in its own task with its own stop token, connection
//! tracker and counters, so a reload can stop, start or replace one without
//! touching the others, and `status` can read its figures.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use pinhole_config::{Access, Cidr, Expose, ExposeTarget, Forward, Protocol, ProxyProtocol};
use pinhole_forward::{
    serve_handler, serve_udp, Acceptor, Admission, Counters, Credentials, DestinationRule,
    DialSplice, ExitPolicy, Handler, Limits, PortMap, ProxyVersion, RangeDialer, ServeOptions,
    SocksExit, TaskTracker, TcpDialer, TcpPortRange, UdpDialer, UdpOptions, UdpPortRange,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::overlay::Net;
use crate::stack_splice::StackSplicer;

/// The real sockets of one `[[forward]]`: one per port of its range.
pub enum ForwardSockets {
    /// TCP listeners, in port order.
    Tcp(Vec<TcpListener>),
    /// UDP sockets, in port order.
    Udp(Vec<UdpSocket>),
}

/// A forward or expose that is running.
pub struct Running {
    /// Stops accepting (live connections go on until they end).
    pub stop: CancellationToken,
    /// Live connections, for a bounded drain at shutdown.
    pub tracker: TaskTracker,
    /// Live figures for `status` and metrics.
    pub counters: Arc<Counters>,
    /// The accept loop.
    pub task: JoinHandle<Result<()>>,
    /// What it listens on, as bound (a port 0 in the config shows its real port here).
    pub listen: String,
}

impl Running {
    /// Stops accepting and waits until the listener is closed, so its port
    /// can be bound again at once (a reload that changes a forward).
    pub async fn stop_accepting(&mut self) {
        self.stop.cancel();
        if !self.task.is_finished() {
            let _ = (&mut self.task).await;
        }
    }
}

/// Binds the real sockets a forward names: every port of its range or none.
pub async fn bind_forward(f: &Forward) -> Result<ForwardSockets> {
    let ports = port_list(f.listen, f.port_count);
    let what = || {
        format!(
            "forward {:?}: cannot listen on {} (is another program using it?)",
            f.name,
            f.show_listen()
        )
    };
    Ok(match f.protocol {
        Protocol::Tcp => {
            let mut listeners = Vec::with_capacity(ports.len());
            for addr in ports {
                listeners.push(TcpListener::bind(addr).await.with_context(what)?);
            }
            ForwardSockets::Tcp(listeners)
        }
        Protocol::Udp => {
            let mut sockets = Vec::with_capacity(ports.len());
            for addr in ports {
                sockets.push(UdpSocket::bind(addr).await.with_context(what)?);
            }
            ForwardSockets::Udp(sockets)
        }
    })
}

/// Starts a forward on its bound sockets: public connections carried into the overlay.
pub fn start_forward(f: &Forward, sockets: ForwardSockets, net: &Net) -> Result<Running> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let counters = Arc::new(Counters::default());
    let name = f.name.clone();
    let admission = admission(&f.access, f.rate_limit.as_ref());
    let (task, listen) = match sockets {
        ForwardSockets::Tcp(listeners) => {
            let first = listeners
                .first()
                .context("a forward needs at least one listener")?
                .local_addr()?;
            let listen = show(first, listeners.len());
            let options = ServeOptions {
                limits: limits(f.connect_timeout, f.idle_timeout, f.max_connections),
                admission,
                accept_proxy_protocol: f.accept_proxy_protocol,
                ..ServeOptions::default()
            };
            let proxy = f.proxy_protocol.map(|v| match v {
                ProxyProtocol::V1 => ProxyVersion::V1,
                ProxyProtocol::V2 => ProxyVersion::V2,
            });
            tracing::info!(%name, %listen, to = %f.show_to(), "forward ready");
            let run = Spawn {
                name,
                stop: stop.clone(),
                tracker: tracker.clone(),
                counters: counters.clone(),
                options,
            };
            // One port is a range of one: the listen port (as bound, so port 0 works too)
            // maps to the `to` port.
            let map = PortMap::range(first.port(), f.to.port(), f.port_count);
            let dialer = RangeDialer::new(net.port_dialer(f.to.ip()), map);
            let handler = DialSplice::new(dialer)
                .with_proxy_protocol(proxy)
                .with_splicer(StackSplicer);
            let task = run.tcp(TcpPortRange::from_listeners(listeners), handler);
            (task, listen)
        }
        ForwardSockets::Udp(sockets) => {
            let first = sockets
                .first()
                .context("a forward needs at least one socket")?
                .local_addr()?;
            let listen = show(first, sockets.len());
            let options = UdpOptions {
                idle_timeout: f.idle_timeout,
                max_sessions: f.max_sessions,
                admission,
                ..UdpOptions::default()
            };
            tracing::info!(%name, %listen, to = %f.show_to(), "udp forward ready");
            let (s, c) = (stop.clone(), counters.clone());
            let task = if sockets.len() == 1 {
                let socket = sockets.into_iter().next().context("no socket")?;
                let dialer = net.udp_dialer(f.to);
                tokio::spawn(
                    async move { Ok(serve_udp(&name, socket, dialer, options, c, s).await?) },
                )
            } else {
                let map = PortMap::range(first.port(), f.to.port(), f.port_count);
                let dialer = RangeDialer::new(net.udp_port_dialer(f.to.ip()), map);
                let listener = UdpPortRange::from_sockets(sockets)?;
                tokio::spawn(
                    async move { Ok(serve_udp(&name, listener, dialer, options, c, s).await?) },
                )
            };
            (task, listen)
        }
    };
    Ok(Running {
        stop,
        tracker,
        counters,
        task,
        listen,
    })
}

/// Starts an expose: overlay connections carried out to a real target or a SOCKS exit.
pub async fn start_expose(e: &Expose, net: &Net, own_network: &[Cidr]) -> Result<Running> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let counters = Arc::new(Counters::default());
    let name = e.name.clone();
    let listen = e.show_listen();
    let admission = admission(&e.access, e.rate_limit.as_ref());
    let cannot = || {
        format!(
            "expose {:?}: cannot listen on overlay {}",
            e.name,
            e.show_listen()
        )
    };
    tracing::info!(%name, %listen, to = %e.to, "expose ready");
    let task = match e.protocol {
        Protocol::Tcp => {
            let acceptor = net
                .listen(e.listen, e.port_count)
                .await
                .with_context(cannot)?;
            let options = ServeOptions {
                limits: limits(e.connect_timeout, e.idle_timeout, e.max_connections),
                admission,
                ..ServeOptions::default()
            };
            let run = Spawn {
                name,
                stop: stop.clone(),
                tracker: tracker.clone(),
                counters: counters.clone(),
                options,
            };
            match &e.to {
                ExposeTarget::Addr(target) => {
                    let map = PortMap::range(e.listen.port(), target.port, e.port_count);
                    let dialer =
                        RangeDialer::new(TcpDialer::new(target.host.clone(), target.port), map);
                    run.tcp(acceptor, DialSplice::new(dialer).with_splicer(StackSplicer))
                }
                ExposeTarget::Socks(socks) => {
                    let overlay_nets = own_network
                        .iter()
                        .map(|c| (c.network(), c.prefix()))
                        .collect();
                    let policy = ExitPolicy::new(
                        overlay_nets,
                        socks.allow_destinations.iter().map(rule).collect(),
                        socks.deny_destinations.iter().map(rule).collect(),
                    );
                    let credentials = socks
                        .auth
                        .as_ref()
                        .map(|a| Credentials::new(a.username.as_bytes(), a.password.as_bytes()));
                    run.tcp(
                        acceptor,
                        SocksExit::new(policy, credentials).with_splicer(StackSplicer),
                    )
                }
            }
        }
        Protocol::Udp => {
            let ExposeTarget::Addr(target) = &e.to else {
                anyhow::bail!("expose {:?}: a SOCKS exit is TCP only", e.name);
            };
            let options = UdpOptions {
                idle_timeout: e.idle_timeout,
                max_sessions: e.max_sessions,
                admission,
                ..UdpOptions::default()
            };
            let (s, c) = (stop.clone(), counters.clone());
            let listener = net
                .bind_udp(e.listen, e.port_count)
                .await
                .with_context(cannot)?;
            if e.port_count == 1 {
                let dialer = UdpDialer::new(target.host.clone(), target.port);
                tokio::spawn(
                    async move { Ok(serve_udp(&name, listener, dialer, options, c, s).await?) },
                )
            } else {
                let map = PortMap::range(e.listen.port(), target.port, e.port_count);
                let dialer =
                    RangeDialer::new(UdpDialer::new(target.host.clone(), target.port), map);
                tokio::spawn(
                    async move { Ok(serve_udp(&name, listener, dialer, options, c, s).await?) },
                )
            }
        }
    };
    Ok(Running {
        stop,
        tracker,
        counters,
        task,
        listen,
    })
}

/// What every TCP service task needs, so the generic spawn is written once.
struct Spawn {
    name: String,
    stop: CancellationToken,
    tracker: TaskTracker,
    counters: Arc<Counters>,
    options: ServeOptions,
}

impl Spawn {
    fn tcp<A: Acceptor, H: Handler>(self, acceptor: A, handler: H) -> JoinHandle<Result<()>> {
        tokio::spawn(async move {
            serve_handler(
                &self.name,
                acceptor,
                handler,
                self.options,
                self.counters,
                self.stop,
                &self.tracker,
            )
            .await
            .with_context(|| format!("{:?} stopped accepting", self.name))
        })
    }
}

fn limits(
    connect_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
    max_connections: usize,
) -> Limits {
    Limits {
        connect_timeout,
        idle_timeout,
        max_connections,
        ..Limits::default()
    }
}

fn admission(access: &Access, rate: Option<&pinhole_config::Rate>) -> Admission {
    Admission {
        allow: access
            .allow
            .iter()
            .map(|c| (c.network(), c.prefix()))
            .collect(),
        deny: access
            .deny
            .iter()
            .map(|c| (c.network(), c.prefix()))
            .collect(),
        rate: rate.map(|r| pinhole_forward::Rate {
            count: r.count,
            per: r.per,
        }),
    }
}

fn rule(r: &pinhole_config::DestinationRule) -> DestinationRule {
    DestinationRule {
        net: r.net.map(|c| (c.network(), c.prefix())),
        ports: r.ports,
    }
}

fn port_list(first: SocketAddr, count: u16) -> Vec<SocketAddr> {
    if first.port() == 0 {
        return vec![first];
    }
    (0..count)
        .filter_map(|i| first.port().checked_add(i))
        .map(|p| SocketAddr::new(first.ip(), p))
        .collect()
}

fn show(first: SocketAddr, count: usize) -> String {
    if count <= 1 {
        return first.to_string();
    }
    let last = first.port() as usize + count - 1;
    format!("{first}-{last}")
}

/// The unspecified address of `ip`'s family: "pick one of ours" to the stack.
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_binds_every_port_and_port_zero_binds_one() {
        let first: SocketAddr = "127.0.0.1:27015".parse().unwrap();
        let ports = port_list(first, 3);
        assert_eq!(
            ports.iter().map(|a| a.port()).collect::<Vec<_>>(),
            vec![27015, 27016, 27017]
        );
        assert_eq!(port_list("127.0.0.1:0".parse().unwrap(), 1).len(), 1);
        assert_eq!(show(first, 3), "127.0.0.1:27015-27017");
        assert_eq!(show(first, 1), "127.0.0.1:27015");
    }
}
