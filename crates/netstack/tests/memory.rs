//! What a socket costs in heap memory, measured with a counting allocator: a 1000-port range
//! must cost what one port costs, and an idle UDP socket a few KiB.
//! Run with `--nocapture` to see the numbers (quoted in docs/netstack.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use pinhole_netstack::{Stack, StackConfig};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; we only count sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));
const N: u16 = 20;

async fn drive_until<T>(stack: &mut Stack, future: impl Future<Output = T>) -> T {
    tokio::pin!(future);
    loop {
        tokio::select! {
            out = &mut future => return out,
            () = stack.wait() => stack.poll(Instant::now()),
        }
    }
}

/// Average live bytes per item kept by `make(i)` for i in 0..N (the items are then dropped
/// and the stack polled so it forgets them).
async fn cost<T, F: Future<Output = T>>(
    stack: &mut Stack,
    mut make: impl FnMut(u16) -> F,
) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    let mut kept = Vec::new();
    for i in 0..N {
        kept.push(drive_until(stack, make(i)).await);
    }
    let per_item = (LIVE.load(Ordering::Relaxed) - before) / N as isize;
    drop(kept);
    for _ in 0..3 {
        drive_until(stack, tokio::task::yield_now()).await;
        stack.poll(Instant::now());
    }
    per_item
}

#[tokio::test(flavor = "current_thread")]
async fn a_thousand_port_range_costs_what_one_port_costs() {
    let (mut stack, overlay) = pinhole_netstack::new(StackConfig::new(vec![(ME, 24)], 1420));
    let at = |port: u16| SocketAddr::new(ME, port);
    // Ranges are measured first: table growth is then charged to them, not to single ports.
    let udp_range = cost(&mut stack, |i| {
        overlay.bind_udp_range(at(1000 + i * 1000), 1000)
    })
    .await;
    let udp_single = cost(&mut stack, |i| overlay.bind_udp(at(1000 + i * 1000))).await;
    let tcp_range = cost(&mut stack, |i| {
        overlay.listen_range(at(1000 + i * 1000), 1000)
    })
    .await;
    let tcp_single = cost(&mut stack, |i| overlay.listen(at(1000 + i * 1000))).await;
    println!(
        "heap per socket: UDP port {udp_single} B, UDP 1000-port range {udp_range} B, \
         TCP listener {tcp_single} B, TCP 1000-port listener {tcp_range} B"
    );
    assert!(
        udp_range <= udp_single * 3 / 2 + 256,
        "{udp_range} vs {udp_single}"
    );
    assert!(
        tcp_range <= tcp_single * 3 / 2 + 256,
        "{tcp_range} vs {tcp_single}"
    );
    assert!(
        udp_single < 16 * 1024,
        "an idle UDP socket costs {udp_single} bytes"
    );
    assert_eq!((stack.udp_socket_count(), stack.socket_count()), (0, 0));
}
