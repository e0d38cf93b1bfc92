//! pinhole-config (work in progress)
