//! TCP socket buffers that outlive their sockets, so a new connection reuses a closed
//! one's memory instead of mapping a fresh megabyte.
//!
//! Why: each socket has a receive and a send buffer of 512 KiB by default. At that size
//! glibc serves each with its own mapping, and a short connection paid two `mmap`, two
//! `munmap` (with their TLB flushes) and the page faults of touching fresh pages: 10-13 %
//! of the relay's and the home's CPU per new connection (docs/benchmarks.md). smoltcp
//! drops the buffers it owns, so it is lent them instead (`ManagedSlice::Borrowed`) and
//! they come back here once the socket is gone.
//!
//! A kept buffer costs what its pages hold: at most [`KEEP_PAIRS`] pairs are kept, and
//! each is trimmed to its first [`KEEP_RESIDENT`] bytes once it has waited in the pool
//! for a while ([`Buffers::trim_kept`], which the stack calls a second after a return), so
//! what the pool holds stays small however much traffic went through it. Not at once:
//! a trim is a system call per buffer, two per connection, and at thousands of short
//! connections a second most pairs are lent again before the second is out, their pages
//! still warm. Stale bytes of an earlier
//! connection are never seen: smoltcp reads a ring buffer only where it was written.
//!
//! This is the crate's only `unsafe`: buffers are handed out as `&'static mut [u8]` and
//! taken back by pointer, which is sound because a buffer is taken back only from a
//! socket that has been dropped ([`Buffers::reclaim`], [`Buffers::discard`]), and the
//! stack drops its socket set before its buffers (`Stack`'s `Drop`).

use std::ptr::NonNull;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::socket::Socket;

use crate::keys::IdMap;

/// Most buffer pairs kept for reuse: enough for the connections opened and closed
/// between two polls at thousands per second. Beyond it, a returning pair is freed.
const KEEP_PAIRS: usize = 32;

/// Bytes at the start of a kept buffer whose pages stay resident: a short exchange
/// (a request, a handshake) fits, so it touches no fresh page. The rest of a kept
/// buffer is given back to the kernel when it returns.
const KEEP_RESIDENT: usize = 16 * 1024;

/// One buffer on the heap, owned by pointer so that smoltcp can borrow it for
/// `'static` while the pool keeps track of it.
struct Block {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Block` is the unique owner of its heap allocation, like a `Box<[u8]>`;
// whichever thread holds it may lend or free it.
unsafe impl Send for Block {}

impl Block {
    fn new(len: usize) -> Block {
        let boxed: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        let len = boxed.len();
        let ptr = NonNull::from(Box::leak(boxed)).cast::<u8>();
        Block { ptr, len }
    }

    /// The buffer as smoltcp borrows it.
    ///
    /// # Safety
    /// No slice from an earlier `lend` of this block may still exist: the socket it
    /// went to must have been dropped.
    unsafe fn lend(&mut self) -> &'static mut [u8] {
        // SAFETY: `ptr` and `len` describe a live allocation owned by this block
        // (from `Block::new`), and the caller guarantees no other slice of it exists.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Gives the pages after the first [`KEEP_RESIDENT`] bytes back to the kernel; they
    /// read as zeros afterwards. Only whole pages inside the allocation are touched.
    fn trim(&mut self) {
        const PAGE: usize = 4096;
        let start = self.ptr.as_ptr() as usize;
        let from = (start + KEEP_RESIDENT).next_multiple_of(PAGE);
        let to = (start + self.len) & !(PAGE - 1);
        if to <= from {
            return;
        }
        // SAFETY: [from, to) is whole pages inside this block's allocation, which no
        // slice refers to while it is in the pool; MADV_DONTNEED on private anonymous
        // memory only replaces those pages with zero-filled ones.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
        // SAFETY: the allocation came from `Box::leak` in `Block::new`, and blocks are
        // only dropped from the pool or after their socket was dropped.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// A socket's receive and send buffers while smoltcp borrows them. Hand it back with
/// [`Buffers::lent`] (socket added) or [`Buffers::discard`] (socket never added); one
/// dropped otherwise is leaked, never freed under a socket that may still use it.
pub(crate) struct Pair {
    blocks: Option<(Block, Block)>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(blocks) = self.blocks.take() {
            debug_assert!(false, "socket buffers dropped without their socket");
            std::mem::forget(blocks);
        }
    }
}

/// The pool, and which socket holds which buffers.
pub(crate) struct Buffers {
    rx_len: usize,
    tx_len: usize,
    /// Kept pairs, and whether each was trimmed since it came back.
    free: Vec<((Block, Block), bool)>,
    /// Pairs in `free` not trimmed yet.
    untrimmed: usize,
    lent: IdMap<SocketHandle, (Block, Block)>,
}

impl Buffers {
    /// A pool for sockets with `rx_len`-byte receive and `tx_len`-byte send buffers.
    pub(crate) fn new(rx_len: usize, tx_len: usize) -> Buffers {
        Buffers {
            rx_len,
            tx_len,
            free: Vec::new(),
            untrimmed: 0,
            lent: IdMap::default(),
        }
    }

    /// A new TCP socket on kept buffers if there are any, fresh ones otherwise.
    pub(crate) fn socket(&mut self) -> (tcp::Socket<'static>, Pair) {
        let (mut rx, mut tx) = match self.free.pop() {
            Some((pair, trimmed)) => {
                self.untrimmed -= usize::from(!trimmed);
                pair
            }
            None => (Block::new(self.rx_len), Block::new(self.tx_len)),
        };
        // SAFETY: a pair is in `free` only after the socket that borrowed it was
        // dropped (`reclaim`, `discard`), and fresh blocks were never lent.
        let socket = unsafe {
            tcp::Socket::new(
                tcp::SocketBuffer::new(rx.lend()),
                tcp::SocketBuffer::new(tx.lend()),
            )
        };
        (
            socket,
            Pair {
                blocks: Some((rx, tx)),
            },
        )
    }

    /// Records that the socket now at `handle` holds `pair`.
    pub(crate) fn lent(&mut self, handle: SocketHandle, mut pair: Pair) {
        if let Some(blocks) = pair.blocks.take() {
            let earlier = self.lent.insert(handle, blocks);
            // smoltcp reuses a handle only after `remove`, which went through `reclaim`.
            debug_assert!(earlier.is_none(), "a handle held two sockets' buffers");
            if let Some(earlier) = earlier {
                // Whatever socket had them may still be alive: never free them.
                std::mem::forget(earlier);
            }
        }
    }

    /// Takes back the buffers of the socket just removed from `handle`, dropping it first.
    pub(crate) fn reclaim(&mut self, handle: SocketHandle, removed: Socket<'static>) {
        drop(removed);
        if let Some(blocks) = self.lent.remove(&handle) {
            self.keep(blocks);
        }
    }

    /// Takes back the buffers of a socket that was never added, dropping it first.
    pub(crate) fn discard(&mut self, socket: tcp::Socket<'static>, mut pair: Pair) {
        drop(socket);
        if let Some(blocks) = pair.blocks.take() {
            self.keep(blocks);
        }
    }

    fn keep(&mut self, pair: (Block, Block)) {
        if self.free.len() < KEEP_PAIRS {
            self.free.push((pair, false));
            self.untrimmed += 1;
        }
    }

    /// Kept pairs not trimmed yet: the stack calls [`Buffers::trim_kept`] soon after this
    /// becomes non-zero.
    pub(crate) fn untrimmed(&self) -> usize {
        self.untrimmed
    }

    /// Gives back the pages of every kept buffer past its first [`KEEP_RESIDENT`] bytes.
    pub(crate) fn trim_kept(&mut self) {
        for ((rx, tx), trimmed) in self.free.iter_mut().filter(|(_, trimmed)| !*trimmed) {
            rx.trim();
            tx.trim();
            *trimmed = true;
        }
        self.untrimmed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::SocketSet;

    const LEN: usize = 256 * 1024;

    #[test]
    fn a_removed_sockets_buffers_are_lent_again() {
        let mut buffers = Buffers::new(LEN, LEN);
        let mut set = SocketSet::new(Vec::new());
        let (socket, pair) = buffers.socket();
        let handle = set.add(socket);
        buffers.lent(handle, pair);
        assert_eq!((buffers.lent.len(), buffers.free.len()), (1, 0));

        buffers.reclaim(handle, set.remove(handle));
        assert_eq!((buffers.lent.len(), buffers.free.len()), (0, 1));
        let kept = buffers.free[0].0 .0.ptr;

        let (socket, pair) = buffers.socket();
        assert_eq!(buffers.free.len(), 0, "the kept pair was taken");
        let reused = pair.blocks.as_ref().map(|(rx, _)| rx.ptr);
        assert_eq!(reused, Some(kept));
        buffers.discard(socket, pair);
        assert_eq!(buffers.free.len(), 1);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_pairs() {
        let mut buffers = Buffers::new(LEN, LEN);
        let sockets: Vec<_> = (0..KEEP_PAIRS + 8).map(|_| buffers.socket()).collect();
        for (socket, pair) in sockets {
            buffers.discard(socket, pair);
        }
        assert_eq!(buffers.free.len(), KEEP_PAIRS);
    }

    #[test]
    fn kept_pairs_wait_untrimmed_until_trim_kept() {
        let mut buffers = Buffers::new(LEN, LEN);
        let (socket, pair) = buffers.socket();
        buffers.discard(socket, pair);
        let (socket, pair) = buffers.socket();
        // Lent again before a trim: nothing is left to trim.
        assert_eq!(buffers.untrimmed(), 0);
        buffers.discard(socket, pair);
        assert_eq!(buffers.untrimmed(), 1);
        buffers.trim_kept();
        assert_eq!(buffers.untrimmed(), 0);
        assert!(buffers.free.iter().all(|(_, trimmed)| *trimmed));
    }

    #[test]
    fn a_trimmed_buffer_keeps_its_head_and_reads_zero_beyond() {
        let mut block = Block::new(LEN);
        // SAFETY: the only slice of this fresh block, gone before the next access.
        unsafe { block.lend() }.fill(0xAA);
        block.trim();
        // SAFETY: as above; the block was not lent since.
        let bytes = unsafe { block.lend() };
        assert!(
            bytes[..KEEP_RESIDENT].iter().all(|&b| b == 0xAA),
            "the head stays"
        );
        let page_after_head = (bytes.as_ptr() as usize + KEEP_RESIDENT).next_multiple_of(4096)
            - bytes.as_ptr() as usize;
        let last_page = (bytes.as_ptr() as usize + LEN) / 4096 * 4096 - bytes.as_ptr() as usize;
        assert!(
            bytes[page_after_head..last_page].iter().all(|&b| b == 0),
            "the tail was given back"
        );
        assert!(
            bytes[last_page..].iter().all(|&b| b == 0xAA),
            "bytes past the last whole page are not touched"
        );
    }

    #[test]
    fn buffers_too_small_to_trim_are_left_alone() {
        let mut block = Block::new(8 * 1024);
        // SAFETY: the only slice of this fresh block, gone before the next access.
        unsafe { block.lend() }.fill(0x55);
        block.trim();
        // SAFETY: as above.
        assert!(unsafe { block.lend() }.iter().all(|&b| b == 0x55));
    }
}
