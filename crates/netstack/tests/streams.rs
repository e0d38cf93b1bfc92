//! TCP streams between two stacks wired back to back: connect, accept, data, close.

mod common;

use std::io::ErrorKind;

use common::{at, bounded, checksum, pattern, spawn_echo, Pair, Wire, A, B};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_connect_echo() {
    let mut pair = Pair::new();
    bounded(async {
        let listener = pair.b.listen(at(B, 80)).await.unwrap();
        assert_eq!(listener.local_addr(), at(B, 80));
        let echo = spawn_echo(listener);
        let mut stream = pair.a.connect(at(B, 80)).await.unwrap();
        assert_eq!(stream.peer_addr(), at(B, 80));
        assert_eq!(stream.local_addr().ip(), A);
        stream.write_all(b"hello overlay").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"hello overlay");
        drop(stream);
        echo.abort();
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
    pair.stop().await;
}

/// Sends `data` on one half and reads everything from the other, concurrently.
async fn exchange(stream: pinhole_netstack::OverlayStream, data: Vec<u8>) -> Vec<u8> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = tokio::spawn(async move {
        writer.write_all(&data).await.unwrap();
        writer.shutdown().await.unwrap();
        writer
    });
    let mut received = Vec::new();
    reader.read_to_end(&mut received).await.unwrap();
    let _writer = write.await.unwrap();
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_each_way_in_parallel_intact() {
    const SIZE: usize = 10 * 1024 * 1024;
    let mut pair = Pair::new();
    bounded(async {
        let mut listener = pair.b.listen(at(B, 9000)).await.unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            exchange(stream, pattern(2, SIZE)).await
        });
        let stream = pair.a.connect(at(B, 9000)).await.unwrap();
        let at_client = exchange(stream, pattern(1, SIZE)).await;
        let at_server = server.await.unwrap();
        assert_eq!(at_client.len(), SIZE);
        assert_eq!(at_server.len(), SIZE);
        assert_eq!(checksum(&at_client), checksum(&pattern(2, SIZE)));
        assert_eq!(checksum(&at_server), checksum(&pattern(1, SIZE)));
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_reused_buffers_carries_only_its_own_bytes() {
    // The stack keeps the buffers of closed connections for the next ones; a new
    // connection must never see a byte an earlier one left in them.
    let mut pair = Pair::new();
    let listener = bounded(pair.b.listen(at(B, 9100))).await.unwrap();
    let echo = spawn_echo(listener);
    for (round, size) in [(1u64, 400 * 1024), (2, 1000), (3, 70 * 1024), (4, 1)] {
        bounded(async {
            let stream = pair.a.connect(at(B, 9100)).await.unwrap();
            let sent = pattern(round, size);
            let echoed = exchange(stream, sent.clone()).await;
            assert_eq!(echoed.len(), size, "round {round}");
            assert_eq!(checksum(&echoed), checksum(&sent), "round {round}");
        })
        .await;
        // Both sockets are gone, so their buffers are back for the next round.
        pair.wait_counts(|&c| c == (0, 0)).await;
    }
    echo.abort();
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_survives_packet_loss() {
    const SIZE: usize = 1024 * 1024;
    let wire = Wire {
        drop_every: Some(101),
    };
    let mut pair = Pair::with(common::config(A), common::config(B), wire);
    bounded(async {
        let listener = pair.b.listen(at(B, 7)).await.unwrap();
        let _echo = spawn_echo(listener);
        let stream = pair.a.connect(at(B, 7)).await.unwrap();
        let echoed = exchange(stream, pattern(3, SIZE)).await;
        assert_eq!(checksum(&echoed), checksum(&pattern(3, SIZE)));
    })
    .await;
    pair.wait_counts(|&(a, _)| a == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_on_one_listener() {
    let mut pair = Pair::new();
    bounded(async {
        let listener = pair.b.listen(at(B, 443)).await.unwrap();
        let echo = spawn_echo(listener);
        let clients: Vec<_> = (0..50u64)
            .map(|i| {
                let overlay = pair.a.clone();
                tokio::spawn(async move {
                    let stream = overlay.connect(at(B, 443)).await.unwrap();
                    let data = pattern(100 + i, 64 * 1024);
                    let echoed = exchange(stream, data.clone()).await;
                    assert_eq!(echoed, data, "connection {i}");
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        echo.abort();
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_still_receives_the_full_reply() {
    const REPLY: usize = 3 * 1024 * 1024;
    let mut pair = Pair::new();
    bounded(async {
        let mut listener = pair.b.listen(at(B, 80)).await.unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // Read the whole request up to the client's FIN, then answer.
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            assert_eq!(request, b"GET / please");
            stream.write_all(&pattern(9, REPLY)).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let mut stream = pair.a.connect(at(B, 80)).await.unwrap();
        stream.write_all(b"GET / please").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(
            stream.write_all(b"x").await.unwrap_err().kind(),
            ErrorKind::BrokenPipe
        );
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        assert_eq!(checksum(&reply), checksum(&pattern(9, REPLY)));
        server.await.unwrap();
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_after_peer_fin_gives_eof_and_writing_still_works() {
    let mut pair = Pair::new();
    bounded(async {
        let mut listener = pair.b.listen(at(B, 80)).await.unwrap();
        let mut client = pair.a.connect(at(B, 80)).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        server.shutdown().await.unwrap();
        let mut buf = [0; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        client.write_all(b"late data").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"late data");
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_reset_fails_reads_and_writes() {
    let mut pair = Pair::new();
    bounded(async {
        let mut listener = pair.b.listen(at(B, 22)).await.unwrap();
        let mut client = pair.a.connect(at(B, 22)).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        server.abort();
        let mut buf = [0; 16];
        let error = client.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
        let error = client.write_all(b"anyone?").await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_is_refused_fast() {
    let pair = Pair::new();
    let started = std::time::Instant::now();
    let error = bounded(pair.a.connect(at(B, 1234))).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_checks_address_and_port() {
    let pair = Pair::new();
    bounded(async {
        let error = pair.a.listen(at(B, 80)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrNotAvailable);
        let error = pair
            .a
            .listen(at("0.0.0.0".parse().unwrap(), 80))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrNotAvailable);
        let first = pair.a.listen(at(A, 80)).await.unwrap();
        let error = pair.a.listen(at(A, 80)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrInUse);
        drop(first);
        // The address is free again once the listener is gone.
        let mut again = None;
        while again.is_none() {
            again = pair.a.listen(at(A, 80)).await.ok();
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_streams_and_listeners_frees_every_socket() {
    let mut pair = Pair::new();
    bounded(async {
        let mut listener = pair.b.listen(at(B, 5000)).await.unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..10 {
            clients.push(pair.a.connect(at(B, 5000)).await.unwrap());
            servers.push(listener.accept().await.unwrap().0);
        }
        // Unread data on both sides must not keep sockets alive.
        for stream in clients.iter_mut().chain(servers.iter_mut()) {
            stream.write_all(&[7; 10_000]).await.unwrap();
        }
        pair.wait_counts(|&c| c == (10, 10)).await;
        drop(clients);
        drop(servers);
        drop(listener);
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_connect_frees_its_socket() {
    let mut pair = Pair::new();
    // Nobody answers at 10.77.0.9, so the connect stays in SYN-SENT until cancelled.
    let overlay = pair.a.clone();
    let mut attempt = Box::pin(overlay.connect(at("10.77.0.9".parse().unwrap(), 80)));
    tokio::select! {
        result = &mut attempt => panic!("connect finished: {result:?}"),
        _ = pair.wait_counts(|&(a, _)| a == 1) => {}
    }
    drop(attempt);
    pair.wait_counts(|&c| c == (0, 0)).await;
}
