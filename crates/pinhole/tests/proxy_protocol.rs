//! The real client address: a relay forward with `proxy_protocol` sends the
//! backend exactly one PROXY header naming the public client, then the
//! client's bytes, unchanged.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Relay {
    peers: Peers,
    /// The forward with `proxy_protocol = "v1"`.
    v1: SocketAddr,
    /// The forward with `proxy_protocol = "v2"`.
    v2: SocketAddr,
}

/// Two relay forwards, v1 and v2, both to home's overlay port 80, exposed at
/// home to a backend that echoes everything it receives, header included, so
/// the client sees exactly what the backend saw.
async fn start() -> Relay {
    let backend = echo_service().await;
    let pair = Pair::new(
        r#"
[[forward]]
name = "web-v1"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
proxy_protocol = "v1"

[[forward]]
name = "web-v2"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
proxy_protocol = "v2"
"#,
        &format!(
            r#"
[[expose]]
name = "web"
listen = "10.77.0.2:80"
to = "{backend}"
"#
        ),
    )
    .await;
    let (v1_socket, v1) = tcp_forward_socket().await;
    let (v2_socket, v2) = tcp_forward_socket().await;
    let mut peers = Peers::new();
    peers.start(
        parse(&pair.relay_toml, "relay.toml"),
        pinhole::Sockets::new(pair.relay_udp, vec![v1_socket, v2_socket]),
    );
    peers.start(
        parse(&pair.home_toml, "home.toml"),
        pinhole::Sockets::new(any_udp().await, vec![]),
    );
    Relay { peers, v1, v2 }
}

/// Connects to `public`, sends `body`, half-closes and returns (our own
/// address, everything the backend received).
async fn send(public: SocketAddr, body: &[u8]) -> std::io::Result<(SocketAddr, Vec<u8>)> {
    let mut conn = TcpStream::connect(public).await?;
    let me = conn.local_addr()?;
    conn.write_all(body).await?;
    conn.shutdown().await?;
    let mut seen = Vec::new();
    conn.read_to_end(&mut seen).await?;
    Ok((me, seen))
}

/// Sends until the backend answers (the first tries may race the handshake).
async fn send_until_served(public: SocketAddr, body: &[u8]) -> (SocketAddr, Vec<u8>) {
    wait_for(&format!("the backend behind {public}"), WAIT, || async {
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), send(public, body));
        match sent.await {
            Ok(Ok((me, seen))) if !seen.is_empty() => Some((me, seen)),
            _ => None,
        }
    })
    .await
}

/// The v2 header for a TCP-over-IPv4 connection from `src` to `dst`.
fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let octets = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(ip) => panic!("expected IPv4, got {ip}"),
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, command PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&octets(src));
    h.extend_from_slice(&octets(dst));
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_sends_one_text_header_with_the_client_address_then_the_bytes() {
    let relay = start().await;
    let body = b"GET / HTTP/1.0\r\n\r\n";
    let (me, seen) = send_until_served(relay.v1, body).await;

    let mut want = format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        me.ip(),
        relay.v1.ip(),
        me.port(),
        relay.v1.port()
    )
    .into_bytes();
    want.extend_from_slice(body);
    assert_eq!(
        String::from_utf8_lossy(&seen),
        String::from_utf8_lossy(&want),
        "the backend must see one v1 header naming the client ({me}), then the request"
    );
    relay.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_sends_one_binary_header_with_the_client_address_then_the_bytes() {
    let relay = start().await;
    let body = pattern(4096, 3);
    let (me, seen) = send_until_served(relay.v2, &body).await;

    let mut want = v2_header(me, relay.v2);
    want.extend_from_slice(&body);
    assert_eq!(
        seen.get(..28),
        want.get(..28),
        "the backend must see one v2 header naming the client ({me})"
    );
    assert_eq!(seen.len(), want.len(), "header plus body, nothing more");
    assert!(seen == want, "the client's bytes changed after the header");

    // Each connection carries its own client's address.
    let (me2, seen2) = send_until_served(relay.v2, b"second").await;
    assert_ne!(me2, me);
    let mut want2 = v2_header(me2, relay.v2);
    want2.extend_from_slice(b"second");
    assert_eq!(seen2, want2);
    relay.peers.stop().await;
}
