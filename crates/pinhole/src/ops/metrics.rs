//! `[metrics] listen = "127.0.0.1:9100"`: the status figures for Prometheus.
//!
//! A deliberately tiny HTTP/1.1 server: `GET /metrics` (or `HEAD`) answers
//! 200 with [`render_prometheus`] as `text/plain; version=0.0.4`; any other
//! path is 404, any other method on `/metrics` 405. One request per
//! connection (`Connection: close`), request head at most [`MAX_REQUEST`]
//! bytes, read within 5 s, at most 16 clients at once. It never serves
//! anything but counters, but the counters name peers and services: bind it
//! to loopback or a private address.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::control::Control;
use super::server::{serve_clients, OnShutdown};
use super::status::render_prometheus;
use super::{READ_TIMEOUT, WRITE_TIMEOUT};

/// Largest request head (request line and headers) we read.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve_metrics<C: Control>(
    listener: TcpListener,
    source: Arc<C>,
    shutdown: CancellationToken,
) {
    serve_clients(
        listener,
        "metrics",
        shutdown,
        OnShutdown::Drop,
        source,
        handle,
    )
    .await;
}

async fn handle<C: Control>(mut stream: TcpStream, source: Arc<C>) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => Head::Incomplete,
    };
    let (status, content_type, body, head_only): (&str, &str, String, bool) = match head {
        Head::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".into(),
            false,
        ),
        Head::Incomplete => (
            "400 Bad Request",
            "text/plain",
            "incomplete request\n".into(),
            false,
        ),
        Head::Complete(line) => {
            let mut parts = line.split(' ');
            let (method, target, version) = (parts.next(), parts.next(), parts.next());
            let path = target.map(|t| t.split('?').next().unwrap_or(t));
            match (method, path, version) {
                (Some(m), Some(p), Some(v)) if v.starts_with("HTTP/") && parts.next().is_none() => {
                    match (m, p) {
                        ("GET" | "HEAD", "/metrics") => (
                            "200 OK",
                            "text/plain; version=0.0.4; charset=utf-8",
                            render_prometheus(&source.status().await),
                            m == "HEAD",
                        ),
                        (_, "/metrics") => (
                            "405 Method Not Allowed",
                            "text/plain",
                            "use GET\n".into(),
                            false,
                        ),
                        _ => (
                            "404 Not Found",
                            "text/plain",
                            "not found; try /metrics\n".into(),
                            false,
                        ),
                    }
                }
                _ => (
                    "400 Bad Request",
                    "text/plain",
                    "bad request line\n".into(),
                    false,
                ),
            }
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" }
    );
    if !head_only {
        response.push_str(&body);
    }
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not read the answer"))?
}

enum Head {
    /// The request line of a complete head.
    Complete(String),
    TooLarge,
    Incomplete,
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Incomplete);
        }
        buf.extend_from_slice(&chunk[..n]);
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| {
                // Be lenient with bare newlines (`printf 'GET /metrics HTTP/1.0\n\n' | nc`).
                buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
            });
        if let Some(end) = end {
            if end > MAX_REQUEST {
                return Ok(Head::TooLarge);
            }
            let head = String::from_utf8_lossy(&buf[..end]);
            let line = head
                .lines()
                .next()
                .unwrap_or("")
                .trim_end_matches('\r')
                .to_string();
            return Ok(Head::Complete(line));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::status::{sample, Status};
    use super::*;
    use std::time::Duration;

    const DEADLINE: Duration = Duration::from_secs(10);

    struct Fake;

    impl Control for Fake {
        async fn status(&self) -> Status {
            sample()
        }
        async fn reload(&self) -> Result<String, String> {
            Err("not here".into())
        }
    }

    async fn ask(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        // The server may close before reading everything a misbehaving client sent.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        tokio::time::timeout(DEADLINE, async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = CancellationToken::new();
            let server = tokio::spawn(serve_metrics(listener, Arc::new(Fake), shutdown.clone()));

            let out = ask(
                addr,
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            )
            .await;
            let (head, body) = out.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(
                head.contains("Content-Type: text/plain; version=0.0.4"),
                "{head}"
            );
            assert!(head.contains("Connection: close"), "{head}");
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{head}"
            );
            assert_eq!(body, render_prometheus(&sample()));
            assert!(body.contains("pinhole_forward_connections_active{name=\"web\""));

            let out = ask(addr, b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n").await;
            assert!(
                out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\n"),
                "{out}"
            );

            let out = ask(addr, b"GET / HTTP/1.1\r\n\r\n").await;
            assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");

            let out = ask(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
            assert!(
                out.starts_with("HTTP/1.1 405 ") && out.contains("Allow: GET, HEAD"),
                "{out}"
            );

            let out = ask(addr, b"garbage\r\n\r\n").await;
            assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

            let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
            huge.extend(std::iter::repeat_n(b'a', 2 * MAX_REQUEST));
            let out = ask(addr, &huge).await;
            assert!(out.is_empty() || out.starts_with("HTTP/1.1 431 "), "{out}");

            // A client that leaves half way does not stop the server.
            let mut half = TcpStream::connect(addr).await.unwrap();
            half.write_all(b"GET /met").await.unwrap();
            drop(half);
            let out = ask(addr, b"GET /metrics HTTP/1.0\n\n").await;
            assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");

            shutdown.cancel();
            server.await.unwrap();
            // The listener is closed: connecting fails, or (if a child process
            // forked by a parallel test still holds the fd until its exec) the
            // connection is never answered and is reset.
            if let Ok(mut late) = TcpStream::connect(addr).await {
                let mut out = Vec::new();
                let _ = late.read_to_end(&mut out).await;
                assert!(out.is_empty(), "answered after shutdown");
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_answered_400_after_the_read_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(listener, Arc::new(Fake), shutdown.clone()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        shutdown.cancel();
        server.await.unwrap();
    }
}
