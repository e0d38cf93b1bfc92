//! Both ends send data at once and every pure ACK is lost until both have timed out and
//! retransmitted. Each retransmission is then old news to the other end; the connection
//! must still recover (it used to stall: smoltcp stamps its pure ACKs with the rewound
//! sequence number, which the peer drops as "not in window" without reading the ACK).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{at, config, pattern, A, B};
use pinhole_netstack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (source port, sequence number, payload length) of an IPv4 TCP packet.
fn segment(packet: &[u8]) -> Option<(u16, u32, usize)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 6 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let tcp = packet.get(ihl..total)?;
    let port = u16::from_be_bytes([tcp[0], tcp[1]]);
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    Some((port, seq, tcp.len() - data_offset))
}

/// Drops every pure ACK until both ends retransmitted data; passes everything after.
#[derive(Default)]
struct LoseAcks {
    /// Set once the connection is up: the handshake passes untouched.
    armed: Arc<AtomicBool>,
    seen: HashSet<(u16, u32)>,
    retransmitted: HashSet<u16>,
}

impl LoseAcks {
    fn pass(&mut self, packet: &[u8]) -> bool {
        let Some((port, seq, len)) = segment(packet) else {
            return true;
        };
        if !self.armed.load(Ordering::SeqCst) {
            return true;
        }
        if len > 0 && !self.seen.insert((port, seq)) {
            self.retransmitted.insert(port);
        }
        self.retransmitted.len() >= 2 || len > 0
    }
}

async fn drive(mut a: Stack, mut b: Stack, mut wire: LoseAcks) {
    loop {
        loop {
            let now = Instant::now();
            a.poll(now);
            b.poll(now);
            let mut moved = false;
            while let Some(packet) = a.poll_outbound() {
                moved = true;
                if wire.pass(&packet) {
                    b.handle_inbound(&packet);
                }
            }
            while let Some(packet) = b.poll_outbound() {
                moved = true;
                if wire.pass(&packet) {
                    a.handle_inbound(&packet);
                }
            }
            if !moved {
                break;
            }
        }
        let now = Instant::now();
        let next = match (a.poll_at(now), b.poll_at(now)) {
            (Some(x), Some(y)) => x.min(y),
            (x, y) => x.or(y).unwrap_or(now + Duration::from_secs(3600)),
        };
        tokio::select! {
            () = a.wait() => {}
            () = b.wait() => {}
            () = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

#[tokio::test]
async fn both_ends_recover_when_all_their_acks_were_lost() {
    let (stack_a, a) = pinhole_netstack::new(config(A));
    let (stack_b, b) = pinhole_netstack::new(config(B));
    let wire = LoseAcks::default();
    let armed = Arc::clone(&wire.armed);
    let driver = tokio::spawn(drive(stack_a, stack_b, wire));
    let mut listener = b.listen(at(B, 80)).await.unwrap();

    let (client, server) = tokio::join!(a.connect(at(B, 80)), listener.accept());
    let (mut client, (mut server, _)) = (client.unwrap(), server.unwrap());
    // Let the handshake's last ACK land before the loss starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    armed.store(true, Ordering::SeqCst);

    let to_b = pattern(1, 4000);
    let to_a = pattern(2, 4000);
    let exchange = async {
        let (mut client_read, mut client_write) = tokio::io::split(&mut client);
        let (mut server_read, mut server_write) = tokio::io::split(&mut server);
        let mut at_a = vec![0; to_a.len()];
        let mut at_b = vec![0; to_b.len()];
        let (w1, w2, r1, r2) = tokio::join!(
            client_write.write_all(&to_b),
            server_write.write_all(&to_a),
            client_read.read_exact(&mut at_a),
            server_read.read_exact(&mut at_b),
        );
        w1.unwrap();
        w2.unwrap();
        r1.unwrap();
        r2.unwrap();
        (at_a, at_b)
    };
    // Without loss this takes milliseconds; with the lost ACKs, one RTO (1 s) and a few
    // round trips. The stall it guards against lasts until the 180 s dead-peer timeout.
    let (at_a, at_b) = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the connection stalled after its ACKs were lost");
    assert_eq!(at_a, to_a);
    assert_eq!(at_b, to_b);

    // Both ends must also see every byte acknowledged and close cleanly.
    client.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        client.read_to_end(&mut rest).await.unwrap();
        server.read_to_end(&mut rest).await.unwrap();
    });
    closed.await.expect("the close stalled");
    assert!(rest.is_empty());
    driver.abort();
}
