//! A small bounded pool of byte buffers, so the steady-state data path does
//! not allocate per packet: the driver hands each payload back with
//! `Wg::recycle` once it is sent or consumed.

/// How many spare buffers to keep: enough for a burst of queued packets
/// flushed after a handshake (boringtun queues up to 256), small enough that
/// an idle engine holds little memory.
const MAX_POOLED: usize = 256;
/// Buffers larger than this are dropped rather than kept (a max-size
/// datagram plus boringtun's overhead is the largest we produce).
pub(crate) const MAX_BUFFER: usize = 65_535 + 148;
/// Capacity of a fresh buffer: a full-MTU packet plus overhead, so most
/// buffers never grow.
const FRESH_CAPACITY: usize = 1_500 + 64;

#[derive(Debug, Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
}

impl BufPool {
    /// A buffer holding a copy of `data`.
    pub(crate) fn copy_of(&mut self, data: &[u8]) -> Vec<u8> {
        let mut buf = self.take();
        buf.extend_from_slice(data);
        buf
    }

    /// A buffer of exactly `len` bytes to be written over (decrypted into):
    /// its contents are whatever it last held, and only the part it grows
    /// by is zeroed, so a reused buffer costs no pass over its bytes.
    pub(crate) fn sized(&mut self, len: usize) -> Vec<u8> {
        let mut buf = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRESH_CAPACITY.max(len)));
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    /// An empty buffer, reused when one is available.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(FRESH_CAPACITY),
        }
    }

    /// Keeps `buf` for reuse if the pool has room and it is not oversized.
    pub(crate) fn put(&mut self, buf: Vec<u8>) {
        if self.free.len() < MAX_POOLED && buf.capacity() <= MAX_BUFFER && buf.capacity() > 0 {
            self.free.push(buf);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_buffers_have_the_length_asked_and_are_reused() {
        let mut pool = BufPool::default();
        let big = pool.sized(1400);
        assert_eq!(big.len(), 1400);
        let at = big.as_ptr();
        pool.put(big);
        let small = pool.sized(60);
        assert_eq!((small.len(), small.as_ptr()), (60, at));
        pool.put(small);
        assert_eq!(pool.sized(1500).len(), 1500);
    }

    #[test]
    fn reuses_and_bounds() {
        let mut pool = BufPool::default();
        let a = pool.copy_of(b"hello");
        let ptr = a.as_ptr();
        pool.put(a);
        let b = pool.copy_of(b"x");
        assert_eq!(b, b"x");
        assert_eq!(b.as_ptr(), ptr, "the buffer is reused");
        for _ in 0..MAX_POOLED + 10 {
            pool.put(Vec::with_capacity(10));
        }
        assert_eq!(pool.len(), MAX_POOLED);
        let mut pool = BufPool::default();
        pool.put(Vec::with_capacity(MAX_BUFFER + 1));
        pool.put(Vec::new());
        assert_eq!(pool.len(), 0);
    }
}
