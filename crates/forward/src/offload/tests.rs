//! `supervise` against a fake offloaded splice, on tokio's paused clock.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::*;

const IDLE: Duration = Duration::from_secs(60);
const LINGER: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct State {
    progress: OffloadProgress,
    stopped: bool,
    end: Option<SpliceEnd>,
    waker: Option<Waker>,
}

/// A splice whose figures and end the test sets by hand. Like the stack's, moving bytes does
/// not wake the watching task, except through `activity`.
#[derive(Debug, Clone)]
struct Fake(Arc<Mutex<State>>, Arc<Notify>);

impl Fake {
    fn new() -> Self {
        Fake(
            Arc::new(Mutex::new(State {
                progress: OffloadProgress {
                    a_to_b: 0,
                    b_to_a: 0,
                    last_activity: Instant::now(),
                    half_closed: false,
                },
                stopped: false,
                end: None,
                waker: None,
            })),
            Arc::new(Notify::new()),
        )
    }

    /// Changes the figures without waking anyone.
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.0.lock().unwrap());
    }

    /// Ends the splice with `end`.
    fn end(&self, end: SpliceEnd) {
        let mut state = self.0.lock().unwrap();
        state.end = Some(end);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Bytes moved just now.
    fn moved(&self, a_to_b: u64, b_to_a: u64) {
        self.update(|s| {
            s.progress.a_to_b += a_to_b;
            s.progress.b_to_a += b_to_a;
            s.progress.last_activity = Instant::now();
        });
        self.1.notify_one();
    }

    fn stopped(&self) -> bool {
        self.0.lock().unwrap().stopped
    }
}

impl Future for Fake {
    type Output = SpliceEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SpliceEnd> {
        let mut state = self.0.lock().unwrap();
        match state.end {
            Some(end) => Poll::Ready(end),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Offloaded for Fake {
    fn progress(&self) -> OffloadProgress {
        self.0.lock().unwrap().progress
    }

    fn stop(&self) {
        // As the stack does: both sides closed, the splice resolves as closed.
        self.update(|s| s.stopped = true);
        self.end(SpliceEnd::Closed);
    }

    fn activity(&self) -> impl Future<Output = ()> + Send + 'static {
        let notify = Arc::clone(&self.1);
        async move { notify.notified().await }
    }
}

/// Lets the supervising task run at the current (paused) time.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn start(fake: &Fake) -> (Arc<Counters>, tokio::task::JoinHandle<SpliceReport>) {
    let counters = Arc::new(Counters::default());
    let (c, f) = (Arc::clone(&counters), fake.clone());
    let task = tokio::spawn(async move { supervise(f, IDLE, LINGER, &c).await });
    (counters, task)
}

#[tokio::test(start_paused = true)]
async fn an_idle_splice_is_stopped_at_the_idle_timeout_and_not_before() {
    let fake = Fake::new();
    let (_counters, task) = start(&fake);
    tokio::time::advance(IDLE - Duration::from_millis(1)).await;
    settle().await;
    assert!(!fake.stopped());
    tokio::time::advance(Duration::from_millis(2)).await;
    settle().await;
    assert!(fake.stopped());
    assert_eq!(task.await.unwrap().end, SpliceEnd::IdleTimeout);
}

#[tokio::test(start_paused = true)]
async fn activity_pushes_the_idle_deadline_back() {
    let fake = Fake::new();
    let (_counters, task) = start(&fake);
    tokio::time::advance(IDLE / 2).await;
    fake.moved(10, 0);
    settle().await;
    // Past the first deadline, within the second.
    tokio::time::advance(IDLE / 2 + Duration::from_secs(1)).await;
    settle().await;
    assert!(!fake.stopped());
    tokio::time::advance(IDLE / 2).await;
    settle().await;
    assert!(fake.stopped());
    let report = task.await.unwrap();
    assert_eq!(report.end, SpliceEnd::IdleTimeout);
    assert_eq!(report.a_to_b, 10);
}

#[tokio::test(start_paused = true)]
async fn a_half_closed_splice_gets_the_shorter_linger() {
    let fake = Fake::new();
    let (_counters, task) = start(&fake);
    fake.update(|s| {
        s.progress.half_closed = true;
        s.progress.last_activity = Instant::now();
    });
    tokio::time::advance(LINGER + Duration::from_millis(1)).await;
    settle().await;
    assert!(fake.stopped());
    assert_eq!(task.await.unwrap().end, SpliceEnd::HalfCloseTimeout);
}

#[tokio::test(start_paused = true)]
async fn counters_follow_moving_bytes_and_the_end_is_reported_as_it_came() {
    let fake = Fake::new();
    let (counters, task) = start(&fake);
    settle().await;
    // Bytes start moving on a quiet splice: the task wakes and counts them.
    fake.moved(100, 7);
    settle().await;
    let seen = counters.snapshot();
    assert_eq!((seen.rx_bytes, seen.tx_bytes), (100, 7));
    // While they keep moving (silently), the task counts once per interval.
    fake.update(|s| s.progress.a_to_b += 50);
    settle().await;
    assert_eq!(counters.snapshot().rx_bytes, 100);
    tokio::time::advance(LIVE_COUNTERS).await;
    settle().await;
    assert_eq!(counters.snapshot().rx_bytes, 150);
    fake.update(|s| s.progress.b_to_a += 3);
    fake.end(SpliceEnd::ErrorB(std::io::ErrorKind::ConnectionReset));
    let report = task.await.unwrap();
    assert!(!fake.stopped());
    assert_eq!(
        report,
        SpliceReport {
            a_to_b: 150,
            b_to_a: 10,
            end: SpliceEnd::ErrorB(std::io::ErrorKind::ConnectionReset),
        }
    );
    let seen = counters.snapshot();
    assert_eq!((seen.rx_bytes, seen.tx_bytes), (150, 10));
}
