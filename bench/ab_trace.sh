#!/usr/bin/env bash
# bench/ab_trace.sh: where a round trip's time goes in the relay and the home, two Pinhole
# builds alternating, from the kernel's system-call tracepoints (root).
#
#   A=old/pinhole B=new/pinhole sudo bench/ab_trace.sh      three slices each, ~1 minute
#
# A change that takes a system call or a microsecond off a round trip's path is below what
# timed slices resolve on this machine (docs/benchmarks.md, "How to reproduce"). Here each
# build's relay and home are traced (`raw_syscalls`, ftrace) over AB_COUNT 64-byte round
# trips, and every turn of a peer's loop, from the `epoll_wait` that woke it to the next one,
# is grouped by the calls it made, with its mean length (the middle 80 %). It prints too the
# system calls per round trip, and for the turn that carries a request, the time from the
# read of the message to the tunnel send. Tracing slows every call, so the lengths run high;
# compare builds, not figures from elsewhere.
#
# With A and B set, the one subject AB_SUBJECTS names (default "pinhole"; also "tun" or
# "tunnat") runs each build in turn, both peers restarted. Knobs: AB_SLICES=3, AB_COUNT=3000.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
NOFILE=20000
: "${A:?A=path to the first pinhole binary}" "${B:?B=path to the second pinhole binary}"
export PINHOLE=$A
source "$BENCH_DIR/lib.sh"
SLICES=${AB_SLICES:-3}
COUNT=${AB_COUNT:-3000}
s=${AB_SUBJECTS:-pinhole}
[[ $s =~ ^(pinhole|tun|tunnat)$ ]] ||
    fail "AB_SUBJECTS: builds are compared on one Pinhole subject (pinhole, tun or tunnat), not '$s'"

T=/sys/kernel/tracing
[[ -d $T/events/raw_syscalls ]] || mount -t tracefs nodev "$T" 2>/dev/null ||
    fail "no tracefs at $T (mount -t tracefs nodev $T)"
[[ -d $T/events/raw_syscalls ]] || fail "this kernel has no raw_syscalls tracepoints"
BUFFER_KB_SAVED=$(cat "$T/buffer_size_kb")
trace_restore() {
    echo 0 >"$T/tracing_on"
    echo 0 >"$T/events/raw_syscalls/enable"
    echo 0 >"$T/events/raw_syscalls/filter"
    echo "$BUFFER_KB_SAVED" >"$T/buffer_size_kb"
    : >"$T/trace"
}
CLEANUP_HOOKS+=(trace_restore)
# A few thousand round trips are ~14 events each per peer: room for all of them, so none is lost.
echo 65536 >"$T/buffer_size_kb"

bench_network
bench_up "$s" >/dev/null
for ((r = 1; r <= SLICES; r++)); do
    for c in A B; do
        export PINHOLE=${!c}
        restart_subject "$s"
        filter="" relay="" home=""
        for p in $(relay_pids "$s"); do relay+=" $(ls /proc/"$p"/task)"; done
        for p in $(home_pids "$s"); do home+=" $(ls /proc/"$p"/task)"; done
        for t in $relay $home; do filter+="${filter:+ || }common_pid == $t"; done
        : >"$T/trace"
        echo "$filter" >"$T/events/raw_syscalls/filter"
        echo 1 >"$T/events/raw_syscalls/enable"
        echo 1 >"$T/tracing_on"
        out=$(rr_test "$s" "$COUNT") || fail "latency test of $c failed: $out"
        echo 0 >"$T/tracing_on"
        echo 0 >"$T/events/raw_syscalls/enable"
        echo "== slice $r, build $c ($(jget p50_us <<<"$out") µs p50 under tracing)"
        python3 "$BENCH_DIR/trace_turns.py" "$T/trace" "$COUNT" "relay:$(echo $relay)" "home:$(echo $home)"
    done
done
