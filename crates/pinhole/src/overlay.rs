//! Adapters that let the forwarding layer use the userspace stack without
//! knowing it is there: a forward dials *into* the overlay, an expose accepts
//! *from* it. A kernel TUN stack would plug in here the same way.

use std::io;
use std::net::SocketAddr;

use pinhole_forward::{Acceptor, Dialer};
use pinhole_netstack::{Overlay, OverlayListener, OverlayStream};

/// Dials one fixed overlay `address:port`: the far end of a `[[forward]]`.
pub struct OverlayDialer {
    overlay: Overlay,
    to: SocketAddr,
}

impl OverlayDialer {
    /// A dialer for connections to `to` through `overlay`.
    pub fn new(overlay: Overlay, to: SocketAddr) -> Self {
        Self { overlay, to }
    }
}

impl Dialer for OverlayDialer {
    type Stream = OverlayStream;

    async fn dial(&self) -> io::Result<OverlayStream> {
        self.overlay.connect(self.to).await
    }
}

/// Accepts connections on an overlay `address:port`: the near end of an `[[expose]]`.
pub struct OverlayAcceptor(pub OverlayListener);

impl Acceptor for OverlayAcceptor {
    type Stream = OverlayStream;

    async fn accept(&mut self) -> io::Result<(OverlayStream, SocketAddr)> {
        self.0.accept().await
    }
}
