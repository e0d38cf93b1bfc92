#!/usr/bin/env bash
# bench/ab_trace.sh: where a round trip's time goes, from the kernel's tracepoints (root).
#
#   A=old/pinhole B=new/pinhole sudo bench/ab_trace.sh    two builds, each peer's loop: ~1 min
#   AB_SUBJECTS="rathole pinhole" AB_TRACE=wakeups sudo bench/ab_trace.sh   the scheduler's part
#
# A change that takes a system call or a microsecond off a round trip's path is below what
# timed slices resolve on this machine (docs/benchmarks.md, "How to reproduce"). Each slice
# runs AB_COUNT 64-byte round trips per contender under ftrace, and prints, by AB_TRACE:
#
# - syscalls (the default; `raw_syscalls`, the relay's and the home's threads only): every
#   turn of a peer's loop, from the `epoll_wait` that woke it to the next one, grouped by the
#   calls it made, with its mean length over the middle 80 %; the system calls per round
#   trip; and, in the turn that carries a message, the time from its read to the tunnel send.
# - wakeups (`sched`, the whole machine): each wake-up of a process per round trip, by
#   whether it went to another core and whether that core was idle, with the time from the
#   wake-up to the process running. On a machine whose idle cores halt, a hand-over to an
#   idle core costs tens of microseconds (docs/benchmarks.md, "The machine").
#
# Tracing slows every call, so the lengths run high: compare contenders, not figures from
# elsewhere. With A and B set, the one subject AB_SUBJECTS names (default "pinhole"; also
# "tun" or "tunnat") runs each build in turn, both peers restarted. Without them, the
# subjects of AB_SUBJECTS take turns (also "rathole", "wggo"), never restarted.
# Knobs: AB_SLICES=3, AB_COUNT=3000.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
NOFILE=20000
export PINHOLE=${A:-${PINHOLE:-$REPO/target/release/pinhole}}
source "$BENCH_DIR/lib.sh"
SLICES=${AB_SLICES:-3}
COUNT=${AB_COUNT:-3000}
TRACE=${AB_TRACE:-syscalls}
[[ $TRACE =~ ^(syscalls|wakeups)$ ]] || fail "AB_TRACE: syscalls or wakeups, not '$TRACE'"
ab_contenders

T=/sys/kernel/tracing
[[ -d $T/events ]] || mount -t tracefs nodev "$T" 2>/dev/null ||
    fail "no tracefs at $T (mount -t tracefs nodev $T)"
if [[ $TRACE == syscalls ]]; then events=(raw_syscalls); else events=(sched/sched_waking sched/sched_wakeup sched/sched_switch); fi
for e in "${events[@]}"; do [[ -d $T/events/$e ]] || fail "this kernel has no $e tracepoints"; done
BUFFER_KB_SAVED=$(cat "$T/buffer_size_kb")
trace_restore() {
    echo 0 >"$T/tracing_on"
    for e in "${events[@]}"; do
        echo 0 >"$T/events/$e/enable"
        echo 0 >"$T/events/$e/filter"
    done
    echo "$BUFFER_KB_SAVED" >"$T/buffer_size_kb"
    : >"$T/trace"
}
CLEANUP_HOOKS+=(trace_restore)
# A few thousand round trips are ~14 events each per peer: room for all of them, so none is lost.
echo 65536 >"$T/buffer_size_kb"

bench_network
bench_up "${subjects[@]}" >/dev/null
for ((r = 1; r <= SLICES; r++)); do
    for c in "${contenders[@]}"; do
        ab_turn "$c"
        relay="" home="" filter=""
        for p in $(relay_pids "$s"); do relay+=" $(ls /proc/"$p"/task)"; done
        for p in $(home_pids "$s"); do home+=" $(ls /proc/"$p"/task)"; done
        if [[ $TRACE == syscalls ]]; then
            for t in $relay $home; do filter+="${filter:+ || }common_pid == $t"; done
            echo "$filter" >"$T/events/raw_syscalls/filter"
        fi
        : >"$T/trace"
        for e in "${events[@]}"; do echo 1 >"$T/events/$e/enable"; done
        echo 1 >"$T/tracing_on"
        out=$(rr_test "$s" "$COUNT") || fail "latency test of $c failed: $out"
        echo 0 >"$T/tracing_on"
        for e in "${events[@]}"; do echo 0 >"$T/events/$e/enable"; done
        echo "== slice $r, $c ($(jget p50_us <<<"$out") µs p50 under tracing)"
        # shellcheck disable=SC2086 # the thread ids are words
        python3 "$BENCH_DIR/trace_report.py" "$TRACE" "$T/trace" "$COUNT" "relay:$(echo $relay)" "home:$(echo $home)"
    done
done
