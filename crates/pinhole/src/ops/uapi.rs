//! WireGuard's cross-platform userspace API (UAPI), `get=1` only, so that
//! `wg show` and `wg showconf` work against a running Pinhole peer.
//!
//! `wg` finds userspace implementations by their socket,
//! `/var/run/wireguard/NAME.sock`, writes `get=1\n\n`, and reads `key=value`
//! lines up to `errno=0` and an empty line. We answer in the order
//! wireguard-go does: `private_key`, `listen_port`, `fwmark` (if set), then per
//! peer `public_key`, `preshared_key` (all-zero hex when there is none: `wg`
//! treats zero as "no key"), `protocol_version=1`, `endpoint` (if known),
//! `last_handshake_time_sec`/`_nsec` (Unix time, 0/0 when never),
//! `tx_bytes`, `rx_bytes`, `persistent_keepalive_interval` (0 when off) and
//! one `allowed_ip` per CIDR. Unlike boringtun 0.7.1, which prints
//! `own_public_key` (ignored by `wg`, so it shows no public key) and the time
//! *since* the handshake, we print what `wg` parses: the private key, from
//! which it derives the public key (it prints "(hidden)" for the private key
//! unless asked), and the absolute time.
//!
//! `set=1` is refused with `errno=-1` (EPERM; negative, as wireguard-go sends
//! errnos and as `wg` expects them, so `wg set` prints "Unable to modify
//! interface: Operation not permitted"): Pinhole's configuration comes
//! from its file, so `wg set`/`wg syncconf` would be silently undone by the
//! next reload. Edit the file and run `pinhole reload` instead.
//!
//! The socket is 0600 in a 0755 directory, as wg-quick and wireguard-go make
//! them: only root (and the owner) can ask, because the answer carries the
//! private key.
//!
//! Keys are passed as raw `[u8; 32]` (what the config's key types and the
//! engine hold); this module hex-encodes them, so no base64 round trip.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::server::{serve_clients, OnShutdown};
use super::{READ_TIMEOUT, WRITE_TIMEOUT};

/// Longest request line we read.
const MAX_LINE: usize = 1024;
/// Most bytes of a request we read (a refused `set=1` is read to its end, so
/// `wg` gets our answer rather than a connection reset).
const MAX_REQUEST: usize = 64 * 1024;
/// errno for `set=1`: Operation not permitted. Negative, as wireguard-go
/// sends them: `wg` sets `errno = -value`, so `errno=1` would print
/// "Unknown error -1" and `errno=-1` prints "Operation not permitted".
const EPERM: i32 = -1;
/// errno for anything that is neither `get=1` nor `set=1`: Invalid argument.
const EINVAL: i32 = -22;

/// The device as `get=1` reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct UapiDevice {
    /// This peer's private key (`wg` derives the public key from it).
    pub private_key: [u8; 32],
    /// The WireGuard UDP port actually bound; 0 leaves it out.
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: Vec<UapiPeer>,
}

impl std::fmt::Debug for UapiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UapiDevice")
            .field("private_key", &"(hidden)")
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("peers", &self.peers)
            .finish()
    }
}

/// One peer as `get=1` reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct UapiPeer {
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    /// Current endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `None` or 0 is off.
    pub persistent_keepalive: Option<u16>,
    /// `(address, prefix length)`.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Wall-clock time of the latest completed handshake.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl std::fmt::Debug for UapiPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UapiPeer")
            .field("public_key", &hex(&self.public_key))
            .field("preshared_key", &self.preshared_key.map(|_| "(hidden)"))
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("allowed_ips", &self.allowed_ips)
            .field("last_handshake", &self.last_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .finish()
    }
}

/// What the running peer provides for `get=1`. Implementations may use `async fn`.
pub trait UapiSource: Send + Sync + 'static {
    fn device(&self) -> impl Future<Output = UapiDevice> + Send;
}

/// Binds the UAPI socket at `path` (normally `Config::uapi_socket_path()`,
/// `/var/run/wireguard/NAME.sock`): the
/// directory created 0755 if missing (as `wg` expects), the socket 0600, a
/// stale socket replaced and a live one refused with `AddrInUse`, like the
/// control socket. Must be called from within a Tokio runtime.
pub fn bind_uapi(path: &Path) -> io::Result<UnixListener> {
    super::bind_private_socket(path, 0o755)
}

/// Serves `get=1` until `shutdown` is cancelled, then removes the socket file.
pub async fn serve_uapi<S: UapiSource>(
    listener: UnixListener,
    source: Arc<S>,
    shutdown: CancellationToken,
) {
    serve_clients(
        listener,
        "UAPI socket",
        shutdown,
        OnShutdown::Drop,
        source,
        handle,
    )
    .await;
}

/// One connection may carry several operations, each ended by an empty line
/// (as in wireguard-go); `wg` sends one and closes.
async fn handle<S: UapiSource>(stream: UnixStream, source: Arc<S>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    loop {
        let Some(op) = timed(read_line(&mut reader)).await? else {
            return Ok(()); // end of input: `wg` probing whether we are alive
        };
        let (answer, errno) = match op.as_str() {
            // The empty line that ends a `get=1` is optional (boringtun does
            // not insist either); when it comes, the next turn skips it.
            "get=1" => (render_get(&source.device().await), 0),
            "set=1" => {
                // Read the whole request so the client sees our errno, not a reset.
                while let Some(line) = timed(read_line(&mut reader)).await? {
                    if line.is_empty() {
                        break;
                    }
                }
                (String::new(), EPERM)
            }
            "" => continue,
            _ => (String::new(), EINVAL),
        };
        let mut out = answer;
        let _ = write!(out, "errno={errno}\n\n");
        tokio::time::timeout(WRITE_TIMEOUT, write.write_all(out.as_bytes()))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "client did not read the answer")
            })??;
        if errno == EINVAL {
            return Ok(()); // we do not know where the next operation starts
        }
    }
}

async fn timed<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(READ_TIMEOUT, f).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no request within the read timeout",
        )
    })?
}

/// One line without its newline; `None` at end of input.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request line too long",
        ));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request is not UTF-8"))
}

/// The `get=1` answer body, without the final `errno=0` and empty line.
pub fn render_get(device: &UapiDevice) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "private_key={}", hex(&device.private_key));
    if device.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", device.listen_port);
    }
    if let Some(mark) = device.fwmark.filter(|m| *m != 0) {
        let _ = writeln!(out, "fwmark={mark}");
    }
    for p in &device.peers {
        let _ = writeln!(out, "public_key={}", hex(&p.public_key));
        let _ = writeln!(
            out,
            "preshared_key={}",
            hex(&p.preshared_key.unwrap_or([0; 32]))
        );
        let _ = writeln!(out, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            // SocketAddr's Display brackets IPv6 (`[2001:db8::1]:51820`), as `wg` parses it.
            let _ = writeln!(out, "endpoint={ep}");
        }
        let since_epoch = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since_epoch.as_secs());
        let _ = writeln!(
            out,
            "last_handshake_time_nsec={}",
            since_epoch.subsec_nanos()
        );
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive.unwrap_or(0)
        );
        for (ip, prefix) in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={ip}/{prefix}");
        }
    }
    out
}

/// Lower-case hex, as the UAPI wants keys.
pub fn hex(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::testutil::TempDir;
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    const DEADLINE: Duration = Duration::from_secs(20);
    /// Where `wg` looks for userspace interfaces.
    const SOCKET_DIR: &str = "/var/run/wireguard";

    struct Fake(UapiDevice);

    impl UapiSource for Fake {
        async fn device(&self) -> UapiDevice {
            self.0.clone()
        }
    }

    fn device() -> UapiDevice {
        let mut private_key = [0u8; 32];
        for (i, b) in private_key.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        private_key[0] &= 248; // clamped, as a real key
        private_key[31] = (private_key[31] & 127) | 64;
        UapiDevice {
            private_key,
            listen_port: 51820,
            fwmark: None,
            peers: vec![
                UapiPeer {
                    public_key: [0xab; 32],
                    preshared_key: None,
                    endpoint: Some("192.0.2.7:40000".parse().unwrap()),
                    persistent_keepalive: Some(25),
                    allowed_ips: vec![
                        ("10.77.0.2".parse().unwrap(), 32),
                        ("fd00:77::2".parse().unwrap(), 128),
                    ],
                    last_handshake: Some(SystemTime::now() - Duration::from_secs(63)),
                    rx_bytes: 1_268_777,
                    tx_bytes: 3_565_158,
                },
                UapiPeer {
                    public_key: [0xcd; 32],
                    preshared_key: Some([7; 32]),
                    endpoint: Some("[2001:db8::1]:51820".parse().unwrap()),
                    persistent_keepalive: None,
                    allowed_ips: vec![],
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
            ],
        }
    }

    #[test]
    fn get_output_is_what_wg_parses() {
        let mut d = device();
        d.peers[0].last_handshake = Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5));
        let text = render_get(&d);
        let expected_peer0 = format!(
            "public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=192.0.2.7:40000\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=3565158\n\
             rx_bytes=1268777\npersistent_keepalive_interval=25\nallowed_ip=10.77.0.2/32\n\
             allowed_ip=fd00:77::2/128\n",
            "ab".repeat(32),
            "00".repeat(32)
        );
        assert!(
            text.starts_with(&format!(
                "private_key={}\nlisten_port=51820\npublic_key=",
                hex(&d.private_key)
            )),
            "{text}"
        );
        assert!(text.contains(&expected_peer0), "{text}");
        assert!(text.contains(&format!("preshared_key={}\n", "07".repeat(32))));
        assert!(text.contains("endpoint=[2001:db8::1]:51820\n"));
        assert!(text.contains("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"));
        assert!(
            !format!("{d:?}").contains(&hex(&d.private_key)),
            "Debug hides the private key"
        );
    }

    async fn start(
        dir: &Path,
        name: &str,
    ) -> (PathBuf, CancellationToken, tokio::task::JoinHandle<()>) {
        let path = dir.join(format!("{name}.sock"));
        let listener = bind_uapi(&path).unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_uapi(
            listener,
            Arc::new(Fake(device())),
            shutdown.clone(),
        ));
        (path, shutdown, server)
    }

    async fn exchange(path: &Path, request: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(request).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        // A client the server drops mid-request may see a reset instead of EOF.
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn get_set_and_garbage_over_the_socket() {
        tokio::time::timeout(DEADLINE, async {
            let tmp = TempDir::new("uapi");
            let (path, shutdown, server) = start(&tmp.0, "wgx").await;

            let out = exchange(&path, b"get=1\n\n").await;
            assert!(out.starts_with("private_key="), "{out}");
            assert!(out.ends_with("errno=0\n\n"), "{out}");

            let out = exchange(&path, b"set=1\nprivate_key=00\nlisten_port=1\n\n").await;
            assert_eq!(out, "errno=-1\n\n");

            let out = exchange(&path, b"hello\n").await;
            assert_eq!(out, "errno=-22\n\n");

            // Two operations on one connection, as wireguard-go allows.
            let out = exchange(&path, b"get=1\n\nget=1\n\n").await;
            assert_eq!(out.matches("errno=0\n\n").count(), 2, "{out}");

            let out = exchange(&path, &vec![b'x'; 10_000]).await;
            assert_eq!(out, "", "an over-long line is dropped without an answer");

            // A probe that connects and leaves (what `wg show` does first).
            drop(UnixStream::connect(&path).await.unwrap());
            assert!(exchange(&path, b"get=1\n").await.ends_with("errno=0\n\n"));

            shutdown.cancel();
            server.await.unwrap();
            assert!(!path.exists());
        })
        .await
        .unwrap();
    }

    /// Drives the real `wg` tool against our socket in /var/run/wireguard.
    #[tokio::test]
    async fn real_wg_show_reads_our_socket() {
        let wg_ok = std::process::Command::new("wg")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !wg_ok {
            eprintln!("skipped: the `wg` tool is not installed (apt-get install wireguard-tools)");
            return;
        }
        let dir = Path::new(SOCKET_DIR);
        if std::fs::create_dir_all(dir).is_err()
            || std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly())
        {
            eprintln!("skipped: cannot write {SOCKET_DIR} (run as root)");
            return;
        }
        let name = format!("phtest{}", std::process::id() % 100_000);
        let path = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        let listener = match bind_uapi(&path) {
            Ok(listener) => listener,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                eprintln!("skipped: cannot bind in {SOCKET_DIR}: {e} (run as root)");
                return;
            }
            Err(e) => panic!("bind {name}: {e}"),
        };
        let shutdown = CancellationToken::new();
        let source = Arc::new(Fake(device()));
        let server = tokio::spawn(serve_uapi(listener, source, shutdown.clone()));
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let _cleanup = Cleanup(path.clone());

        // The server runs on this runtime, so `wg` runs on a blocking thread.
        let run = |args: Vec<String>| {
            let wg = tokio::task::spawn_blocking(move || {
                std::process::Command::new("wg").args(args).output()
            });
            async move { tokio::time::timeout(DEADLINE, wg).await.unwrap().unwrap() }
        };
        let dump = run(vec!["show".into(), name.clone(), "dump".into()])
            .await
            .unwrap();
        let dump_text = String::from_utf8_lossy(&dump.stdout).into_owned();
        assert!(
            dump.status.success(),
            "wg show dump failed: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        // dump: the interface line (private, public, port, fwmark), then per peer:
        // public-key psk endpoint allowed-ips latest-handshake rx tx keepalive.
        let lines: Vec<Vec<&str>> = dump_text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines.len(), 3, "{dump_text}");
        assert_eq!(lines[0][2], "51820", "{dump_text}");
        let d = device();
        let b64 = |k: &[u8; 32]| base64_std(k);
        assert_eq!(lines[1][0], b64(&d.peers[0].public_key), "{dump_text}");
        assert_eq!(lines[1][1], "(none)", "zero psk means none: {dump_text}");
        assert_eq!(lines[1][2], "192.0.2.7:40000", "{dump_text}");
        assert_eq!(lines[1][3], "10.77.0.2/32,fd00:77::2/128", "{dump_text}");
        let hs: u64 = lines[1][4].parse().unwrap();
        assert!(hs > 1_600_000_000, "{dump_text}");
        assert_eq!(
            (lines[1][5], lines[1][6], lines[1][7]),
            ("1268777", "3565158", "25"),
            "{dump_text}"
        );
        assert_eq!(lines[2][0], b64(&d.peers[1].public_key), "{dump_text}");
        assert_eq!(lines[2][1], b64(&[7; 32]), "{dump_text}");
        assert_eq!(lines[2][2], "[2001:db8::1]:51820", "{dump_text}");
        assert_eq!(
            (lines[2][3], lines[2][4], lines[2][7]),
            ("(none)", "0", "off"),
            "{dump_text}"
        );

        let show = run(vec!["show".into(), name.clone()]).await.unwrap();
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        assert!(
            show.status.success(),
            "wg show failed: {}",
            String::from_utf8_lossy(&show.stderr)
        );
        assert!(text.contains(&format!("interface: {name}")), "{text}");
        assert!(
            text.contains("public key: "),
            "wg derived our public key: {text}"
        );
        assert!(text.contains("listening port: 51820"), "{text}");
        assert!(
            text.contains(&format!("peer: {}", b64(&d.peers[0].public_key))),
            "{text}"
        );
        assert!(text.contains("endpoint: 192.0.2.7:40000"), "{text}");
        assert!(
            text.contains("allowed ips: 10.77.0.2/32, fd00:77::2/128"),
            "{text}"
        );
        assert!(text.contains("latest handshake: 1 minute, "), "{text}");
        assert!(
            text.contains("transfer: 1.21 MiB received, 3.40 MiB sent"),
            "{text}"
        );
        assert!(
            text.contains("persistent keepalive: every 25 seconds"),
            "{text}"
        );

        // `wg set` is refused, and says so.
        let set = run(vec![
            "set".into(),
            name.clone(),
            "listen-port".into(),
            "1".into(),
        ])
        .await
        .unwrap();
        assert!(!set.status.success());
        assert!(
            String::from_utf8_lossy(&set.stderr).contains("not permitted"),
            "{:?}",
            set
        );

        shutdown.cancel();
        server.await.unwrap();
        assert!(!path.exists());
    }

    /// Standard base64 with padding, for comparing with `wg`'s output.
    fn base64_std(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
