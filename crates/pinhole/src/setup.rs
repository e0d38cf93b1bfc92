//! The set-up commands: `init`, `add-peer`, `export --wg`, `import --wg`.
//! Thin wrappers over `pinhole-provision`, which does the work on text.

use std::path::Path;

use anyhow::{Context, Result};
use pinhole_config::Endpoint;
use pinhole_provision::{AddPeerOptions, ForwardSpec, InitOptions};

/// `pinhole init`: a matched relay and home config with fresh keys.
pub fn init(endpoint: &str, forwards: &[String], out: &Path) -> Result<()> {
    let endpoint: Endpoint = endpoint
        .parse()
        .map_err(|e| anyhow::anyhow!("--endpoint {endpoint:?}: {e}; write the relay's public HOST:PORT, e.g. relay.example.com:51820"))?;
    let forwards = forwards
        .iter()
        .map(|f| f.parse::<ForwardSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    let pair = pinhole_provision::init(&InitOptions {
        endpoint,
        forwards,
        subnet: None,
    })?;
    pinhole_provision::write_init(out, &pair)?;
    let (relay, home) = (out.join("relay.toml"), out.join("home.toml"));
    outln!(
        "wrote {} and {} (mode 0600)",
        relay.display(),
        home.display()
    );
    outln!("next: copy relay.toml to the relay and run `pinhole up -c relay.toml` there;");
    outln!("      run `pinhole up -c home.toml` at home. `pinhole check -c FILE` shows what each will do.");
    Ok(())
}

/// `pinhole add-peer`: a new peer appended to the relay's config, its own config printed.
pub fn add_peer(
    config: &Path,
    name: &str,
    endpoint: Option<&str>,
    wg: bool,
    qr: bool,
) -> Result<()> {
    let endpoint = endpoint
        .map(|e| {
            e.parse::<Endpoint>().map_err(|err| {
                anyhow::anyhow!("--endpoint {e:?}: {err}; write the relay's public HOST:PORT")
            })
        })
        .transpose()?;
    let opts = AddPeerOptions {
        name: name.to_string(),
        endpoint,
        preshared_key: false,
    };
    let added = pinhole_provision::add_peer_to_file(config, &opts)?;
    eprintln!(
        "added peer {name:?} with address {} to {}; apply it with `pinhole reload -c {}`",
        added.address,
        config.display(),
        config.display()
    );
    if wg || qr {
        out!("{}", added.peer_wg);
        if qr {
            outln!("{}", pinhole_provision::qr_terminal(&added.peer_wg)?);
        }
    } else {
        out!("{}", added.peer_toml);
    }
    Ok(())
}

/// `pinhole export --wg`: a wg-quick `.conf` any stock WireGuard app imports.
pub fn export_wg(config: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    out!("{}", pinhole_provision::export_wg(&text, config)?);
    Ok(())
}

/// `pinhole import --wg`: a wg-quick `.conf` turned into a Pinhole config.
pub fn import_wg(conf: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(conf).with_context(|| format!("reading {}", conf.display()))?;
    let imported = pinhole_provision::import_wg(&text, conf)?;
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    out!("{}", imported.toml);
    Ok(())
}
