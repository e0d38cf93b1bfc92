//! End-to-end tests against the real kernel. Each runs on its own thread moved into a fresh,
//! empty network namespace (`unshare(CLONE_NEWNET)` affects only the calling thread), so the
//! device, its addresses and routes, the kernel sockets and the `ip` commands we spawn all live
//! there and vanish with it; nothing touches the host's namespace. They need root and are
//! skipped, with the reason printed, without it.

use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use pinhole_tun::{offload, Tun, TunConfig, TunError};

/// Runs `test` with a current-thread Tokio runtime on a thread inside a new network namespace.
fn in_netns<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {name}: creating a TUN device needs root (CAP_NET_ADMIN)");
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipping {name}: /dev/net/tun does not exist (modprobe tun)");
        return;
    }
    let thread = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this thread into a new
        // network namespace, which is what we want and is allowed in a multithreaded process.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), test())
                .await
                .expect("test timed out")
        });
        Ok(())
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("skipping {name}: cannot create a network namespace: {e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn test_config() -> TunConfig {
    TunConfig {
        name: None,
        addresses: vec![
            ("10.99.0.1".parse().unwrap(), 24),
            ("fd99::1".parse().unwrap(), 64),
        ],
        mtu: 1400,
        routes: vec![
            ("10.98.0.0".parse().unwrap(), 16),
            ("fd98::".parse().unwrap(), 32),
            ("10.99.0.128".parse().unwrap(), 25), // inside 10.99.0.0/24: skipped, not an error
        ],
    }
}

/// `ip ARGS` in the calling thread's namespace; stdout, or None if it failed.
fn ip(args: &[&str]) -> Option<String> {
    let out = Command::new("ip").args(args).output().expect("running ip");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The IP header fields the tests look at.
#[derive(Debug)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    payload: Vec<u8>,
}

fn parse(p: &[u8]) -> Option<Packet> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            Some(Packet {
                src: IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?),
                dst: IpAddr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?),
                protocol: p[9],
                payload: p.get(ihl..total)?.to_vec(),
            })
        }
        6 => Some(Packet {
            src: IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?),
            dst: IpAddr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?),
            protocol: p[6],
            payload: p.get(40..)?.to_vec(),
        }),
        _ => None,
    }
}

/// Reads packets until one satisfies `wanted`, skipping the kernel's own chatter (IPv6 router
/// solicitations, MLD reports) that also leaves through the device.
async fn recv_matching(tun: &Tun, wanted: impl Fn(&Packet) -> bool) -> Packet {
    let mut buf = vec![0u8; 2048];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tun.recv(&mut buf))
            .await
            .expect("no matching packet within 5 s")
            .expect("recv");
        if let Some(packet) = parse(&buf[..n]) {
            if wanted(&packet) {
                return packet;
            }
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request from `src` to `dst`.
fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(data);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());

    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

#[test]
fn device_has_its_addresses_mtu_and_routes() {
    in_netns("device_has_its_addresses_mtu_and_routes", || async {
        let tun = Tun::create(&test_config()).expect("create");
        let name = tun.name().to_owned();
        assert!(name.starts_with("pinhole"), "{name}");

        let addr = ip(&["-j", "addr", "show", "dev", &name]).expect("device exists");
        assert!(addr.contains("\"mtu\":1400"), "{addr}");
        assert!(addr.contains("\"UP\""), "{addr}");
        assert!(
            addr.contains("\"local\":\"10.99.0.1\",\"prefixlen\":24"),
            "{addr}"
        );
        assert!(
            addr.contains("\"local\":\"fd99::1\",\"prefixlen\":64"),
            "{addr}"
        );
        // Our IPv6 address skips DAD, so it is usable at once (the kernel's own link-local
        // address may still be tentative; that one is not ours).
        let ours = addr.split("\"local\":\"fd99::1\"").nth(1).unwrap();
        let ours = &ours[..ours.find('}').unwrap()];
        assert!(
            ours.contains("\"nodad\":true") && !ours.contains("tentative"),
            "{addr}"
        );

        let dev = format!("\"dev\":\"{name}\"");
        let v4 = ip(&["-j", "route", "show", "10.98.0.0/16"]).unwrap();
        assert!(
            v4.contains(&dev) && v4.contains("\"protocol\":\"static\""),
            "{v4}"
        );
        let v6 = ip(&["-j", "-6", "route", "show", "fd98::/32"]).unwrap();
        assert!(v6.contains(&dev), "{v6}");
        let get = ip(&["-j", "route", "get", "10.98.200.1"]).unwrap();
        assert!(get.contains(&dev), "{get}");
        let skipped = ip(&["-j", "route", "show", "10.99.0.128/25"]).unwrap();
        assert_eq!(
            skipped.trim(),
            "[]",
            "covered route not installed: {skipped}"
        );
    });
}

#[test]
fn kernel_udp_comes_out_of_recv() {
    in_netns("kernel_udp_comes_out_of_recv", || async {
        let tun = Tun::create_plain(&test_config()).expect("create");

        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.send_to(b"hello v4", "10.99.0.2:9").unwrap();
        let p = recv_matching(&tun, |p| p.protocol == 17 && p.dst.is_ipv4()).await;
        assert_eq!(p.src, "10.99.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "10.99.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            u16::from_be_bytes([p.payload[0], p.payload[1]]),
            sock.local_addr().unwrap().port()
        );
        assert_eq!(u16::from_be_bytes([p.payload[2], p.payload[3]]), 9);
        assert_eq!(&p.payload[8..], b"hello v4");

        let sock6 = UdpSocket::bind("[::]:0").unwrap();
        sock6.send_to(b"hello v6", "[fd99::2]:9").unwrap();
        let p = recv_matching(&tun, |p| p.protocol == 17 && p.dst.is_ipv6()).await;
        assert_eq!(p.src, "fd99::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst, "fd99::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(&p.payload[8..], b"hello v6");

        // A destination reached only through the extra route leaves through the device too.
        sock.send_to(b"routed", "10.98.3.4:9").unwrap();
        let p = recv_matching(&tun, |p| {
            p.protocol == 17 && p.dst == IpAddr::from([10, 98, 3, 4])
        })
        .await;
        assert_eq!(&p.payload[8..], b"routed");
    });
}

#[test]
fn kernel_answers_a_ping_written_with_send() {
    in_netns("kernel_answers_a_ping_written_with_send", || async {
        let tun = Tun::create_plain(&test_config()).expect("create");
        let (peer, local) = (Ipv4Addr::new(10, 99, 0, 2), Ipv4Addr::new(10, 99, 0, 1));
        let request = echo_request(peer, local, 0x1234, 7, b"pinhole ping");
        assert_eq!(tun.send(&request).await.unwrap(), request.len());

        let reply = recv_matching(&tun, |p| p.protocol == 1 && p.payload.first() == Some(&0)).await;
        assert_eq!(
            (reply.src, reply.dst),
            (IpAddr::V4(local), IpAddr::V4(peer))
        );
        assert_eq!(
            &reply.payload[4..8],
            &[0x12, 0x34, 0, 7],
            "same id and sequence"
        );
        assert_eq!(&reply.payload[8..], b"pinhole ping");
        assert_eq!(checksum(&reply.payload), 0, "valid ICMP checksum");

        // Garbage is refused by the kernel without harming the device.
        let err = tun.send(&[0u8; 3]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        tun.try_send(&request).expect("try_send");
        recv_matching(&tun, |p| p.protocol == 1 && p.payload.first() == Some(&0)).await;
    });
}

#[test]
fn tcp_connect_sends_a_syn() {
    in_netns("tcp_connect_sends_a_syn", || async {
        let tun = Tun::create_plain(&test_config()).expect("create");
        let connect = tokio::spawn(tokio::net::TcpStream::connect("10.99.0.2:80"));

        let syn = recv_matching(&tun, |p| p.protocol == 6).await;
        assert_eq!(syn.src, IpAddr::from([10, 99, 0, 1]));
        assert_eq!(syn.dst, IpAddr::from([10, 99, 0, 2]));
        assert_eq!(u16::from_be_bytes([syn.payload[2], syn.payload[3]]), 80);
        let flags = syn.payload[13];
        assert_eq!(flags & 0x12, 0x02, "SYN without ACK, flags {flags:#04x}");
        connect.abort();
    });
}

#[test]
fn try_recv_drains_a_batch_then_would_block() {
    in_netns("try_recv_drains_a_batch_then_would_block", || async {
        let tun = Tun::create_plain(&test_config()).expect("create");
        let mut buf = vec![0u8; 2048];
        let is_ours = |n: usize, buf: &[u8]| {
            parse(&buf[..n])
                .is_some_and(|p| p.protocol == 17 && p.dst == IpAddr::from([10, 99, 0, 2]))
        };

        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..3u8 {
            sock.send_to(&[i], "10.99.0.2:9").unwrap();
        }
        // The first arrives through recv (so the reactor has seen the fd readable) ...
        let mut ours = 0;
        while ours == 0 {
            let n = tun.recv(&mut buf).await.unwrap();
            ours += usize::from(is_ours(n, &buf));
        }
        // ... and the rest are already queued: a batch drained without waiting.
        loop {
            match tun.try_recv(&mut buf) {
                Ok(n) => ours += usize::from(is_ours(n, &buf)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("try_recv: {e}"),
            }
        }
        assert_eq!(ours, 3);
        // Empty now (the kernel's IPv6 chatter aside, which comes seconds apart).
        let quiet = tun.try_recv(&mut buf);
        assert!(
            quiet
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock)
                || !is_ours(*quiet.as_ref().unwrap(), &buf)
        );
    });
}

#[test]
fn dropping_the_tun_removes_the_device() {
    in_netns("dropping_the_tun_removes_the_device", || async {
        let tun = Tun::create(&test_config()).expect("create");
        let name = tun.name().to_owned();
        assert!(ip(&["link", "show", "dev", &name]).is_some());
        drop(tun);
        // Closing the last reference unregisters the device at once; allow a moment in case a
        // process another test spawned still holds an inherited copy until its exec.
        for _ in 0..50 {
            if ip(&["link", "show", "dev", &name]).is_none() {
                let routes = ip(&["-j", "route", "show", "10.98.0.0/16"]).unwrap();
                assert_eq!(routes.trim(), "[]", "route gone with the device");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} still exists after drop");
    });
}

#[test]
fn explicit_name_and_a_name_in_use() {
    in_netns("explicit_name_and_a_name_in_use", || async {
        let config = TunConfig {
            name: Some("phtest0".into()),
            ..test_config()
        };
        let tun = Tun::create(&config).expect("create");
        assert_eq!(tun.name(), "phtest0");

        let again = TunConfig {
            addresses: vec![],
            routes: vec![],
            ..config.clone()
        };
        let err = Tun::create(&again).unwrap_err();
        assert!(
            matches!(&err, TunError::NameInUse { name } if name == "phtest0"),
            "{err}"
        );
        assert!(err.to_string().contains("ip link del phtest0"), "{err}");
        // `lo` is not a TUN device: same clear error.
        let lo = TunConfig {
            name: Some("lo".into()),
            ..again
        };
        assert!(matches!(Tun::create(&lo), Err(TunError::NameInUse { .. })));

        // The first device is unharmed; a second default-named one gets the next number.
        assert!(ip(&["link", "show", "dev", "phtest0"]).is_some());
        let second = Tun::create(&TunConfig::default()).expect("create second");
        assert!(second.name().starts_with("pinhole"));
    });
}

#[test]
fn a_failing_step_removes_the_half_made_device() {
    in_netns("a_failing_step_removes_the_half_made_device", || async {
        // The same address twice: the second RTM_NEWADDR fails with EEXIST.
        let config = TunConfig {
            name: Some("phhalf0".into()),
            addresses: vec![
                ("10.99.0.1".parse().unwrap(), 24),
                ("10.99.0.1".parse().unwrap(), 24),
            ],
            ..TunConfig::default()
        };
        let err = Tun::create(&config).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("adding address 10.99.0.1/24 to phhalf0: "),
            "{err}"
        );
        assert!(
            ip(&["link", "show", "dev", "phhalf0"]).is_none(),
            "device removed"
        );
        // The name is free again.
        let ok = TunConfig {
            addresses: vec![],
            ..config
        };
        Tun::create(&ok).expect("create after failure");
    });
}

#[test]
fn an_existing_route_is_a_clear_error() {
    in_netns("an_existing_route_is_a_clear_error", || async {
        let _first = Tun::create(&test_config()).expect("create");
        let second = TunConfig {
            addresses: vec![],
            routes: vec![("10.98.0.0".parse().unwrap(), 16)],
            ..TunConfig::default()
        };
        let err = Tun::create(&second).unwrap_err();
        assert!(matches!(err, TunError::RouteExists { .. }), "{err}");
    });
}

/// An IPv4 TCP packet from 10.99.0.2:40000 to 10.99.0.1:`dport` with valid checksums.
fn tcp_to_local(dport: u16, seq: u32, ack: u32, flags: u8, options: &[u8], data: &[u8]) -> Vec<u8> {
    let (src, dst) = ([10, 99, 0, 2], [10, 99, 0, 1]);
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&40000u16.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(((20 + options.len()) / 4 * 16) as u8);
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(options);
    tcp.extend_from_slice(data);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip[2..4].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// Whether the TCP checksum of an IPv4 packet verifies.
fn tcp_checksum_ok(p: &[u8]) -> bool {
    let mut pseudo = p[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
    pseudo.extend_from_slice(&p[20..]);
    checksum(&pseudo) == 0
}

/// Reads frames from an offload device until `wanted` has seen enough; every packet cut
/// from a frame is checked (size, checksums) before `wanted` sees it. Returns whether any
/// frame was a super-packet.
async fn recv_segments(tun: &Tun, mtu: usize, mut wanted: impl FnMut(&[u8]) -> bool) -> bool {
    let mut buf = vec![0u8; 70_000];
    let mut scratch = Vec::new();
    let mut saw_gso = false;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tun.recv(&mut buf))
            .await
            .expect("no packet within 5 s")
            .expect("recv");
        let hdr = offload::VnetHdr::decode(&buf[..n]).expect("a vnet header");
        saw_gso |= hdr.gso_type != offload::GSO_NONE;
        let mut packets = Vec::new();
        offload::segment(&mut buf[..n], mtu, &mut scratch, |p| {
            packets.push(p.to_vec())
        })
        .expect("a frame the kernel wrote splits");
        let mut done = false;
        for p in packets {
            assert!(p.len() <= mtu, "{} bytes", p.len());
            if p[0] >> 4 == 4 && p[9] == 6 {
                assert!(tcp_checksum_ok(&p), "TCP checksum");
                assert_eq!(checksum(&p[..20]), 0, "IPv4 header checksum");
                done |= wanted(&p);
            }
        }
        if done {
            return saw_gso;
        }
    }
}

#[test]
fn kernel_tcp_through_offloads_both_ways() {
    in_netns("kernel_tcp_through_offloads_both_ways", || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tun = Tun::create(&test_config()).expect("create");
        if !tun.offload() {
            eprintln!(
                "skipping kernel_tcp_through_offloads_both_ways: this kernel refuses TUN offloads"
            );
            return;
        }
        let mtu = 1400;
        let listener = tokio::net::TcpListener::bind("10.99.0.1:5000")
            .await
            .unwrap();
        let zero = [0u8; offload::VNET_HDR_LEN];
        // The reactor learns the device is writable once; TUN writes then never block.
        tun.writable().await.unwrap();
        let send = |p: &[u8]| {
            let n = tun
                .try_send_vectored(&[IoSlice::new(&zero), IoSlice::new(p)])
                .expect("write");
            assert_eq!(n, zero.len() + p.len());
        };

        // Handshake as 10.99.0.2: SYN with MSS 1360, SYN-ACK read back, ACK.
        let isn = 7_000u32;
        send(&tcp_to_local(5000, isn, 0, 0x02, &[2, 4, 0x05, 0x50], b""));
        let mut server_isn = None;
        recv_segments(&tun, mtu, |p| {
            let tcp = &p[20..];
            if tcp[0..2] == 5000u16.to_be_bytes() && tcp[13] == 0x12 {
                server_isn = Some(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
            }
            server_isn.is_some()
        })
        .await;
        let server_isn = server_isn.unwrap();
        let (seq, ack) = (isn + 1, server_isn.wrapping_add(1));
        send(&tcp_to_local(5000, seq, ack, 0x10, &[], b""));
        let (mut conn, _) = listener.accept().await.unwrap();

        // Write side: five segments coalesced into one GSO write reach the socket intact.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut gro = offload::Coalescer::new();
        for (i, chunk) in data.chunks(1000).enumerate() {
            let seq = seq + 1000 * i as u32;
            gro.push(&tcp_to_local(5000, seq, ack, 0x10, &[], chunk));
        }
        let mut writes = 0;
        gro.flush(|iov| {
            writes += 1;
            tun.try_send_vectored(iov).map(drop)
        })
        .unwrap();
        assert_eq!(writes, 1, "one write for the whole burst");
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
            .await
            .expect("data within 5 s")
            .unwrap();
        assert_eq!(got, data);

        // Read side: the kernel's answer comes as a super-packet that splits into valid
        // segments no larger than the MTU, in sequence.
        let reply: Vec<u8> = (0..12_000u32).map(|i| (i % 253) as u8).collect();
        conn.write_all(&reply).await.unwrap();
        let mut received = Vec::new();
        let saw_gso = recv_segments(&tun, mtu, |p| {
            let tcp = &p[20..];
            let doff = usize::from(tcp[12] >> 4) * 4;
            let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            if tcp[0..2] == 5000u16.to_be_bytes() && p.len() > 20 + doff {
                assert_eq!(seq, ack.wrapping_add(received.len() as u32), "in order");
                received.extend_from_slice(&p[20 + doff..]);
            }
            received.len() >= reply.len()
        })
        .await;
        assert_eq!(received, reply);
        assert!(saw_gso, "the kernel used TSO on the device");
    });
}
