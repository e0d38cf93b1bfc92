//! The userspace network stack: turns the tunnel's IP packets into TCP streams, with no
//! root, no TUN device and no kernel involvement.
//!
//! The WireGuard engine hands decrypted IP packets to a [`Stack`] and sends the packets the
//! stack produces. Forward and expose tasks use the cloneable [`Overlay`] handle to
//! [`connect`](Overlay::connect) and [`listen`](Overlay::listen); the [`OverlayStream`]s they
//! get are ordinary `AsyncRead + AsyncWrite` byte streams.
//!
//! ```text
//!  forward/expose tasks                        driver task (owns Stack + WireGuard)
//!  OverlayStream ──Bytes chunks (bounded)──▶  Stack ──IP packets──▶ wg ──UDP──▶
//!                ◀─Bytes chunks (bounded)───  (smoltcp)◀─IP packets── wg ◀─UDP──
//!                ──"wake me" id (bounded)──▶  Stack::wait()
//! ```
//!
//! The stack is sans-IO (time is a parameter, packets are byte slices), so tests wire two
//! stacks back to back in one process. See `docs/netstack.md` for the design and its limits.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod conn;
mod device;
mod listener;
mod overlay;
mod packet;
mod shared;
mod stack;
mod stream;

pub use config::{
    ConfigError, StackConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_TCP_RX_BUFFER,
    DEFAULT_TCP_TX_BUFFER, MAX_ADDRESSES, MAX_CONNECTIONS_LIMIT, MAX_MTU, MAX_TCP_BUFFER, MIN_MTU,
    MIN_TCP_BUFFER,
};
pub use listener::OverlayListener;
pub use overlay::Overlay;
pub use stack::{new, Stack};
pub use stream::OverlayStream;
