//! Dynamic forwarding: the relay is a SOCKS5 exit on its overlay address, and
//! a laptop (the peer that dials the relay) reaches it through a plain
//! loopback forward. A hand-written SOCKS5 client (raw RFC 1928/1929 bytes)
//! connects by IP and by name, and the exit policy refuses what it must with
//! "not allowed by ruleset" (REP 0x02), at once.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SUCCEEDED: u8 = 0x00;
const NOT_ALLOWED: u8 = 0x02;

struct Exit {
    peers: Peers,
    /// The laptop's local port to the open exit (no login).
    open: SocketAddr,
    /// The laptop's local port to the exit that wants alice's password.
    login: SocketAddr,
    /// The loopback echo server the policy allows.
    echo: SocketAddr,
}

/// The relay exposes two SOCKS exits on 10.77.0.1 that may reach only the
/// echo server's port on loopback; the laptop forwards a local port to each.
async fn start_exit() -> Exit {
    let echo = echo_service().await;
    let pair = Pair::new(
        &format!(
            r#"
[[expose]]
name = "exit"
listen = "10.77.0.1:1080"
to = "socks"
connect_timeout = "1m"
allow_destinations = ["127.0.0.1/32:{port}"]

[[expose]]
name = "login"
listen = "10.77.0.1:1081"
to = "socks"
connect_timeout = "1m"
username = "alice"
password = "correct horse"
allow_destinations = ["127.0.0.1/32:{port}"]
"#,
            port = echo.port()
        ),
        r#"
[[forward]]
name = "socks"
listen = "127.0.0.1:0"
to = "10.77.0.1:1080"

[[forward]]
name = "socks-login"
listen = "127.0.0.1:0"
to = "10.77.0.1:1081"
"#,
    )
    .await;
    let relay = parse(&pair.relay_toml, "relay.toml");
    let laptop = parse(&pair.home_toml, "laptop.toml");
    let (open_socket, open) = tcp_forward_socket().await;
    let (login_socket, login) = tcp_forward_socket().await;
    let mut peers = Peers::new();
    peers.start(relay, pinhole::Sockets::new(pair.relay_udp, vec![]));
    peers.start(
        laptop,
        pinhole::Sockets::new(any_udp().await, vec![open_socket, login_socket]),
    );
    Exit {
        peers,
        open,
        login,
        echo,
    }
}

/// What a SOCKS5 CONNECT asks for.
enum Target<'a> {
    Ip(SocketAddrV4),
    Name(&'a str, u16),
}

/// Reads exactly `n` bytes, or fails the test.
async fn read_n(conn: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, conn.read_exact(&mut buf))
        .await
        .expect("the SOCKS server did not answer")
        .expect("the SOCKS server closed early");
    buf
}

/// Greets with one method (0x00 none, 0x02 username/password) and returns
/// the method the server chose.
async fn greet(conn: &mut TcpStream, method: u8) -> u8 {
    conn.write_all(&[5, 1, method]).await.unwrap();
    let answer = read_n(conn, 2).await;
    assert_eq!(answer[0], 5, "not a SOCKS5 answer: {answer:?}");
    answer[1]
}

/// RFC 1929 login; returns the status byte (0 = success).
async fn login(conn: &mut TcpStream, user: &str, password: &str) -> u8 {
    let mut msg = vec![1, user.len() as u8];
    msg.extend_from_slice(user.as_bytes());
    msg.push(password.len() as u8);
    msg.extend_from_slice(password.as_bytes());
    conn.write_all(&msg).await.unwrap();
    let answer = read_n(conn, 2).await;
    assert_eq!(answer[0], 1, "not an RFC 1929 answer: {answer:?}");
    answer[1]
}

/// Sends CONNECT and returns REP.
async fn connect(conn: &mut TcpStream, target: Target<'_>) -> u8 {
    let mut msg = vec![5, 1, 0];
    match target {
        Target::Ip(addr) => {
            msg.push(1);
            msg.extend_from_slice(&addr.ip().octets());
            msg.extend_from_slice(&addr.port().to_be_bytes());
        }
        Target::Name(name, port) => {
            msg.push(3);
            msg.push(name.len() as u8);
            msg.extend_from_slice(name.as_bytes());
            msg.extend_from_slice(&port.to_be_bytes());
        }
    }
    conn.write_all(&msg).await.unwrap();
    let head = read_n(conn, 4).await;
    assert_eq!(head[0], 5, "not a SOCKS5 reply: {head:?}");
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(read_n(conn, 1).await[0]) + 2,
        other => panic!("bad ATYP {other} in the reply {head:?}"),
    };
    read_n(conn, rest).await;
    head[1]
}

/// One CONNECT through the open exit; returns REP and the connection.
async fn socks(via: SocketAddr, target: Target<'_>) -> (u8, TcpStream) {
    let mut conn = TcpStream::connect(via).await.unwrap();
    assert_eq!(
        greet(&mut conn, 0).await,
        0,
        "no-auth refused by the open exit"
    );
    let rep = connect(&mut conn, target).await;
    (rep, conn)
}

/// Data sent after a successful CONNECT comes back from the echo server.
async fn assert_echoes(conn: &mut TcpStream, what: &str) {
    let data = pattern(10_000, 5);
    conn.write_all(&data).await.unwrap();
    let back = read_n(conn, data.len()).await;
    assert!(back == data, "{what}: the echo came back changed");
}

/// After a refusal the exit closes the connection, and nothing else arrives.
/// (The client then closes too, so no connection is left for shutdown to drain.)
async fn assert_closed_without_data(mut conn: TcpStream) {
    let after = read_until_closed(&mut conn).await;
    assert!(after.is_empty(), "data after a refusal: {after:?}");
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("expected IPv4, got {a}"),
    }
}

/// Waits until the laptop reaches the exit and a CONNECT by IP works.
async fn wait_until_exit_serves(exit: &Exit) {
    let echo = v4(exit.echo);
    wait_for("the SOCKS exit through the tunnel", WAIT, || async {
        let attempt = tokio::time::timeout(Duration::from_secs(3), async {
            let mut conn = TcpStream::connect(exit.open).await.ok()?;
            conn.write_all(&[5, 1, 0]).await.ok()?;
            let mut answer = [0u8; 2];
            conn.read_exact(&mut answer).await.ok()?;
            Some(())
        })
        .await;
        attempt.ok().flatten()
    })
    .await;
    let (rep, mut conn) = socks(exit.open, Target::Ip(echo)).await;
    assert_eq!(rep, SUCCEEDED, "CONNECT to the allowed echo server by IP");
    assert_echoes(&mut conn, "CONNECT by IP").await;
    finish(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_ip_and_by_name_carries_data() {
    let exit = start_exit().await;
    wait_until_exit_serves(&exit).await;

    // By IP.
    let (rep, mut conn) = socks(exit.open, Target::Ip(v4(exit.echo))).await;
    assert_eq!(rep, SUCCEEDED);
    assert_echoes(&mut conn, "CONNECT 127.0.0.1").await;
    finish(conn).await;

    // By name, resolved at the exit: "localhost" may also give ::1, which the
    // policy refuses; 127.0.0.1 is allowed and must be the one used.
    let (rep, mut conn) = socks(exit.open, Target::Name("localhost", exit.echo.port())).await;
    assert_eq!(rep, SUCCEEDED, "CONNECT localhost:{}", exit.echo.port());
    assert_echoes(&mut conn, "CONNECT localhost").await;
    finish(conn).await;
    exit.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_destinations_get_not_allowed_at_once() {
    let exit = start_exit().await;
    wait_until_exit_serves(&exit).await;

    // Loopback, but another port than the one allowed: something listens
    // there, so only the policy can refuse it.
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = v4(other.local_addr().unwrap());
    let (rep, conn) = socks(exit.open, Target::Ip(other)).await;
    assert_eq!(
        rep, NOT_ALLOWED,
        "CONNECT {other} (loopback, port not allowed)"
    );
    assert_closed_without_data(conn).await;

    // The cloud metadata address. The exit's connect_timeout is a minute,
    // longer than this test waits, so an answer at all means it was not dialed.
    let metadata = SocketAddrV4::new(Ipv4Addr::new(169, 254, 169, 254), 80);
    let (rep, conn) = socks(exit.open, Target::Ip(metadata)).await;
    assert_eq!(rep, NOT_ALLOWED, "CONNECT {metadata} (link-local)");
    assert_closed_without_data(conn).await;

    // A name that resolves only to refused addresses is refused too.
    let (rep, conn) = socks(exit.open, Target::Name("localhost", other.port())).await;
    assert_eq!(rep, NOT_ALLOWED, "CONNECT localhost:{}", other.port());
    assert_closed_without_data(conn).await;
    exit.peers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_exit_admits_the_right_password_and_refuses_a_wrong_one() {
    let exit = start_exit().await;
    wait_until_exit_serves(&exit).await;

    // Wrong password: the method is accepted, the login refused, the
    // connection closed without reaching CONNECT.
    let mut conn = TcpStream::connect(exit.login).await.unwrap();
    assert_eq!(
        greet(&mut conn, 2).await,
        2,
        "username/password not offered"
    );
    let status = login(&mut conn, "alice", "wrong horse").await;
    assert_ne!(status, 0, "a wrong password was accepted");
    assert_closed_without_data(conn).await;

    // No authentication at all: "no acceptable methods" (0xFF).
    let mut conn = TcpStream::connect(exit.login).await.unwrap();
    assert_eq!(
        greet(&mut conn, 0).await,
        0xFF,
        "the login exit let a client in without a password"
    );
    assert_closed_without_data(conn).await;

    // The right password works end to end.
    let mut conn = TcpStream::connect(exit.login).await.unwrap();
    assert_eq!(greet(&mut conn, 2).await, 2);
    assert_eq!(login(&mut conn, "alice", "correct horse").await, 0);
    assert_eq!(
        connect(&mut conn, Target::Ip(v4(exit.echo))).await,
        SUCCEEDED
    );
    assert_echoes(&mut conn, "after login").await;
    finish(conn).await;
    exit.peers.stop().await;
}
