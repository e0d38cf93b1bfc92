//! Loopback TCP stands in for the overlay on either side; every port is bound as port 0.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::endpoint::TcpDialer;
use crate::test_util::{checksum, data, wait_until, within};

const LONG: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_millis(100);

fn limits() -> Limits {
    Limits {
        connect_timeout: LONG,
        idle_timeout: LONG,
        half_close_timeout: LONG,
        max_connections: 1024,
    }
}

struct Running {
    addr: SocketAddr,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    async fn connect(&self) -> TcpStream {
        within("connect", TcpStream::connect(self.addr))
            .await
            .unwrap()
    }

    async fn wait_idle(&self) {
        wait_until("active = 0", || self.counters.snapshot().active == 0).await;
    }
}

async fn start<A: Acceptor, D: Dialer>(
    acceptor: A,
    addr: SocketAddr,
    dialer: D,
    limits: Limits,
) -> Running {
    let counters = Arc::new(Counters::default());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let task = tokio::spawn({
        let (counters, shutdown, tracker) = (counters.clone(), shutdown.clone(), tracker.clone());
        async move {
            serve_with_tracker(
                "test", acceptor, dialer, limits, counters, shutdown, &tracker,
            )
            .await
        }
    });
    Running {
        addr,
        counters,
        shutdown,
        tracker,
        task,
    }
}

async fn start_tcp<D: Dialer>(dialer: D, limits: Limits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    start(listener, addr, dialer, limits).await
}

/// Runs `handle` for every connection to a fresh loopback listener; returns a dialer to it.
async fn backend<F, Fut>(handle: F) -> TcpDialer
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    TcpDialer::new("127.0.0.1", port)
}

/// Echoes until EOF, then closes its write side.
async fn echo_backend() -> TcpDialer {
    backend(|mut s| async move {
        let (mut r, mut w) = s.split();
        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
            let _ = w.shutdown().await;
        }
    })
    .await
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    within("echo", async {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    })
    .await;
}

/// Sends `out` (then FIN) while reading to EOF; returns what was read.
async fn exchange(s: TcpStream, out: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = s.into_split();
    let mut got = Vec::new();
    let (wrote, read) = tokio::join!(
        async {
            w.write_all(out).await?;
            w.shutdown().await
        },
        r.read_to_end(&mut got)
    );
    wrote.unwrap();
    read.unwrap();
    got
}

/// Reads until the server closes the connection; asserts that no byte arrived.
async fn expect_closed_empty(mut s: TcpStream) {
    let mut got = Vec::new();
    match within("close", s.read_to_end(&mut got)).await {
        Ok(_) => assert!(got.is_empty()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_each_way_arrive_intact() {
    let run = start_tcp(echo_backend().await, limits()).await;
    let sent = data(10 << 20, 7);
    let got = within("10 MiB echo", exchange(run.connect().await, &sent)).await;
    assert_eq!(got.len(), sent.len());
    assert_eq!(checksum(&got), checksum(&sent));
    run.wait_idle().await;
    let s = run.counters.snapshot();
    assert_eq!((s.rx_bytes, s.tx_bytes, s.total), (10 << 20, 10 << 20, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections() {
    let run = Arc::new(start_tcp(echo_backend().await, limits()).await);
    let clients: Vec<_> = (0..50u64)
        .map(|i| {
            let run = Arc::clone(&run);
            tokio::spawn(async move {
                let sent = data(64 * 1024, i);
                let got = exchange(run.connect().await, &sent).await;
                assert_eq!(checksum(&got), checksum(&sent), "connection {i}");
            })
        })
        .collect();
    for c in clients {
        within("client", c).await.unwrap();
    }
    run.wait_idle().await;
    let s = run.counters.snapshot();
    assert_eq!((s.total, s.refused, s.failed), (50, 0, 0));
}

#[tokio::test]
async fn a_half_closed_client_gets_the_full_reply() {
    let reply = Arc::new(data(1 << 20, 9));
    let dialer = backend({
        let reply = Arc::clone(&reply);
        move |mut s| {
            let reply = Arc::clone(&reply);
            async move {
                let mut request = Vec::new();
                s.read_to_end(&mut request).await.unwrap();
                assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
                s.write_all(&reply).await.unwrap();
            }
        }
    })
    .await;
    let run = start_tcp(dialer, limits()).await;
    let got = within(
        "reply",
        exchange(run.connect().await, b"GET / HTTP/1.0\r\n\r\n"),
    )
    .await;
    assert_eq!(checksum(&got), checksum(&reply));
    run.wait_idle().await;
}

#[tokio::test]
async fn a_backend_reset_closes_the_client_and_frees_the_connection() {
    let dialer = backend(|mut s| async move {
        let mut buf = [0u8; 2];
        let _ = s.read_exact(&mut buf).await;
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    })
    .await;
    let run = start_tcp(dialer, limits()).await;
    let mut client = run.connect().await;
    client.write_all(b"hi").await.unwrap();
    expect_closed_empty(client).await;
    run.wait_idle().await;
}

#[tokio::test]
async fn the_idle_timeout_ends_a_silent_connection() {
    let run = start_tcp(
        echo_backend().await,
        Limits {
            idle_timeout: SHORT,
            ..limits()
        },
    )
    .await;
    let mut client = run.connect().await;
    roundtrip(&mut client, b"ping").await;
    expect_closed_empty(client).await;
    run.wait_idle().await;
}

#[tokio::test]
async fn the_half_close_timeout_ends_a_backend_that_never_closes() {
    let dialer = backend(|mut s| async move {
        let mut request = Vec::new();
        let _ = s.read_to_end(&mut request).await;
        std::future::pending::<()>().await; // holds `s` open forever
    })
    .await;
    let run = start_tcp(
        dialer,
        Limits {
            half_close_timeout: SHORT,
            ..limits()
        },
    )
    .await;
    let client = run.connect().await;
    let got = within("linger end", exchange(client, b"request")).await;
    assert!(got.is_empty());
    run.wait_idle().await;
}

/// A dialer whose dial never completes, like a target behind a black hole.
struct BlackHole;

impl Dialer for BlackHole {
    type Stream = TcpStream;
    fn dial(&self) -> impl Future<Output = io::Result<TcpStream>> + Send {
        std::future::pending()
    }
}

#[tokio::test]
async fn a_connect_timeout_closes_the_client_and_counts_a_failure() {
    let run = start_tcp(
        BlackHole,
        Limits {
            connect_timeout: SHORT,
            ..limits()
        },
    )
    .await;
    expect_closed_empty(run.connect().await).await;
    run.wait_idle().await;
    assert_eq!(run.counters.snapshot().failed, 1);
}

#[tokio::test]
async fn a_refused_dial_closes_the_client_and_counts_a_failure() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = start_tcp(TcpDialer::new("127.0.0.1", port), limits()).await;
    expect_closed_empty(run.connect().await).await;
    run.wait_idle().await;
    let s = run.counters.snapshot();
    assert_eq!((s.failed, s.total), (1, 1));
}

#[tokio::test]
async fn beyond_max_connections_new_ones_are_refused_until_one_ends() {
    let run = start_tcp(
        echo_backend().await,
        Limits {
            max_connections: 1,
            ..limits()
        },
    )
    .await;
    let mut first = run.connect().await;
    roundtrip(&mut first, b"one").await;

    expect_closed_empty(run.connect().await).await;
    wait_until("refused = 1", || run.counters.snapshot().refused == 1).await;

    drop(first);
    run.wait_idle().await;
    let mut third = run.connect().await;
    roundtrip(&mut third, b"three").await;
    let s = run.counters.snapshot();
    assert_eq!((s.total, s.refused, s.active), (2, 1, 1));
}

/// Fails with the given errors first, then accepts for real.
struct Flaky {
    errors: Vec<i32>,
    failed: Arc<AtomicUsize>,
    inner: TcpListener,
}

impl Acceptor for Flaky {
    type Stream = TcpStream;
    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        if let Some(errno) = self.errors.pop() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(errno));
        }
        Acceptor::accept(&mut self.inner).await
    }
}

#[tokio::test]
async fn accept_errors_never_stop_the_listener() {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let errors = vec![
        libc::EMFILE,
        libc::ECONNABORTED,
        libc::ENFILE,
        libc::ENOBUFS,
        libc::EMFILE,
    ];
    let failed = Arc::new(AtomicUsize::new(0));
    let flaky = Flaky {
        errors: errors.clone(),
        failed: Arc::clone(&failed),
        inner,
    };
    let run = start(flaky, addr, echo_backend().await, limits()).await;
    let mut client = run.connect().await;
    roundtrip(&mut client, b"still here").await;
    assert_eq!(failed.load(Ordering::Relaxed), errors.len());
    assert!(!run.task.is_finished());
}

#[test]
fn accept_errors_are_classified() {
    let per_conn = |errno| is_per_connection(&io::Error::from_raw_os_error(errno));
    assert!(per_conn(libc::ECONNABORTED));
    assert!(per_conn(libc::EPROTO));
    assert!(per_conn(libc::ENETUNREACH));
    assert!(!per_conn(libc::EMFILE));
    assert!(!per_conn(libc::ENFILE));
    assert!(!per_conn(libc::ENOBUFS));
    assert!(!per_conn(libc::ENOMEM));
    assert!(!per_conn(libc::EBADF));
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_live_connections_drain() {
    let run = start_tcp(echo_backend().await, limits()).await;
    let mut live = run.connect().await;
    roundtrip(&mut live, b"before").await;

    run.shutdown.cancel();
    within("serve returns", run.task).await.unwrap().unwrap();
    let refused = within("connect after shutdown", TcpStream::connect(run.addr)).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );

    roundtrip(&mut live, b"after").await;
    run.tracker.close();
    assert!(!run.tracker.is_empty());
    drop(live);
    within("drain", run.tracker.wait()).await;
    assert_eq!(run.counters.snapshot().active, 0);
}
