//! pinhole-forward (work in progress)
