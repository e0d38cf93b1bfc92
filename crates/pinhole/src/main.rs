//! The `pinhole` command: one binary for every peer; the config decides the role.

/// Writes to stdout like `print!`, but a reader that went away (`pinhole add-peer | head`)
/// ends the command quietly, as for any Unix tool, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(&format!($($arg)*)) };
}
/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::write_stdout(&format!("{}\n", format_args!($($arg)*))) };
}

mod memory;
mod setup;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pinhole_config::keys::PrivateKey;
use pinhole_config::{Config, ConfigError};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pinhole",
    version,
    about = "An encrypted, WireGuard-compatible overlay that forwards ports",
    long_about = "An encrypted, WireGuard-compatible overlay that forwards ports.\n\n\
        A relay with a public IP exposes ports whose connections travel through a WireGuard \
        tunnel to services on private peers behind NAT. One binary runs every peer; what a peer \
        does is decided by its config file (see docs/config.md)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new private key (base64, the same format as `wg genkey`).
    Genkey,
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    /// Run a peer in the foreground until SIGINT or SIGTERM.
    Up {
        /// The peer's config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// More logging: -v for debug, -vv for trace. RUST_LOG overrides.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
        /// Threads that run the tunnel and the forwards. One is fastest on machines with a
        /// few cores (a hand-off between threads costs more than a second core brings, see
        /// docs/benchmarks.md); more can help a relay with many busy clients on many cores.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
    },
    /// Show a running peer: its peers (like `wg show`), forwards and exposes.
    Status {
        /// The running peer's config file (it names the control socket).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a running peer re-read its config file and apply what changed.
    ///
    /// Unchanged forwards and exposes keep their live connections; a file
    /// that no longer validates changes nothing. SIGHUP does the same.
    Reload {
        /// The running peer's config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write a matched relay and home config with fresh keys.
    Init {
        /// The relay's public address, HOST:PORT (the relay listens on PORT).
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: String,
        /// A public port on the relay and the home service it reaches,
        /// PUBLIC_PORT:HOST:PORT (repeatable).
        #[arg(long, value_name = "PUBLIC_PORT:HOST:PORT")]
        forward: Vec<String>,
        /// Folder for relay.toml and home.toml (created; files are never overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Add a peer (a laptop, a phone) to a relay's config and print the peer's own config.
    AddPeer {
        /// The relay's config file; the peer is appended, comments kept.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// A unique name for the new peer.
        #[arg(long)]
        name: String,
        /// The relay's public HOST:PORT, written into the new peer's config.
        #[arg(long, value_name = "HOST:PORT")]
        endpoint: Option<String>,
        /// Print a wg-quick .conf (for the WireGuard apps) instead of a Pinhole config.
        #[arg(long)]
        wg: bool,
        /// Also print the wg-quick config as a QR code, for phones.
        #[arg(long)]
        qr: bool,
    },
    /// Print a config as a wg-quick .conf using only keys every WireGuard app accepts.
    Export {
        /// wg-quick format (the only format so far).
        #[arg(long, required = true)]
        wg: bool,
        /// The Pinhole config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a Pinhole config made from a wg-quick .conf.
    Import {
        /// wg-quick format (the only format so far).
        #[arg(long, required = true)]
        wg: bool,
        /// The wg-quick .conf file.
        #[arg(value_name = "FILE.conf")]
        file: PathBuf,
    },
    /// Validate a config file and print what the peer would do.
    ///
    /// Exits 0 when the file is good; otherwise lists every problem with its
    /// file, line, key and a fix, and exits 1.
    Check {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Check { config } => return check(&config),
        Command::Up {
            config,
            verbose,
            threads,
        } => up(&config, verbose, threads),
        Command::Status { config, json } => status(&config, json),
        Command::Reload { config } => reload(&config),
        Command::Init {
            endpoint,
            forward,
            out,
        } => setup::init(&endpoint, &forward, &out),
        Command::AddPeer {
            config,
            name,
            endpoint,
            wg,
            qr,
        } => setup::add_peer(&config, &name, endpoint.as_deref(), wg, qr),
        Command::Export { wg: _, config } => setup::export_wg(&config),
        Command::Import { wg: _, file } => setup::import_wg(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinhole: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("pinhole: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn genkey() -> Result<()> {
    let key = PrivateKey::generate();
    writeln!(std::io::stdout(), "{}", key.to_base64())?;
    Ok(())
}

fn pubkey() -> Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("reading a private key from stdin")?;
    let key = PrivateKey::from_base64(input.trim()).map_err(|e| {
        anyhow::anyhow!("stdin: not a WireGuard private key ({e}); expected the base64 output of `pinhole genkey` or `wg genkey`")
    })?;
    writeln!(std::io::stdout(), "{}", key.public_key())?;
    Ok(())
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            out!("{}", loaded.config.describe());
            outln!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_config_error(&e, "fix them and run `pinhole check` again");
            ExitCode::FAILURE
        }
    }
}

fn report_config_error(e: &ConfigError, outcome: &str) {
    match e {
        ConfigError::Invalid(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            let n = problems.len();
            eprintln!(
                "{n} problem{} found; {outcome}",
                if n == 1 { "" } else { "s" }
            );
        }
        other => match std::error::Error::source(other) {
            Some(cause) => eprintln!("pinhole: {other}: {cause}"),
            None => eprintln!("pinhole: {other}"),
        },
    }
}

fn up(path: &std::path::Path, verbose: u8, threads: u16) -> Result<()> {
    init_logging(verbose);
    let loaded = match Config::load(path) {
        Ok(l) => l,
        Err(e) => {
            report_config_error(&e, "nothing was started");
            anyhow::bail!(
                "{} is not a valid config; run `pinhole check -c {}`",
                path.display(),
                path.display()
            );
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    memory::tune();
    let runtime = runtime(threads, &loaded.config.interface.netstack)?;
    runtime.block_on(async move {
        let config = loaded.config;
        let sockets = pinhole::Sockets::bind(&config).await?;
        let shutdown = CancellationToken::new();
        let reload = Arc::new(Notify::new());
        tokio::spawn(watch_signals(shutdown.clone()));
        tokio::spawn(watch_hangup(reload.clone()));
        pinhole::run_with_reload(config, sockets, shutdown, reload).await
    })
}

/// The runtime for `pinhole up`. One thread on the embedded stack is tokio's current-thread
/// scheduler: every task runs where its wake-up happens, with no work-stealing queues, atomics
/// or cross-thread parking to pay for. Alternating builds on 2 cores (docs/benchmarks.md): p50
/// 151 → 139 µs and 3,855 → 4,034 connections/s (means of eight rounds), four streams up +5 %.
/// On the TUN stack one worker of the multi-thread scheduler stays: there the current-thread
/// one moved 2-6 % less data (its woken tasks run in turn, where the worker runs the one just
/// woken first), and connections/s did not change.
fn runtime(threads: u16, netstack: &pinhole_config::Netstack) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 && *netstack == pinhole_config::Netstack::Userspace {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(threads));
        builder
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// SIGHUP: re-read the config file, as daemons do.
async fn watch_hangup(reload: Arc<Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; use `pinhole reload` instead");
        return;
    };
    while hup.recv().await.is_some() {
        reload.notify_one();
    }
}

/// Loads a config only to find a running peer's sockets; problems are fatal.
fn load_for_control(path: &std::path::Path) -> Result<Config> {
    match Config::load(path) {
        Ok(l) => Ok(l.config),
        Err(e) => {
            report_config_error(&e, "a running peer keeps its current config");
            anyhow::bail!(
                "{} is not a valid config; run `pinhole check -c {}`",
                path.display(),
                path.display()
            )
        }
    }
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn status(path: &std::path::Path, json: bool) -> Result<()> {
    let config = load_for_control(path)?;
    let socket = config.control_socket_path();
    let status = client_runtime()?
        .block_on(pinhole::ops::control::fetch_status(&socket))
        .with_context(|| format!("asking the peer of {} for its status", path.display()))?;
    if json {
        outln!("{}", serde_json::to_string(&status)?);
    } else {
        out!(
            "{}",
            pinhole::ops::status::render_text(&status, std::time::SystemTime::now())
        );
    }
    Ok(())
}

fn reload(path: &std::path::Path) -> Result<()> {
    let config = load_for_control(path)?;
    let socket = config.control_socket_path();
    let answer = client_runtime()?
        .block_on(pinhole::ops::control::send_reload(&socket))
        .with_context(|| format!("asking the peer of {} to reload", path.display()))?;
    match answer {
        Ok(changes) => {
            outln!("{changes}");
            Ok(())
        }
        Err(why) => anyhow::bail!("reload refused, the peer keeps running as it was:\n{why}"),
    }
}

/// First SIGINT/SIGTERM: stop accepting and drain. A second one: leave now.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop pinhole with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down: no new connections; live ones get up to 10 s to finish (signal again to quit now)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(130);
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,boringtun=off,pinhole=info",
        1 => "info,boringtun=warn,pinhole=debug,pinhole_wg=debug,pinhole_netstack=debug,pinhole_forward=debug",
        _ => "debug,pinhole=trace,pinhole_wg=trace,pinhole_netstack=trace,pinhole_forward=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
