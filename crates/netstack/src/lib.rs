//! pinhole-netstack (work in progress)
