//! A splice that runs somewhere else (the userspace stack's own loop), watched by the
//! connection's task: the task keeps the idle and half-close timeouts and the live byte
//! counts of [`splice_counted`](crate::splice_counted), and sleeps in between.
//!
//! Why the task still watches: the timeouts and counters are this crate's contract for every
//! splice, and keeping them here means the stack only moves bytes and reports what it moved.
//! The task wakes at the next deadline, when bytes start moving after a quiet spell, and once
//! a [`LIVE_COUNTERS`] interval while they keep moving; never per packet.

use std::future::Future;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::counters::Counters;
use crate::splice::{quiet_limit, SpliceEnd, SpliceReport};

/// How often the byte counters catch up while an offloaded splice moves bytes (an idle one
/// wakes its task only at its timeout).
pub const LIVE_COUNTERS: Duration = Duration::from_secs(1);

/// What an offloaded splice has done so far, in the splice's terms: `a` is the accepted side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadProgress {
    /// Bytes read from `a` and delivered to `b`.
    pub a_to_b: u64,
    /// Bytes read from `b` and delivered to `a`.
    pub b_to_a: u64,
    /// When bytes last moved (or a direction finished); the start, to begin with.
    pub last_activity: Instant,
    /// One direction has finished (its EOF was passed on): the half-close linger applies.
    pub half_closed: bool,
}

/// A splice running elsewhere. It resolves when both directions ended or one side failed
/// (with [`SpliceEnd::Closed`] or an error), both streams closed.
pub trait Offloaded: Future<Output = SpliceEnd> + Unpin + Send {
    /// The figures so far.
    fn progress(&self) -> OffloadProgress;
    /// Ends the splice, closing both sides gracefully; it then resolves soon after.
    fn stop(&self);
    /// Resolves once bytes move after this call (or at once, spuriously; the caller checks
    /// [`Offloaded::progress`]). Owns what it needs, so it can wait beside the splice itself.
    fn activity(&self) -> impl Future<Output = ()> + Send + 'static;
}

/// Watches `splice` until it ends: adds its bytes to `counters` as they move, and stops it
/// after `idle_timeout` without activity (`half_close_timeout` once a direction finished),
/// reporting which timeout fired.
pub async fn supervise<O: Offloaded>(
    mut splice: O,
    idle_timeout: Duration,
    half_close_timeout: Duration,
    counters: &Counters,
) -> SpliceReport {
    let mut counted = (0, 0);
    let mut timed_out = None;
    let timer = sleep_until(Instant::now());
    tokio::pin!(timer);
    let end = loop {
        let p = splice.progress();
        let moved = count(counters, &mut counted, &p);
        let (limit, reason) = quiet_limit(p.half_closed, idle_timeout, half_close_timeout);
        let now = Instant::now();
        let far = now + Duration::from_secs(365 * 24 * 3600);
        let deadline = p.last_activity.checked_add(limit).unwrap_or(far);
        if timed_out.is_none() && now >= deadline {
            timed_out = Some(reason);
            splice.stop();
        }
        let wake = match timed_out {
            Some(_) => far,
            None if moved => deadline.min(now + LIVE_COUNTERS),
            None => deadline,
        };
        timer.as_mut().reset(wake);
        // Quiet: wake when bytes move again, so the counters do not wait for the deadline.
        let activity = (!moved && timed_out.is_none()).then(|| splice.activity());
        let activity = async move {
            match activity {
                Some(activity) => activity.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            end = &mut splice => break end,
            () = &mut timer => {}
            () = activity => {}
        }
    };
    let p = splice.progress();
    count(counters, &mut counted, &p);
    SpliceReport {
        a_to_b: p.a_to_b,
        b_to_a: p.b_to_a,
        end: match (end, timed_out) {
            (SpliceEnd::Closed, Some(reason)) => reason,
            (end, _) => end,
        },
    }
}

/// Adds what moved since `counted` to the counters; whether anything did.
fn count(counters: &Counters, counted: &mut (u64, u64), p: &OffloadProgress) -> bool {
    let rx = p.a_to_b.saturating_sub(counted.0);
    let tx = p.b_to_a.saturating_sub(counted.1);
    if rx > 0 {
        counters.add_rx(rx);
    }
    if tx > 0 {
        counters.add_tx(tx);
    }
    *counted = (counted.0.max(p.a_to_b), counted.1.max(p.b_to_a));
    rx + tx > 0
}

#[cfg(test)]
mod tests;
