//! Changing a running relay without dropping anyone: a held connection keeps
//! echoing while the config gains a forward (reload says so, the forward
//! works) and while the file is broken (reload refuses, naming file, line
//! and key, and everything keeps working). Status over the control socket
//! shows the handshake and the counts, with the JSON keys of the contract.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pinhole::ops::control::{request, send_reload};
use pinhole_config::Config;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A connection through the tunnel that sends a numbered line every few
/// milliseconds and checks each echo before sending the next.
struct Held {
    echoes: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(u64, TcpStream), String>>,
}

impl Held {
    async fn open(public: SocketAddr) -> Held {
        let conn = TcpStream::connect(public).await.unwrap();
        let echoes = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (count, halt) = (echoes.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut conn = BufReader::new(conn);
            let mut n = 0u64;
            while !halt.is_cancelled() {
                let line = format!("line {n}\n");
                conn.get_mut()
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| format!("write of echo {n} failed: {e}"))?;
                let mut back = String::new();
                match tokio::time::timeout(WAIT, conn.read_line(&mut back)).await {
                    Err(_) => return Err(format!("echo {n} never came")),
                    Ok(Err(e)) => return Err(format!("echo {n} failed: {e}")),
                    Ok(Ok(0)) => return Err(format!("closed before echo {n}")),
                    Ok(Ok(_)) if back != line => {
                        return Err(format!("echo {n} was {back:?}, sent {line:?}"))
                    }
                    Ok(Ok(_)) => {}
                }
                n += 1;
                count.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok((n, conn.into_inner()))
        });
        Held { echoes, stop, task }
    }

    /// Waits until `more` echoes have come back after this call: the
    /// connection is alive now, not only before.
    async fn still_echoing(&self, more: u64, when: &str) {
        let from = self.echoes.load(Ordering::SeqCst);
        wait_for(
            &format!("the held connection to echo {when}"),
            WAIT,
            || async { (self.echoes.load(Ordering::SeqCst) >= from + more).then_some(()) },
        )
        .await;
    }

    /// Stops the pinger; panics if any echo was missed or wrong.
    async fn close(self) -> u64 {
        self.stop.cancel();
        let ended = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the held connection's pinger hung")
            .expect("the pinger panicked");
        let (n, conn) = ended.unwrap_or_else(|why| panic!("the held connection broke: {why}"));
        finish(conn).await;
        n
    }
}

fn load(path: &Path) -> Config {
    match Config::load(path) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{} does not load: {e:#}", path.display()),
    }
}

struct Running {
    peers: Peers,
    web: SocketAddr,
    relay_file: PathBuf,
    relay_ctl: PathBuf,
    tmp: TempDir,
}

async fn start() -> Running {
    let tmp = TempDir::new("reload");
    let echo = echo_service().await;
    let pair = Pair::new(
        r#"
[[forward]]
name = "web"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
"#,
        &format!(
            r#"
[[expose]]
name = "web"
listen = "10.77.0.2:80"
to = "{echo}"
"#
        ),
    )
    .await;
    let relay_file = tmp.path("relay.toml");
    let home_file = tmp.path("home.toml");
    std::fs::write(&relay_file, &pair.relay_toml).unwrap();
    std::fs::write(&home_file, &pair.home_toml).unwrap();

    let relay_ctl = tmp.path("relay.sock");
    let (web_socket, web) = tcp_forward_socket().await;
    let mut relay_sockets = pinhole::Sockets::new(pair.relay_udp, vec![web_socket]);
    relay_sockets.control = Some(control_socket(&relay_ctl));
    let mut peers = Peers::new();
    peers.start(load(&relay_file), relay_sockets);
    peers.start(
        load(&home_file),
        pinhole::Sockets::new(any_udp().await, vec![]),
    );
    Running {
        peers,
        web,
        relay_file,
        relay_ctl,
        tmp,
    }
}

const ADDED: &str = r#"
[[forward]]
name = "added"
listen = "127.0.0.1:0"
to = "10.77.0.2:80"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_survives_a_good_reload_and_a_broken_one() {
    let relay = start().await;
    wait_until_echoing(relay.web, WAIT).await;
    let held = Held::open(relay.web).await;
    held.still_echoing(5, "before any reload").await;

    // (a) The relay gains a forward; reload applies it and says so.
    let original = std::fs::read_to_string(&relay.relay_file).unwrap();
    let grown = format!("{original}{ADDED}");
    std::fs::write(&relay.relay_file, &grown).unwrap();
    let answer = send_reload(&relay.relay_ctl)
        .await
        .expect("ask the relay to reload");
    let changes = answer.unwrap_or_else(|why| panic!("a good file was refused: {why}"));
    assert!(
        changes.contains("\"added\""),
        "reload does not mention the new forward: {changes:?}"
    );
    assert!(
        !changes.contains("\"web\""),
        "the unchanged forward was touched: {changes:?}"
    );
    let s = status(&relay.relay_ctl).await;
    let added: SocketAddr = forward(&s, "added")
        .listen
        .parse()
        .expect("status shows the new forward's bound address");
    assert_ne!(added.port(), 0);
    wait_until_echoing(added, WAIT).await;
    held.still_echoing(5, "after the good reload").await;

    // (b) A typo in the file: reload refuses, says where and what, and
    // changes nothing.
    let broken = format!("{grown}bogus_key = 1\n");
    let line = broken.lines().count();
    std::fs::write(&relay.relay_file, &broken).unwrap();
    let answer = send_reload(&relay.relay_ctl)
        .await
        .expect("ask the relay to reload");
    let why = answer.expect_err("a file with an unknown key was accepted");
    let place = format!("{}:{line}:", relay.relay_file.display());
    assert!(
        why.contains(&place),
        "the refusal does not name {place}: {why:?}"
    );
    assert!(
        why.contains("bogus_key"),
        "the refusal does not name the key: {why:?}"
    );
    let back = round_trip(relay.web, b"old forward".to_vec()).await;
    assert_eq!(back, b"old forward", "the original forward stopped working");
    let back = round_trip(added, b"new forward".to_vec()).await;
    assert_eq!(back, b"new forward", "the added forward stopped working");
    let s = status(&relay.relay_ctl).await;
    assert_eq!(
        s.forwards
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["web", "added"],
        "a refused reload changed the forwards"
    );
    held.still_echoing(5, "after the refused reload").await;

    let echoes = held.close().await;
    assert!(echoes >= 15);
    relay.peers.stop().await;
    drop(relay.tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_handshake_and_the_counts_with_the_contract_keys() {
    let relay = start().await;
    wait_until_echoing(relay.web, WAIT).await;
    let held = Held::open(relay.web).await;
    held.still_echoing(3, "for status").await;

    let s = status(&relay.relay_ctl).await;
    let home = peer(&s, "home");
    assert!(
        home.latest_handshake.is_some(),
        "no handshake shown: {home:?}"
    );
    assert!(home.rx_bytes > 0 && home.tx_bytes > 0, "{home:?}");
    let web = forward(&s, "web");
    assert!(web.total >= 1, "{web:?}");
    assert!(web.active >= 1, "the held connection is not live: {web:?}");
    assert!(
        web.rx_bytes > 0 && web.tx_bytes > 0,
        "no bytes counted: {web:?}"
    );
    assert_eq!(web.listen, relay.web.to_string());
    assert_eq!(web.to, "10.77.0.2:80");

    // The JSON keys are a contract (issue 4): check them on the wire.
    let json = request(&relay.relay_ctl, "status").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let peer = &v["status"]["peers"][0];
    for key in [
        "name",
        "public_key",
        "endpoint",
        "latest_handshake",
        "rx_bytes",
        "tx_bytes",
    ] {
        assert!(peer.get(key).is_some(), "peer has no {key:?}: {peer}");
    }
    assert!(peer["latest_handshake"].as_u64().is_some(), "{peer}");
    let fwd = &v["status"]["forwards"][0];
    for key in [
        "name", "protocol", "listen", "to", "active", "total", "refused", "rx_bytes", "tx_bytes",
    ] {
        assert!(fwd.get(key).is_some(), "forward has no {key:?}: {fwd}");
    }
    assert!(v["status"]["exposes"].is_array(), "{v}");

    held.close().await;
    relay.peers.stop().await;
}
