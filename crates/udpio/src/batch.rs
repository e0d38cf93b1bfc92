//! Outgoing datagrams grouped for UDP generic segmentation offload (GSO).
//!
//! The kernel takes a run of datagrams to one destination in a single
//! `sendmsg` when they are laid end to end and all have one size, except that
//! the last may be shorter. WireGuard's bulk traffic is exactly that: one
//! peer, full-size transport messages. [`SendBatch`] is the plain value that
//! builds such runs; the socket only sends what it holds.

use std::net::SocketAddr;

/// Most payload bytes one GSO `sendmsg` may carry: the super-datagram must fit
/// an IP packet's 16-bit length with its headers (IPv6 40 + UDP 8 bytes).
pub const MAX_GSO_BYTES: usize = 65_535 - 48;

/// Largest segment sent with GSO, by destination family: the kernel refuses a
/// segment that, with its headers, exceeds the path MTU, so runs are only
/// built from datagrams that fit a 1,500-byte Ethernet MTU. Larger ones (a
/// raised overlay MTU) are sent one by one and may be fragmented, as before;
/// a smaller path MTU makes the socket resend the run one by one
/// ([`crate::UdpIo::send`]).
fn max_segment(dst: &SocketAddr) -> usize {
    match dst {
        SocketAddr::V4(_) => 1_500 - 20 - 8,
        SocketAddr::V6(_) => 1_500 - 40 - 8,
    }
}

/// One run: datagrams `count` long, `segment` bytes each (the last may be shorter).
#[derive(Debug, Clone, Copy)]
struct Run {
    dst: SocketAddr,
    start: usize,
    len: usize,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run: nothing more may join it.
    closed: bool,
}

/// Datagrams waiting to be sent, laid end to end in one buffer and cut into
/// runs that can each go out in one system call.
#[derive(Debug, Default)]
pub struct SendBatch {
    /// `buf[..end]` holds the datagrams; past `end` is space used by an
    /// earlier batch, kept initialised so that [`SendBatch::room`] need not
    /// zero it again.
    buf: Vec<u8>,
    end: usize,
    /// Length of the last [`SendBatch::room`], the most a commit may keep.
    room: usize,
    runs: Vec<Run>,
}

/// One message's worth of a [`SendBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments<'a> {
    /// Where every datagram of the run goes.
    pub dst: SocketAddr,
    /// The datagrams, end to end.
    pub bytes: &'a [u8],
    /// The size of each datagram but the last, when there is more than one: the
    /// `UDP_SEGMENT` value, which the kernel takes as a `u16`.
    pub segment_size: Option<u16>,
}

impl SendBatch {
    /// An empty batch; its buffer grows to the largest batch and is kept.
    pub fn new() -> SendBatch {
        SendBatch::default()
    }

    /// Appends `datagram` for `dst`, joining the previous run when GSO allows
    /// it: same destination, not longer than the run's size, at most
    /// `max_segments` in a run and [`MAX_GSO_BYTES`] in all.
    pub fn push(&mut self, dst: SocketAddr, datagram: &[u8], max_segments: usize) {
        let len = datagram.len();
        self.room(len)[..len].copy_from_slice(datagram);
        self.commit(dst, len, max_segments);
    }

    /// Space for the next datagram, at least `len` bytes, to be written in
    /// place (a datagram is sealed straight into it) and then kept with
    /// [`SendBatch::commit`]. The buffer grows only past its largest size so
    /// far, so space reused from an earlier batch costs nothing.
    pub fn room(&mut self, len: usize) -> &mut [u8] {
        let need = self.end + len;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        self.room = len;
        &mut self.buf[self.end..need]
    }

    /// Keeps the first `len` bytes of the last [`SendBatch::room`] as a
    /// datagram for `dst`, joining runs as [`SendBatch::push`] does. A `len`
    /// larger than that room is clamped to it; a second commit, or an empty
    /// datagram, keeps nothing.
    pub fn commit(&mut self, dst: SocketAddr, len: usize, max_segments: usize) {
        let start = self.end;
        let len = len.min(std::mem::take(&mut self.room));
        if len == 0 {
            return;
        }
        self.end += len;
        if let Some(run) = self.runs.last_mut() {
            let joins = !run.closed
                && run.dst == dst
                && len <= run.segment
                && run.count < max_segments
                && run.len + len <= MAX_GSO_BYTES
                && run.segment <= max_segment(&dst);
            if joins {
                run.len += len;
                run.count += 1;
                run.closed = len < run.segment;
                return;
            }
        }
        self.runs.push(Run {
            dst,
            start,
            len,
            segment: len,
            count: 1,
            closed: false,
        });
    }

    /// Bytes held, so a caller can send before a batch grows without bound.
    pub fn bytes(&self) -> usize {
        self.end
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs in the order they were pushed.
    pub fn runs(&self) -> impl Iterator<Item = Segments<'_>> + '_ {
        self.runs.iter().map(|run| Segments {
            dst: run.dst,
            bytes: &self.buf[run.start..run.start + run.len],
            // A run of more than one was only joined while its size fit an Ethernet
            // MTU (`max_segment`), so the size fits a u16.
            segment_size: (run.count > 1).then_some(run.segment as u16),
        })
    }

    /// Forgets every datagram, keeping the buffer.
    pub fn clear(&mut self) {
        self.end = 0;
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> SocketAddr {
        "192.0.2.1:51820".parse().unwrap()
    }
    fn b() -> SocketAddr {
        "[2001:db8::2]:51820".parse().unwrap()
    }

    fn shape(batch: &SendBatch) -> Vec<(SocketAddr, usize, Option<usize>)> {
        batch
            .runs()
            .map(|s| (s.dst, s.bytes.len(), s.segment_size.map(usize::from)))
            .collect()
    }

    #[test]
    fn equal_datagrams_to_one_peer_make_one_run_and_a_short_one_ends_it() {
        let mut batch = SendBatch::new();
        for _ in 0..3 {
            batch.push(a(), &[1; 1452], 64);
        }
        batch.push(a(), &[2; 100], 64);
        batch.push(a(), &[3; 1452], 64);
        assert_eq!(
            shape(&batch),
            vec![(a(), 3 * 1452 + 100, Some(1452)), (a(), 1452, None)]
        );
        let first = batch.runs().next().unwrap();
        assert_eq!(&first.bytes[3 * 1452..], &[2; 100][..]);
    }

    #[test]
    fn another_peer_or_a_longer_datagram_starts_a_new_run() {
        let mut batch = SendBatch::new();
        batch.push(a(), &[0; 148], 64);
        batch.push(a(), &[0; 148], 64);
        batch.push(b(), &[0; 148], 64);
        batch.push(b(), &[0; 1000], 64);
        assert_eq!(
            shape(&batch),
            vec![(a(), 296, Some(148)), (b(), 148, None), (b(), 1000, None)]
        );
    }

    #[test]
    fn runs_respect_the_segment_count_and_the_byte_limit() {
        let mut batch = SendBatch::new();
        for _ in 0..5 {
            batch.push(a(), &[0; 100], 2);
        }
        assert_eq!(
            shape(&batch),
            vec![
                (a(), 200, Some(100)),
                (a(), 200, Some(100)),
                (a(), 100, None)
            ]
        );

        let mut batch = SendBatch::new();
        for _ in 0..50 {
            batch.push(a(), &[0; 1452], 64);
        }
        let runs = shape(&batch);
        assert!(runs.iter().all(|(_, len, _)| *len <= MAX_GSO_BYTES));
        assert_eq!(runs.iter().map(|(_, len, _)| len).sum::<usize>(), 50 * 1452);
        assert_eq!(runs[0].1 / 1452, MAX_GSO_BYTES / 1452);
    }

    #[test]
    fn no_gso_without_support_or_for_datagrams_over_the_ethernet_mtu() {
        let mut batch = SendBatch::new();
        batch.push(a(), &[0; 100], 1);
        batch.push(a(), &[0; 100], 1);
        batch.push(b(), &[0; 1460], 64);
        batch.push(b(), &[0; 1460], 64);
        assert_eq!(
            shape(&batch),
            vec![
                (a(), 100, None),
                (a(), 100, None),
                (b(), 1460, None),
                (b(), 1460, None)
            ]
        );
    }

    #[test]
    fn clear_keeps_nothing_but_capacity() {
        let mut batch = SendBatch::new();
        batch.push(a(), &[0; 1000], 64);
        assert_eq!(batch.bytes(), 1000);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.bytes(), 0);
        assert_eq!(batch.runs().count(), 0);
    }

    #[test]
    fn datagrams_written_in_place_join_runs_like_pushed_ones() {
        let mut batch = SendBatch::new();
        for fill in 1..=3u8 {
            // Room for more than is kept, as a sealer asks for its worst case.
            let room = batch.room(1500);
            room[..1452].fill(fill);
            batch.commit(a(), 1452, 64);
        }
        assert_eq!(shape(&batch), vec![(a(), 3 * 1452, Some(1452))]);
        let run = batch.runs().next().unwrap();
        assert!(run.bytes[..1452].iter().all(|&b| b == 1));
        assert!(run.bytes[2 * 1452..].iter().all(|&b| b == 3));
    }

    #[test]
    fn a_cleared_batch_reuses_its_space_without_old_bytes_showing() {
        let mut batch = SendBatch::new();
        batch.push(a(), &[7; 1000], 64);
        batch.push(a(), &[7; 1000], 64);
        batch.clear();
        // The old bytes are still in the buffer; only what is committed is sent.
        batch.room(1500)[..10].copy_from_slice(&[9; 10]);
        batch.commit(b(), 10, 64);
        batch.push(b(), &[8; 5], 64);
        assert_eq!(batch.bytes(), 15);
        let runs: Vec<_> = batch.runs().map(|s| s.bytes.to_vec()).collect();
        assert_eq!(runs, vec![[vec![9; 10], vec![8; 5]].concat()]);
    }

    #[test]
    fn a_commit_longer_than_its_room_is_clamped() {
        let mut batch = SendBatch::new();
        batch.push(a(), &[0; 4000], 64);
        batch.clear();
        batch.room(100);
        batch.commit(a(), 5000, 64);
        assert_eq!(batch.bytes(), 100);
        // A commit without a room keeps nothing, not even an empty datagram.
        batch.commit(a(), 10, 64);
        assert_eq!(batch.bytes(), 100);
        assert_eq!(batch.runs().count(), 1);
    }
}
