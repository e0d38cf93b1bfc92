//! The `pinhole` command: one binary for every peer; the config decides the role.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pinhole_config::keys::PrivateKey;
use pinhole_config::{Config, ConfigError};
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
        Command::Up { config, verbose } => up(&config, verbose),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinhole: {e:#}");
            ExitCode::FAILURE
        }
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
            print!("{}", loaded.config.describe());
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            report_config_error(&e);
            ExitCode::FAILURE
        }
    }
}

fn report_config_error(e: &ConfigError) {
    match e {
        ConfigError::Invalid(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            let n = problems.len();
            eprintln!("{n} problem{} found; nothing was started", if n == 1 { "" } else { "s" });
        }
        other => eprintln!("pinhole: {other}"),
    }
}

fn up(path: &std::path::Path, verbose: u8) -> Result<()> {
    init_logging(verbose);
    let loaded = match Config::load(path) {
        Ok(l) => l,
        Err(e) => {
            report_config_error(&e);
            anyhow::bail!("{} is not a valid config; run `pinhole check -c {}`", path.display(), path.display());
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let config = loaded.config;
        let sockets = pinhole::Sockets::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        pinhole::run(config, sockets, shutdown).await
    })
}

/// First SIGINT/SIGTERM: stop accepting and drain. A second one: leave now.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop pinhole with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down: no new connections; live ones get a few seconds to finish (signal again to quit now)");
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
        .with_writer(std::io::stderr)
        .init();
}
