//! A tiny network for tests: two `Stack`s wired back to back in one process, driven by one
//! task exactly like the production driver loop (wait / poll / drain / sleep until poll_at).
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use pinhole_netstack::{Overlay, Stack, StackConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Address of stack A.
pub const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));
/// Address of stack B.
pub const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));
/// Every test finishes well within this, or fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Socket counts of (A, B) after the driver's last round.
pub type Counts = (usize, usize);

/// Two stacks and the driver task between them.
pub struct Pair {
    pub a: Overlay,
    pub b: Overlay,
    counts: watch::Receiver<Counts>,
    stop: Option<oneshot::Sender<()>>,
    driver: Option<JoinHandle<()>>,
}

/// How the wire between the stacks misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wire {
    /// Drop every n-th packet (both directions), to exercise retransmission.
    pub drop_every: Option<u64>,
}

impl Pair {
    /// Default configs: A = 10.77.0.1/24, B = 10.77.0.2/24, MTU 1420.
    pub fn new() -> Self {
        Self::with(config(A), config(B), Wire::default())
    }

    /// Custom configs and wire.
    pub fn with(a: StackConfig, b: StackConfig, wire: Wire) -> Self {
        let (stack_a, a) = pinhole_netstack::new(a);
        let (stack_b, b) = pinhole_netstack::new(b);
        let (counts_tx, counts) = watch::channel((0, 0));
        let (stop, stop_rx) = oneshot::channel();
        let driver = tokio::spawn(drive(stack_a, stack_b, wire, counts_tx, stop_rx));
        Self {
            a,
            b,
            counts,
            stop: Some(stop),
            driver: Some(driver),
        }
    }

    /// Waits (bounded) until the socket counts satisfy `pred`.
    pub async fn wait_counts(&mut self, pred: impl FnMut(&Counts) -> bool) -> Counts {
        let counts = tokio::time::timeout(DEADLINE, self.counts.wait_for(pred))
            .await
            .expect("socket counts did not reach the expected value in time")
            .expect("driver stopped");
        *counts
    }

    /// Stops the driver and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(driver) = self.driver.take() {
            driver.await.expect("driver panicked");
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The default test configuration for one address.
pub fn config(addr: IpAddr) -> StackConfig {
    StackConfig::new(vec![(addr, 24)], 1420)
}

async fn drive(
    mut a: Stack,
    mut b: Stack,
    wire: Wire,
    counts: watch::Sender<Counts>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sent = 0u64;
    loop {
        // Poll both until no packet moves: what one emits, the other processes at once.
        loop {
            let now = Instant::now();
            a.poll(now);
            b.poll(now);
            let mut moved = false;
            // Packets move as the node loop moves them: the receiver takes the buffer and
            // leaves a spare, which goes back to the sender's pool.
            while let Some(mut packet) = a.poll_outbound() {
                moved = true;
                sent += 1;
                if wire.drop_every.is_none_or(|n| !sent.is_multiple_of(n)) {
                    b.handle_inbound_owned(&mut packet);
                }
                a.recycle(packet);
            }
            while let Some(mut packet) = b.poll_outbound() {
                moved = true;
                sent += 1;
                if wire.drop_every.is_none_or(|n| !sent.is_multiple_of(n)) {
                    a.handle_inbound_owned(&mut packet);
                }
                b.recycle(packet);
            }
            if !moved {
                break;
            }
        }
        counts.send_replace((a.socket_count(), b.socket_count()));
        let now = Instant::now();
        let next = match (a.poll_at(now), b.poll_at(now)) {
            (Some(x), Some(y)) => x.min(y),
            (x, y) => x.or(y).unwrap_or(now + Duration::from_secs(3600)),
        };
        tokio::select! {
            () = a.wait() => {}
            () = b.wait() => {}
            () = tokio::time::sleep_until(next.into()) => {}
            _ = &mut stop => return,
        }
    }
}

/// Runs `future` with the test deadline.
pub async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .expect("test exceeded its deadline")
}

/// Deterministic pseudo-random bytes (xorshift), so corruption cannot hide in a pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// FNV-1a over the bytes: a cheap checksum to compare transfers.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Echo server: accepts connections on `listener` and echoes each until EOF, then closes.
pub fn spawn_echo(mut listener: pinhole_netstack::OverlayListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    })
}

/// `addr:port` helper.
pub fn at(addr: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(addr, port)
}
