#!/usr/bin/env bash
# bench/ab_latency.sh: 64-byte request/response p50 in alternating slices (root).
#
#   A=old/pinhole B=new/pinhole sudo bench/ab_latency.sh   two builds, peers restarted per slice
#   AB_SUBJECTS="pinhole rathole tunnat" sudo bench/ab_latency.sh   subjects side by side
#
# A latency difference of a few percent hides in the bench's three medians: this machine's
# p50 moves by ±15 % from run to run. Slices that alternate, each the same number of round
# trips, compare two things under the same drift: the summary gives each one's median p50,
# the median of the paired ratios to the first, and how often the other one was faster.
#
# With A and B set, the one subject AB_SUBJECTS names (default "pinhole"; also "tun" or
# "tunnat") runs build A then build B in each slice, both peers restarted with that build.
# Without them, the subjects of AB_SUBJECTS take turns, with the bench's binary (PINHOLE or
# target/release/pinhole), never restarted.
#
# AB_POLL="0 200000" measures each slice once per value of the haltpoll governor's
# guest_halt_poll_ns (docs/benchmarks.md, "The machine": how long an idle core polls before it
# halts), put back at the end. AB_ONE_CORE=1 runs every slice with the client, the service and
# the subject's peers on one core (the bench's one-core row): no wake-up crosses cores, so what
# is left is the chain's own work, and the slices scatter least. Knobs: AB_SLICES=12,
# AB_COUNT=1000 round trips per slice.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
NOFILE=20000
export PINHOLE=${A:-${PINHOLE:-$REPO/target/release/pinhole}}
source "$BENCH_DIR/lib.sh"
SLICES=${AB_SLICES:-12}
COUNT=${AB_COUNT:-1000}
one_core=${AB_ONE_CORE:-0}
read -ra polls <<<"${AB_POLL:-}"
((${#polls[@]})) || polls=(-)
ab_contenders
for p in "${polls[@]}"; do
    [[ $p == - ]] || halt_poll "$p" || fail "AB_POLL: cannot set $HALT_POLL_PARAM on this machine"
done
halt_poll_restore

bench_network
bench_up "${subjects[@]}" >/dev/null
lines=$WORK/slices.txt
for ((r = 1; r <= SLICES; r++)); do
    for p in "${polls[@]}"; do
        [[ $p == - ]] || halt_poll "$p"
        for c in "${contenders[@]}"; do
            ab_turn "$c"
            if ((one_core)); then
                chain_affinity "$s" "$ONE_CPU"
                out=$(rr_test "$s" "$COUNT" taskset -c "$ONE_CPU") || fail "latency test of $c failed: $out"
                chain_affinity "$s" "$ALL_CPUS"
            else
                out=$(rr_test "$s" "$COUNT") || fail "latency test of $c failed: $out"
            fi
            echo "$r $p $c $(jget p50_us <<<"$out")" | tee -a "$lines"
        done
    done
done
halt_poll_restore
((one_core)) && echo "every slice with the chain on CPU $ONE_CPU:"
python3 - "$lines" "${contenders[@]}" <<'PY'
import collections, statistics, sys
path, contenders = sys.argv[1], sys.argv[2:]
slices = collections.defaultdict(dict)
for line in open(path):
    r, poll, who, p50 = line.split()
    if p50 != "null":
        slices[(poll, r)][who] = float(p50)
first = contenders[0]
for poll in sorted({p for p, _ in slices}, key=lambda p: (p != "-", int(p) if p.isdigit() else 0)):
    rows = [v for (p, _), v in slices.items() if p == poll and len(v) == len(contenders)]
    label = "" if poll == "-" else f"guest_halt_poll_ns={poll}: "
    for who in contenders:
        p50s = [v[who] for v in rows]
        line = f"{label}{who}: median p50 {statistics.median(p50s):.1f} µs over {len(rows)} slices"
        if who != first:
            ratios = [v[who] / v[first] for v in rows]
            faster = sum(1 for v in rows if v[who] < v[first])
            line += f"; ÷ {first}: {statistics.median(ratios):.3f} (median of pairs), faster in {faster} of {len(rows)}"
        print(line)
PY
