//! UDP sockets between two stacks wired back to back: echo, many clients, sizes, ports, bounds.

mod common;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{at, bounded, pattern, Pair, Wire, A, B};
use pinhole_netstack::{OverlayUdpSocket, StackConfig};

const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1));
const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2));
const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn dual_stack() -> Pair {
    let a = StackConfig::new(vec![(A, 24), (A6, 64)], 1420);
    let b = StackConfig::new(vec![(B, 24), (B6, 64)], 1420);
    Pair::with(a, b, Wire::default())
}

/// Echoes every datagram back to its sender, prefixed with "echo:", until the socket fails.
fn spawn_udp_echo(socket: OverlayUdpSocket) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = [b"echo:", &buf[..n]].concat();
            if socket.send_to(&reply, from).await.is_err() {
                break;
            }
        }
    })
}

/// Receives one datagram, or fails the test after a while.
async fn recv(socket: &OverlayUdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("no datagram arrived")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_ipv4_and_ipv6() {
    let pair = dual_stack();
    bounded(async {
        for (server_ip, any) in [(B, ANY4), (B6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))] {
            let server = pair.b.bind_udp(at(server_ip, 53)).await.unwrap();
            assert_eq!(server.local_addr(), at(server_ip, 53));
            assert_eq!(server.port_count(), 1);
            let echo = spawn_udp_echo(server);
            // Unspecified: our first address of that family, and an ephemeral port.
            let client = pair.a.bind_udp(SocketAddr::new(any, 0)).await.unwrap();
            let local = client.local_addr();
            assert_eq!(local.ip(), if server_ip.is_ipv4() { A } else { A6 });
            assert!(local.port() >= 49152, "{local}");
            client.send_to(b"ping", at(server_ip, 53)).await.unwrap();
            let (reply, from) = recv(&client).await;
            assert_eq!(reply, b"echo:ping");
            assert_eq!(from, at(server_ip, 53));
            // The other family cannot be reached from this socket.
            let other = if server_ip.is_ipv4() { B6 } else { B };
            let error = client.send_to(b"x", at(other, 53)).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
            echo.abort();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_each_get_their_own_replies() {
    let pair = Pair::new();
    bounded(async {
        let server = pair.b.bind_udp(at(B, 27015)).await.unwrap();
        let echo = spawn_udp_echo(server);
        let clients: Vec<_> = (0..50u64)
            .map(|i| {
                let overlay = pair.a.clone();
                tokio::spawn(async move {
                    let socket = overlay.bind_udp(at(A, 0)).await.unwrap();
                    for round in 0..5u64 {
                        let data = pattern(i * 100 + round, 200 + i as usize);
                        socket.send_to(&data, at(B, 27015)).await.unwrap();
                        let (reply, from) = recv(&socket).await;
                        assert_eq!(from, at(B, 27015));
                        assert_eq!(reply, [b"echo:", &data[..]].concat(), "client {i}");
                    }
                    socket.local_addr().port()
                })
            })
            .collect();
        let mut ports = HashSet::new();
        for client in clients {
            assert!(ports.insert(client.await.unwrap()));
        }
        echo.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_datagram_passes_whole_and_a_larger_one_errors() {
    let pair = dual_stack();
    bounded(async {
        for (server_ip, client_ip, max) in [(B, A, 1420 - 28), (B6, A6, 1420 - 48)] {
            let server = pair.b.bind_udp(at(server_ip, 9)).await.unwrap();
            let client = pair.a.bind_udp(at(client_ip, 0)).await.unwrap();
            assert_eq!(client.max_payload(), max);
            let data = pattern(max as u64, max);
            assert_eq!(client.send_to(&data, at(server_ip, 9)).await.unwrap(), max);
            let (received, from) = recv(&server).await;
            assert_eq!(received, data);
            assert_eq!(from, client.local_addr());
            let error = client
                .send_to(&pattern(1, max + 1), at(server_ip, 9))
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
            // An empty datagram is a datagram too.
            client.send_to(&[], at(server_ip, 9)).await.unwrap();
            assert_eq!(recv(&server).await.0, b"");
            // A short buffer truncates, like a kernel socket.
            client
                .send_to(b"0123456789", at(server_ip, 9))
                .await
                .unwrap();
            let mut small = [0; 4];
            let (n, _) = server.recv_from(&mut small).await.unwrap();
            assert_eq!(&small[..n], b"0123");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_socket_frees_its_port() {
    let pair = Pair::new();
    bounded(async {
        let first = pair.b.bind_udp(at(B, 5000)).await.unwrap();
        let error = pair.b.bind_udp(at(B, 5000)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrInUse);
        drop(first);
        // Re-binding at once works, and the new socket gets the traffic.
        let second = pair.b.bind_udp(at(B, 5000)).await.unwrap();
        let client = pair.a.bind_udp(at(A, 0)).await.unwrap();
        client.send_to(b"again", at(B, 5000)).await.unwrap();
        assert_eq!(recv(&second).await.0, b"again");
        for _ in 0..100 {
            let socket = pair.b.bind_udp(at(B, 5001)).await.unwrap();
            drop(socket);
        }
        let error = pair.b.bind_udp(at(A, 1)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrNotAvailable);
        let error = pair.b.bind_udp(at(B6, 1)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrNotAvailable);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbound_queue_drops_and_counts() {
    const SENT: usize = 400;
    let pair = Pair::new();
    bounded(async {
        let server = pair.b.bind_udp(at(B, 7000)).await.unwrap();
        let client = pair.a.bind_udp(at(A, 0)).await.unwrap();
        for i in 0..SENT {
            client
                .send_to(&(i as u32).to_be_bytes(), at(B, 7000))
                .await
                .unwrap();
        }
        // Nobody reads: everything beyond the queue is dropped, not buffered.
        while (server.dropped() as usize) < SENT - 256 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.dropped() as usize, SENT - 256);
        for i in 0..256u32 {
            assert_eq!(recv(&server).await.0, i.to_be_bytes());
        }
        let mut buf = [0; 16];
        let more = tokio::time::timeout(Duration::from_millis(100), server.recv_from(&mut buf));
        assert!(more.await.is_err(), "only 256 datagrams were queued");
        // The queue has room again.
        client.send_to(b"late", at(B, 7000)).await.unwrap();
        assert_eq!(recv(&server).await.0, b"late");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_recv_takes_what_is_queued_in_order_and_never_waits() {
    let pair = Pair::new();
    bounded(async {
        let server = pair.b.bind_udp(at(B, 7000)).await.unwrap();
        let client = pair.a.bind_udp(at(A, 0)).await.unwrap();
        let mut buf = [0; 16];
        assert!(server.try_recv(&mut buf).is_none(), "nothing queued yet");
        for i in 0..5u32 {
            client.send_to(&i.to_be_bytes(), at(B, 7000)).await.unwrap();
        }
        // `readable` takes the first out of the queue; `try_recv` must still hand it out first.
        server.readable().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            match server.try_recv(&mut buf) {
                Some((n, from, to)) => {
                    assert_eq!((from, to), (client.local_addr(), at(B, 7000)));
                    got.push(buf[..n].to_vec());
                }
                None => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        let sent: Vec<_> = (0..5u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(got, sent);
        assert!(
            server.try_recv(&mut buf).is_none(),
            "the queue is empty again"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_wait_instead_of_growing_queues() {
    let pair = Pair::new();
    bounded(async {
        let server = Arc::new(pair.b.bind_udp(at(B, 7001)).await.unwrap());
        let client = Arc::new(pair.a.bind_udp(at(A, 0)).await.unwrap());
        // Several writers share one socket, and one reader keeps up on the other side.
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let client = Arc::clone(&client);
                tokio::spawn(async move {
                    for i in 0..500u32 {
                        let data = [w.to_be_bytes(), i.to_be_bytes()].concat();
                        client.send_to(&data, at(B, 7001)).await.unwrap();
                    }
                })
            })
            .collect();
        let reader = {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let mut buf = [0; 64];
                let mut got = 0;
                while got + server.dropped() < 2000 {
                    server.recv_from(&mut buf).await.unwrap();
                    got += 1;
                }
                got
            })
        };
        for writer in writers {
            writer.await.unwrap();
        }
        let got = reader.await.unwrap();
        assert_eq!(got + server.dropped(), 2000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_ports_never_collide() {
    const FREE: u16 = 40;
    let pair = Pair::new();
    bounded(async {
        // TCP listens on all the ephemeral range but FREE ports; a UDP socket takes one more.
        let (first, last) = (49152u16, 65535u16);
        let taken = last - first + 1 - FREE;
        let _listener = pair.b.listen_range(at(B, first), taken).await.unwrap();
        let pinned = pair.b.bind_udp(at(B, last)).await.unwrap();
        let mut sockets = Vec::new();
        let mut ports = HashSet::new();
        for _ in 0..FREE - 1 {
            let socket = pair.b.bind_udp(at(B, 0)).await.unwrap();
            let port = socket.local_addr().port();
            assert!(port >= first + taken && port < last, "{port} collides");
            assert!(ports.insert(port), "{port} handed out twice");
            sockets.push(socket);
        }
        let error = pair.b.bind_udp(at(B, 0)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrNotAvailable);
        // A freed port is handed out again, and only it.
        let freed = sockets.swap_remove(7).local_addr().port();
        let again = pair.b.bind_udp(at(B, 0)).await.unwrap();
        assert_eq!(again.local_addr().port(), freed);
        drop(pinned);
        let last_one = pair.b.bind_udp(at(B, 0)).await.unwrap();
        assert_eq!(last_one.local_addr().port(), last);
        // Other addresses have their own ports: A is untouched.
        assert!(pair.a.bind_udp(at(A, 0)).await.is_ok());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_receives_on_each_port_and_answers_from_it() {
    let pair = Pair::new();
    bounded(async {
        let range = pair.b.bind_udp_range(at(B, 27015), 16).await.unwrap();
        assert_eq!(range.local_addr(), at(B, 27015));
        assert_eq!(range.port_count(), 16);
        for (first, count) in [(27030, 1), (27000, 16), (27020, 2), (27015, 100)] {
            let error = pair
                .b
                .bind_udp_range(at(B, first), count)
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::AddrInUse, "{first}+{count}");
        }
        for (first, count) in [(0, 2), (65535, 2), (80, 0)] {
            let error = pair
                .b
                .bind_udp_range(at(B, first), count)
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{first}+{count}");
        }
        let _next = pair.b.bind_udp_range(at(B, 27031), 4).await.unwrap();
        let client = pair.a.bind_udp(at(A, 0)).await.unwrap();
        let mut buf = [0; 64];
        for port in [27015u16, 27016, 27022, 27030] {
            client
                .send_to(&port.to_be_bytes(), at(B, port))
                .await
                .unwrap();
            let (n, from, to) = range.recv(&mut buf).await.unwrap();
            assert_eq!(
                (&buf[..n], from, to),
                (&port.to_be_bytes()[..], client.local_addr(), at(B, port))
            );
            range.send_from(b"from", to.port(), from).await.unwrap();
            let (reply, replier) = recv(&client).await;
            assert_eq!((reply.as_slice(), replier), (&b"from"[..], at(B, port)));
        }
        let error = range
            .send_from(b"x", 27031, client.local_addr())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        // send_to on a range answers from its first port.
        range.send_to(b"first", client.local_addr()).await.unwrap();
        assert_eq!(recv(&client).await.1, at(B, 27015));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_port_range_reaches_its_first_and_last_port() {
    let pair = Pair::new();
    bounded(async {
        let range = pair.b.bind_udp_range(at(B, 10000), 1000).await.unwrap();
        let client = pair.a.bind_udp(at(A, 0)).await.unwrap();
        for port in [10000, 10999] {
            client.send_to(b"hi", at(B, port)).await.unwrap();
            let mut buf = [0; 8];
            let (_, _, to) = range.recv(&mut buf).await.unwrap();
            assert_eq!(to, at(B, port));
        }
        // Port 11000 is outside: dropped (nobody bound), and nothing else arrives.
        client.send_to(b"no", at(B, 11000)).await.unwrap();
        let mut buf = [0; 8];
        let more = tokio::time::timeout(Duration::from_millis(100), range.recv(&mut buf));
        assert!(more.await.is_err());
    })
    .await;
}
