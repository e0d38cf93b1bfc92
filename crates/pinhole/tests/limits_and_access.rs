//! A public port's controls: `max_connections` closes the one too many at
//! once and counts it; `deny` turns a client away without a byte. Status over
//! the control socket shows the refusals.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Relay {
    peers: Peers,
    /// `max_connections = 2`.
    capped: SocketAddr,
    /// `deny = ["127.0.0.1/32"]`: every loopback client.
    denied: SocketAddr,
    ctl: PathBuf,
    _tmp: TempDir,
}

async fn start() -> Relay {
    let tmp = TempDir::new("limits");
    let echo = echo_service().await;
    let pair = Pair::new(
        r#"
[[forward]]
name = "capped"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
max_connections = 2

[[forward]]
name = "denied"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
deny = ["127.0.0.1/32"]
"#,
        &format!(
            r#"
[[expose]]
name = "echo"
listen = "10.77.0.2:80"
to = "{echo}"
"#
        ),
    )
    .await;
    let (capped_socket, capped) = tcp_forward_socket().await;
    let (denied_socket, denied) = tcp_forward_socket().await;
    let ctl = tmp.path("relay.sock");
    let mut sockets = pinhole::Sockets::new(pair.relay_udp, vec![capped_socket, denied_socket]);
    sockets.control = Some(control_socket(&ctl));
    let mut peers = Peers::new();
    peers.start(parse(&pair.relay_toml, "relay.toml"), sockets);
    peers.start(
        parse(&pair.home_toml, "home.toml"),
        pinhole::Sockets::new(any_udp().await, vec![]),
    );
    Relay {
        peers,
        capped,
        denied,
        ctl,
        _tmp: tmp,
    }
}

/// Opens a connection and proves it is spliced through to the echo server.
async fn open_and_echo(public: SocketAddr, tag: &str) -> TcpStream {
    let mut conn = TcpStream::connect(public).await.unwrap();
    conn.write_all(tag.as_bytes()).await.unwrap();
    let mut back = vec![0u8; tag.len()];
    tokio::time::timeout(WAIT, conn.read_exact(&mut back))
        .await
        .unwrap_or_else(|_| panic!("{tag}: no echo"))
        .unwrap_or_else(|e| panic!("{tag}: closed: {e}"));
    assert_eq!(back, tag.as_bytes());
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_connection_beyond_max_connections_is_closed_at_once_and_counted() {
    let relay = start().await;
    wait_until_echoing(relay.capped, WAIT).await;
    // The probe's connection has gone: two slots are free.
    wait_for("the probe to end", WAIT, || async {
        (forward(&status(&relay.ctl).await, "capped").active == 0).then_some(())
    })
    .await;

    let first = open_and_echo(relay.capped, "first").await;
    let second = open_and_echo(relay.capped, "second").await;

    // The third is accepted by the kernel, then closed by the relay without
    // ever reaching home.
    let mut third = TcpStream::connect(relay.capped).await.unwrap();
    let _ = third.write_all(b"third").await;
    let got = read_until_closed(&mut third).await;
    assert!(got.is_empty(), "the third connection was served: {got:?}");
    drop(third);

    let s = status(&relay.ctl).await;
    let capped = forward(&s, "capped");
    assert!(
        capped.refused >= 1,
        "the refusal is not counted: {capped:?}"
    );
    assert_eq!(capped.active, 2, "{capped:?}");

    // A slot freed is a slot usable again.
    finish(first).await;
    wait_for("a slot to free up", WAIT, || async {
        (forward(&status(&relay.ctl).await, "capped").active < 2).then_some(())
    })
    .await;
    let again = open_and_echo(relay.capped, "again").await;
    finish(again).await;
    finish(second).await;
    relay.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_client_is_closed_without_data_and_counted() {
    let relay = start().await;
    // The tunnel works (through the other forward), so the refusal below
    // is the deny rule's doing.
    wait_until_echoing(relay.capped, WAIT).await;

    let mut conn = TcpStream::connect(relay.denied).await.unwrap();
    let _ = conn.write_all(b"let me in").await;
    let got = read_until_closed(&mut conn).await;
    assert!(got.is_empty(), "a denied client got data: {got:?}");

    let s = status(&relay.ctl).await;
    let denied = forward(&s, "denied");
    assert!(
        denied.refused >= 1,
        "the refusal is not counted: {denied:?}"
    );
    assert_eq!(denied.total, 0, "a denied client was admitted: {denied:?}");
    assert_eq!(denied.rx_bytes, 0, "{denied:?}");
    relay.peers.stop().await;
}
