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
