//! A rough throughput figure for one connection between two in-process stacks. Prints the
//! result; no threshold (figures belong in benchmarks, not asserts). Meaningful only with
//! `cargo test --release -p pinhole-netstack --test throughput -- --nocapture`.

mod common;

use std::time::Instant;

use common::{at, bounded, Pair, B};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_bulk_transfer() {
    // 64 MiB in release; a debug build is ~10x slower, so it moves less.
    let size: usize = if cfg!(debug_assertions) {
        8 << 20
    } else {
        64 << 20
    };
    let mut pair = Pair::new();
    let (bytes, elapsed) = bounded(async {
        let mut listener = pair.b.listen(at(B, 5201)).await.unwrap();
        let sink = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 256 * 1024];
            let mut total = 0usize;
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break total;
                }
                total += n;
            }
        });
        let mut stream = pair.a.connect(at(B, 5201)).await.unwrap();
        let chunk = vec![0x5a; 256 * 1024];
        let started = Instant::now();
        let mut sent = 0;
        while sent < size {
            stream.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        stream.shutdown().await.unwrap();
        let received = sink.await.unwrap();
        (received, started.elapsed())
    })
    .await;
    assert_eq!(bytes, size);
    let mbit = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    println!(
        "netstack throughput: {} MiB in {:.2?} = {mbit:.0} Mbit/s ({})",
        bytes >> 20,
        elapsed,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    pair.wait_counts(|&c| c == (0, 0)).await;
}
