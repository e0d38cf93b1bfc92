//! What a running peer shows of itself: the answers behind `pinhole status`,
//! `pinhole reload`, `wg show` and the metrics endpoint.
//!
//! The engine's figures live in the node loop, so they are asked for over its
//! command channel; the services' figures are shared counters. The list of
//! services changes only on reload, under a lock that no packet ever takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pinhole_config::Config;
use pinhole_forward::Counters;
use pinhole_wg::PeerStats;
use tokio::sync::{mpsc, oneshot};

use crate::node::Command;
use crate::ops::control::Control;
use crate::ops::status::{EngineCounters, InterfaceStatus, PeerStatus, ServiceStatus, Status};
use crate::ops::uapi::{UapiDevice, UapiPeer, UapiSource};
use crate::peer::ReloadRequest;

/// One forward or expose as status shows it.
pub struct ServiceView {
    pub name: String,
    pub protocol: String,
    pub listen: String,
    pub to: String,
    pub counters: Arc<Counters>,
    /// For a `kernel_nat` service, (nftables table, counter): its connections are counted by
    /// the kernel, not in `counters`.
    pub kernel_nat: Option<(String, String)>,
}

/// The config in force and the services running under it.
pub type Snapshot = (Arc<Config>, Vec<ServiceView>, Vec<ServiceView>);

/// The running peer, as the control, UAPI and metrics servers see it.
pub struct View {
    node: mpsc::Sender<Command>,
    reload: mpsc::Sender<ReloadRequest>,
    listen_port: u16,
    current: Mutex<Arc<Snapshot>>,
}

impl View {
    pub fn new(
        node: mpsc::Sender<Command>,
        reload: mpsc::Sender<ReloadRequest>,
        listen_port: u16,
        snapshot: Snapshot,
    ) -> Self {
        View {
            node,
            reload,
            listen_port,
            current: Mutex::new(Arc::new(snapshot)),
        }
    }

    /// Replaces what status reports (at start and after each reload).
    pub fn set(&self, snapshot: Snapshot) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }

    fn get(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn engine_counters(&self) -> EngineCounters {
        let (tx, rx) = oneshot::channel();
        if self.node.send(Command::Counters(tx)).await.is_err() {
            return EngineCounters::default();
        }
        let Ok(c) = rx.await else {
            return EngineCounters::default();
        };
        let named =
            |pairs: &[(&str, u64)]| pairs.iter().map(|&(k, n)| (k.to_string(), n)).collect();
        EngineCounters {
            dropped: named(&c.drops()),
            events: named(&c.events()),
        }
    }

    async fn peer_stats(&self) -> Vec<([u8; 32], PeerStats)> {
        let (tx, rx) = oneshot::channel();
        if self.node.send(Command::Peers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

impl Control for View {
    async fn status(&self) -> Status {
        let snapshot = self.get();
        let (config, forwards, exposes) = &*snapshot;
        let stats = self.peer_stats().await;
        let peers = config
            .peers
            .iter()
            .map(|p| {
                let s = stats
                    .iter()
                    .find(|(k, _)| k == p.public_key.as_bytes())
                    .map(|(_, s)| s);
                PeerStatus {
                    name: p.name.clone(),
                    public_key: p.public_key.to_string(),
                    endpoint: s
                        .and_then(|s| s.endpoint)
                        .map(|e| e.to_string())
                        .or_else(|| p.endpoint.as_ref().map(|e| e.to_string())),
                    latest_handshake: s
                        .and_then(|s| s.last_handshake)
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                    rx_bytes: s.map_or(0, |s| s.rx_bytes),
                    tx_bytes: s.map_or(0, |s| s.tx_bytes),
                    persistent_keepalive: p.persistent_keepalive,
                    allowed_ips: p.allowed_ips.iter().map(|c| c.to_string()).collect(),
                }
            })
            .collect();
        let engine = self.engine_counters().await;
        let counted = kernel_counted(forwards.iter().chain(exposes)).await;
        Status {
            engine,
            interface: InterfaceStatus {
                name: config.interface_name(),
                public_key: config.interface.private_key.public_key().to_string(),
                listen_port: self.listen_port,
                addresses: config
                    .interface
                    .addresses
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            },
            peers,
            forwards: forwards
                .iter()
                .map(|s| service_status(s, &counted))
                .collect(),
            exposes: exposes
                .iter()
                .map(|s| service_status(s, &counted))
                .collect(),
        }
    }

    async fn reload(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.reload
            .send(tx)
            .await
            .map_err(|_| "the peer is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the peer is shutting down".to_string())?
    }
}

impl UapiSource for View {
    async fn device(&self) -> UapiDevice {
        let snapshot = self.get();
        let config = &snapshot.0;
        let stats = self.peer_stats().await;
        let peers = config
            .peers
            .iter()
            .map(|p| {
                let s = stats
                    .iter()
                    .find(|(k, _)| k == p.public_key.as_bytes())
                    .map(|(_, s)| s.clone());
                let s = s.unwrap_or_default();
                UapiPeer {
                    public_key: *p.public_key.as_bytes(),
                    preshared_key: p.preshared_key.as_ref().map(|k| *k.as_bytes()),
                    endpoint: s.endpoint,
                    persistent_keepalive: p.persistent_keepalive,
                    allowed_ips: p
                        .allowed_ips
                        .iter()
                        .map(|c| (c.addr(), c.prefix()))
                        .collect(),
                    last_handshake: s.last_handshake,
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                }
            })
            .collect();
        UapiDevice {
            private_key: *config.interface.private_key.as_bytes(),
            listen_port: self.listen_port,
            fwmark: None,
            peers,
        }
    }
}

/// The kernel's counts of the `kernel_nat` services among `services`: (table, counter) →
/// connections. A table nft cannot list counts nothing, with a debug line: status still
/// answers.
async fn kernel_counted<'a>(
    services: impl Iterator<Item = &'a ServiceView>,
) -> HashMap<(String, String), u64> {
    let mut tables: Vec<String> = services
        .filter_map(|s| s.kernel_nat.as_ref().map(|(t, _)| t.clone()))
        .collect();
    tables.sort();
    tables.dedup();
    let mut out = HashMap::new();
    for table in tables {
        let t = table.clone();
        match tokio::task::spawn_blocking(move || crate::kernel_nat::counted(&t)).await {
            Ok(Ok(counts)) => {
                out.extend(counts.into_iter().map(|(c, n)| ((table.clone(), c), n)));
            }
            Ok(Err(e)) => {
                tracing::debug!(%table, error = %format!("{e:#}"), "no kernel NAT counts")
            }
            Err(e) => tracing::debug!(%table, error = %e, "no kernel NAT counts"),
        }
    }
    out
}

fn service_status(s: &ServiceView, counted: &HashMap<(String, String), u64>) -> ServiceStatus {
    let c = s.counters.snapshot();
    let total = match &s.kernel_nat {
        Some(key) => counted.get(key).copied().unwrap_or(0),
        None => c.total,
    };
    ServiceStatus {
        name: s.name.clone(),
        protocol: s.protocol.clone(),
        listen: s.listen.clone(),
        to: s.to.clone(),
        active: c.active,
        total,
        refused: c.refused + c.failed,
        rx_bytes: c.rx_bytes,
        tx_bytes: c.tx_bytes,
    }
}
