//! UDP through the tunnel: a UDP forward on the relay, a UDP expose at home,
//! an echo server behind it. Each client gets its own session, datagrams
//! pass whole, and a port range maps port i to port i.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use pinhole::ForwardSockets;
use tokio::net::UdpSocket;

/// A UDP server that answers every datagram with `tag` followed by the datagram.
async fn udp_echo(socket: UdpSocket, tag: Vec<u8>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = tag.clone();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
}

/// `count` UDP sockets on consecutive loopback ports, the first one free as
/// the kernel chose it (port 0), the rest taken if free; retried otherwise.
async fn consecutive_udp(count: u16) -> Vec<UdpSocket> {
    for _ in 0..200 {
        let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if port.checked_add(count).is_none() {
            continue;
        }
        let mut sockets = vec![first];
        for i in 1..count {
            match UdpSocket::bind(("127.0.0.1", port + i)).await {
                Ok(s) => sockets.push(s),
                Err(_) => break,
            }
        }
        if sockets.len() == usize::from(count) {
            return sockets;
        }
    }
    panic!("no {count} consecutive free UDP ports on loopback");
}

/// Sends `data` from `client` to `to` until an answer arrives (the first
/// datagrams may be lost while the tunnel comes up); returns the answer.
async fn ask(client: &UdpSocket, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    wait_for(&format!("an answer from {to}"), WAIT, || async {
        client.send_to(data, to).await.unwrap();
        let mut buf = vec![0u8; 65536];
        match tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    })
    .await
}

struct UdpTunnel {
    peers: Peers,
    /// The relay's public UDP ports, in order.
    public: Vec<SocketAddr>,
}

/// Relay forwards UDP `public` (one port or a range) to home's overlay
/// `10.77.0.2:5300…`; home exposes that to `127.0.0.1:services…`.
async fn start(public: Vec<UdpSocket>, services: &[SocketAddr]) -> UdpTunnel {
    let addrs: Vec<SocketAddr> = public.iter().map(|s| s.local_addr().unwrap()).collect();
    let n = addrs.len() as u16;
    let range = |first: u16| {
        if n == 1 {
            first.to_string()
        } else {
            format!("{first}-{}", first + n - 1)
        }
    };
    let pair = Pair::new(
        &format!(
            r#"
[[forward]]
name = "game"
protocol = "udp"
listen = "127.0.0.1:{}"
to = "10.77.0.2:{}"
"#,
            range(addrs[0].port()),
            range(5300)
        ),
        &format!(
            r#"
[[expose]]
name = "game"
protocol = "udp"
listen = "10.77.0.2:{}"
to = "127.0.0.1:{}"
"#,
            range(5300),
            range(services[0].port())
        ),
    )
    .await;
    let relay = parse(&pair.relay_toml, "relay.toml");
    let home = parse(&pair.home_toml, "home.toml");
    let mut peers = Peers::new();
    peers.start(
        relay,
        pinhole::Sockets::new(pair.relay_udp, vec![ForwardSockets::Udp(public)]),
    );
    peers.start(home, pinhole::Sockets::new(any_udp().await, vec![]));
    UdpTunnel {
        peers,
        public: addrs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_clients_each_get_their_own_replies() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let service = server.local_addr().unwrap();
    udp_echo(server, Vec::new()).await;
    let public = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tunnel = start(vec![public], &[service]).await;
    let to = tunnel.public[0];

    // The first client brings the tunnel up.
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&first, to, b"hello").await, b"hello");

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..30u32 {
        clients.spawn(async move {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            // Several exchanges each, so sessions overlap in time.
            for round in 0..5u32 {
                let mine = format!("client {i} round {round}").into_bytes();
                let back = ask(&client, to, &mine).await;
                // A late duplicate of an earlier round is ours too; anything
                // else would be another client's datagram.
                let text = String::from_utf8(back).expect("an echoed datagram");
                assert!(
                    text.starts_with(&format!("client {i} round ")),
                    "client {i} got someone else's datagram: {text:?}"
                );
                if text.as_bytes() != mine.as_slice() {
                    // Drain until our own answer arrives.
                    let mut buf = vec![0u8; 2048];
                    loop {
                        let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
                            .await
                            .expect("our own answer never came")
                            .unwrap();
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        assert!(
                            text.starts_with(&format!("client {i} round ")),
                            "client {i} got someone else's datagram: {text:?}"
                        );
                        if buf[..n] == mine[..] {
                            break;
                        }
                    }
                }
            }
            i
        });
    }
    let done = tokio::time::timeout(WAIT, async {
        let mut done = 0;
        while let Some(r) = clients.join_next().await {
            r.expect("a client failed");
            done += 1;
        }
        done
    })
    .await
    .expect("30 clients did not finish");
    assert_eq!(done, 30);
    tunnel.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_of_1300_bytes_passes_whole() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let service = server.local_addr().unwrap();
    udp_echo(server, Vec::new()).await;
    let public = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tunnel = start(vec![public], &[service]).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&client, tunnel.public[0], b"up?").await, b"up?");

    let big = pattern(1300, 9);
    let back = ask(&client, tunnel.public[0], &big).await;
    // Stale answers to "up?" retries may still be queued: skip them.
    let back = if back == b"up?" {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
                .await
                .expect("the 1300-byte datagram never came back")
                .unwrap();
            if buf[..n] != b"up?"[..] {
                break buf[..n].to_vec();
            }
        }
    } else {
        back
    };
    assert_eq!(back.len(), 1300, "the datagram was cut or merged");
    assert!(back == big, "the datagram's bytes changed");
    tunnel.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_port_range_maps_port_i_to_port_i() {
    let servers = consecutive_udp(3).await;
    let services: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
    for s in servers {
        let tag = format!("from {}: ", s.local_addr().unwrap().port()).into_bytes();
        udp_echo(s, tag).await;
    }
    let public = consecutive_udp(3).await;
    let tunnel = start(public, &services).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for (i, (&public, service)) in tunnel.public.iter().zip(&services).enumerate() {
        let service = service.port();
        let question = format!("to {}", public.port());
        let want = format!("from {service}: {question}");
        let client = &client;
        // Retries of earlier questions may still arrive: wait for this one's answer.
        let got = wait_for(&format!("port {i} of the range"), WAIT, || {
            let question = question.clone();
            let want = want.clone();
            async move {
                let got = ask(client, public, question.as_bytes()).await;
                let got = String::from_utf8(got).unwrap();
                assert!(
                    !got.ends_with(&format!(": {question}")) || got == want,
                    "public port {} answered by the wrong service: {got:?} (want {want:?})",
                    public.port()
                );
                (got == want).then_some(got)
            }
        })
        .await;
        assert_eq!(got, want);
    }
    tunnel.peers.stop().await;
}
