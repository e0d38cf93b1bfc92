//! Pinhole's set-up commands, as functions the CLI calls: text in, text out.
//!
//! - [`init`] makes a matched relay + home pair of configs with fresh keys; [`write_init`]
//!   writes them (mode 0600, never over an existing file).
//! - [`add_peer`] appends a new `[[peer]]` to a relay config, keeping every comment, and returns
//!   the new peer's own config as Pinhole TOML and as a wg-quick `.conf`;
//!   [`add_peer_to_file`] does it in place, atomically, keeping the file's owner and mode.
//! - [`export_wg`] and [`import_wg`] convert between Pinhole TOML and wg-quick `.conf`, using
//!   only the subset of wg-quick keys that every stock WireGuard app accepts.
//! - [`qr_terminal`] draws a QR code in the terminal for phones to scan.
//!
//! The only functions that touch the file system are [`write_init`] and [`add_peer_to_file`].
#![deny(missing_docs)]

mod add_peer;
mod alloc;
mod error;
mod files;
mod init;
mod qr;
mod spec;
mod text;
mod wg_export;
mod wg_import;

pub use add_peer::{add_peer, add_peer_to_file, AddPeerOptions, AddedPeer};
pub use alloc::next_free_address;
pub use error::ProvisionError;
pub use init::{init, write_init, InitOptions, InitPair, DEFAULT_SUBNET};
pub use qr::qr_terminal;
pub use spec::ForwardSpec;
pub use wg_export::export_wg;
pub use wg_import::{import_wg, Imported};

/// Seconds between keepalives that a peer behind NAT sends to the relay (WireGuard's usual 25).
pub const KEEPALIVE_SECS: u16 = 25;
