//! Process-wide memory settings for `pinhole up`, made once before the runtime starts.
//!
//! Every connection of the userspace stack owns two large TCP buffers (512 KiB each by
//! default, `crates/netstack`). They are allocated zeroed and, while a connection is idle,
//! only their first page is ever written. Whether the rest costs memory depends on the
//! allocator:
//!
//! - glibc serves a request at or above its mmap threshold with a fresh anonymous mapping:
//!   the kernel's zero pages, resident only once touched, unmapped on free. But the threshold
//!   is dynamic: the first free of such a mapping raises it to that size (up to 32 MiB), and
//!   from then on the buffers come from the heap, where `calloc` must `memset` all of them.
//!   That made an idle connection cost ~110 KiB on the relay (~300 KiB at 10,000 connections,
//!   as recycled heap chunks are dirty), and zeroing 1 MiB per connection on each peer was a
//!   third of the CPU of opening one. A fixed threshold turns the adjustment off.
//! - Transparent huge pages, when the system enables them for every mapping, would back the
//!   one touched page of a buffer with a 2 MiB page once neighbouring buffer mappings merge
//!   into a large enough region, so they are turned off for this process (nothing here needs
//!   them: no buffer is hot enough for the TLB to matter).

/// glibc's mmap threshold while we are running: 128 KiB, glibc's own initial value, now fixed.
/// TCP buffers of that size and more (the default is 512 KiB) get mappings of their own;
/// packets and stream chunks (at most 64 KiB) stay on the heap, which reuses them cheaply.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: usize = 128 * 1024;

/// Applies the settings; each one that the platform refuses is logged at debug and skipped.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !fix_mmap_threshold() {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused; large buffers may be resident");
    }
    #[cfg(target_os = "linux")]
    if !disable_huge_pages() {
        tracing::debug!("prctl(PR_SET_THP_DISABLE) refused");
    }
}

/// Fixes glibc's mmap threshold, which also stops its dynamic adjustment. True on success.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() -> bool {
    let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes two integers and no pointers; it only changes allocator
    // parameters under glibc's own lock, so it is sound at any time, from any thread.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) == 1 }
}

/// Turns transparent huge pages off for this process. True on success.
#[cfg(target_os = "linux")]
fn disable_huge_pages() -> bool {
    let (yes, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointers (the unused arguments
    // must be zero); it changes a flag of this process only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, yes, unused, unused, unused) == 0 }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// How many pages of `buffer` are resident, by `mincore`.
    fn resident_pages(buffer: &[u8]) -> usize {
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let start = buffer.as_ptr() as usize & !(page - 1);
        let len = buffer.as_ptr() as usize + buffer.len() - start;
        let mut flags = vec![0u8; len.div_ceil(page)];
        // SAFETY: [start, start + len) lies within mappings that `buffer` keeps alive, and
        // `flags` has one byte per page of it, as mincore writes.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, flags.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        flags.iter().filter(|&&f| f & 1 == 1).count()
    }

    #[test]
    fn zeroed_tcp_buffers_stay_untouched_after_large_frees() {
        tune();
        // Without the fixed threshold, freeing a large mapping makes glibc serve the next
        // buffers from the heap and memset them: all their pages resident.
        for _ in 0..4 {
            drop(vec![1u8; 8 << 20]);
            let buffers: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; 512 * 1024]).collect();
            for buffer in &buffers {
                let resident = resident_pages(buffer);
                // The allocator's header shares the first page; nothing else is touched.
                assert!(resident <= 2, "{resident} of 128 pages resident");
            }
        }
    }
}
