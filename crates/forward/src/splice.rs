//! The splice: copy two streams into each other, both directions at once, honouring half-close,
//! with an idle timeout and a bounded half-close linger.
//!
//! Why not `tokio::io::copy_bidirectional`: it only ends when *both* directions end, so a peer
//! that never closes its side leaves the socket in CLOSE_WAIT forever (tokio#3876, rathole#460).
//! Why not `select!` over two `io::copy`s: the first direction to finish drops the other one, so
//! a client that shuts down its write side loses the reply (bore#165). Here both directions are
//! polled by one future, each passes its EOF on as a `shutdown()` of the other stream's write
//! side, and the timers bound how long either situation may last.

use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant};

use crate::counters::Counters;

/// First buffer size of each direction.
///
/// Why small: most forwarded connections are idle or carry little (C8: 10k idle connections
/// must stay near 20 KiB each), so a direction starts with 4 KiB and grows only when reads keep
/// filling its buffer.
pub const INITIAL_BUFFER: usize = 4 * 1024;

/// Largest buffer size of each direction, reached after a few full reads on a bulk transfer.
///
/// Why 64 KiB: one read can then take a whole TCP receive window's worth (and a full smoltcp
/// socket buffer), so a fast link is not throttled by per-read overhead, while a connection
/// still costs at most 128 KiB of buffers here.
pub const MAX_BUFFER: usize = 64 * 1024;

/// Reads one direction may do in one poll before yielding to the scheduler.
///
/// Why: a stream that is always ready (not every stream takes part in tokio's cooperative
/// budget) must not starve the timers or the other tasks.
const MAX_READS_PER_POLL: usize = 32;

/// What a splice moved and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceReport {
    /// Bytes read from `a` and written to `b`.
    pub a_to_b: u64,
    /// Bytes read from `b` and written to `a`.
    pub b_to_a: u64,
    /// Why the splice ended; both streams are closed (dropped) in every case.
    pub end: SpliceEnd,
}

/// Why a splice ended, for the per-connection log line and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both directions reached EOF and passed it on: the clean end.
    Closed,
    /// No byte moved in either direction for `idle_timeout`.
    IdleTimeout,
    /// One direction had finished and the other stayed idle for `half_close_timeout`.
    HalfCloseTimeout,
    /// Reading from or writing to `a` failed (for example a reset); `b` was closed at once.
    ErrorA(ErrorKind),
    /// Reading from or writing to `b` failed (for example a reset); `a` was closed at once.
    ErrorB(ErrorKind),
}

/// Splices `a` and `b` until both directions finish, one side fails, or a timeout fires.
///
/// An EOF read from one stream is passed on as `shutdown()` of the other stream's write side,
/// and the opposite direction keeps going, so a client that half-closes still gets its full
/// reply. After one direction finished, the other is given `half_close_timeout` of idleness
/// (the linger) before both are closed. An error on either side closes both at once.
/// Both streams are dropped before this returns.
pub async fn splice<A, B>(
    a: A,
    b: B,
    idle_timeout: Duration,
    half_close_timeout: Duration,
) -> SpliceReport
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    run(a, b, idle_timeout, half_close_timeout, None).await
}

/// [`splice`], also adding bytes to `counters` as they move, so `status` shows live figures.
///
/// `a` is the accepted side: bytes from `a` count as `rx_bytes`, bytes to `a` as `tx_bytes`.
pub async fn splice_counted<A, B>(
    a: A,
    b: B,
    idle_timeout: Duration,
    half_close_timeout: Duration,
    counters: &Counters,
) -> SpliceReport
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    run(a, b, idle_timeout, half_close_timeout, Some(counters)).await
}

async fn run<A, B>(
    mut a: A,
    mut b: B,
    idle_timeout: Duration,
    half_close_timeout: Duration,
    counters: Option<&Counters>,
) -> SpliceReport
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut ab = Direction::new(Side::A, Side::B);
    let mut ba = Direction::new(Side::B, Side::A);
    let mut last_activity = Instant::now();
    let timer = sleep_until(last_activity + idle_timeout);
    tokio::pin!(timer);

    let end = poll_fn(|cx| {
        let mut progressed = false;
        let add_rx: AddBytes = Counters::add_rx;
        let add_tx: AddBytes = Counters::add_tx;
        match step(cx, &mut ab, &mut a, &mut b, counters.map(|c| (c, add_rx))) {
            Ok(p) => progressed |= p,
            Err(end) => return Poll::Ready(end),
        }
        match step(cx, &mut ba, &mut b, &mut a, counters.map(|c| (c, add_tx))) {
            Ok(p) => progressed |= p,
            Err(end) => return Poll::Ready(end),
        }
        if ab.is_done() && ba.is_done() {
            return Poll::Ready(SpliceEnd::Closed);
        }
        if progressed {
            last_activity = Instant::now();
        }
        let (limit, reason) = quiet_limit(
            ab.is_done() || ba.is_done(),
            idle_timeout,
            half_close_timeout,
        );
        let deadline = last_activity + limit;
        // The timer is re-armed lazily: activity only moves `last_activity`, and a timer that
        // fires early is pushed to the new deadline. It is pulled in only when the phase
        // changes to the (shorter) half-close linger.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(reason);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;

    drop(a);
    drop(b);
    SpliceReport {
        a_to_b: ab.moved,
        b_to_a: ba.moved,
        end,
    }
}

/// How long a splice may go without activity, and the end it reports then: the idle
/// timeout, or once a direction finished the half-close linger when that is shorter.
pub(crate) fn quiet_limit(
    half_closed: bool,
    idle_timeout: Duration,
    half_close_timeout: Duration,
) -> (Duration, SpliceEnd) {
    if half_closed && half_close_timeout <= idle_timeout {
        (half_close_timeout, SpliceEnd::HalfCloseTimeout)
    } else {
        (idle_timeout, SpliceEnd::IdleTimeout)
    }
}

/// Adds one direction's bytes to its counter (`rx_bytes` or `tx_bytes`).
type AddBytes = fn(&Counters, u64);

/// Polls one direction once; returns whether anything happened (bytes moved or the direction
/// finished), so the caller can restart the idle clock. Adds moved bytes to the counter given.
fn step<R, W>(
    cx: &mut Context<'_>,
    dir: &mut Direction,
    reader: &mut R,
    writer: &mut W,
    counter: Option<(&Counters, AddBytes)>,
) -> Result<bool, SpliceEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let was_done = dir.is_done();
    let mut moved = 0;
    let result = dir.poll_copy(cx, reader, writer, &mut moved);
    if moved > 0 {
        if let Some((c, add)) = counter {
            add(c, moved);
        }
    }
    if let Poll::Ready(Err(end)) = result {
        return Err(end);
    }
    Ok(moved > 0 || dir.is_done() != was_done)
}

/// Which stream an error came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    pub(crate) fn error(self, e: &io::Error) -> SpliceEnd {
        match self {
            Side::A => SpliceEnd::ErrorA(e.kind()),
            Side::B => SpliceEnd::ErrorB(e.kind()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Copying,
    /// EOF was read; the writer's shutdown is in progress.
    ShuttingDown,
    Done,
}

/// One direction of the splice: reader → buffer → writer.
struct Direction {
    buf: Box<[u8]>,
    /// Bytes `buf[pos..cap]` are read but not yet written.
    pos: usize,
    cap: usize,
    /// The last read filled the buffer: grow it once it is drained.
    full_read: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    state: State,
    moved: u64,
    reader_side: Side,
    writer_side: Side,
}

impl Direction {
    fn new(reader_side: Side, writer_side: Side) -> Self {
        Self {
            buf: vec![0; INITIAL_BUFFER].into_boxed_slice(),
            pos: 0,
            cap: 0,
            full_read: false,
            need_flush: false,
            state: State::Copying,
            moved: 0,
            reader_side,
            writer_side,
        }
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Moves bytes until blocked (`Pending`), finished (`Ready(Ok)`) or failed.
    /// `moved` receives the bytes written during this call.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        moved: &mut u64,
    ) -> Poll<Result<(), SpliceEnd>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut reads = 0;
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(())),
                State::ShuttingDown => {
                    // Shutdown implies a flush of anything the writer still buffers.
                    return match ready!(Pin::new(&mut *writer).poll_shutdown(cx)) {
                        Ok(()) => {
                            self.state = State::Done;
                            Poll::Ready(Ok(()))
                        }
                        Err(e) => Poll::Ready(Err(self.writer_side.error(&e))),
                    };
                }
                State::Copying => {}
            }
            while self.pos < self.cap {
                match ready!(Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.cap])) {
                    Ok(0) => {
                        let e = io::Error::from(ErrorKind::WriteZero);
                        return Poll::Ready(Err(self.writer_side.error(&e)));
                    }
                    Ok(n) => {
                        self.pos += n;
                        let n = n as u64;
                        self.moved += n;
                        *moved += n;
                        self.need_flush = true;
                    }
                    Err(e) => return Poll::Ready(Err(self.writer_side.error(&e))),
                }
            }
            if self.full_read && self.buf.len() < MAX_BUFFER {
                let len = (self.buf.len() * 2).min(MAX_BUFFER);
                self.buf = vec![0; len].into_boxed_slice();
            }
            self.pos = 0;
            self.cap = 0;
            self.full_read = false;
            if reads == MAX_READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *reader).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.state = State::ShuttingDown;
                    } else {
                        self.cap = n;
                        self.full_read = n == self.buf.len();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.reader_side.error(&e))),
                Poll::Pending => {
                    // Nothing more to read for now: make sure a buffering writer passes on
                    // what it holds, or the peer could wait forever for bytes we have.
                    if self.need_flush {
                        match Pin::new(&mut *writer).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.need_flush = false,
                            Poll::Ready(Err(e)) => {
                                return Poll::Ready(Err(self.writer_side.error(&e)))
                            }
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
