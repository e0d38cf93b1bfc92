//! The per-peer control socket: `pinhole status` and `pinhole reload` talk to
//! a running `pinhole up` through it.
//!
//! A Unix stream socket, mode 0600 (only the user running the peer, and root,
//! can use it). One request per connection: the client writes one line,
//! `status` or `reload`, and the server answers with one JSON document
//! followed by a newline, then closes:
//!
//! - `{"ok":true,"status":{…}}`: a [`Status`];
//! - `{"ok":true,"changes":"…"}`: what a reload changed;
//! - `{"ok":false,"error":"…"}`: why nothing changed, or what was wrong with the request.
//!
//! The server bounds what a client can cost: a request line of at most
//! [`MAX_REQUEST`] bytes, read within 5 s, at most 16 clients at once; a bad
//! client gets an error document (or is dropped), never stops the server.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::server::{serve_clients, OnShutdown};
use super::status::Status;
use super::{READ_TIMEOUT, WRITE_TIMEOUT};

/// Longest request line the server reads, newline included.
pub const MAX_REQUEST: usize = 1024;
/// How long the client waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits for the answer (a reload may resolve host names).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer the client accepts.
const MAX_RESPONSE: u64 = 16 << 20;

/// What the running peer does for the control socket. Implemented by the
/// peer; the server only calls it.
///
/// Implementations may use `async fn` (the futures must be `Send`).
pub trait Control: Send + Sync + 'static {
    /// A snapshot of the peer, peers, forwards and exposes.
    fn status(&self) -> impl Future<Output = Status> + Send;
    /// Re-reads the config file and applies what changed.
    ///
    /// `Ok`: a human summary of what changed ("nothing changed" is an `Ok`
    /// too). `Err`: why nothing was changed (e.g. the file no longer
    /// validates; the message should carry file:line and the fix).
    fn reload(&self) -> impl Future<Output = Result<String, String>> + Send;
}

/// Binds the control socket at `path`: parent directory created 0700 if
/// missing, a stale socket (nobody answers) replaced, a live one refused with
/// [`io::ErrorKind::AddrInUse`], the socket made 0600 before anyone can
/// connect (`fchmod` of the unbound socket, checked after bind; see
/// `bind_private_socket` in [`crate::ops`]).
///
/// Must be called from within a Tokio runtime.
pub fn bind_control(path: &Path) -> io::Result<UnixListener> {
    super::bind_private_socket(path, 0o700)
}

/// The wire form of every answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Wire {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// An answer from the control socket, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(Box<Status>),
    Changes(String),
    Error(String),
}

impl Reply {
    /// The JSON document sent on the wire, without the trailing newline.
    pub fn to_json(&self) -> String {
        let wire = match self {
            Reply::Status(s) => Wire {
                ok: true,
                status: Some((**s).clone()),
                changes: None,
                error: None,
            },
            Reply::Changes(c) => Wire {
                ok: true,
                status: None,
                changes: Some(c.clone()),
                error: None,
            },
            Reply::Error(e) => Wire {
                ok: false,
                status: None,
                changes: None,
                error: Some(e.clone()),
            },
        };
        serde_json::to_string(&wire).expect("a reply always serializes")
    }

    /// Decodes a document from [`request`].
    pub fn parse(json: &str) -> io::Result<Reply> {
        let wire: Wire = serde_json::from_str(json).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer from the control socket: {e}"),
            )
        })?;
        match wire {
            Wire {
                ok: true,
                status: Some(s),
                ..
            } => Ok(Reply::Status(Box::new(s))),
            Wire {
                ok: true,
                changes: Some(c),
                ..
            } => Ok(Reply::Changes(c)),
            Wire {
                ok: false, error, ..
            } => Ok(Reply::Error(
                error.unwrap_or_else(|| "unknown error".into()),
            )),
            Wire { ok: true, .. } => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected answer from the control socket: ok without status or changes",
            )),
        }
    }
}

/// Serves the control socket until `shutdown` is cancelled, then removes the
/// socket file. Requests still being answered get `SHUTDOWN_GRACE` to
/// finish before they are dropped.
pub async fn serve_control<C: Control>(
    listener: UnixListener,
    control: Arc<C>,
    shutdown: CancellationToken,
) {
    let token = shutdown.clone();
    serve_clients(
        listener,
        "control socket",
        shutdown,
        OnShutdown::Finish,
        control,
        move |stream, control| {
            let shutdown = token.clone();
            async move { handle(stream, &*control, &shutdown).await }
        },
    )
    .await;
}

async fn handle<C: Control>(
    mut stream: UnixStream,
    control: &C,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let line = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        read = tokio::time::timeout(READ_TIMEOUT, read_line(&mut stream, MAX_REQUEST)) => match read {
            Ok(line) => line?,
            Err(_) => Err(format!("no request within {} s", READ_TIMEOUT.as_secs())),
        },
    };
    let unread_input = line.is_err();
    let reply = match line {
        Err(why) => Reply::Error(why),
        Ok(command) => match command.trim() {
            "status" => Reply::Status(Box::new(control.status().await)),
            "reload" => match control.reload().await {
                Ok(changes) => Reply::Changes(changes),
                Err(why) => Reply::Error(why),
            },
            "" => Reply::Error("empty request; expected `status` or `reload`".into()),
            other => Reply::Error(format!(
                "unknown command {:?}; expected `status` or `reload`",
                other.chars().take(64).collect::<String>()
            )),
        },
    };
    let mut doc = reply.to_json();
    doc.push('\n');
    let write = async {
        stream.write_all(doc.as_bytes()).await?;
        stream.shutdown().await?;
        if unread_input {
            // Closing with unread input makes the kernel reset the client's
            // read, losing our error answer; discard (a bounded amount of) it first.
            let _ = (&mut stream)
                .take(DRAIN_LIMIT)
                .read_to_end(&mut Vec::new())
                .await;
        }
        Ok(())
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not read the answer"))?
}

/// Most input discarded after a bad request, so the client can read our answer.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Reads one line of at most `max` bytes. The outer `Err` is an I/O error
/// (drop the client); the inner one a bad request (answer with it).
/// End of input counts as the end of the line, so `printf status | nc -U` works.
async fn read_line(stream: &mut UnixStream, max: usize) -> io::Result<Result<String, String>> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            break;
        }
        if buf.len() > max {
            return Ok(Err(format!("request longer than {max} bytes")));
        }
    }
    if buf.len() > max {
        return Ok(Err(format!("request longer than {max} bytes")));
    }
    Ok(String::from_utf8(buf).map_err(|_| "request is not UTF-8".to_string()))
}

/// Sends `command` (`status` or `reload`) to the control socket at `path` and
/// returns the JSON answer (see [`Reply::parse`]).
///
/// Errors say what to do: no socket means no peer is running for this config.
pub async fn request(path: &Path, command: &str) -> io::Result<String> {
    let shown = path.display();
    let not_running = |e: io::Error, what: &str| {
        io::Error::new(
            e.kind(),
            format!("{what} {shown}: is `pinhole up -c FILE` running for this config? ({e})"),
        )
    };
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await {
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer did not accept on {shown} within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        }
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(match e.kind() {
                io::ErrorKind::NotFound => not_running(e, "no control socket at"),
                io::ErrorKind::ConnectionRefused => {
                    not_running(e, "nothing answers on (a stale socket from a peer that stopped?)")
                }
                io::ErrorKind::PermissionDenied => io::Error::new(
                    e.kind(),
                    format!("{shown} belongs to another user: run this as the user running `pinhole up` (or root) ({e})"),
                ),
                _ => io::Error::new(e.kind(), format!("cannot connect to {shown}: {e}")),
            })
        }
    };
    let exchange = async {
        stream
            .write_all(format!("{}\n", command.trim()).as_bytes())
            .await?;
        let mut answer = String::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_string(&mut answer)
            .await?;
        Ok::<_, io::Error>(answer)
    };
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no answer on {shown} within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| io::Error::new(e.kind(), format!("talking to {shown}: {e}")))?;
    if answer.trim().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{shown} closed without answering"),
        ));
    }
    Ok(answer.trim_end().to_string())
}

/// `status` over the control socket; an error answer becomes an `io::Error`.
pub async fn fetch_status(path: &Path) -> io::Result<Status> {
    match Reply::parse(&request(path, "status").await?)? {
        Reply::Status(s) => Ok(*s),
        Reply::Error(e) => Err(io::Error::other(e)),
        Reply::Changes(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected a status answer",
        )),
    }
}

/// `reload` over the control socket: outer `Err` if the peer could not be
/// asked, inner `Ok(what changed)` / `Err(why nothing changed)` otherwise.
pub async fn send_reload(path: &Path) -> io::Result<Result<String, String>> {
    match Reply::parse(&request(path, "reload").await?)? {
        Reply::Changes(c) => Ok(Ok(c)),
        Reply::Error(e) => Ok(Err(e)),
        Reply::Status(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected a reload answer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::status::sample;
    use super::super::testutil::TempDir;
    use super::super::MAX_CLIENTS;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    const DEADLINE: Duration = Duration::from_secs(10);

    struct Fake {
        reloads: AtomicU32,
    }

    impl Control for Fake {
        async fn status(&self) -> Status {
            sample()
        }
        async fn reload(&self) -> Result<String, String> {
            match self.reloads.fetch_add(1, Ordering::SeqCst) {
                0 => Ok("forward \"web\": listen 0.0.0.0:8080 -> 0.0.0.0:8081".into()),
                _ => Err(
                    "relay.toml:3:9: [[forward]] listen: not an address; nothing changed".into(),
                ),
            }
        }
    }

    async fn start(
        tag: &str,
    ) -> (
        TempDir,
        PathBuf,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let tmp = TempDir::new(tag);
        let path = tmp.0.join("run/peer.sock");
        let listener = bind_control(&path).unwrap();
        let shutdown = CancellationToken::new();
        let fake = Arc::new(Fake {
            reloads: AtomicU32::new(0),
        });
        let server = tokio::spawn(serve_control(listener, fake, shutdown.clone()));
        (tmp, path, shutdown, server)
    }

    async fn raw(path: &Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn status_and_reload_round_trip_then_shutdown_removes_the_socket() {
        tokio::time::timeout(DEADLINE, async {
            let (_tmp, path, shutdown, server) = start("ctl").await;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            assert_eq!(
                std::fs::metadata(path.parent().unwrap())
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o700
            );

            let json = request(&path, "status").await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["ok"], true);
            assert_eq!(v["status"]["peers"][0]["name"], "home");
            assert_eq!(fetch_status(&path).await.unwrap(), sample());

            assert_eq!(
                send_reload(&path).await.unwrap(),
                Ok("forward \"web\": listen 0.0.0.0:8080 -> 0.0.0.0:8081".into())
            );
            let json = request(&path, "reload").await.unwrap();
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["ok"], false);
            assert!(v["error"].as_str().unwrap().contains("relay.toml:3:9"));

            shutdown.cancel();
            server.await.unwrap();
            assert!(!path.exists(), "socket file removed on shutdown");
            let err = request(&path, "status").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert!(
                err.to_string().contains("is `pinhole up -c FILE` running"),
                "{err}"
            );
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn bad_clients_get_errors_and_the_server_keeps_serving() {
        tokio::time::timeout(DEADLINE, async {
            let (_tmp, path, shutdown, server) = start("bad").await;

            let out = raw(&path, b"frobnicate\n").await;
            assert!(
                out.contains("\"ok\":false") && out.contains("unknown command"),
                "{out}"
            );
            assert!(out.ends_with('\n'));

            let out = raw(&path, &vec![b'a'; 4 * MAX_REQUEST]).await;
            assert!(out.contains("longer than 1024 bytes"), "{out}");

            let out = raw(&path, b"\xff\xfe\n").await;
            assert!(out.contains("not UTF-8"), "{out}");

            // No newline, just end of input: still a request.
            let mut s = UnixStream::connect(&path).await.unwrap();
            s.write_all(b"status").await.unwrap();
            s.shutdown().await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("{\"ok\":true,\"status\":"), "{out}");

            // A client that connects and leaves at once.
            drop(UnixStream::connect(&path).await.unwrap());

            // More idle clients than the server serves at once: the server
            // still answers once they leave.
            let mut idle = Vec::new();
            for _ in 0..MAX_CLIENTS + 4 {
                idle.push(UnixStream::connect(&path).await.unwrap());
            }
            drop(idle);
            assert!(fetch_status(&path).await.is_ok());

            shutdown.cancel();
            server.await.unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_the_read_timeout() {
        let tmp = TempDir::new("slow");
        let path = tmp.0.join("s.sock");
        let listener = bind_control(&path).unwrap();
        let shutdown = CancellationToken::new();
        let fake = Arc::new(Fake {
            reloads: AtomicU32::new(0),
        });
        let server = tokio::spawn(serve_control(listener, fake, shutdown.clone()));
        let mut silent = UnixStream::connect(&path).await.unwrap();
        // With paused time, the runtime jumps the clock to the server's 5 s timer.
        let mut out = String::new();
        silent.read_to_string(&mut out).await.unwrap();
        assert!(out.contains("no request within 5 s"), "{out}");
        shutdown.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_second_peer_cannot_take_over_a_live_socket() {
        let (_tmp, path, shutdown, server) = start("twice").await;
        let err = bind_control(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(
            fetch_status(&path).await.is_ok(),
            "the first peer still answers"
        );
        shutdown.cancel();
        server.await.unwrap();
    }

    #[test]
    fn reply_parse_round_trips_and_rejects_garbage() {
        assert!(Reply::parse("not json").is_err());
        assert_eq!(
            Reply::parse(r#"{"ok":false,"error":"x"}"#).unwrap(),
            Reply::Error("x".into())
        );
        assert_eq!(
            Reply::parse(&Reply::Changes("c".into()).to_json()).unwrap(),
            Reply::Changes("c".into())
        );
    }
}
