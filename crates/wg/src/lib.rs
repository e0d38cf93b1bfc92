//! pinhole-wg (work in progress)
