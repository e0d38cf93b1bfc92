//! An overlay connection spliced with a kernel TCP socket by the stack itself
//! (`OverlayStream::splice_kernel`): the shape of every forward and expose.
//!
//! Each test: a client on stack A connects to stack B; B's accepted stream is spliced with
//! one end of a loopback TCP connection, whose other end (`outside`) plays the public client
//! or the local service.

mod common;

use std::io::ErrorKind;

use common::{at, bounded, checksum, pattern, Pair, B};
use pinhole_netstack::{KernelSplice, KernelSpliceEnd, OverlayStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected loopback pair: (the end to splice, the end the test drives).
async fn kernel_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let outside = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (inside, _) = listener.accept().await.unwrap();
    (inside, outside)
}

/// A's stream to B, and B's accepted end of it.
async fn overlay_pair(pair: &Pair, port: u16) -> (OverlayStream, OverlayStream) {
    let mut listener = pair.b.listen(at(B, port)).await.unwrap();
    let client = pair.a.connect(at(B, port)).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    (client, accepted)
}

/// Everything `stream` sends until its EOF.
async fn read_all(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    got
}

/// Checks that every socket is gone from both stacks, then stops them.
async fn end(mut pair: Pair) {
    pair.wait_counts(|&c| c == (0, 0)).await;
    pair.stop().await;
}

/// B's end spliced with a kernel socket: (A's stream, the splice, the outside end).
async fn spliced(pair: &Pair, port: u16) -> (OverlayStream, KernelSplice, TcpStream) {
    let (client, accepted) = overlay_pair(pair, port).await;
    let (inside, outside) = kernel_pair().await;
    (client, accepted.splice_kernel(inside), outside)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_cross_both_ways_and_each_half_close_passes_on() {
    const SIZE: usize = 3 * 1024 * 1024;
    let pair = Pair::new();
    bounded(async {
        let (mut client, splice, mut outside) = spliced(&pair, 7000).await;
        // The outside sends its request and half-closes; the overlay side sees it, then EOF.
        outside.write_all(b"request").await.unwrap();
        outside.shutdown().await.unwrap();
        let got = read_all(&mut client).await;
        assert_eq!(got, b"request");
        // The reply still flows the other way, then its EOF.
        let reply = pattern(7, SIZE);
        let send = tokio::spawn(async move {
            client.write_all(&reply).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let got = read_all(&mut outside).await;
        assert_eq!(got.len(), SIZE);
        assert_eq!(checksum(&got), checksum(&pattern(7, SIZE)));
        let _client = send.await.unwrap();
        let progress = splice.progress();
        assert_eq!(splice.await, KernelSpliceEnd::Closed);
        assert_eq!((progress.to_overlay, progress.to_kernel), (7, SIZE as u64));
        assert!(progress.kernel_eof && progress.overlay_eof);
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_reader_slower_than_the_overlay_loses_nothing() {
    // More than the kernel's socket buffers and the stack's rings hold together, so the
    // stack must stop on a full kernel socket and resume when it drains, many times over.
    const SIZE: usize = 16 * 1024 * 1024;
    let pair = Pair::new();
    bounded(async {
        let (mut client, splice, mut outside) = spliced(&pair, 7007).await;
        let send = tokio::spawn(async move {
            client.write_all(&pattern(3, SIZE)).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::with_capacity(SIZE);
        let mut chunk = vec![0u8; 7 * 1024];
        loop {
            let n = outside.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
        assert_eq!(got.len(), SIZE);
        assert_eq!(checksum(&got), checksum(&pattern(3, SIZE)));
        assert_eq!(splice.progress().to_kernel, SIZE as u64);
        let _client = send.await.unwrap();
        outside.shutdown().await.unwrap();
        assert_eq!(splice.await, KernelSpliceEnd::Closed);
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlay_side_half_closes_first_and_the_kernel_side_still_answers() {
    let pair = Pair::new();
    bounded(async {
        let (mut client, splice, mut outside) = spliced(&pair, 7006).await;
        client.write_all(b"question").await.unwrap();
        client.shutdown().await.unwrap();
        // The outside reads to EOF while its own side is still open: a half-close, not a close.
        let got = read_all(&mut outside).await;
        assert_eq!(got, b"question");
        assert!(splice.progress().overlay_eof);
        outside.write_all(b"answer").await.unwrap();
        outside.shutdown().await.unwrap();
        let got = read_all(&mut client).await;
        assert_eq!(got, b"answer");
        assert_eq!(splice.await, KernelSpliceEnd::Closed);
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_read_or_written_before_the_handover_keep_their_order() {
    let pair = Pair::new();
    bounded(async {
        let (mut client, mut accepted) = overlay_pair(&pair, 7001).await;
        // Delivered to B's stream before the handover: one byte read, the rest unread.
        client.write_all(b"early").await.unwrap();
        let mut first = [0u8; 1];
        accepted.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"e");
        client.write_all(b" and more").await.unwrap();
        // Written by B's stream before the handover (as a PROXY header is).
        accepted.write_all(b"header;").await.unwrap();
        let (inside, mut outside) = kernel_pair().await;
        let splice = accepted.splice_kernel(inside);
        outside.write_all(b"body").await.unwrap();
        outside.shutdown().await.unwrap();
        client.shutdown().await.unwrap();
        let at_outside = read_all(&mut outside).await;
        assert_eq!(at_outside, b"arly and more");
        let at_client = read_all(&mut client).await;
        assert_eq!(at_client, b"header;body");
        assert_eq!(splice.await, KernelSpliceEnd::Closed);
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_the_kernel_socket_ends_the_splice_and_closes_the_overlay_side() {
    let pair = Pair::new();
    bounded(async {
        let (mut client, splice, outside) = spliced(&pair, 7002).await;
        client.write_all(b"unread by the outside").await.unwrap();
        // Wait until the bytes reached the outside's receive queue, then reset from there.
        let progress = async {
            while splice.progress().to_kernel == 0 {
                tokio::task::yield_now().await;
            }
        };
        progress.await;
        outside.set_zero_linger().unwrap();
        drop(outside);
        assert!(matches!(splice.await, KernelSpliceEnd::Kernel(_)));
        // As a dropped stream: the overlay peer gets our FIN.
        let rest = read_all(&mut client).await;
        assert!(rest.is_empty());
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_of_the_overlay_connection_ends_the_splice() {
    let pair = Pair::new();
    bounded(async {
        let (client, splice, mut outside) = spliced(&pair, 7003).await;
        client.abort();
        assert_eq!(
            splice.await,
            KernelSpliceEnd::Overlay(ErrorKind::ConnectionReset)
        );
        // The kernel socket is closed: the outside reads EOF (or a reset).
        let mut rest = Vec::new();
        let read = outside.read_to_end(&mut rest).await;
        assert!(read.is_err() || rest.is_empty());
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_both_sides_gracefully_and_activity_reports_moving_bytes() {
    let pair = Pair::new();
    bounded(async {
        let (mut client, splice, mut outside) = spliced(&pair, 7004).await;
        let activity = splice.activity();
        outside.write_all(b"ping").await.unwrap();
        activity.await;
        let mut ping = [0u8; 4];
        client.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"ping");
        assert!(splice.progress().last_activity > std::time::Instant::now() - common::DEADLINE);
        splice.stop();
        assert_eq!(splice.await, KernelSpliceEnd::Stopped);
        // Both ends see an orderly EOF, not a reset.
        assert!(read_all(&mut client).await.is_empty());
        assert!(read_all(&mut outside).await.is_empty());
    })
    .await;
    end(pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splice_of_a_connection_already_reset_resolves_at_once() {
    let mut pair = Pair::new();
    bounded(async {
        let (client, accepted) = overlay_pair(&pair, 7005).await;
        client.abort();
        // Wait until the stack has dropped the connection B's stream belongs to.
        pair.wait_counts(|&c| c.1 == 0).await;
        let (inside, mut outside) = kernel_pair().await;
        let end = accepted.splice_kernel(inside).await;
        assert!(matches!(end, KernelSpliceEnd::Overlay(_)));
        let mut rest = Vec::new();
        let read = outside.read_to_end(&mut rest).await;
        assert!(read.is_err() || rest.is_empty());
    })
    .await;
    end(pair).await;
}

/// TCP urgent data does not stall the kernel side. A read stops short at the urgent mark
/// with data behind it, so a short read cannot stand for "drained": the splice reads on
/// until the kernel reports nothing left (or `EAGAIN`), which passes the mark (the urgent byte is dropped, as by every reader
/// without `SO_OOBINLINE`). All of it is queued before the splice starts, so that its first
/// read meets the mark with data behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_data_in_the_kernel_socket_does_not_stall_it() {
    let pair = Pair::new();
    bounded(async {
        let (mut client, accepted) = overlay_pair(&pair, 7006).await;
        let (inside, mut outside) = kernel_pair().await;
        outside.write_all(b"before").await.unwrap();
        socket2::SockRef::from(&outside)
            .send_out_of_band(b"!")
            .unwrap();
        outside.write_all(b"after").await.unwrap();
        // The runtime has heard the socket become readable: no later event will come.
        inside.readable().await.unwrap();
        let splice = accepted.splice_kernel(inside);
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"beforeafter");
        outside.shutdown().await.unwrap();
        assert!(read_all(&mut client).await.is_empty());
        client.shutdown().await.unwrap();
        assert!(read_all(&mut outside).await.is_empty());
        assert_eq!(splice.await, KernelSpliceEnd::Closed);
    })
    .await;
    end(pair).await;
}
