//! A relay and a home peer in one process, on loopback, no root: the whole
//! path of forwarded connections through a real WireGuard tunnel.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Tunnel {
    /// The relay's public forward port.
    public: SocketAddr,
    peers: Peers,
}

impl Tunnel {
    async fn stop(self) {
        self.peers.stop().await;
    }
}

/// Starts a relay forwarding a public port to the home's overlay port 80,
/// and a home peer exposing that port to `service`.
async fn start_tunnel(service: SocketAddr) -> Tunnel {
    start_tunnel_with(service, "").await
}

/// [`start_tunnel`], with `forward_extra` lines added to the relay's forward.
async fn start_tunnel_with(service: SocketAddr, forward_extra: &str) -> Tunnel {
    let pair = Pair::new(
        &format!(
            r#"
[[forward]]
name = "web"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
{forward_extra}
"#
        ),
        &format!(
            r#"
[[expose]]
name = "web"
listen = "10.77.0.2:80"
to = "{service}"
"#
        ),
    )
    .await;
    let relay = parse(&pair.relay_toml, "relay.toml");
    let home = parse(&pair.home_toml, "home.toml");
    let (public_socket, public) = tcp_forward_socket().await;
    let mut peers = Peers::new();
    peers.start(
        relay,
        pinhole::Sockets::new(pair.relay_udp, vec![public_socket]),
    );
    peers.start(home, pinhole::Sockets::new(any_udp().await, vec![]));
    Tunnel { public, peers }
}

/// Waits until the first request gets through: the handshake has happened.
async fn wait_until_serving(public: SocketAddr) {
    let started = tokio::time::Instant::now();
    loop {
        let probe =
            tokio::time::timeout(Duration::from_secs(5), round_trip(public, b"ping".to_vec()))
                .await;
        if matches!(probe, Ok(ref b) if b == b"ping") {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the tunnel never carried a request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mebibytes_cross_intact_in_both_directions() {
    let service = echo_service().await;
    let tunnel = start_tunnel(service).await;
    wait_until_serving(tunnel.public).await;

    let data = pattern(10 << 20, 7);
    let back = tokio::time::timeout(DEADLINE, round_trip(tunnel.public, data.clone()))
        .await
        .expect("10 MiB round trip timed out");
    assert_eq!(back.len(), data.len(), "byte count differs");
    assert!(back == data, "bytes differ after the round trip");
    tunnel.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_each_get_their_own_reply() {
    let service = echo_service().await;
    let tunnel = start_tunnel(service).await;
    wait_until_serving(tunnel.public).await;

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let public = tunnel.public;
        clients.spawn(async move {
            let data = pattern(64 << 10, i + 1);
            let back = round_trip(public, data.clone()).await;
            (i, back == data)
        });
    }
    let all = tokio::time::timeout(DEADLINE, async {
        let mut ok = 0;
        while let Some(done) = clients.join_next().await {
            let (i, same) = done.unwrap();
            assert!(
                same,
                "connection {i} got someone else's bytes or a short reply"
            );
            ok += 1;
        }
        ok
    })
    .await
    .expect("50 connections did not finish");
    assert_eq!(all, 50);
    tunnel.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_still_receives_the_whole_reply() {
    // A service that answers only after the request is complete (EOF), like
    // `nc -N` or an HTTP/1.0 client that shuts down its write side.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = listener.local_addr().unwrap();
    let reply = pattern(1 << 20, 3);
    let expected = reply.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                if conn.read_to_end(&mut request).await.is_ok() && request == b"GET /" {
                    let _ = conn.write_all(&reply).await;
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    let tunnel = start_tunnel(service).await;

    let started = tokio::time::Instant::now();
    let got = loop {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            round_trip(tunnel.public, b"GET /".to_vec()),
        )
        .await;
        if let Ok(got) = got {
            if !got.is_empty() {
                break got;
            }
        }
        assert!(started.elapsed() < DEADLINE, "no reply through the tunnel");
    };
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "reply corrupted");
    tunnel.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_closes_the_public_connection_promptly() {
    // Nothing listens on this port: bind, learn the port, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let live = echo_service().await;
    // Serving works (proved with a live backend first), then a dead one.
    let tunnel = start_tunnel(live).await;
    wait_until_serving(tunnel.public).await;
    tunnel.stop().await;

    let tunnel = start_tunnel(dead).await;
    let mut conn = TcpStream::connect(tunnel.public).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
        .await
        .expect("public connection left hanging");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF or reset, got {read:?}"
    );
    tunnel.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_forwarded_connection_is_closed_at_its_idle_timeout() {
    // The stack splices this connection on both peers; the relay's forward keeps the timeout.
    let service = echo_service().await;
    let tunnel = start_tunnel_with(service, r#"idle_timeout = "1s""#).await;
    wait_until_serving(tunnel.public).await;
    let mut conn = TcpStream::connect(tunnel.public).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut reply = [0u8; 4];
    conn.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"ping");
    let idle_since = tokio::time::Instant::now();
    let mut rest = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, conn.read(&mut rest))
        .await
        .expect("an idle connection was left open");
    assert!(
        matches!(read, Ok(0)),
        "expected an orderly close, got {read:?}"
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed before its idle timeout"
    );
    tunnel.stop().await;
}
