//! benchnet: the servers and load generators of `make bench`.
//!
//! Standard library only, so it builds in seconds and measures the forwarder, not itself.
//! Every client is bounded in time and count and prints one JSON object on stdout.
//!
//!   benchnet echo-server ADDR                      TCP echo, a thread per connection
//!   benchnet udp-sink ADDR [--idle-ms 500] [--max-seconds 30]
//!                                                  count datagrams until the flow stops
//!   benchnet udp-flood TARGET [--seconds 2] [--size 64]
//!                                                  send datagrams as fast as possible
//!   benchnet rr TARGET [--count 2000] [--size 64] [--warmup 100]
//!                                                  request/response round trips on one connection
//!   benchnet cps TARGET [--seconds 2] [--threads 4]
//!                                                  connect, 1-byte echo, close, as fast as possible
//!   benchnet hold TARGET [--count 1000] [--threads 8] [--hold-seconds 60]
//!                                                  open COUNT connections (each verified by a
//!                                                  1-byte echo), print, then hold them idle
//!   benchnet pingpong BIND [--count 20000]         two threads bounce a UDP datagram on BIND's
//!                                                  address: what waking a thread costs here

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::exit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        usage();
    }
    let (sub, addr) = (args[0].as_str(), args[1].as_str());
    let opts = parse_opts(&args[2..]);
    let addr = resolve(addr);
    match sub {
        "echo-server" => echo_server(addr),
        "udp-sink" => udp_sink(
            addr,
            opt(&opts, "idle-ms", 500),
            opt(&opts, "max-seconds", 30),
        ),
        "udp-flood" => udp_flood(addr, opt_f(&opts, "seconds", 2.0), opt(&opts, "size", 64)),
        "rr" => rr(
            addr,
            opt(&opts, "count", 2000),
            opt(&opts, "size", 64),
            opt(&opts, "warmup", 100),
        ),
        "cps" => cps(addr, opt_f(&opts, "seconds", 2.0), opt(&opts, "threads", 4)),
        "hold" => hold(
            addr,
            opt(&opts, "count", 1000),
            opt(&opts, "threads", 8),
            opt(&opts, "hold-seconds", 60),
        ),
        "pingpong" => pingpong(addr, opt(&opts, "count", 20000)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: benchnet echo-server|udp-sink|udp-flood|rr|cps|hold ADDR [--key value]...");
    exit(2)
}

fn parse_opts(rest: &[String]) -> HashMap<String, String> {
    let mut opts = HashMap::new();
    let mut it = rest.iter();
    while let Some(k) = it.next() {
        let Some(k) = k.strip_prefix("--") else {
            usage()
        };
        let Some(v) = it.next() else { usage() };
        opts.insert(k.to_string(), v.clone());
    }
    opts
}

fn opt(opts: &HashMap<String, String>, key: &str, default: u64) -> u64 {
    opts.get(key).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| {
            eprintln!("--{key}: not a number: {v}");
            exit(2)
        })
    })
}

fn opt_f(opts: &HashMap<String, String>, key: &str, default: f64) -> f64 {
    opts.get(key).map_or(default, |v| {
        v.parse().unwrap_or_else(|_| {
            eprintln!("--{key}: not a number: {v}");
            exit(2)
        })
    })
}

fn resolve(addr: &str) -> SocketAddr {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            eprintln!("not an address: {addr}");
            exit(2)
        })
}

fn fail(what: &str, e: std::io::Error) -> ! {
    eprintln!("benchnet: {what}: {e}");
    exit(1)
}

// ------------------------------------------------------------------------------------------
// Servers
// ------------------------------------------------------------------------------------------

fn echo_server(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail("bind", e));
    eprintln!("echo server on {addr}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_nodelay(true);
        // Small stacks: 10,000 idle connections are 10,000 threads.
        let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = conn.shutdown(Shutdown::Both);
        });
        if let Err(e) = spawned {
            eprintln!("echo server: cannot spawn a thread: {e}");
        }
    }
}

fn udp_sink(addr: SocketAddr, idle_ms: u64, max_seconds: u64) {
    let sock = UdpSocket::bind(addr).unwrap_or_else(|e| fail("bind", e));
    let _ = sock.set_read_timeout(Some(Duration::from_millis(idle_ms)));
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let mut buf = vec![0u8; 65_536];
    let (mut packets, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    while Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                packets += 1;
                bytes += n as u64;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if first.is_some() {
                    break; // the flow stopped
                }
            }
            Err(e) => fail("recv", e),
        }
    }
    let seconds = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let pps = if seconds > 0.0 {
        packets as f64 / seconds
    } else {
        0.0
    };
    println!(r#"{{"packets":{packets},"bytes":{bytes},"seconds":{seconds:.4},"pps":{pps:.1}}}"#);
}

// ------------------------------------------------------------------------------------------
// Clients
// ------------------------------------------------------------------------------------------

fn udp_flood(target: SocketAddr, seconds: f64, size: u64) {
    let bind: SocketAddr = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .unwrap();
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| fail("bind", e));
    sock.connect(target).unwrap_or_else(|e| fail("connect", e));
    let payload = vec![0x5au8; size as usize];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let (mut sent, mut errors) = (0u64, 0u64);
    while Instant::now() < end {
        for _ in 0..64 {
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1, // ENOBUFS, ECONNREFUSED from an ICMP: keep going
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        r#"{{"sent":{sent},"errors":{errors},"seconds":{secs:.4},"pps":{:.1}}}"#,
        sent as f64 / secs
    );
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `round_trip` `warmup` times untimed, then `count` times timed: the times in µs, sorted.
fn timed(warmup: u64, count: u64, mut round_trip: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        round_trip();
    }
    let mut samples: Vec<f64> = (0..count)
        .map(|_| {
            let t = Instant::now();
            round_trip();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples
}

fn rr(target: SocketAddr, count: u64, size: u64, warmup: u64) {
    let mut s = connect(target).unwrap_or_else(|e| fail("connect", e));
    let req = vec![0x42u8; size as usize];
    let mut resp = vec![0u8; size as usize];
    let samples = timed(warmup, count, || {
        s.write_all(&req).unwrap_or_else(|e| fail("write", e));
        s.read_exact(&mut resp).unwrap_or_else(|e| fail("read", e));
    });
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    println!(
        r#"{{"count":{count},"size":{size},"p50_us":{:.1},"p99_us":{:.1},"mean_us":{mean:.1},"max_us":{:.1}}}"#,
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.last().copied().unwrap_or(0.0)
    );
}

/// Two threads bounce a 64-byte datagram between two UDP sockets on `bind`'s address, each
/// asleep in `recv` while the other works: a round trip is two wake-ups and little else. Run
/// under `taskset` with one CPU and with all of them, it shows what a wake-up on another core
/// costs this machine, the cost a forwarder's round trip pays at each hand-over that crosses.
fn pingpong(bind: SocketAddr, count: u64) {
    let sock = || {
        let s = UdpSocket::bind(bind).unwrap_or_else(|e| fail("bind", e));
        s.set_read_timeout(Some(IO_TIMEOUT))
            .unwrap_or_else(|e| fail("set_read_timeout", e));
        s
    };
    let (ping, pong) = (sock(), sock());
    let addr = |s: &UdpSocket| s.local_addr().unwrap_or_else(|e| fail("local_addr", e));
    ping.connect(addr(&pong))
        .unwrap_or_else(|e| fail("connect", e));
    pong.connect(addr(&ping))
        .unwrap_or_else(|e| fail("connect", e));
    let echo = thread::spawn(move || {
        let mut b = [0u8; 64];
        // Until the pinger's 1-byte goodbye, or its silence.
        while let Ok(n) = pong.recv(&mut b) {
            if n < b.len() || pong.send(&b[..n]).is_err() {
                break;
            }
        }
    });
    let mut b = [0x42u8; 64];
    let samples = timed(200, count, || {
        ping.send(&b).unwrap_or_else(|e| fail("send", e));
        ping.recv(&mut b).unwrap_or_else(|e| fail("recv", e));
    });
    let _ = ping.send(&[0]);
    let _ = echo.join();
    println!(
        r#"{{"count":{count},"p50_us":{:.1},"p99_us":{:.1}}}"#,
        percentile(&samples, 50.0),
        percentile(&samples, 99.0)
    );
}

fn one_echo(target: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = connect(target)?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(s)
}

fn cps(target: SocketAddr, seconds: f64, threads: u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ok, errors) = (ok.clone(), errors.clone());
            thread::spawn(move || {
                while Instant::now() < end {
                    match one_echo(target) {
                        Ok(s) => {
                            drop(s);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    println!(
        r#"{{"connections":{n},"errors":{},"seconds":{secs:.4},"per_second":{:.1}}}"#,
        errors.load(Ordering::Relaxed),
        n as f64 / secs
    );
}

fn hold(target: SocketAddr, count: u64, threads: u64, hold_seconds: u64) {
    let held = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (held, failed, next, stop) =
                (held.clone(), failed.clone(), next.clone(), stop.clone());
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < count
                        && !stop.load(Ordering::Relaxed)
                    {
                        match one_echo(target) {
                            Ok(s) => held.lock().unwrap().push(s),
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("hold: first failure: {e}");
                                }
                                // Many failures in a row: the forwarder is full; stop early.
                                if failed.load(Ordering::Relaxed) > count / 4 + 50 {
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                })
                .expect("spawn")
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let open_secs = start.elapsed().as_secs_f64();
    // Connections the forwarder closed after the echo (a cap applied late) are not held.
    let mut alive = 0u64;
    {
        let held = held.lock().unwrap();
        for s in held.iter() {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            match (&*s).read(&mut b) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => alive += 1,
                _ => {}
            }
            let _ = s.set_nonblocking(false);
        }
    }
    println!(
        r#"{{"requested":{count},"held":{alive},"failed":{},"open_seconds":{open_secs:.3}}}"#,
        failed.load(Ordering::Relaxed)
    );
    let _ = std::io::stdout().flush();
    thread::sleep(Duration::from_secs(hold_seconds));
}
