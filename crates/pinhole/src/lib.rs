//! Pinhole: an encrypted, WireGuard-compatible overlay that forwards ports.
//!
//! The data path of one forwarded TCP connection, crate by crate:
//! `pinhole-forward` accepts it on a real socket and dials the overlay;
//! `pinhole-netstack` (or, with `netstack = "tun"`, the kernel through a
//! `pinhole-tun` device) turns that stream into IP packets; `pinhole-wg` encrypts
//! them for the peer that owns the destination; [`node`] moves the datagrams
//! over UDP. The far side runs the same path backwards, and an `[[expose]]`
//! there splices the stream to the real service.

mod kernel_nat;
pub mod node;
pub mod ops;
mod overlay;
mod peer;
pub mod services;
mod stack_splice;
mod view;

pub use overlay::Net;
pub use peer::{run, run_with_reload, ReloadRequest, Sockets};
pub use services::ForwardSockets;
