//! TCP port ranges: one listener over many ports, accepting on any of them.

mod common;

use std::io::ErrorKind;

use common::{at, bounded, spawn_echo, Pair, A, B};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects to `port` on B, sends the port number and expects it echoed.
async fn round_trip(pair: &Pair, port: u16) {
    let mut stream = pair.a.connect(at(B, port)).await.unwrap();
    assert_eq!(stream.peer_addr(), at(B, port));
    stream.write_all(&port.to_be_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, port.to_be_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listener_accepts_on_every_port_of_its_range() {
    let mut pair = Pair::new();
    bounded(async {
        let mut listener = pair.b.listen_range(at(B, 27015), 16).await.unwrap();
        assert_eq!(listener.local_addr(), at(B, 27015));
        assert_eq!(listener.port_count(), 16);
        let ports = [27015u16, 27016, 27020, 27030];
        let clients: Vec<_> = ports
            .iter()
            .map(|&port| {
                let overlay = pair.a.clone();
                tokio::spawn(async move {
                    let mut stream = overlay.connect(at(B, port)).await.unwrap();
                    stream.write_all(b"x").await.unwrap();
                    let mut reply = [0; 2];
                    stream.read_exact(&mut reply).await.unwrap();
                    assert_eq!(u16::from_be_bytes(reply), port);
                })
            })
            .collect();
        let mut seen = Vec::new();
        for _ in ports {
            let (mut stream, peer) = listener.accept().await.unwrap();
            assert_eq!(peer.ip(), A);
            let port = stream.local_addr().port();
            assert_eq!(stream.local_addr().ip(), B);
            seen.push(port);
            stream.write_all(&port.to_be_bytes()).await.unwrap();
        }
        for client in clients {
            client.await.unwrap();
        }
        seen.sort_unstable();
        assert_eq!(seen, ports);
        // Just outside the range: refused.
        for port in [27014, 27031] {
            let error = pair.a.connect(at(B, port)).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{port}");
        }
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ranges_are_refused_and_dropping_frees_them() {
    let pair = Pair::new();
    bounded(async {
        let listener = pair.b.listen_range(at(B, 8000), 100).await.unwrap();
        for (first, count) in [(8000, 1), (8099, 1), (7990, 11), (8050, 500), (7000, 2000)] {
            let error = pair.b.listen_range(at(B, first), count).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::AddrInUse, "{first}+{count}");
        }
        let error = pair.b.listen(at(B, 8042)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrInUse);
        for (first, count) in [(65000, 1000), (80, 0), (0, 5)] {
            let error = pair.b.listen_range(at(B, first), count).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{first}+{count}");
        }
        let error = pair.b.listen_range(at(A, 9000), 10).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AddrNotAvailable);
        // Neighbours touching the range are fine; TCP and UDP ports are separate.
        let _below = pair.b.listen(at(B, 7999)).await.unwrap();
        let _above = pair.b.listen_range(at(B, 8100), 5).await.unwrap();
        let _udp = pair.b.bind_udp_range(at(B, 8000), 100).await.unwrap();
        drop(listener);
        let _again = pair.b.listen_range(at(B, 8000), 100).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_port_range_accepts_on_its_first_and_last_port() {
    let mut pair = Pair::new();
    bounded(async {
        let listener = pair.b.listen_range(at(B, 20000), 1000).await.unwrap();
        // Listening costs no socket at all, whatever the number of ports.
        let counts = pair.wait_counts(|_| true).await;
        assert_eq!(counts, (0, 0));
        let echo = spawn_echo(listener);
        round_trip(&pair, 20000).await;
        round_trip(&pair, 20999).await;
        let error = pair.a.connect(at(B, 21000)).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
        echo.abort();
    })
    .await;
    pair.wait_counts(|&c| c == (0, 0)).await;
}
