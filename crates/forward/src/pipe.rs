//! Splicing two kernel TCP sockets through pipes (`splice(2)`): the kernel moves references
//! to the received pages from one socket to the other, so the bytes never enter user space.
//!
//! Why: on the TUN stack both sides of a forwarded connection are kernel sockets (the public
//! client and the overlay connection on a relay, the overlay connection and the local
//! service at home). Copied by a task, every byte crossed into user space and back out.
//! Through a pipe, one `splice` moves what the source socket holds into the pipe and another
//! moves it on: a TUN relay at full upload needs a fifth less CPU (docs/benchmarks.md).
//!
//! Only bulk is spliced. A direction that moves a message at a time (a request, an answer)
//! copies it: one `recv` into the stack and one `send` cost what two splices do, and need no
//! pipe. Reads that fill what they ask for switch the direction to splices (see
//! [`Direction::read`], also for why a splice is never a direction's last read: TCP urgent
//! data).
//!
//! A pipe costs two descriptors, so pipes are not held per connection: a direction borrows
//! one from a small [`PipePool`] when it has bulk to move and gives it back, empty, as soon
//! as its source has nothing more for now. When every pipe is lent, it copies instead. Idle
//! connections hold no pipe.
//!
//! Runs in the connection's task as an [`Offloaded`] splice, so [`supervise`](crate::supervise)
//! keeps the idle and half-close timeouts and the live counters, as for every splice.

use std::future::Future;
use std::io::{self, ErrorKind, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use pinhole_tcpread::Until;

use crate::lock;
use crate::offload::{OffloadProgress, Offloaded};
use crate::splice::{Side, SpliceEnd};

/// Bytes a pipe is asked to hold (`F_SETPIPE_SZ`): enough for a socket's worth of received
/// segments per `splice`. The kernel may give less (its per-user pipe limits); any size works.
const PIPE_BYTES: usize = 256 * 1024;

/// What a pipe holds when `F_SETPIPE_SZ` is refused: Linux's default, 16 pages.
const DEFAULT_PIPE_BYTES: usize = 16 * 4096;

/// What one copying read takes: the read that starts a wake-up of a direction that moves
/// little at a time, the read after a splice that came back short, and every read when no
/// pipe is free. Read into the stack; only what the destination does not take at once is
/// kept, on the heap. As large as a bulk read (16 KiB), so that a copy is bulk exactly when
/// it fills what it asked for.
const COPY_BYTES: usize = pinhole_tcpread::BULK_READ;

/// Moves one task makes before it lets others run.
const BUDGET: u32 = 32;

/// Pipes kept open for splices to borrow. Why bounded and shared: a pipe per connection
/// would triple the descriptors of every idle connection; a pipe is only needed while bytes
/// move, and on a small machine few connections move bytes at once.
#[derive(Debug)]
pub struct PipePool {
    free: Mutex<Vec<Pipe>>,
    /// Pipes that exist, lent or free.
    open: AtomicU64,
    max: u64,
}

impl PipePool {
    /// A pool of at most `max` pipes (2 × `max` descriptors), opened on first use.
    pub fn new(max: usize) -> Arc<PipePool> {
        Arc::new(PipePool {
            free: Mutex::new(Vec::new()),
            open: AtomicU64::new(0),
            max: max as u64,
        })
    }

    fn take(&self) -> Option<Pipe> {
        if let Some(pipe) = lock(&self.free).pop() {
            return Some(pipe);
        }
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match Pipe::new() {
            Ok(pipe) => Some(pipe),
            Err(e) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "no pipe for a splice; copying instead");
                None
            }
        }
    }

    /// Takes back an empty pipe.
    fn give(&self, pipe: Pipe) {
        lock(&self.free).push(pipe);
    }

    /// Forgets a pipe that is closed instead of returned (it may hold bytes).
    fn lost(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// (pipes open, pipes free): equal when no splice holds one.
    #[cfg(test)]
    fn counts(&self) -> (u64, usize) {
        (self.open.load(Ordering::Relaxed), lock(&self.free).len())
    }
}

#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// What `F_SETPIPE_SZ` granted: the most one `splice` into it may ask for.
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; on failure the pipe keeps its default size.
        let granted = unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BYTES as libc::c_int,
            )
        };
        Ok(Pipe {
            read,
            write,
            capacity: usize::try_from(granted)
                .ok()
                .filter(|&bytes| bytes > 0)
                .unwrap_or(DEFAULT_PIPE_BYTES),
        })
    }
}

/// One `splice(2)`, non-blocking on the pipe side (the socket is non-blocking already).
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and no offsets; the kernel checks everything else.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One direction: source socket → pipe (or buffer) → destination socket.
#[derive(Debug)]
struct Direction {
    /// Which side the source and the destination are, for the end an error reports.
    src: Side,
    dst: Side,
    pipe: Option<Pipe>,
    /// Bytes in the pipe, not yet in the destination.
    in_pipe: usize,
    /// Bytes a copying read took that the destination has not: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The next read copies instead of splicing (see [`Direction::read`]).
    copy_next: bool,
    /// A read in this wake-up filled what it asked for: the direction moves bulk, and its
    /// next wake-up starts with a splice.
    bulk: bool,
    /// The last copying read drained the source (the kernel said so, pinhole-tcpread): once
    /// its bytes are passed on, the direction waits for the next event instead of reading.
    drained: bool,
    eof: bool,
    done: bool,
    /// Bytes delivered to the destination.
    moved: u64,
}

impl Direction {
    fn new(src: Side, dst: Side) -> Direction {
        Direction {
            src,
            dst,
            pipe: None,
            in_pipe: 0,
            buf: Vec::new(),
            start: 0,
            end: 0,
            copy_next: true,
            bulk: false,
            drained: false,
            eof: false,
            done: false,
            moved: 0,
        }
    }

    fn pending(&self) -> bool {
        self.in_pipe > 0 || self.start < self.end
    }

    /// Moves what it can; `Ready(Ok)` once EOF was passed on. Every move and the end is
    /// stamped in `last_activity` and told to `activity`.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        (src, dst): (&TcpStream, &TcpStream),
        pool: &PipePool,
        (last_activity, activity): (&mut Instant, &Activity),
    ) -> Poll<Result<(), SpliceEnd>> {
        let mut budget = BUDGET;
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            if self.pending() {
                let written = dst.try_io(Interest::WRITABLE, || match &self.pipe {
                    Some(pipe) if self.in_pipe > 0 => {
                        splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), self.in_pipe)
                    }
                    _ => (&*SockRef::from(dst)).write(&self.buf[self.start..self.end]),
                });
                match written {
                    Ok(n) => {
                        if self.in_pipe > 0 {
                            self.in_pipe -= n;
                        } else {
                            self.start += n;
                        }
                        self.delivered(n, last_activity, activity);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => match dst.poll_write_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(self.dst.error(&e))),
                        Poll::Ready(Ok(())) => {}
                    },
                    Err(e) => return Poll::Ready(Err(self.dst.error(&e))),
                }
                continue;
            }
            if self.eof {
                self.release(pool);
                // Passed on as the client sent it: the other side may still answer.
                let _ = SockRef::from(dst).shutdown(Shutdown::Write);
                self.done = true;
                *last_activity = Instant::now();
                activity.happened();
                return Poll::Ready(Ok(()));
            }
            // Not zeroed: only what `recv` wrote is read back (`Got::Copied`).
            let mut scratch = [MaybeUninit::<u8>::uninit(); COPY_BYTES];
            let read = if std::mem::take(&mut self.drained) {
                // Readiness is already cleared: no read would find anything.
                Err(ErrorKind::WouldBlock.into())
            } else {
                self.read(src, pool, &mut scratch)
            };
            match read {
                Ok(Got::Spliced(n)) => self.in_pipe = n,
                Ok(Got::Copied(0)) => self.eof = true,
                Ok(Got::Copied(n)) => {
                    // SAFETY: `recv` wrote the first `n` bytes of `scratch` (it returned `n`,
                    // at most `scratch.len()`), and `MaybeUninit<u8>` has `u8`'s layout.
                    let copied =
                        unsafe { std::slice::from_raw_parts(scratch.as_ptr().cast::<u8>(), n) };
                    // Passed on at once; what the destination does not take waits in `buf`.
                    let written =
                        dst.try_io(Interest::WRITABLE, || (&*SockRef::from(dst)).write(copied));
                    let taken = match written {
                        Ok(taken) => taken,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                        Err(e) => return Poll::Ready(Err(self.dst.error(&e))),
                    };
                    if taken > 0 {
                        self.delivered(taken, last_activity, activity);
                    }
                    if taken < n {
                        self.buf = copied[taken..].to_vec();
                        (self.start, self.end) = (0, n - taken);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Nothing more for now: the pipe is empty, so it goes back to the pool,
                    // and the copy buffer is freed (an idle connection holds neither).
                    if let Some(pipe) = self.pipe.take() {
                        pool.give(pipe);
                    }
                    self.buf = Vec::new();
                    self.copy_next = !std::mem::take(&mut self.bulk);
                    match src.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(self.src.error(&e))),
                        Poll::Ready(Ok(())) => {}
                    }
                }
                Err(e) => return Poll::Ready(Err(self.src.error(&e))),
            }
        }
    }

    /// Counts `n` bytes the destination took, and tells whoever watches the splice.
    fn delivered(&mut self, n: usize, last_activity: &mut Instant, activity: &Activity) {
        self.moved += n as u64;
        *last_activity = Instant::now();
        activity.happened();
    }

    /// One read from `src`: a splice into the pipe, or a copy into `scratch`.
    ///
    /// A direction that moves little at a time (a request, an answer) copies: one `recv`
    /// and one `send`, no pipe. One whose reads fill what they ask for moves bulk and
    /// splices, its pages never entering user space, until a splice comes back short; the
    /// read after that copies, and is the one that learns the source is drained: from the
    /// kernel's count of what is left (pinhole-tcpread), or from `EAGAIN`.
    ///
    /// Why a splice is never the last word: at TCP urgent data it stops for good
    /// (`tcp_read_sock` goes no further until the urgent byte is taken), returning `EAGAIN`,
    /// or 0 when the peer's FIN is queued behind it, though data follows. So a splice that
    /// moves nothing is followed by a copy, which passes the urgent mark (dropping the
    /// urgent byte, as every reader without `SO_OOBINLINE` does) and tells `EAGAIN` and
    /// EOF for what they are. (A splice's `EAGAIN` is not returned from its `try_io`: that
    /// would clear the readiness the copy after it needs.)
    fn read(
        &mut self,
        src: &TcpStream,
        pool: &PipePool,
        scratch: &mut [MaybeUninit<u8>],
    ) -> io::Result<Got> {
        if !self.copy_next && self.pipe.is_none() {
            self.pipe = pool.take();
        }
        let splice_into = match &self.pipe {
            Some(pipe) if !self.copy_next => Some((pipe.write.as_raw_fd(), pipe.capacity)),
            _ => None,
        };
        if let Some((pipe, capacity)) = splice_into {
            let spliced = src.try_io(Interest::READABLE, || {
                match splice(src.as_raw_fd(), pipe, capacity) {
                    Ok(0) => Ok(None),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
                    spliced => spliced.map(Some),
                }
            })?;
            if let Some(n) = spliced {
                let filled = n == capacity;
                self.copy_next = !filled;
                self.bulk |= filled;
                return Ok(Got::Spliced(n));
            }
        }
        // A message ends its reads where the kernel says the socket is drained; a direction
        // that moved bulk in this wake-up reads on until `EAGAIN` (pinhole-tcpread's docs).
        let until = if self.bulk {
            Until::Eagain
        } else {
            Until::Drained
        };
        let read = pinhole_tcpread::try_read_uninit(src, scratch, until)?;
        self.copy_next = !read.bulk;
        self.bulk |= read.bulk;
        self.drained = read.drained;
        Ok(Got::Copied(read.len))
    }

    /// Returns the pipe: empty to the pool, or closed (with what it held) when not.
    fn release(&mut self, pool: &PipePool) {
        if let Some(pipe) = self.pipe.take() {
            if self.in_pipe == 0 {
                pool.give(pipe);
            } else {
                pool.lost();
            }
        }
    }
}

/// What one read of a direction's source brought.
#[derive(Debug, Clone, Copy)]
enum Got {
    /// Bytes now in the pipe.
    Spliced(usize),
    /// Bytes in the scratch buffer (0: the source's EOF).
    Copied(usize),
}

/// What a task waiting on [`Offloaded::activity`] shares with the splice, which it waits
/// beside rather than inside.
#[derive(Debug, Default)]
struct Activity {
    /// How many times bytes moved or a direction finished.
    events: AtomicU64,
    waiter: Mutex<Option<Waker>>,
    waiting: AtomicBool,
}

impl Activity {
    fn happened(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if self.waiting.swap(false, Ordering::AcqRel) {
            if let Some(waker) = lock(&self.waiter).take() {
                waker.wake();
            }
        }
    }
}

/// Two kernel sockets spliced through pipes until both directions end; see the module.
#[derive(Debug)]
pub struct PipeSplice {
    a: TcpStream,
    b: TcpStream,
    a_to_b: Direction,
    b_to_a: Direction,
    pool: Arc<PipePool>,
    /// When bytes last moved or a direction finished; the start, to begin with.
    last_activity: Instant,
    stop: AtomicBool,
    activity: Arc<Activity>,
}

impl PipeSplice {
    /// Splices `a` (the accepted side) and `b`, borrowing pipes from `pool`.
    pub fn new(a: TcpStream, b: TcpStream, pool: Arc<PipePool>) -> PipeSplice {
        // Refused only by kernels before 4.18; reads then go on until `EAGAIN`.
        pinhole_tcpread::report_queue(&a);
        pinhole_tcpread::report_queue(&b);
        PipeSplice {
            a,
            b,
            a_to_b: Direction::new(Side::A, Side::B),
            b_to_a: Direction::new(Side::B, Side::A),
            pool,
            last_activity: Instant::now(),
            stop: AtomicBool::new(false),
            activity: Arc::default(),
        }
    }
}

impl Future for PipeSplice {
    type Output = SpliceEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SpliceEnd> {
        let this = self.get_mut();
        if this.stop.load(Ordering::Relaxed) {
            return Poll::Ready(SpliceEnd::Closed);
        }
        let seen = (&mut this.last_activity, &*this.activity);
        let up = this
            .a_to_b
            .poll_move(cx, (&this.a, &this.b), &this.pool, seen);
        if let Poll::Ready(Err(end)) = up {
            return Poll::Ready(end);
        }
        let seen = (&mut this.last_activity, &*this.activity);
        let down = this
            .b_to_a
            .poll_move(cx, (&this.b, &this.a), &this.pool, seen);
        match (up, down) {
            (_, Poll::Ready(Err(end))) => Poll::Ready(end),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(SpliceEnd::Closed),
            _ => Poll::Pending,
        }
    }
}

impl Drop for PipeSplice {
    fn drop(&mut self) {
        self.a_to_b.release(&self.pool);
        self.b_to_a.release(&self.pool);
    }
}

impl Offloaded for PipeSplice {
    fn progress(&self) -> OffloadProgress {
        OffloadProgress {
            a_to_b: self.a_to_b.moved,
            b_to_a: self.b_to_a.moved,
            last_activity: self.last_activity,
            half_closed: self.a_to_b.done || self.b_to_a.done,
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn activity(&self) -> impl Future<Output = ()> + Send + 'static {
        let activity = Arc::clone(&self.activity);
        let seen = activity.events.load(Ordering::Relaxed);
        std::future::poll_fn(move |cx| {
            if activity.events.load(Ordering::Relaxed) != seen {
                return Poll::Ready(());
            }
            *lock(&activity.waiter) = Some(cx.waker().clone());
            activity.waiting.store(true, Ordering::Release);
            if activity.events.load(Ordering::Relaxed) != seen {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests;
