//! Pipe splices between real loopback sockets: the public client (or the local service)
//! on one end, the test playing both outer ends.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::test_util::{checksum, data, within};

/// Two ends of a loopback TCP connection: (one, the other).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dialed = TcpStream::connect(listener.local_addr().unwrap());
    let (dialed, accepted) = tokio::join!(dialed, listener.accept());
    (dialed.unwrap(), accepted.unwrap().0)
}

/// The client, the splice between `a` and `b`, and the server: client ↔ a ⇄ b ↔ server.
async fn spliced(pool: &Arc<PipePool>) -> (TcpStream, PipeSplice, TcpStream) {
    let (client, a) = tcp_pair().await;
    let (b, server) = tcp_pair().await;
    (client, PipeSplice::new(a, b, Arc::clone(pool)), server)
}

async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    got
}

/// Both ways at once, more than the sockets and a pipe hold, each direction half-closed in
/// turn; with pipes for both directions, for one at a time, and with none free (the copy it
/// falls back to).
#[tokio::test]
async fn bytes_cross_both_ways_intact_and_each_half_close_passes_on() {
    const UP: usize = 5 * 1024 * 1024 + 7;
    const DOWN: usize = 3 * 1024 * 1024 + 1;
    for max_pipes in [4, 1, 0] {
        let pool = PipePool::new(max_pipes);
        let (mut client, mut splice, mut server) = spliced(&pool).await;
        let ends = async {
            let (mut client_read, mut client_write) = client.split();
            let (mut server_read, mut server_write) = server.split();
            let upload = async {
                client_write.write_all(&data(UP, 1)).await.unwrap();
                client_write.shutdown().await.unwrap();
            };
            let download = async {
                server_write.write_all(&data(DOWN, 2)).await.unwrap();
                server_write.shutdown().await.unwrap();
            };
            let mut up = Vec::new();
            let mut down = Vec::new();
            let received_up = server_read.read_to_end(&mut up);
            let received_down = client_read.read_to_end(&mut down);
            let ((), (), r1, r2) = tokio::join!(upload, download, received_up, received_down);
            r1.unwrap();
            r2.unwrap();
            (up, down)
        };
        let (end, (up, down)) =
            within("the transfer", async { tokio::join!(&mut splice, ends) }).await;
        assert_eq!(end, SpliceEnd::Closed, "{max_pipes} pipes");
        assert_eq!((up.len(), checksum(&up)), (UP, checksum(&data(UP, 1))));
        assert_eq!(
            (down.len(), checksum(&down)),
            (DOWN, checksum(&data(DOWN, 2)))
        );
        let p = splice.progress();
        assert_eq!((p.a_to_b, p.b_to_a), (UP as u64, DOWN as u64));
        assert!(p.half_closed);
        drop(splice);
        let (open, free) = pool.counts();
        assert_eq!(open, free as u64, "every pipe is back in the pool");
        assert!(open <= max_pipes as u64);
    }
}

#[tokio::test]
async fn the_server_may_answer_after_the_client_half_closed() {
    let pool = PipePool::new(4);
    let (mut client, mut splice, mut server) = spliced(&pool).await;
    let ends = async {
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_all(&mut server).await, b"request");
        server.write_all(b"reply after EOF").await.unwrap();
        server.shutdown().await.unwrap();
        read_all(&mut client).await
    };
    let (end, reply) = within("the exchange", async { tokio::join!(&mut splice, ends) }).await;
    assert_eq!(end, SpliceEnd::Closed);
    assert_eq!(reply, b"reply after EOF");
}

/// A message copies (no pipe), a bulk transfer splices through a borrowed pipe, and an idle
/// splice holds no pipe afterwards: it went back to the pool, empty.
#[tokio::test]
async fn small_messages_copy_bulk_splices_and_an_idle_splice_holds_no_pipe() {
    const BULK: usize = 2 * 1024 * 1024 + 3;
    let pool = PipePool::new(4);
    let (mut client, mut splice, mut server) = spliced(&pool).await;
    let idle = async |splice: &mut PipeSplice, pool: &PipePool| {
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *splice).poll(cx))).await;
        assert!(
            polled.is_pending(),
            "an idle splice keeps running: {polled:?}"
        );
        pool.counts()
    };

    let activity = splice.activity();
    let exchange = async {
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    };
    within("one message and its activity", async {
        tokio::select! {
            end = &mut splice => panic!("the splice ended: {end:?}"),
            ((), ()) = async { tokio::join!(exchange, activity) } => {}
        }
    })
    .await;
    assert_eq!(
        idle(&mut splice, &pool).await,
        (0, 0),
        "a message needs no pipe"
    );

    let sent_bytes = data(BULK, 4);
    let bulk = async {
        let send = client.write_all(&sent_bytes);
        let mut got = vec![0u8; BULK];
        let receive = server.read_exact(&mut got);
        let (sent, received) = tokio::join!(send, receive);
        sent.unwrap();
        received.unwrap();
        assert_eq!(checksum(&got), checksum(&sent_bytes));
    };
    within("a bulk transfer", async {
        tokio::select! {
            end = &mut splice => panic!("the splice ended: {end:?}"),
            () = bulk => {}
        }
    })
    .await;
    let (open, free) = idle(&mut splice, &pool).await;
    assert!(open >= 1, "a bulk transfer borrows a pipe");
    assert_eq!(open, free as u64, "and gives it back");

    splice.stop();
    assert_eq!(within("stop", &mut splice).await, SpliceEnd::Closed);
}

#[tokio::test]
async fn a_reset_on_one_side_ends_the_splice_with_that_sides_error() {
    let pool = PipePool::new(4);
    let (client, mut splice, server) = spliced(&pool).await;
    // The server vanishes with a reset (SO_LINGER 0), the client keeps its end open.
    SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    let end = within("the reset", &mut splice).await;
    assert!(matches!(end, SpliceEnd::ErrorB(_)), "{end:?}");
    drop(client);
}

/// What `supervise` makes of it: an idle connection ends at the idle timeout, a half-closed
/// one at the shorter linger, and both ends see the close. Tokio's paused clock skips the
/// waits.
#[tokio::test(start_paused = true)]
async fn supervised_it_ends_at_the_idle_timeout_and_after_a_half_close_at_the_linger() {
    use crate::counters::Counters;
    use crate::offload::supervise;

    // Below the tests' own deadline, which runs on the same paused clock.
    const IDLE: Duration = Duration::from_secs(15);
    const LINGER: Duration = Duration::from_secs(3);
    let pool = PipePool::new(4);

    let (mut client, splice, mut server) = spliced(&pool).await;
    client.write_all(b"hello").await.unwrap();
    let counters = Counters::default();
    let started = Instant::now();
    let report = within(
        "the idle timeout",
        supervise(splice, IDLE, LINGER, &counters),
    )
    .await;
    assert_eq!(report.end, SpliceEnd::IdleTimeout);
    assert!(started.elapsed() >= IDLE);
    assert_eq!((report.a_to_b, counters.snapshot().rx_bytes), (5, 5));
    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(
        read_all(&mut server).await,
        b"",
        "the server sees the close"
    );
    assert_eq!(read_all(&mut client).await, b"", "and so does the client");

    let (mut client, splice, _server) = spliced(&pool).await;
    client.shutdown().await.unwrap();
    let started = Instant::now();
    let report = within(
        "the linger",
        supervise(splice, IDLE, LINGER, &Counters::default()),
    )
    .await;
    assert_eq!(report.end, SpliceEnd::HalfCloseTimeout);
    let waited = started.elapsed();
    assert!(waited >= LINGER && waited < IDLE, "{waited:?}");
}

/// TCP urgent data does not stall a direction. A splice stops at the urgent mark for good
/// (`tcp_read_sock` goes no further until the urgent byte is taken), so a splice that comes
/// back empty is followed by a copy, which passes the mark. The urgent byte itself is
/// dropped, as by every reader without `SO_OOBINLINE` (the kernel's services, rathole, the
/// userspace stack). Before the urgent byte: a few bytes (the direction copies) or a bulk
/// transfer (it splices); with pipes and without.
#[tokio::test]
async fn urgent_data_does_not_stall_a_direction() {
    for (before, max_pipes) in [(3, 4), (1024 * 1024 + 7, 4), (1024 * 1024 + 7, 0)] {
        let pool = PipePool::new(max_pipes);
        let (mut client, mut splice, mut server) = spliced(&pool).await;
        let ends = async {
            let send = async {
                client.write_all(&data(before, 3)).await.unwrap();
                SockRef::from(&client).send_out_of_band(b"!").unwrap();
                client.write_all(b"after the urgent byte").await.unwrap();
                client.shutdown().await.unwrap();
            };
            let receive = async {
                let got = read_all(&mut server).await;
                server.shutdown().await.unwrap();
                got
            };
            tokio::join!(send, receive).1
        };
        let (end, got) = within("the transfer past the urgent byte", async {
            tokio::join!(&mut splice, ends)
        })
        .await;
        assert_eq!(end, SpliceEnd::Closed);
        let mut want = data(before, 3);
        want.extend_from_slice(b"after the urgent byte");
        assert_eq!(
            (got.len(), checksum(&got)),
            (want.len(), checksum(&want)),
            "{before} bytes before the urgent byte, {max_pipes} pipes"
        );
    }
}

/// The same with everything queued before the splice's first read, and no FIN after it to
/// bring another event: the first read stops short at the urgent mark, and the direction must
/// read on at once rather than take the short read for the end of what was there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_queued_before_the_first_read_is_not_stranded() {
    for max_pipes in [4, 0] {
        let pool = PipePool::new(max_pipes);
        let (mut client, mut splice, mut server) = spliced(&pool).await;
        client.write_all(b"before").await.unwrap();
        SockRef::from(&client).send_out_of_band(b"!").unwrap();
        client.write_all(b"after").await.unwrap();
        within("the client's bytes acknowledged", async {
            while unacknowledged(&client) > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let mut got = [0u8; 11];
        let read = within("the bytes past the urgent mark", async {
            tokio::select! {
                end = &mut splice => panic!("the splice ended first: {end:?}"),
                read = server.read_exact(&mut got) => read,
            }
        })
        .await;
        read.unwrap();
        assert_eq!(&got, b"beforeafter", "{max_pipes} pipes");
    }
}

/// Bytes `stream` sent that its peer has not acknowledged yet (`SIOCOUTQ`).
fn unacknowledged(stream: &TcpStream) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: a valid descriptor and a pointer to an int.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &raw mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", io::Error::last_os_error());
    n
}
