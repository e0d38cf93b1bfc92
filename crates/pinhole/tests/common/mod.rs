//! What the in-process tests share: peers on loopback with fresh keys, echo
//! services, clients, temp dirs and waits that always end.
//!
//! Each test file uses only part of this, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pinhole::ops::status::{PeerStatus, ServiceStatus, Status};
use pinhole::ForwardSockets;
use pinhole_config::keys::PrivateKey;
use pinhole_config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Every wait in these tests ends by this deadline, so a bug fails the test
/// instead of hanging CI.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The deadline of the newer tests: generous for a debug build on a busy
/// machine, and still well inside the 20 s a test may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// One or more peers running in this process, stopped together.
pub struct Peers {
    pub shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Default for Peers {
    fn default() -> Self {
        Self::new()
    }
}

impl Peers {
    pub fn new() -> Self {
        Peers {
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts one peer on `sockets`.
    pub fn start(&mut self, config: Config, sockets: pinhole::Sockets) {
        self.tasks.push(tokio::spawn(pinhole::run(
            config,
            sockets,
            self.shutdown.clone(),
        )));
    }

    /// Stops every peer and checks each ended cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let ended = tokio::time::timeout(DEADLINE, t)
                .await
                .expect("peer did not stop");
            ended.expect("peer task panicked").expect("peer failed");
        }
    }
}

/// A fresh identity for one peer.
pub struct Identity {
    pub key: PrivateKey,
}

impl Identity {
    pub fn new() -> Self {
        Identity {
            key: PrivateKey::generate(),
        }
    }

    /// `private_key = "…"`, for an `[interface]`.
    pub fn private(&self) -> String {
        self.key.to_base64()
    }

    /// The base64 public key, for another peer's `[[peer]]`.
    pub fn public(&self) -> String {
        self.key.public_key().to_string()
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks config text as `pinhole check` would; panics with every problem.
pub fn parse(text: &str, name: &str) -> Config {
    match Config::parse(text, Path::new(name)) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{name} does not load: {e:#}\n---\n{text}"),
    }
}

/// A relay (10.77.0.1, no endpoint for home) and a home peer (10.77.0.2,
/// dialing the relay with keepalive), with `relay_extra` and `home_extra`
/// appended to their files: the forwards, exposes and any more keys.
pub struct Pair {
    pub relay_toml: String,
    pub home_toml: String,
    /// The relay's WireGuard socket, already bound, for [`pinhole::Sockets`].
    pub relay_udp: UdpSocket,
}

impl Pair {
    pub async fn new(relay_extra: &str, home_extra: &str) -> Pair {
        let relay = Identity::new();
        let home = Identity::new();
        let relay_udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay_port = relay_udp.local_addr().unwrap().port();
        let relay_toml = format!(
            r#"
[interface]
private_key = "{}"
address = ["10.77.0.1/24"]

[[peer]]
name = "home"
public_key = "{}"
allowed_ips = ["10.77.0.2/32"]
{relay_extra}
"#,
            relay.private(),
            home.public()
        );
        let home_toml = format!(
            r#"
[interface]
private_key = "{}"
address = ["10.77.0.2/24"]

[[peer]]
name = "relay"
public_key = "{}"
allowed_ips = ["10.77.0.1/32"]
endpoint = "127.0.0.1:{relay_port}"
persistent_keepalive = 25
{home_extra}
"#,
            home.private(),
            relay.public()
        );
        Pair {
            relay_toml,
            home_toml,
            relay_udp,
        }
    }
}

/// A loopback TCP listener for a forward, and its address.
pub async fn tcp_forward_socket() -> (ForwardSockets, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (ForwardSockets::Tcp(vec![listener]), addr)
}

/// A WireGuard UDP socket on loopback for a peer nobody dials.
pub async fn any_udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// A service that echoes every byte back and closes its write side when the
/// client has closed its own: the shape of any request/response protocol.
pub async fn echo_service() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Sends `data` through the tunnel, half-closes, and returns what came back.
pub async fn round_trip(public: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let conn = TcpStream::connect(public)
        .await
        .expect("connect to the relay's public port");
    let (mut r, mut w) = conn.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write through the tunnel");
        w.shutdown().await.expect("half-close");
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back)
        .await
        .expect("read through the tunnel");
    writer.await.unwrap();
    back
}

/// [`round_trip`] that reports an I/O error instead of panicking, for
/// connections that may legitimately be refused.
pub async fn try_round_trip(public: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(public).await?;
    conn.write_all(data).await?;
    conn.shutdown().await?;
    let mut back = Vec::new();
    conn.read_to_end(&mut back).await?;
    Ok(back)
}

/// Deterministic, incompressible-looking test data.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Waits until an echo request through `public` comes back whole: the
/// handshake has happened and the path works. Each try is bounded, and so is
/// the whole wait (`limit`).
pub async fn wait_until_echoing(public: SocketAddr, limit: Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let probe =
            tokio::time::timeout(Duration::from_secs(5), try_round_trip(public, b"ping")).await;
        if matches!(probe, Ok(Ok(ref b)) if b == b"ping") {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "the tunnel never carried a request to {public}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` at `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A directory under the system temp dir, unique to this test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "ph-{tag}-{}-{}-{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Binds a control socket at `path`, for `Sockets::control`.
pub fn control_socket(path: &Path) -> tokio::net::UnixListener {
    pinhole::ops::control::bind_control(path).expect("bind the control socket")
}

/// `pinhole status` over the control socket.
pub async fn status(ctl: &Path) -> Status {
    pinhole::ops::control::fetch_status(ctl)
        .await
        .expect("status over the control socket")
}

pub fn peer<'a>(status: &'a Status, name: &str) -> &'a PeerStatus {
    status
        .peers
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no peer {name:?} in {status:?}"))
}

pub fn forward<'a>(status: &'a Status, name: &str) -> &'a ServiceStatus {
    status
        .forwards
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no forward {name:?} in {status:?}"))
}

/// Waits until status shows a completed handshake with `peer_name`.
pub async fn wait_for_handshake(ctl: &Path, peer_name: &str) {
    wait_for(&format!("a handshake with {peer_name}"), WAIT, || async {
        peer(&status(ctl).await, peer_name)
            .latest_handshake
            .map(|_| ())
    })
    .await
}

/// Closes a client connection the way a polite client does: half-close, then
/// read to the end, so every hop of the chain has closed before the test
/// stops the peers (a connection still open at shutdown costs the drain grace).
pub async fn finish(mut conn: TcpStream) {
    let _ = conn.shutdown().await;
    read_until_closed(&mut conn).await;
}

/// Reads until the peer closes or resets: what a refused client sees.
/// Returns the bytes that arrived first (a refusal sends none).
pub async fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was left open");
    got
}
