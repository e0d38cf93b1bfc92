//! Rate-limited logging, so a flood (EMFILE, a dead target, a connection storm) costs at most
//! one log line per interval instead of one per event (reliability notes, E7 and C7).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The interval between two log lines of one category: at most one line per 10 s.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides whether a log line of one category may be written now.
///
/// Lock-free, so connection tasks can share one without contention.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    base: Instant,
    interval_ms: u64,
    /// Milliseconds since `base` before which no line may be written.
    next_ms: AtomicU64,
    /// Events swallowed since the last line written.
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            base: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(events suppressed since the last line)` when a line may be written now.
    pub(crate) fn check(&self) -> Option<u64> {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(now)
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_is_counted() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.check_at(0), Some(0));
        assert_eq!(l.check_at(1), None);
        assert_eq!(l.check_at(9_999), None);
        assert_eq!(l.check_at(10_000), Some(2));
        assert_eq!(l.check_at(10_001), None);
        assert_eq!(l.check_at(25_000), Some(1));
    }
}
