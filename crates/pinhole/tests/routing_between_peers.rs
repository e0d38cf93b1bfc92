//! Local port mapping through the relay: a laptop's forward reaches a service
//! at home, with no public port anywhere, when (and only when) the relay
//! routes between its peers.

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

struct Hub {
    peers: Peers,
    /// The laptop's local port, forwarded to home's overlay 10.77.0.2:80.
    laptop_port: SocketAddr,
    relay_ctl: std::path::PathBuf,
    laptop_ctl: std::path::PathBuf,
    _tmp: TempDir,
}

/// Three peers: a relay nobody needs to know the address of except through
/// its endpoint, and home and laptop both dialing it with keepalive.
async fn start_hub(route_between_peers: bool) -> Hub {
    let tmp = TempDir::new("hub");
    let echo = echo_service().await;
    let relay = Identity::new();
    let home = Identity::new();
    let laptop = Identity::new();
    let relay_udp = any_udp().await;
    let relay_port = relay_udp.local_addr().unwrap().port();

    let relay_toml = format!(
        r#"
[interface]
private_key = "{}"
address = ["10.77.0.1/24"]
route_between_peers = {route_between_peers}

[[peer]]
name = "home"
public_key = "{}"
allowed_ips = ["10.77.0.2/32"]

[[peer]]
name = "laptop"
public_key = "{}"
allowed_ips = ["10.77.0.3/32"]
"#,
        relay.private(),
        home.public(),
        laptop.public()
    );
    // Home and laptop send the whole overlay to the relay.
    let spoke = |me: &Identity, address: &str, extra: &str| {
        format!(
            r#"
[interface]
private_key = "{}"
address = ["{address}/24"]

[[peer]]
name = "relay"
public_key = "{}"
allowed_ips = ["10.77.0.0/24"]
endpoint = "127.0.0.1:{relay_port}"
persistent_keepalive = 25
{extra}
"#,
            me.private(),
            relay.public()
        )
    };
    let home_toml = spoke(
        &home,
        "10.77.0.2",
        &format!(
            r#"
[[expose]]
name = "ssh"
listen = "10.77.0.2:80"
to = "{echo}"
"#
        ),
    );
    let laptop_toml = spoke(
        &laptop,
        "10.77.0.3",
        r#"
[[forward]]
name = "home-ssh"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
connect_timeout = "2s"
"#,
    );

    let relay_ctl = tmp.path("relay.sock");
    let laptop_ctl = tmp.path("laptop.sock");
    let (laptop_forward, laptop_port) = tcp_forward_socket().await;
    let mut peers = Peers::new();
    let mut relay_sockets = pinhole::Sockets::new(relay_udp, vec![]);
    relay_sockets.control = Some(control_socket(&relay_ctl));
    peers.start(parse(&relay_toml, "relay.toml"), relay_sockets);
    peers.start(
        parse(&home_toml, "home.toml"),
        pinhole::Sockets::new(any_udp().await, vec![]),
    );
    let mut laptop_sockets = pinhole::Sockets::new(any_udp().await, vec![laptop_forward]);
    laptop_sockets.control = Some(control_socket(&laptop_ctl));
    peers.start(parse(&laptop_toml, "laptop.toml"), laptop_sockets);

    // Both spokes have their session with the relay before anything is
    // asked of it: what follows is about routing, not about handshakes.
    wait_for_handshake(&relay_ctl, "home").await;
    wait_for_handshake(&relay_ctl, "laptop").await;
    Hub {
        peers,
        laptop_port,
        relay_ctl,
        laptop_ctl,
        _tmp: tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laptop_reaches_home_through_a_routing_relay() {
    let hub = start_hub(true).await;
    wait_until_echoing(hub.laptop_port, WAIT).await;

    let data = pattern(256 << 10, 11);
    let back = tokio::time::timeout(WAIT, round_trip(hub.laptop_port, data.clone()))
        .await
        .expect("the round trip through the relay did not finish");
    assert_eq!(back.len(), data.len());
    assert!(
        back == data,
        "bytes changed on the way laptop -> relay -> home"
    );

    // The relay carried it: it has no forward or expose of its own, yet it
    // received the laptop's packets and sent them on to home.
    let relay = status(&hub.relay_ctl).await;
    assert!(relay.forwards.is_empty() && relay.exposes.is_empty());
    assert!(peer(&relay, "laptop").rx_bytes > data.len() as u64);
    assert!(peer(&relay, "home").tx_bytes > data.len() as u64);
    hub.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_route_between_peers_the_relay_carries_nothing_between_them() {
    let hub = start_hub(false).await;

    // The laptop's forward cannot reach home: it gives up after its
    // connect_timeout (2 s) and closes the client's connection, with no data.
    let mut conn = TcpStream::connect(hub.laptop_port).await.unwrap();
    conn.write_all(b"hello?").await.unwrap();
    let got = read_until_closed(&mut conn).await;
    assert!(
        got.is_empty(),
        "home answered through a non-routing relay: {got:?}"
    );
    let laptop = status(&hub.laptop_ctl).await;
    let f = forward(&laptop, "home-ssh");
    assert!(
        f.refused >= 1,
        "the failed dial is not counted as refused: {f:?}"
    );
    assert_eq!(f.tx_bytes, 0, "bytes came back to the client: {f:?}");
    hub.peers.stop().await;
}
