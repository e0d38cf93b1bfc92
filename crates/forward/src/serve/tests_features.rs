//! The PROXY header out and in, access control and the rate limit, through `serve_handler`
//! on loopback.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::admission::Rate;
use crate::endpoint::TcpDialer;
use crate::proxy_header::{parse, ProxyVersion};
use crate::test_util::{wait_until, within};

struct Running {
    addr: SocketAddr,
    counters: Arc<Counters>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start<H: Handler>(handler: H, options: ServeOptions) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let (counters, shutdown) = (Arc::clone(&counters), shutdown.clone());
        async move {
            let tracker = TaskTracker::new();
            serve_handler(
                "test", listener, handler, options, counters, shutdown, &tracker,
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

/// A backend that sends everything each connection delivered (up to EOF) on the channel,
/// then replies "ok".
async fn recorder() -> (TcpDialer, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = tx.send(got);
                let _ = s.write_all(b"ok").await;
            });
        }
    });
    (TcpDialer::new("127.0.0.1", port), rx)
}

/// Sends `out`, half-closes, reads to the end; returns what came back.
async fn exchange(addr: SocketAddr, out: &[u8]) -> (SocketAddr, Vec<u8>) {
    within("exchange", async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let me = s.local_addr().unwrap();
        // A refused connection may be reset while we write: only the reply matters.
        for chunk in out.chunks(7) {
            if s.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = s.shutdown().await;
        let mut back = Vec::new();
        let _ = s.read_to_end(&mut back).await; // a refused connection may end in a reset
        (me, back)
    })
    .await
}

fn options() -> ServeOptions {
    ServeOptions::default()
}

#[tokio::test]
async fn one_proxy_header_then_the_client_bytes_v1_and_v2() {
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let (dialer, mut seen) = recorder().await;
        let handler = DialSplice::new(dialer).with_proxy_protocol(Some(version));
        let run = start(handler, options()).await;
        // The client sends its own header: it must arrive as payload, after the real one.
        let payload = b"PROXY TCP4 6.6.6.6 6.6.6.6 1 1\r\nGET / HTTP/1.0\r\n\r\n";
        let (me, back) = exchange(run.addr, payload).await;
        assert_eq!(back, b"ok");
        let got = within("recorded", seen.recv()).await.unwrap();
        let (header, len) = parse(&got).unwrap();
        assert_eq!(header.version, version);
        assert_eq!(
            header.addresses,
            Some((me, run.addr)),
            "the client's real address"
        );
        assert_eq!(
            &got[len..],
            payload,
            "exactly one header, then the client's bytes"
        );
    }
}

#[tokio::test]
async fn no_header_unless_asked() {
    let (dialer, mut seen) = recorder().await;
    let run = start(DialSplice::new(dialer), options()).await;
    let payload = b"PROXY TCP4 6.6.6.6 6.6.6.6 1 1\r\nhello";
    exchange(run.addr, payload).await;
    assert_eq!(within("recorded", seen.recv()).await.unwrap(), payload);
}

#[tokio::test]
async fn accept_proxy_protocol_strips_the_header_and_uses_its_source() {
    let (dialer, mut seen) = recorder().await;
    let handler = DialSplice::new(dialer).with_proxy_protocol(Some(ProxyVersion::V1));
    // `allow` names the load balancer (here: the loopback test client), not the clients
    // its headers carry.
    let run = start(
        handler,
        ServeOptions {
            accept_proxy_protocol: true,
            admission: Admission {
                allow: vec![(IpAddr::from([127, 0, 0, 0]), 8)],
                ..Admission::default()
            },
            ..options()
        },
    )
    .await;
    // v1 and v2 from the load balancer, sent 7 bytes at a time.
    let v2 = crate::proxy_header::encode(
        ProxyVersion::V2,
        "203.0.113.8:40001".parse().unwrap(),
        "192.0.2.1:443".parse().unwrap(),
    );
    let inputs = [
        (
            b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\nhello".to_vec(),
            "203.0.113.7 127.0.0.1 40000",
        ),
        (
            [v2, b"hello".to_vec()].concat(),
            "203.0.113.8 127.0.0.1 40001",
        ),
    ];
    for (input, want) in inputs {
        let (_, back) = exchange(run.addr, &input).await;
        assert_eq!(back, b"ok");
        let got = within("recorded", seen.recv()).await.unwrap();
        let want = format!("PROXY TCP4 {want} {}\r\nhello", run.addr.port());
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    // Without a header, or with a bad one: refused.
    for input in [
        &b"hello, no header here"[..],
        b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 443\r\nhello",
    ] {
        let (_, back) = exchange(run.addr, input).await;
        assert!(back.is_empty());
    }
    wait_until("two refused", || run.counters.snapshot().refused == 2).await;
    assert_eq!(run.counters.snapshot().total, 2);
    assert!(
        seen.try_recv().is_err(),
        "no refused connection reached the backend"
    );
}

#[tokio::test]
async fn behind_a_balancer_a_header_from_outside_allow_is_not_believed() {
    let (dialer, mut seen) = recorder().await;
    // Only 203.0.113.0/24 may act as the balancer; the loopback client is not it, so its
    // header claiming an allowed address changes nothing.
    let run = start(
        DialSplice::new(dialer),
        ServeOptions {
            accept_proxy_protocol: true,
            admission: Admission {
                allow: vec![(IpAddr::from([203, 0, 113, 0]), 24)],
                ..Admission::default()
            },
            ..options()
        },
    )
    .await;
    let (_, back) = exchange(
        run.addr,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\nhello",
    )
    .await;
    assert!(back.is_empty());
    wait_until("refused", || run.counters.snapshot().refused == 1).await;
    assert!(
        seen.try_recv().is_err(),
        "the forged header reached the backend"
    );
}

#[tokio::test]
async fn a_client_that_never_sends_its_header_is_closed() {
    let (dialer, _seen) = recorder().await;
    let run = start(
        DialSplice::new(dialer),
        ServeOptions {
            accept_proxy_protocol: true,
            proxy_header_timeout: Duration::from_millis(50),
            ..options()
        },
    )
    .await;
    let mut s = within("connect", TcpStream::connect(run.addr))
        .await
        .unwrap();
    s.write_all(b"PROXY TCP4 ").await.unwrap();
    let mut back = Vec::new();
    let _ = within("closed", s.read_to_end(&mut back)).await;
    assert!(back.is_empty());
    wait_until("refused", || run.counters.snapshot().refused == 1).await;
}

#[tokio::test]
async fn allow_and_deny_on_the_client_address() {
    let cases = [
        (vec![], vec![(IpAddr::from([127, 0, 0, 1]), 32)], false),
        (vec![(IpAddr::from([10, 0, 0, 0]), 8)], vec![], false),
        (vec![(IpAddr::from([127, 0, 0, 0]), 8)], vec![], true),
        // Deny wins over allow; a v4-mapped rule is the IPv4 one.
        (
            vec![(IpAddr::from([127, 0, 0, 0]), 8)],
            vec!["::ffff:127.0.0.1".parse().map(|ip| (ip, 128)).unwrap()],
            false,
        ),
    ];
    for (allow, deny, admitted) in cases {
        let (dialer, _seen) = recorder().await;
        let admission = Admission {
            allow,
            deny,
            rate: None,
        };
        let run = start(
            DialSplice::new(dialer),
            ServeOptions {
                admission,
                ..options()
            },
        )
        .await;
        let (_, back) = exchange(run.addr, b"hi").await;
        assert_eq!(back == b"ok", admitted);
        let refused = u64::from(!admitted);
        wait_until("counted", || run.counters.snapshot().refused == refused).await;
    }
}

#[tokio::test]
async fn the_rate_limit_refuses_past_the_burst() {
    let (dialer, _seen) = recorder().await;
    let admission = Admission {
        rate: Some(Rate {
            count: 2,
            per: Duration::from_secs(3600),
        }),
        ..Admission::default()
    };
    let run = start(
        DialSplice::new(dialer),
        ServeOptions {
            admission,
            ..options()
        },
    )
    .await;
    assert_eq!(exchange(run.addr, b"1").await.1, b"ok");
    assert_eq!(exchange(run.addr, b"2").await.1, b"ok");
    assert!(exchange(run.addr, b"3").await.1.is_empty());
    let s = run.counters.snapshot();
    assert_eq!((s.total, s.refused), (2, 1));
}
