#!/usr/bin/env python3
"""bench/perf_categories.py PERF_DATA [TOP]: a perf profile by category and by symbol.

Categories are guessed from the symbol and the object it is in, so that a person sees at a glance
whether the time is cryptography, the embedded TCP stack, the WireGuard engine, the async
runtime, memory copies, the allocator or the kernel (and which part of the kernel).
"""
import re
import subprocess
import sys

RULES = [
    ("crypto (ChaCha20-Poly1305, BLAKE2s, x25519)", r"chacha|poly1305|aead|blake2|x25519|curve25519|ring_core|CRYPTO_|aes_"),
    ("smoltcp (embedded TCP/IP)", r"smoltcp"),
    ("WireGuard engine (boringtun, pinhole_wg)", r"boringtun|pinhole_wg"),
    ("netstack glue (pinhole_netstack)", r"pinhole_netstack"),
    ("forwarding (splice, pinhole_forward)", r"pinhole_forward"),
    ("node loop (pinhole)", r"^pinhole::|pinhole::node"),
    ("async runtime (tokio, mio, channels)", r"tokio|mio::|parking_lot|futures|crossbeam"),
    ("memcpy/memmove/memset", r"mem(cpy|move|set)|__memcpy|__memmove|__memset|rep_movs"),
    ("allocator (malloc/free)", r"malloc|free|_int_|realloc|calloc|tcache|arena|sysmalloc|alloc::alloc|__rust_alloc|__rust_dealloc|mmap|munmap|brk"),
]
KERNEL_RULES = [
    ("kernel: context switches, irq-off sections (finish_task_switch, spin_unlock_irqrestore)",
     r"finish_task_switch|_raw_spin_unlock_irqrestore|_raw_spin_unlock_irq$"),
    ("kernel: page faults, zeroing and unmapping pages", r"page_fault|clear_page|unmap|mm_fault|anon|folio|memcg|mmap|do_anonymous|lru|vma|mas_|rmap|pte|zap_|alloc_pages|free_pages|get_page_from_freelist|free_unref"),
    ("kernel: copy to/from user", r"copy_user|copy_to_user|copy_from_user|_copy_to_iter|_copy_from_iter|rep_movs|memcpy_orig|copyin|copyout"),
    ("kernel: UDP/IP send+receive", r"udp|ip_|ip6_|__ip|icmp|nf_|nft_|ipt_|conntrack|fib_|dst_|inet_|inet6|neigh|xfrm|raw_local|ipv4_|ipv6_|rt6|route|siphash"),
    ("kernel: TCP", r"tcp"),
    ("kernel: veth/device/softirq", r"veth|dev_|netif|napi|net_rx|skb|__kfree_skb|sock_|sk_|gro|xmit|qdisc|netdev|softirq|__napi|rps|process_backlog|eth_type_trans|bh_enable|kmalloc|kmem_cache|move_addr_to_kernel|__check_object_size|__virt_addr_valid"),
    ("kernel: syscall entry/exit", r"entry_SYSCALL|syscall|do_syscall|__x64_sys|sys_|exit_to_user|fdget|__fget"),
    ("kernel: epoll/wakeups/futex", r"epoll|ep_|futex|wake|__wake_up|try_to_wake|ttwu|poll"),
    ("kernel: scheduler", r"schedule|__schedule|pick_next|enqueue|dequeue|update_curr|psi_"),
]


def main():
    data = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    out = subprocess.run(
        ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym", "-g", "none",
         "--percent-limit", "0"],
        capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()))
    cats = {}
    for pct, dso, kind, sym in rows:
        cat = None
        if kind == "k" or dso.startswith("[kernel"):
            for name, rx in KERNEL_RULES:
                if re.search(rx, sym, re.I):
                    cat = name
                    break
            cat = cat or "kernel: other"
        else:
            for name, rx in RULES:
                if re.search(rx, sym, re.I):
                    cat = name
                    break
            if cat is None and "libc" in dso:
                cat = "libc: other"
            cat = cat or "other user code"
        cats[cat] = cats.get(cat, 0.0) + pct
    print("by category (share of this process's samples):")
    for name, pct in sorted(cats.items(), key=lambda kv: -kv[1]):
        if pct >= 0.5:
            print(f"  {pct:5.1f}%  {name}")
    print(f"top {top} symbols:")
    for pct, dso, kind, sym in rows[:top]:
        print(f"  {pct:5.1f}%  [{kind}] {sym[:110]}  ({dso})")


if __name__ == "__main__":
    main()
