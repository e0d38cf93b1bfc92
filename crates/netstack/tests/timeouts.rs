//! Timeouts, tested on a virtual clock: the stack is sans-IO, so `now` is whatever we pass.
//! A dead peer or an unanswered SYN must not hold a socket (or a caller) forever.

mod common;

use std::future::Future;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::{at, config, A, B};
use pinhole_netstack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two stacks, a virtual clock and a wire that can be cut.
struct Net {
    a: Stack,
    b: Stack,
    now: Instant,
    wire_up: bool,
    /// Packets carried between the stacks so far.
    carried: usize,
}

impl Net {
    fn new() -> (Self, pinhole_netstack::Overlay, pinhole_netstack::Overlay) {
        let (a, oa) = pinhole_netstack::new(config(A));
        let (b, ob) = pinhole_netstack::new(config(B));
        let net = Self {
            a,
            b,
            now: Instant::now(),
            wire_up: true,
            carried: 0,
        };
        (net, oa, ob)
    }

    /// Polls both stacks until quiet, carrying packets if the wire is up.
    fn pump(&mut self) {
        loop {
            self.a.poll(self.now);
            self.b.poll(self.now);
            let mut moved = false;
            while let Some(packet) = self.a.poll_outbound() {
                moved = true;
                if self.wire_up {
                    self.carried += 1;
                    self.b.handle_inbound(&packet);
                }
            }
            while let Some(packet) = self.b.poll_outbound() {
                moved = true;
                if self.wire_up {
                    self.carried += 1;
                    self.a.handle_inbound(&packet);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Drives `future` to completion, advancing the clock by `step` per round; also
    /// returns the virtual time it took. Gives up after `limit` of virtual time.
    async fn run<T>(
        &mut self,
        step: Duration,
        limit: Duration,
        future: impl Future<Output = T>,
    ) -> (T, Duration) {
        let start = self.now;
        tokio::pin!(future);
        loop {
            tokio::select! {
                biased;
                out = &mut future => return (out, self.now - start),
                () = tokio::task::yield_now() => {}
            }
            assert!(
                self.now - start < limit,
                "nothing happened within {limit:?} (virtual)"
            );
            self.pump();
            self.now += step;
        }
    }
}

const TICK: Duration = Duration::from_millis(10);
const SECOND: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(600);

#[tokio::test]
async fn an_unanswered_connect_times_out_after_30_s() {
    let (mut net, a, _b) = Net::new();
    net.wire_up = false;
    let (result, took) = net.run(SECOND, LIMIT, a.connect(at(B, 80))).await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::TimedOut);
    assert!(
        (Duration::from_secs(29)..Duration::from_secs(33)).contains(&took),
        "{took:?}"
    );
    assert_eq!(net.a.socket_count(), 0);
}

#[tokio::test]
async fn a_new_connection_is_three_packets_and_keep_alives_wait_for_idleness() {
    let (mut net, a, b) = Net::new();
    let mut listener = net.run(TICK, LIMIT, b.listen(at(B, 80))).await.0.unwrap();
    let client = net.run(TICK, LIMIT, a.connect(at(B, 80))).await.0.unwrap();
    let (server, _) = net.run(TICK, LIMIT, listener.accept()).await.0.unwrap();
    net.pump();
    // SYN, SYN-ACK, ACK: no keep-alive probe (and its ACK) from either side right away,
    // which would be four more packets for every connection.
    assert_eq!(net.carried, 3);
    for _ in 0..59 {
        net.now += SECOND;
        net.pump();
    }
    assert_eq!(net.carried, 3, "an idle minute has not passed yet");
    for _ in 0..2 {
        net.now += SECOND;
        net.pump();
    }
    assert!(net.carried > 3, "keep-alives once idle for a minute");
    drop((client, server));
}

#[tokio::test]
async fn a_dead_peer_is_detected_and_its_socket_freed() {
    let (mut net, a, b) = Net::new();
    let (listener, _) = net.run(TICK, LIMIT, b.listen(at(B, 80))).await;
    let mut listener = listener.unwrap();
    let (client, _) = net.run(TICK, LIMIT, a.connect(at(B, 80))).await;
    let mut client = client.unwrap();
    let (accepted, _) = net.run(TICK, LIMIT, listener.accept()).await;
    let (mut server, _) = accepted.unwrap();
    assert_eq!((net.a.socket_count(), net.b.socket_count()), (1, 1));

    // The peer vanishes; the client has data in flight, the server is idle.
    net.wire_up = false;
    client.write_all(b"are you there?").await.unwrap();
    let mut buf = [0; 64];
    let (result, took) = net.run(SECOND, LIMIT, client.read(&mut buf)).await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionReset);
    assert!(
        (Duration::from_secs(170)..Duration::from_secs(200)).contains(&took),
        "{took:?}"
    );
    let (result, _) = net.run(SECOND, LIMIT, server.read(&mut buf)).await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionReset);
    net.pump();
    assert_eq!((net.a.socket_count(), net.b.socket_count()), (0, 0));
}

#[tokio::test]
async fn a_dropped_stream_whose_peer_never_closes_is_reset_after_linger() {
    let (mut net, a, b) = Net::new();
    let mut listener = net.run(TICK, LIMIT, b.listen(at(B, 80))).await.0.unwrap();
    let client = net.run(TICK, LIMIT, a.connect(at(B, 80))).await.0.unwrap();
    let (server, _) = net.run(TICK, LIMIT, listener.accept()).await.0.unwrap();
    // The client goes away (FIN); the server neither reads to EOF nor closes.
    drop(client);
    for _ in 0..20 {
        net.pump();
        net.now += SECOND;
    }
    assert_eq!(
        net.a.socket_count(),
        1,
        "FIN-WAIT-2 while the server keeps its side open"
    );
    for _ in 0..20 {
        net.pump();
        net.now += SECOND;
    }
    net.pump();
    assert_eq!(
        net.a.socket_count(),
        0,
        "lingering close given up after 30 s"
    );
    drop(server);
}

#[tokio::test]
async fn a_slow_reader_still_gets_everything_after_time_wait_ends() {
    const REPLY: usize = 400 * 1024; // fits in the receive buffer
    let (mut net, a, b) = Net::new();
    let mut listener = net.run(TICK, LIMIT, b.listen(at(B, 80))).await.0.unwrap();
    let mut client = net.run(TICK, LIMIT, a.connect(at(B, 80))).await.0.unwrap();
    let (mut server, _) = net.run(TICK, LIMIT, listener.accept()).await.0.unwrap();
    client.shutdown().await.unwrap();
    let writer = tokio::spawn(async move {
        server.write_all(&common::pattern(5, REPLY)).await.unwrap();
        server.shutdown().await.unwrap();
        server
    });
    let (server, _) = net.run(TICK, LIMIT, writer).await;
    // The client reads nothing for a minute: its socket goes TIME-WAIT, then closes.
    for _ in 0..60 {
        net.pump();
        net.now += SECOND;
        tokio::task::yield_now().await;
    }
    let mut reply = Vec::new();
    let (result, _) = net.run(TICK, LIMIT, client.read_to_end(&mut reply)).await;
    assert_eq!(result.unwrap(), REPLY);
    assert_eq!(
        common::checksum(&reply),
        common::checksum(&common::pattern(5, REPLY))
    );
    drop((client, server));
    for _ in 0..10 {
        net.pump();
        net.now += SECOND;
    }
    assert_eq!((net.a.socket_count(), net.b.socket_count()), (0, 0));
}
