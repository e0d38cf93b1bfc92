//! Loopback UDP stands in for both sides; every port is bound as port 0.

use std::net::IpAddr;

use super::*;
use crate::admission::Rate;
use crate::test_util::{data, wait_until, within};

/// A backend that answers every datagram with "re:" + the datagram, to its sender.
async fn echo_backend() -> UdpDialer {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; RECV_BUFFER];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let mut reply = b"re:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            if n + 3 > MAX_DATAGRAM {
                reply = buf[..n].to_vec(); // too big to prefix: echo as is
            }
            let _ = sock.send_to(&reply, from).await;
        }
    });
    UdpDialer::new("127.0.0.1", port)
}

struct Running {
    addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

async fn start(dialer: UdpDialer, options: UdpOptions) -> Running {
    let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_udp(
        "test",
        listener,
        dialer,
        options,
        Arc::clone(&counters),
        shutdown.clone(),
    ));
    Running {
        addr,
        counters,
        shutdown,
        task,
    }
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Sends `msg` until a reply arrives (UDP may drop on a loaded box) and returns it.
async fn ask(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    within("udp reply", async {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            sock.send_to(msg, to).await.unwrap();
            if let Ok(Ok(n)) = timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
                return buf[..n].to_vec();
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_each_get_their_own_replies() {
    let run = start(echo_backend().await, UdpOptions::default()).await;
    let tasks: Vec<_> = (0..50u32)
        .map(|i| {
            let to = run.addr;
            tokio::spawn(async move {
                let sock = client().await;
                for round in 0..3 {
                    let msg = format!("client {i} round {round}");
                    let got = ask(&sock, to, msg.as_bytes()).await;
                    assert_eq!(got, format!("re:{msg}").into_bytes());
                }
            })
        })
        .collect();
    for t in tasks {
        within("client", t).await.unwrap();
    }
    let s = run.counters.snapshot();
    assert_eq!((s.active, s.total, s.refused), (50, 50, 0));
    run.shutdown.cancel();
    within("serve_udp returns", run.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        run.counters.snapshot().active,
        0,
        "shutdown closed every session"
    );
}

#[tokio::test]
async fn idle_sessions_expire_and_free_the_table() {
    let options = UdpOptions {
        idle_timeout: Duration::from_millis(100),
        max_sessions: 1,
        ..UdpOptions::default()
    };
    let run = start(echo_backend().await, options).await;
    let a = client().await;
    assert_eq!(ask(&a, run.addr, b"one").await, b"re:one");
    wait_until("the session expired", || {
        run.counters.snapshot().active == 0
    })
    .await;
    // The slot is free again: a new client gets a session.
    let b = client().await;
    assert_eq!(ask(&b, run.addr, b"two").await, b"re:two");
    assert_eq!(run.counters.snapshot().total, 2);
    run.shutdown.cancel();
}

#[tokio::test]
async fn max_sessions_is_enforced_and_known_clients_keep_working() {
    let options = UdpOptions {
        max_sessions: 2,
        ..UdpOptions::default()
    };
    let run = start(echo_backend().await, options).await;
    let (a, b, c) = (client().await, client().await, client().await);
    assert_eq!(ask(&a, run.addr, b"a").await, b"re:a");
    assert_eq!(ask(&b, run.addr, b"b").await, b"re:b");
    c.send_to(b"c", run.addr).await.unwrap();
    wait_until("the third client is refused", || {
        run.counters.snapshot().refused >= 1
    })
    .await;
    assert_eq!(ask(&a, run.addr, b"a2").await, b"re:a2");
    let s = run.counters.snapshot();
    assert_eq!((s.active, s.total), (2, 2));
    run.shutdown.cancel();
}

#[tokio::test]
async fn a_65507_byte_datagram_passes_whole_both_ways() {
    let run = start(echo_backend().await, UdpOptions::default()).await;
    let sock = client().await;
    let big = data(MAX_DATAGRAM, 3);
    let got = ask(&sock, run.addr, &big).await;
    assert_eq!(got.len(), MAX_DATAGRAM);
    assert_eq!(got, big);
    let s = run.counters.snapshot();
    assert!(s.rx_bytes >= MAX_DATAGRAM as u64 && s.tx_bytes >= MAX_DATAGRAM as u64);
    run.shutdown.cancel();
}

#[tokio::test]
async fn denied_and_rate_limited_clients_get_no_session() {
    let options = UdpOptions {
        admission: Admission {
            deny: vec![(IpAddr::from([127, 0, 0, 2]), 32)],
            rate: Some(Rate {
                count: 1,
                per: Duration::from_secs(3600),
            }),
            ..Admission::default()
        },
        idle_timeout: Duration::from_millis(50),
        ..UdpOptions::default()
    };
    let run = start(echo_backend().await, options).await;
    let denied = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    denied.send_to(b"x", run.addr).await.unwrap();
    wait_until("denied", || run.counters.snapshot().refused == 1).await;
    let a = client().await;
    assert_eq!(ask(&a, run.addr, b"a").await, b"re:a");
    wait_until("the session expired", || {
        run.counters.snapshot().active == 0
    })
    .await;
    // Same source address, new session: over the rate.
    a.send_to(b"again", run.addr).await.unwrap();
    wait_until("rate limited", || run.counters.snapshot().refused == 2).await;
    assert_eq!(run.counters.snapshot().total, 1);
    run.shutdown.cancel();
}

#[tokio::test]
async fn replies_from_another_address_are_dropped() {
    // The "backend" answers from a different socket than the one the session sent to.
    let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = backend.local_addr().unwrap().port();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = backend.recv_from(&mut buf).await {
            let _ = other.send_to(b"spoofed", from).await;
            let _ = backend.send_to(&buf[..n], from).await;
        }
    });
    let run = start(UdpDialer::new("127.0.0.1", port), UdpOptions::default()).await;
    let sock = client().await;
    assert_eq!(ask(&sock, run.addr, b"real").await, b"real");
    run.shutdown.cancel();
}

/// A queued burst from two clients, interleaved, is read as one batch and sent upstream in
/// runs: each client's datagrams reach the target whole, in their order, from the client's own
/// session socket.
#[tokio::test]
async fn an_interleaved_burst_reaches_the_target_in_each_clients_order() {
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dialer = UdpDialer::new("127.0.0.1", target.local_addr().unwrap().port());
    let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = (client().await, client().await);
    // Queued before the forward starts, so its first read takes a full batch: runs of one
    // client (a a a), a single datagram (b), then alternation, past one batch's worth.
    let order = "aaabababbbaaaaaabbbbbbab";
    let mut sent = Vec::new();
    for (i, who) in order.chars().enumerate() {
        let (sock, name) = if who == 'a' { (&a, b'a') } else { (&b, b'b') };
        let mut payload = vec![name];
        payload.extend(data(100 + i * 50, i as u64));
        sock.send_to(&payload, addr).await.unwrap();
        sent.push(payload);
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_udp(
        "burst",
        listener,
        dialer,
        UdpOptions::default(),
        Arc::new(Counters::default()),
        shutdown.clone(),
    ));
    let mut got: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    within("the whole burst upstream", async {
        while got.len() < sent.len() {
            let (n, from) = target.recv_from(&mut buf).await.unwrap();
            got.push((from, buf[..n].to_vec()));
        }
    })
    .await;
    for who in [b'a', b'b'] {
        let expected: Vec<_> = sent.iter().filter(|p| p[0] == who).cloned().collect();
        let arrived: Vec<_> = got.iter().filter(|(_, p)| p[0] == who).collect();
        let sessions: std::collections::HashSet<_> = arrived.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            sessions.len(),
            1,
            "client {} has one session socket",
            who as char
        );
        let payloads: Vec<_> = arrived.into_iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(
            payloads, expected,
            "client {}: whole, in order",
            who as char
        );
    }
    let (from_a, from_b) = (
        got.iter().find(|(_, p)| p[0] == b'a'),
        got.iter().find(|(_, p)| p[0] == b'b'),
    );
    assert_ne!(
        from_a.unwrap().0,
        from_b.unwrap().0,
        "two clients, two sessions"
    );
    shutdown.cancel();
    within("forward stops", task).await.unwrap().unwrap();
}

/// A burst of replies (runs of equal sizes and not) reaches the client whole and in order,
/// and a datagram from another address in the middle of it is dropped, not the burst.
#[tokio::test]
async fn a_burst_of_replies_reaches_the_client_whole_and_in_order() {
    let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dialer = UdpDialer::new("127.0.0.1", backend.local_addr().unwrap().port());
    let running = start(dialer, UdpOptions::default()).await;
    let client = client().await;
    let sizes: Vec<usize> = [500; 20]
        .into_iter()
        .chain([100; 10])
        .chain([1400, 7, 1400, 1400, 3000, 0, 64, 64])
        .collect();
    let replies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| data(n, 1000 + i as u64))
        .collect();
    client.send_to(b"go", running.addr).await.unwrap();
    let mut buf = vec![0u8; RECV_BUFFER];
    let (_, session) = within("the first datagram", backend.recv_from(&mut buf))
        .await
        .unwrap();
    for (i, reply) in replies.iter().enumerate() {
        backend.send_to(reply, session).await.unwrap();
        if i == 10 {
            stranger.send_to(b"not the target", session).await.unwrap();
        }
    }
    let mut got = Vec::new();
    within("every reply", async {
        while got.len() < replies.len() {
            let n = client.recv(&mut buf).await.unwrap();
            got.push(buf[..n].to_vec());
        }
    })
    .await;
    assert!(
        got == replies,
        "whole, in order, the stranger's datagram left out"
    );
    running.shutdown.cancel();
    within("forward stops", running.task)
        .await
        .unwrap()
        .unwrap();
}

/// `refused` counts datagrams, as documented, also when a refused client's burst is read
/// in one batch.
#[tokio::test]
async fn each_datagram_of_a_refused_burst_is_counted() {
    let options = UdpOptions {
        admission: Admission {
            deny: vec![(IpAddr::from([127, 0, 0, 2]), 32)],
            ..Admission::default()
        },
        ..UdpOptions::default()
    };
    let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let denied = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    // Queued before the forward starts, so its first read takes all five at once.
    for i in 0..5u8 {
        denied.send_to(&[i], addr).await.unwrap();
    }
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_udp(
        "refused",
        listener,
        echo_backend().await,
        options,
        Arc::clone(&counters),
        shutdown.clone(),
    ));
    wait_until("five refused", || counters.snapshot().refused == 5).await;
    shutdown.cancel();
    within("forward stops", task).await.unwrap().unwrap();
    assert_eq!(counters.snapshot().refused, 5);
}
