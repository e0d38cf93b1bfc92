use super::*;
use std::time::Duration;

async fn loopback() -> UdpIo {
    UdpIo::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap()
}

/// A datagram whose bytes say which it is, so order and boundaries show.
fn datagram(index: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (index * 7 + i) as u8).collect()
}

/// Receives until `count` datagrams arrived (or 10 s passed: then what came).
async fn receive(io: &mut UdpIo, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < count {
        let ready = tokio::time::timeout_at(deadline, io.readable()).await;
        if ready.is_err() {
            break;
        }
        match io.try_recv(|from, bytes| got.push((from, bytes.to_vec()))) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("receive failed: {e}"),
        }
    }
    got
}

#[tokio::test]
async fn a_batch_arrives_whole_in_order_with_its_boundaries() {
    let mut tx = loopback().await;
    let mut rx = loopback().await;
    let to = rx.local_addr().unwrap();
    let from = tx.local_addr().unwrap();

    // Full-size runs as bulk traffic makes them, a short one ending a run,
    // then small ones (acknowledgements).
    let mut sent = Vec::new();
    for i in 0..60 {
        sent.push(datagram(i, 1452));
    }
    sent.push(datagram(60, 300));
    for i in 61..70 {
        sent.push(datagram(i, 80));
    }
    let mut batch = SendBatch::new();
    for d in &sent {
        batch.push(to, d, tx.max_segments());
    }
    let receiving = tokio::spawn(async move { receive(&mut rx, 70).await });
    tx.send(&mut batch).await;
    assert!(batch.is_empty());

    let got = receiving.await.unwrap();
    assert_eq!(got.len(), sent.len());
    for (i, ((sender, bytes), expected)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(*sender, from);
        assert_eq!(bytes, expected, "datagram {i}");
    }
}

#[tokio::test]
async fn nothing_waiting_is_would_block() {
    let mut io = loopback().await;
    let error = io
        .try_recv(|_, _| panic!("no datagram was sent"))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
}

#[tokio::test]
async fn a_dual_stack_socket_reaches_and_reports_ipv4_peers_as_ipv4() {
    let std_socket = std::net::UdpSocket::bind("[::]:0").unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let mut dual = UdpIo::new(UdpSocket::from_std(std_socket).unwrap()).unwrap();
    let port = dual.local_addr().unwrap().port();
    let mut v4 = loopback().await;
    let v4_addr = v4.local_addr().unwrap();

    let mut batch = SendBatch::new();
    batch.push(v4_addr, b"to v4", dual.max_segments());
    dual.send(&mut batch).await;
    let got = receive(&mut v4, 1).await;
    assert_eq!(got[0].1, b"to v4");
    assert_eq!(got[0].0.port(), port);

    batch.push(SocketAddr::from(([127, 0, 0, 1], port)), b"back", 1);
    v4.send(&mut batch).await;
    let got = receive(&mut dual, 1).await;
    assert_eq!(got, vec![(v4_addr, b"back".to_vec())]);
}

#[test]
fn mapped_addresses_round_trip() {
    let v4: SocketAddr = "192.0.2.7:51820".parse().unwrap();
    assert!(mapped(v4).is_ipv6());
    assert_eq!(canonical(mapped(v4)), v4);
    let v6: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
    assert_eq!(canonical(v6), v6);
    assert_eq!(mapped(v6), v6);
}

#[tokio::test]
async fn a_refused_gso_send_is_resent_one_datagram_at_a_time() {
    let mut tx = loopback().await;
    let mut rx = loopback().await;
    let to = rx.local_addr().unwrap();
    if tx.max_segments() == 1 {
        eprintln!("no UDP GSO on this kernel: nothing to refuse");
        return;
    }
    // More segments than the kernel takes in one send (UDP_MAX_SEGMENTS is 64
    // or 128): the GSO send is refused, as it is when a segment outgrows the
    // path MTU, and every datagram must still arrive.
    let sent: Vec<Vec<u8>> = (0..130).map(|i| datagram(i, 100)).collect();
    let mut batch = SendBatch::new();
    for d in &sent {
        batch.push(to, d, 1_000);
    }
    assert_eq!(batch.runs().count(), 1, "one run of 130 datagrams");
    tx.send(&mut batch).await;

    let got = receive(&mut rx, sent.len()).await;
    let bytes: Vec<Vec<u8>> = got.into_iter().map(|(_, b)| b).collect();
    assert_eq!(bytes, sent);
    assert_eq!(
        tx.max_segments_to(to),
        1,
        "no GSO to this destination for a while"
    );
}

#[tokio::test]
async fn more_runs_than_one_call_carries_arrive_in_order_at_each_destination() {
    let mut tx = loopback().await;
    let mut rx1 = loopback().await;
    let mut rx2 = loopback().await;
    let (to1, to2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
    // Alternating destinations: every three datagrams start a new run, so the
    // batch holds 40 runs, more than one `sendmmsg` takes.
    let mut sent1 = Vec::new();
    let mut sent2 = Vec::new();
    let mut batch = SendBatch::new();
    for i in 0..40 {
        let (to, sent) = if i % 2 == 0 {
            (to1, &mut sent1)
        } else {
            (to2, &mut sent2)
        };
        for j in 0..3 {
            let d = datagram(i * 3 + j, 200 + i);
            batch.push(to, &d, tx.max_segments());
            sent.push(d);
        }
    }
    assert!(batch.runs().count() > MMSG);
    let first = tokio::spawn(async move { receive(&mut rx1, 60).await });
    let second = tokio::spawn(async move { receive(&mut rx2, 60).await });
    tx.send(&mut batch).await;
    assert!(batch.is_empty());

    for (got, sent) in [
        (first.await.unwrap(), sent1),
        (second.await.unwrap(), sent2),
    ] {
        let bytes: Vec<Vec<u8>> = got.into_iter().map(|(_, b)| b).collect();
        assert_eq!(bytes, sent);
    }
}

#[tokio::test]
async fn a_refused_run_among_others_goes_alone_and_other_destinations_keep_gso() {
    let mut tx = loopback().await;
    let mut refusing = loopback().await;
    let mut other = loopback().await;
    let (to_refusing, to_other) = (refusing.local_addr().unwrap(), other.local_addr().unwrap());
    if tx.max_segments() == 1 {
        eprintln!("no UDP GSO on this kernel: nothing to refuse");
        return;
    }
    // A run the kernel refuses (more segments than it takes in one send)
    // between two it accepts, all in one batch.
    let before: Vec<Vec<u8>> = (0..3).map(|i| datagram(i, 100)).collect();
    let refused: Vec<Vec<u8>> = (0..130).map(|i| datagram(i + 3, 100)).collect();
    let after: Vec<Vec<u8>> = (0..3).map(|i| datagram(i + 133, 100)).collect();
    let mut batch = SendBatch::new();
    for d in &before {
        batch.push(to_other, d, 1_000);
    }
    for d in &refused {
        batch.push(to_refusing, d, 1_000);
    }
    for d in &after {
        batch.push(to_other, d, 1_000);
    }
    assert_eq!(batch.runs().count(), 3);
    let at_refusing = tokio::spawn(async move { receive(&mut refusing, 130).await });
    let at_other = tokio::spawn(async move { receive(&mut other, 6).await });
    tx.send(&mut batch).await;

    let bytes = |got: Vec<(SocketAddr, Vec<u8>)>| -> Vec<Vec<u8>> {
        got.into_iter().map(|(_, b)| b).collect()
    };
    assert_eq!(bytes(at_refusing.await.unwrap()), refused);
    assert_eq!(bytes(at_other.await.unwrap()), [before, after].concat());
    assert_eq!(tx.max_segments_to(to_refusing), 1);
    assert_eq!(
        tx.max_segments_to(to_other),
        tx.max_segments(),
        "one destination's refusal leaves the others their GSO"
    );
    assert!(
        tx.max_segments() > 1,
        "nor is GSO turned off for the socket"
    );
}

#[tokio::test]
async fn a_datagram_after_a_drained_queue_still_wakes_the_reader() {
    let mut tx = loopback().await;
    let mut rx = loopback().await;
    let to = rx.local_addr().unwrap();
    let mut batch = SendBatch::new();

    for round in 0..3 {
        batch.push(to, &datagram(round, 100), 1);
        tx.send(&mut batch).await;
        let got = receive(&mut rx, 1).await;
        assert_eq!(got.len(), 1, "round {round}: the datagram must arrive");
        assert_eq!(got[0].1, datagram(round, 100));
        // The short batch cleared readiness: the queue reads as empty without
        // waiting, and the next round's datagram must wake `readable` again.
        let again = rx.try_recv(|_, _| panic!("nothing more was sent"));
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}

#[tokio::test]
async fn a_socket_with_room_is_writable_at_once() {
    let io = loopback().await;
    tokio::time::timeout(Duration::from_secs(10), wait_writable(io.socket.get_ref()))
        .await
        .expect("an empty send buffer has room")
        .unwrap();
}

/// An `int` socket option, read back.
fn get_int(io: &UdpIo, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the socket is open for the call, and `value` and `len` are live and sized.
    let rc = unsafe {
        libc::getsockopt(
            io.socket.get_ref().as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
    value
}

#[tokio::test]
async fn the_kernel_is_not_asked_for_control_messages_nothing_reads() {
    let io = loopback().await;
    assert_eq!(get_int(&io, libc::IPPROTO_IP, libc::IP_PKTINFO), 0);
    assert_eq!(get_int(&io, libc::IPPROTO_IP, libc::IP_RECVTOS), 0);
    let dual = UdpIo::new(UdpSocket::bind("[::]:0").await.unwrap()).unwrap();
    assert_eq!(
        get_int(&dual, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        0
    );
    assert_eq!(get_int(&dual, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS), 0);
}
