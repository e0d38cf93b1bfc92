//! A 3-port range on loopback, TCP and UDP: listen port i reaches target port i.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::counters::Counters;
use crate::serve::serve;
use crate::test_util::within;
use crate::udp::{serve_udp, UdpOptions};
use crate::{CancellationToken, Limits};

#[test]
fn port_map_table() {
    let m = PortMap::range(27015, 37015, 16);
    assert_eq!(m.target(27015), Some(37015));
    assert_eq!(m.target(27030), Some(37030));
    assert_eq!(m.target(27031), None);
    assert_eq!(m.target(27014), None);
    let edge = PortMap::range(65534, 10, 5);
    assert_eq!((edge.target(65535), edge.target(0)), (Some(11), None));
    let p = PortMap::pairs(vec![(9, 1), (3, 2), (9, 5)]);
    assert_eq!((p.target(3), p.target(9)), (Some(2), Some(1)));
}

#[tokio::test]
async fn a_dialer_without_a_local_port_refuses_to_guess() {
    let d = RangeDialer::new(TcpDialer::new("127.0.0.1", 1), PortMap::range(1, 1, 2));
    assert!(d.wants_local_addr());
    assert_eq!(
        d.dial().await.unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn a_single_port_needs_no_local_port() {
    // So the accept loop can skip `getsockname` for an ordinary one-port forward.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let d = RangeDialer::new(
        TcpDialer::new("127.0.0.1", 0),
        PortMap::range(8080, port, 1),
    );
    assert!(!d.wants_local_addr());
    let dialed = within("dial", d.dial()).await.unwrap();
    let (accepted, _) = within("accept", target.accept()).await.unwrap();
    assert_eq!(dialed.peer_addr().unwrap(), accepted.local_addr().unwrap());
}

#[tokio::test]
async fn accepted_sockets_have_nodelay_whether_inherited_or_set() {
    // The listener's option is inherited on Linux (no call per connection); either way
    // every accepted socket must have it, the first one and the ones after.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut range = TcpPortRange::from_listeners(vec![listener]);
    for _ in 0..2 {
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = within("accept", range.accept()).await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}

#[tokio::test]
async fn tcp_range_maps_each_port_to_its_target() {
    let mut listeners = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..3u8 {
        // Backend i answers with its index, then closes.
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = backend.accept().await {
                let _ = s.write_all(&[i]).await;
            }
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        pairs.push((l.local_addr().unwrap().port(), to));
        listeners.push(l);
    }
    let acceptor = TcpPortRange::from_listeners(listeners);
    let addrs = acceptor.local_addrs().unwrap();
    let dialer = RangeDialer::new(TcpDialer::new("127.0.0.1", 0), PortMap::pairs(pairs));
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        "range",
        acceptor,
        dialer,
        Limits::default(),
        Arc::clone(&counters),
        shutdown.clone(),
    ));
    for round in 0..2 {
        for (i, addr) in addrs.iter().enumerate().rev() {
            let mut s = within("connect", TcpStream::connect(addr)).await.unwrap();
            let mut got = Vec::new();
            within("reply", s.read_to_end(&mut got)).await.unwrap();
            assert_eq!(got, [i as u8], "port {i}, round {round}");
        }
    }
    assert_eq!(counters.snapshot().total, 6);
    shutdown.cancel();
    within("serve returns", task).await.unwrap().unwrap();
}

#[tokio::test]
async fn udp_range_maps_each_port_and_replies_from_it() {
    let mut sockets = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..3u8 {
        let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = backend.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply.push(i);
                let _ = backend.send_to(&reply, from).await;
            }
        });
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        pairs.push((s.local_addr().unwrap().port(), to));
        sockets.push(s);
    }
    let listener = UdpPortRange::from_sockets(sockets).unwrap();
    let ports = listener.ports();
    let dialer = RangeDialer::new(
        UdpDialer::new("127.0.0.1", 0),
        PortMap::pairs(pairs.clone()),
    );
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_udp(
        "range",
        listener,
        dialer,
        UdpOptions::default(),
        Arc::clone(&counters),
        shutdown.clone(),
    ));
    // One client talks to all three ports: three sessions, each reply from the port asked.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for port in &ports {
        let i = pairs.iter().position(|p| p.0 == *port).unwrap() as u8;
        let to = SocketAddr::from(([127, 0, 0, 1], *port));
        let (reply, from) = within("udp reply", async {
            let mut buf = [0u8; 64];
            loop {
                client.send_to(b"hi", to).await.unwrap();
                let wait = tokio::time::timeout(
                    std::time::Duration::from_millis(500),
                    client.recv_from(&mut buf),
                );
                if let Ok(Ok((n, from))) = wait.await {
                    return (buf[..n].to_vec(), from);
                }
            }
        })
        .await;
        assert_eq!(reply, [b'h', b'i', i]);
        assert_eq!(from, to, "the reply comes from the port the client asked");
    }
    assert_eq!(counters.snapshot().total, 3);
    shutdown.cancel();
    within("serve_udp returns", task).await.unwrap().unwrap();
}

#[tokio::test]
async fn bind_takes_a_whole_range_or_nothing() {
    let err = TcpPortRange::bind(IpAddr::from([127, 0, 0, 1]), 10, 9)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // A busy port in the middle fails the whole bind.
    let busy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = busy.local_addr().unwrap().port();
    if p > 1024 && p < 65535 {
        assert!(
            TcpPortRange::bind(IpAddr::from([127, 0, 0, 1]), p - 1, p + 1)
                .await
                .is_err()
        );
    }
}
