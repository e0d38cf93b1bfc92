//! The userspace network stack: turns the tunnel's IP packets into TCP streams and UDP
//! datagrams, with no root, no TUN device and no kernel involvement.
//!
//! The WireGuard engine hands decrypted IP packets to a [`Stack`] and sends the packets the
//! stack produces. Forward and expose tasks use the cloneable [`Overlay`] handle to
//! [`connect`](Overlay::connect) and [`listen`](Overlay::listen) (or
//! [`listen_range`](Overlay::listen_range)); the [`OverlayStream`]s they get are ordinary
//! `AsyncRead + AsyncWrite` byte streams. [`bind_udp`](Overlay::bind_udp) and
//! [`bind_udp_range`](Overlay::bind_udp_range) give an [`OverlayUdpSocket`].
//!
//! ```text
//!  forward/expose tasks                        driver task (owns Stack + WireGuard)
//!  OverlayStream ──Bytes chunks (bounded)──▶  Stack ──IP packets──▶ wg ──UDP──▶
//!                ◀─Bytes chunks (bounded)───  (smoltcp)◀─IP packets── wg ◀─UDP──
//!                ──"wake me" id (bounded)──▶  Stack::wait()
//! ```
//!
//! A stream paired with a kernel TCP socket (a forward's client, an expose's target) can be
//! handed to the stack with [`OverlayStream::splice_kernel`]: the driver then moves the bytes
//! between the socket and smoltcp's buffers itself, with no chunks and no second task.
//!
//! The stack is sans-IO (time is a parameter, packets are byte slices), so tests wire two
//! stacks back to back in one process. See `docs/netstack.md` for the design and its limits.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod ack_seq;
#[allow(unsafe_code)]
mod buffers;
mod config;
mod conn;
mod device;
mod keys;
mod listener;
mod overlay;
mod packet;
mod ports;
mod shared;
mod splice;
mod stack;
mod stream;
mod udp;
mod udp_stack;

pub use config::{
    ConfigError, StackConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_TCP_RX_BUFFER,
    DEFAULT_TCP_TX_BUFFER, MAX_ADDRESSES, MAX_CONNECTIONS_LIMIT, MAX_MTU, MAX_TCP_BUFFER, MIN_MTU,
    MIN_TCP_BUFFER,
};
pub use listener::OverlayListener;
pub use overlay::Overlay;
pub use splice::{KernelSplice, KernelSpliceEnd, SpliceProgress};
pub use stack::{new, Stack};
pub use stream::OverlayStream;
pub use udp::OverlayUdpSocket;
