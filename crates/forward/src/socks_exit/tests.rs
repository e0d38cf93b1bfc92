//! A SOCKS5 client on loopback against `serve_handler` with the exit handler.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::exit_policy::DestinationRule;
use crate::serve::{serve_handler, ServeOptions};
use crate::test_util::{wait_until, within};
use crate::{CancellationToken, TaskTracker};

struct Running {
    addr: SocketAddr,
    counters: Arc<Counters>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start(exit: SocksExit, limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let options = ServeOptions {
        limits,
        ..ServeOptions::default()
    };
    tokio::spawn({
        let (counters, shutdown) = (Arc::clone(&counters), shutdown.clone());
        async move {
            let tracker = TaskTracker::new();
            serve_handler(
                "socks", listener, exit, options, counters, shutdown, &tracker,
            )
            .await
        }
    });
    Running {
        addr,
        counters,
        _shutdown: shutdown.drop_guard(),
    }
}

fn allow(nets: &[(&str, u8)]) -> ExitPolicy {
    let allow = nets
        .iter()
        .map(|(ip, len)| DestinationRule {
            net: Some((ip.parse::<IpAddr>().unwrap(), *len)),
            ports: None,
        })
        .collect();
    ExitPolicy::new(vec![(IpAddr::from([10, 77, 0, 0]), 16)], allow, vec![])
}

fn loopback_allowed() -> ExitPolicy {
    allow(&[("127.0.0.1", 32), ("::1", 128)])
}

/// An echo server on 127.0.0.1.
async fn echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

fn connect_v4(ip: [u8; 4], port: u16) -> Vec<u8> {
    [&[5, 1, 0, 1][..], &ip, &port.to_be_bytes()].concat()
}

fn connect_name(name: &str, port: u16) -> Vec<u8> {
    [
        &[5, 1, 0, 3, name.len() as u8][..],
        name.as_bytes(),
        &port.to_be_bytes(),
    ]
    .concat()
}

/// Greets without auth, sends `request`, returns the stream and the 10-byte reply (IPv4 bound).
async fn request(addr: SocketAddr, request: &[u8]) -> (TcpStream, Vec<u8>) {
    within("socks request", async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await.unwrap();
        assert_eq!(method, [5, 0]);
        s.write_all(request).await.unwrap();
        let mut reply = vec![0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        (s, reply)
    })
    .await
}

async fn echo_roundtrip(s: &mut TcpStream) {
    within("echo through the exit", async {
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    })
    .await;
}

/// Reads to the end; the exit must close the connection.
async fn closed(mut s: TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = within("closed by the exit", s.read_to_end(&mut rest)).await;
    rest
}

#[tokio::test]
async fn connect_to_an_allowed_loopback_echo() {
    let port = echo().await;
    let run = start(SocksExit::new(loopback_allowed(), None), Limits::default()).await;
    let (mut s, reply) = request(run.addr, &connect_v4([127, 0, 0, 1], port)).await;
    assert_eq!(reply[..4], [5, 0, 0, 1], "succeeded, IPv4 bound address");
    assert_eq!(reply[4..8], [127, 0, 0, 1]);
    assert_ne!(u16::from_be_bytes([reply[8], reply[9]]), 0);
    echo_roundtrip(&mut s).await;
}

#[tokio::test]
async fn loopback_is_refused_by_default_with_0x02_at_once() {
    let port = echo().await;
    let run = start(
        SocksExit::new(ExitPolicy::default(), None),
        Limits::default(),
    )
    .await;
    for req in [
        connect_v4([127, 0, 0, 1], port),
        connect_v4([169, 254, 169, 254], 80),
        connect_v4([10, 0, 0, 1], 80),
        connect_name("localhost", port), // rebinding-safe: the resolved address is checked
    ] {
        let (s, reply) = request(run.addr, &req).await;
        assert_eq!(reply[1], 0x02, "{req:?}");
        assert!(closed(s).await.is_empty());
    }
}

#[tokio::test]
async fn a_name_is_resolved_at_the_exit() {
    let port = echo().await;
    let run = start(SocksExit::new(loopback_allowed(), None), Limits::default()).await;
    let (mut s, reply) = request(run.addr, &connect_name("localhost", port)).await;
    assert_eq!(reply[1], 0x00);
    echo_roundtrip(&mut s).await;
}

#[tokio::test]
async fn the_request_and_first_bytes_may_come_in_one_write() {
    let port = echo().await;
    let run = start(SocksExit::new(loopback_allowed(), None), Limits::default()).await;
    let mut s = TcpStream::connect(run.addr).await.unwrap();
    let all = [&[5, 1, 0][..], &connect_v4([127, 0, 0, 1], port), b"early"].concat();
    s.write_all(&all).await.unwrap();
    let mut back = [0u8; 2 + 10 + 5];
    within("replies and echo", s.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(back[..3], [5, 0, 5]);
    assert_eq!(&back[12..], b"early");
}

#[tokio::test]
async fn username_and_password() {
    let port = echo().await;
    let creds = Some(Credentials::new("alice", "s3cret"));
    let run = start(SocksExit::new(loopback_allowed(), creds), Limits::default()).await;
    for (pass, ok) in [(&b"s3cret"[..], true), (b"wrong!", false)] {
        let mut s = TcpStream::connect(run.addr).await.unwrap();
        let mut msg = vec![5, 1, 2, 1, 5];
        msg.extend_from_slice(b"alice");
        msg.push(pass.len() as u8);
        msg.extend_from_slice(pass);
        s.write_all(&msg).await.unwrap();
        let mut answer = [0u8; 4];
        within("auth answer", s.read_exact(&mut answer))
            .await
            .unwrap();
        assert_eq!(answer, [5, 2, 1, if ok { 0 } else { 1 }]);
        if ok {
            s.write_all(&connect_v4([127, 0, 0, 1], port))
                .await
                .unwrap();
            let mut reply = [0u8; 10];
            within("reply", s.read_exact(&mut reply)).await.unwrap();
            assert_eq!(reply[1], 0);
            echo_roundtrip(&mut s).await;
        } else {
            assert!(closed(s).await.is_empty());
        }
    }
    // A client offering no-auth only gets 0xFF.
    let mut s = TcpStream::connect(run.addr).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    assert_eq!(closed(s).await, [5, 0xff]);
}

#[tokio::test]
async fn failures_get_their_reply_codes() {
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let run = start(SocksExit::new(loopback_allowed(), None), Limits::default()).await;
    let (_, reply) = request(run.addr, &connect_v4([127, 0, 0, 1], closed_port)).await;
    assert_eq!(reply[1], 0x05, "connection refused");
    let (_, reply) = request(run.addr, &connect_name("no-such-host.invalid", 80)).await;
    assert_eq!(reply[1], 0x04, "name did not resolve");
    let (_, reply) = request(run.addr, &[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(reply[1], 0x07, "BIND not supported");
    let (_, reply) = request(run.addr, &[5, 3, 0, 1, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(reply[1], 0x07, "UDP ASSOCIATE not supported");
    let (_, reply) = request(run.addr, &[5, 1, 0, 9, 127, 0, 0, 1, 0, 80]).await;
    assert_eq!(reply[1], 0x08, "address type not supported");
    wait_until("all counted", || run.counters.snapshot().failed == 5).await;
}

#[tokio::test]
async fn malformed_and_slow_handshakes_close_cleanly() {
    let port = echo().await;
    let exit =
        SocksExit::new(loopback_allowed(), None).with_handshake_timeout(Duration::from_millis(100));
    let run = start(exit, Limits::default()).await;
    let oversized = [&[5, 255][..], &[0u8; 255], &[7u8; 3000]].concat();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("version 4", vec![4, 1, 0, 80, 127, 0, 0, 1, 0], true),
        ("nmethods 0", vec![5, 0], true),
        ("dlen 0", vec![5, 1, 0, 5, 1, 0, 3, 0, 0, 80], true),
        ("truncated greeting", vec![5, 3, 0], false),
        (
            "truncated request",
            vec![5, 1, 0, 5, 1, 0, 1, 127, 0],
            false,
        ),
        ("oversized", oversized, true),
        ("silent", vec![], false),
    ];
    for (what, bytes, then_close) in cases {
        let mut s = TcpStream::connect(run.addr).await.unwrap();
        let _ = s.write_all(&bytes).await;
        if then_close {
            let _ = s.shutdown().await;
        }
        // The exit closes: at the end of input, on the error, or at the handshake timeout.
        let rest = closed(s).await;
        assert!(rest.len() <= 2, "{what}: {rest:?}");
    }
    // The exit is still serving.
    let (mut s, reply) = request(run.addr, &connect_v4([127, 0, 0, 1], port)).await;
    assert_eq!(reply[1], 0, "still serving");
    echo_roundtrip(&mut s).await;
}
