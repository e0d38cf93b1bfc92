use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A connected pair on loopback: (the reader, with queue reports on, and the writer).
async fn pair() -> (TcpStream, TcpStream) {
    let (reader, writer) = connected().await;
    assert!(report_queue(&reader), "TCP_INQ refused by this kernel");
    (reader, writer)
}

/// A connected pair on loopback, as the kernel makes it: (the reader, the writer).
async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let writer = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (reader, _) = listener.accept().await.unwrap();
    (reader, writer)
}

/// A read of a message that leaves more to read (or did not look).
fn more(len: usize) -> Read {
    Read {
        len,
        drained: false,
        bulk: false,
    }
}

/// A read of a message that drained the socket: the last one.
fn last(len: usize) -> Read {
    Read {
        len,
        drained: true,
        bulk: false,
    }
}

/// A bulk read: the reads after it go on until `EAGAIN`.
fn bulk(len: usize) -> Read {
    Read {
        len,
        drained: false,
        bulk: true,
    }
}

/// Waits until the peer's kernel has acknowledged everything `writer` sent (`SIOCOUTQ` is
/// 0), so the reader's queue holds it all and a test reads it at once. (The reader's own
/// count, `SIOCINQ`, stops at an urgent mark.)
async fn delivered(writer: &TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut n: libc::c_int = 0;
        // SAFETY: a valid descriptor and a pointer to an int.
        assert_eq!(
            unsafe { libc::ioctl(writer.as_raw_fd(), libc::TIOCOUTQ, &raw mut n) },
            0
        );
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{n} bytes still unacknowledged");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the reader's kernel holds all `writer` sent, and tokio has seen the reader
/// readable, so a test's reads find it all.
async fn settled(reader: &TcpStream, writer: &TcpStream) {
    delivered(writer).await;
    reader.readable().await.unwrap();
}

/// Whether tokio would let a read through now, without waiting.
async fn ready_now(tcp: &TcpStream) -> bool {
    poll_fn(|cx| Poll::Ready(tcp.poll_read_ready(cx).is_ready())).await
}

#[tokio::test]
async fn a_short_message_is_the_last_read_and_the_next_one_still_wakes() {
    let (reader, mut writer) = pair().await;
    writer.write_all(b"request").await.unwrap();
    settled(&reader, &writer).await;

    let mut buf = [0u8; 64];
    let read = try_read(&reader, &mut buf, Until::Drained).unwrap();
    assert_eq!(read, last(7));
    assert_eq!(&buf[..7], b"request");
    assert!(
        !ready_now(&reader).await,
        "readiness kept after a draining read"
    );

    // The next message wakes the reader: clearing the readiness lost no event.
    writer.write_all(b"next").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), reader.readable())
        .await
        .expect("no wake-up for the next message")
        .unwrap();
    let read = try_read(&reader, &mut buf, Until::Drained).unwrap();
    assert_eq!(read, last(4));
    assert_eq!(&buf[..4], b"next");
}

#[tokio::test]
async fn a_read_that_fills_the_buffer_is_not_the_last() {
    let (reader, mut writer) = pair().await;
    writer.write_all(&[7u8; 100]).await.unwrap();
    settled(&reader, &writer).await;

    let mut buf = [0u8; 64];
    assert_eq!(
        try_read(&reader, &mut buf, Until::Drained).unwrap(),
        bulk(64)
    );
    assert!(ready_now(&reader).await);
    assert_eq!(
        try_read(&reader, &mut buf, Until::Drained).unwrap(),
        last(36)
    );
}

#[tokio::test]
async fn urgent_data_never_looks_drained_while_bytes_wait_behind_it() {
    let (reader, mut writer) = pair().await;
    writer.write_all(b"abc").await.unwrap();
    // SAFETY: a valid descriptor and a one-byte buffer.
    let sent = unsafe { libc::send(writer.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1);
    writer.write_all(b"def").await.unwrap();
    settled(&reader, &writer).await;

    // Linux stops the first read at the urgent mark; the reads go on, with no new event,
    // until the one that drains the socket (the urgent byte itself is dropped, as by every
    // reader without SO_OOBINLINE).
    let mut buf = [0u8; 64];
    let first = try_read(&reader, &mut buf, Until::Drained).unwrap();
    assert_eq!(first, more(3), "short at the mark, more behind");
    let mut got = buf[..3].to_vec();
    loop {
        let read = try_read(&reader, &mut buf, Until::Drained).unwrap();
        got.extend_from_slice(&buf[..read.len]);
        if read.drained {
            break;
        }
        assert!(
            got.len() < 6,
            "read past the data without draining: {got:?}"
        );
    }
    assert_eq!(got, b"abcdef");
}

#[tokio::test]
async fn after_the_last_bytes_the_eof_is_still_read() {
    let (reader, mut writer) = pair().await;
    writer.write_all(b"bye").await.unwrap();
    writer.shutdown().await.unwrap();
    settled(&reader, &writer).await;
    drop(writer);

    let mut buf = [0u8; 64];
    // The FIN is queued: the kernel reports it as one byte more, so the read goes on.
    let first = try_read(&reader, &mut buf, Until::Drained).unwrap();
    assert_eq!(first, more(3));
    assert_eq!(try_read(&reader, &mut buf, Until::Drained).unwrap().len, 0);
}

#[tokio::test]
async fn without_reports_a_short_read_is_not_taken_for_drained() {
    let (reader, mut writer) = connected().await;
    writer.write_all(b"hi").await.unwrap();
    settled(&reader, &writer).await;

    let mut buf = [0u8; 64];
    assert_eq!(
        try_read(&reader, &mut buf, Until::Drained).unwrap(),
        more(2)
    );
    let again = try_read(&reader, &mut buf, Until::Drained).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
}

#[tokio::test]
async fn a_bulk_reader_reads_on_until_eagain() {
    let (reader, mut writer) = pair().await;
    writer.write_all(b"bulk").await.unwrap();
    settled(&reader, &writer).await;

    let mut buf = [0u8; 64];
    let read = try_read(&reader, &mut buf, Until::Eagain).unwrap();
    assert_eq!(read, more(4));
    assert!(ready_now(&reader).await, "readiness cleared before EAGAIN");
    let again = try_read(&reader, &mut buf, Until::Eagain).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
}

#[tokio::test]
async fn a_large_read_does_not_end_the_reads_though_it_drained_the_socket() {
    let (reader, mut writer) = pair().await;
    writer.write_all(&vec![1u8; BULK_READ]).await.unwrap();
    settled(&reader, &writer).await;

    let mut buf = vec![0u8; 4 * BULK_READ];
    let read = try_read(&reader, &mut buf, Until::Drained).unwrap();
    assert_eq!(read, bulk(BULK_READ));
    assert!(
        ready_now(&reader).await,
        "readiness cleared after a bulk read"
    );
}
