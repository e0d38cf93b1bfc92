//! Helpers shared by the tests: deadlines, condition waits, test data.

use std::time::Duration;

/// The bound on every wait in the tests: a guard against hangs, never a performance threshold.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Waits, up to [`DEADLINE`], until `cond` holds; panics naming `what` otherwise.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(DEADLINE, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!("timed out waiting for {what}");
    }
}

/// Awaits `fut` up to [`DEADLINE`]; panics naming `what` if it does not complete.
pub(crate) async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// `len` pseudo-random bytes (xorshift), different for each `seed`, so misordered or
/// duplicated chunks cannot go unnoticed.
pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a, a checksum to compare large transfers without printing them.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
