use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::test_util::{checksum, data, wait_until, within};

const LONG: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_millis(100);

/// Two in-memory pipes around a splice: returns (client end, server end, the splice task).
fn spliced(
    idle: Duration,
    half_close: Duration,
) -> (
    DuplexStream,
    DuplexStream,
    tokio::task::JoinHandle<SpliceReport>,
) {
    let (client, a) = duplex(64 * 1024);
    let (b, server) = duplex(64 * 1024);
    let task = tokio::spawn(splice(a, b, idle, half_close));
    (client, server, task)
}

async fn read_to_end(s: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await?;
    Ok(v)
}

#[tokio::test]
async fn bulk_both_ways_then_clean_close() {
    let (mut client, mut server, task) = spliced(LONG, LONG);
    let up = data(1 << 20, 1);
    let down = data(1 << 20, 2);
    let (got_up, got_down) = within("bulk transfer", async {
        let c = async {
            let (mut r, mut w) = tokio::io::split(&mut client);
            let (wr, rd) = tokio::join!(
                async {
                    w.write_all(&up).await?;
                    w.shutdown().await
                },
                read_to_end(&mut r)
            );
            wr.and(rd)
        };
        let s = async {
            let (mut r, mut w) = tokio::io::split(&mut server);
            let (wr, rd) = tokio::join!(
                async {
                    w.write_all(&down).await?;
                    w.shutdown().await
                },
                read_to_end(&mut r)
            );
            wr.and(rd)
        };
        let (down_got, up_got) = tokio::join!(c, s);
        (up_got.unwrap(), down_got.unwrap())
    })
    .await;
    assert_eq!(checksum(&got_up), checksum(&up));
    assert_eq!(checksum(&got_down), checksum(&down));
    let report = within("splice end", task).await.unwrap();
    assert_eq!(
        report,
        SpliceReport {
            a_to_b: 1 << 20,
            b_to_a: 1 << 20,
            end: SpliceEnd::Closed
        }
    );
}

#[tokio::test]
async fn half_close_still_delivers_the_full_reply() {
    let (mut client, mut server, task) = spliced(LONG, LONG);
    let reply = data(256 * 1024, 3);
    client.write_all(b"GET /").await.unwrap();
    client.shutdown().await.unwrap();
    let serve = async {
        // The server sees the request and then the client's FIN, passed on by the splice.
        assert_eq!(read_to_end(&mut server).await.unwrap(), b"GET /");
        server.write_all(&reply).await.unwrap();
        server.shutdown().await.unwrap();
    };
    let (got, ()) = within("request and reply", async {
        tokio::join!(read_to_end(&mut client), serve)
    })
    .await;
    assert_eq!(checksum(&got.unwrap()), checksum(&reply));
    let report = within("splice end", task).await.unwrap();
    assert_eq!(report.end, SpliceEnd::Closed);
    assert_eq!((report.a_to_b, report.b_to_a), (5, reply.len() as u64));
}

#[tokio::test]
async fn idle_timeout_ends_a_silent_splice_and_closes_both() {
    let (mut client, mut server, task) = spliced(SHORT, LONG);
    let report = within("idle timeout", task).await.unwrap();
    assert_eq!(report.end, SpliceEnd::IdleTimeout);
    assert!(within("client EOF", read_to_end(&mut client))
        .await
        .unwrap()
        .is_empty());
    assert!(within("server EOF", read_to_end(&mut server))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn half_close_timeout_bounds_the_linger() {
    let (mut client, mut server, task) = spliced(LONG, SHORT);
    client.shutdown().await.unwrap();
    // The server gets the FIN but never closes its side.
    assert!(within("FIN", read_to_end(&mut server))
        .await
        .unwrap()
        .is_empty());
    let report = within("linger end", task).await.unwrap();
    assert_eq!(report.end, SpliceEnd::HalfCloseTimeout);
    assert!(within("client EOF", read_to_end(&mut client))
        .await
        .unwrap()
        .is_empty());
}

/// With the clock paused, time only moves when every task waits, so this is deterministic:
/// traffic every half idle period keeps the splice alive for many idle periods.
#[tokio::test(start_paused = true)]
async fn traffic_in_either_direction_resets_the_idle_clock() {
    let idle = Duration::from_secs(10);
    let (mut client, mut server, task) = spliced(idle, LONG);
    let mut byte = [0u8; 1];
    for i in 0..10 {
        tokio::time::sleep(idle / 2).await;
        if i % 2 == 0 {
            client.write_all(b"x").await.unwrap();
            server.read_exact(&mut byte).await.unwrap();
        } else {
            server.write_all(b"y").await.unwrap();
            client.read_exact(&mut byte).await.unwrap();
        }
        assert!(!task.is_finished(), "ended after {} idle periods", i / 2);
    }
    let report = within("idle end", task).await.unwrap();
    assert_eq!(report.end, SpliceEnd::IdleTimeout);
    assert_eq!((report.a_to_b, report.b_to_a), (5, 5));
}

#[tokio::test(start_paused = true)]
async fn traffic_after_half_close_resets_the_linger() {
    let linger = Duration::from_secs(10);
    let (mut client, mut server, task) = spliced(LONG, linger);
    client.shutdown().await.unwrap();
    let mut byte = [0u8; 1];
    for _ in 0..6 {
        tokio::time::sleep(linger / 2).await;
        server.write_all(b"y").await.unwrap();
        client.read_exact(&mut byte).await.unwrap();
        assert!(!task.is_finished());
    }
    let report = within("linger end", task).await.unwrap();
    assert_eq!(report.end, SpliceEnd::HalfCloseTimeout);
}

#[tokio::test]
async fn a_reset_on_b_closes_a_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (b_near, accepted) = within("tcp pair", async {
        tokio::join!(TcpStream::connect(addr), listener.accept())
    })
    .await;
    let (b_far, _) = accepted.unwrap();
    let (mut client, a) = duplex(64 * 1024);
    let task = tokio::spawn(splice(a, b_near.unwrap(), LONG, LONG));
    socket2::SockRef::from(&b_far)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(b_far); // RST
    let report = within("splice end", task).await.unwrap();
    assert_eq!(
        report.end,
        SpliceEnd::ErrorB(io::ErrorKind::ConnectionReset)
    );
    assert!(within("client EOF", read_to_end(&mut client))
        .await
        .unwrap()
        .is_empty());
}

/// A stream whose every operation fails, like a socket that was reset.
struct Broken;

impl AsyncRead for Broken {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
    }
}

impl tokio::io::AsyncWrite for Broken {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_error_on_a_closes_b_and_names_the_side() {
    let (b, mut server) = duplex(1024);
    let report = within("splice end", splice(Broken, b, LONG, LONG)).await;
    assert_eq!(
        report.end,
        SpliceEnd::ErrorA(io::ErrorKind::ConnectionReset)
    );
    assert!(within("server EOF", read_to_end(&mut server))
        .await
        .unwrap()
        .is_empty());

    // A write error is attributed to the stream written to.
    let (mut client, a) = duplex(1024);
    client.write_all(b"hello").await.unwrap();
    let report = within("splice end", splice(a, WriteBroken, LONG, LONG)).await;
    assert_eq!(report.end, SpliceEnd::ErrorB(io::ErrorKind::BrokenPipe));
}

/// Reads never complete; writes fail.
struct WriteBroken;

impl AsyncRead for WriteBroken {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl tokio::io::AsyncWrite for WriteBroken {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn counters_move_while_the_splice_runs() {
    let counters = Arc::new(Counters::default());
    let (mut client, a) = duplex(64 * 1024);
    let (b, mut server) = duplex(64 * 1024);
    let c = Arc::clone(&counters);
    let task = tokio::spawn(async move { splice_counted(a, b, LONG, LONG, &c).await });

    client.write_all(&[1; 1000]).await.unwrap();
    let mut buf = [0u8; 1000];
    within("request", server.read_exact(&mut buf))
        .await
        .unwrap();
    wait_until("rx_bytes = 1000", || counters.snapshot().rx_bytes == 1000).await;
    server.write_all(&[2; 500]).await.unwrap();
    wait_until("tx_bytes = 500", || counters.snapshot().tx_bytes == 500).await;
    assert!(!task.is_finished());

    drop(client);
    drop(server);
    let report = within("splice end", task).await.unwrap();
    assert_eq!((report.a_to_b, report.b_to_a), (1000, 500));
}
