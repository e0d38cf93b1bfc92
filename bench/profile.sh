#!/usr/bin/env bash
# bench/profile.sh: where Pinhole's time and memory go on the forwarding path (root).
#
#   sudo bench/profile.sh            everything below, ~3 minutes; output in results/profile-DATE/
#
# On the bench's own network and Pinhole subject (bench/lib.sh), with the release binary:
#   1. threads: CPU seconds per thread of the relay and the home during a 1-stream transfer
#      (is one thread, the node loop, saturated?)
#   2. perf: a cpu-clock profile (perf record, software timer: this machine has no hardware
#      counters) of relay and home during a 1-stream transfer, by symbol and by category
#   2b. perf-cps: the same during the new-connections test (connect, 1-byte echo, close)
#   3. syscalls: strace -c -f of the relay during a fixed transfer and during a UDP flood,
#      divided by the WireGuard datagrams that crossed the relay's WAN link (ip -s link)
#   4. allocations: valgrind --tool=dhat on the relay for a fixed transfer: heap blocks per
#      datagram
#   5. variants: relay and home restarted as they are (one runtime thread) and with
#      `pinhole up --threads 2`; each time: 1-stream throughput, CPU-s/GB, 64 B p50,
#      connections/s, KiB per idle connection
#   6. instructions: valgrind --tool=callgrind on the relay, then on the home: user-space
#      instructions per 64-byte round trip, per MB moved on four streams up, and per short
#      connection. They come out the same run after run where timings on a shared machine
#      vary by 15 % or more, so an A/B of a user-space change should compare them first
#      (callgrind_annotate on the dumps names the functions)
#
# Steps 1-3 run for each of PROFILE_SUBJECTS="pinhole tun" (userspace and TUN stacks; tun is
# skipped when the binary has none), steps 4-6 for the userspace stack.
# Knobs: PROFILE_SECONDS=4 (perf and thread runs), PROFILE_BYTES=200M (strace run),
# PROFILE_DHAT_BYTES=20M, PROFILE_CG_BYTES=100M, PROFILE_CG_ROUND_TRIPS=2000,
# PROFILE_STEPS="threads perf perf-cps syscalls dhat variants instructions", PINHOLE=path.
# It measures and writes; it judges nothing.

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export PINHOLE=${PINHOLE:-$REPO/target/release/pinhole}
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -gt 262144 ]] && NOFILE=262144
P_SECONDS=${PROFILE_SECONDS:-4}
P_BYTES=${PROFILE_BYTES:-200M}
P_DHAT_BYTES=${PROFILE_DHAT_BYTES:-20M}
P_CG_BYTES=${PROFILE_CG_BYTES:-100M}
P_CG_ROUND_TRIPS=${PROFILE_CG_ROUND_TRIPS:-2000}
STEPS=${PROFILE_STEPS:-threads perf perf-cps syscalls dhat variants instructions}
OUT=${PROFILE_OUT:-$REPO/results/profile-$(date -u +%Y%m%d-%H%M%S)}

((EUID == 0)) || { echo "bench/profile.sh: needs root" >&2; exit 2; }
for cmd in perf strace valgrind callgrind_control callgrind_annotate iperf3 wg nft python3 prlimit; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "bench/profile.sh: missing '$cmd' (Debian: linux-perf strace valgrind iperf3)" >&2; exit 2; }
done
[[ -x $PINHOLE ]] || { echo "bench/profile.sh: no pinhole binary at $PINHOLE" >&2; exit 2; }
mkdir -p "$OUT"

source "$BENCH_DIR/lib.sh"

read -ra SUBJ <<<"${PROFILE_SUBJECTS:-pinhole tun}"
bench_network
bench_up "${SUBJ[@]}"

# use SUBJECT : point RELAY, HOME_PID and PORT at that subject's processes and iperf port.
use() {
    SUBJECT=$1
    RELAY=${PID_OF[$1-relay]}
    HOME_PID=${PID_OF[$1-home]}
    PORT=$(relay_port "$1" 1)
}
use pinhole

# wan_packets : datagrams in and out of the relay's WAN link (all WireGuard traffic).
wan_packets() {
    ip -n "$NS_RELAY" -s -j link show r-nat |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["rx"]["packets"] + s["tx"]["packets"])'
}

# iperf ARGS... : one iperf3 run through Pinhole; prints "Mbit/s bytes".
iperf() {
    run_in "$NS_CLIENT" timeout 120 iperf3 -c "$RELAY_PUBLIC_IP" -p "$PORT" -J --connect-timeout 5000 "$@" |
        python3 -c 'import json,sys
try:
    e = json.load(sys.stdin)["end"]["sum_received"]; print(round(e["bits_per_second"] / 1e6), e["bytes"])
except Exception: print("null 0")'
}

# ctx_switches PID : voluntary + involuntary context switches of all its threads.
ctx_switches() {
    local t total=0 v
    for t in /proc/"$1"/task/*; do
        v=$(awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s + 0}' "$t/status" 2>/dev/null) || continue
        total=$((total + v))
    done
    echo "$total"
}

# thread_ticks PID : "tid name ticks" per thread.
thread_ticks() {
    local t stat f name
    for t in /proc/"$1"/task/*; do
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        name=${stat#*(}
        name=${name%%)*}
        stat=${stat##*) }
        read -ra f <<<"$stat"
        echo "${t##*/} ${name// /_} $((f[11] + f[12]))"
    done
}

summary=$OUT/summary.txt
: >"$summary"
report() { echo "$*" | tee -a "$summary"; }
report "# bench/profile.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), pinhole $PINHOLE"

# profile_threads : step "threads" for the subject `use` chose.
profile_threads() {
    local subj=$SUBJECT
    say "1. $subj: CPU per thread during a ${P_SECONDS}s 1-stream transfer, both directions"
    for dir in up down; do
        rev=()
        [[ $dir == down ]] && rev=(-R)
        thread_ticks "$RELAY" >"$WORK/t0.relay"
        thread_ticks "$HOME_PID" >"$WORK/t0.home"
        c0r=$(ctx_switches "$RELAY") c0h=$(ctx_switches "$HOME_PID") w0=$(wan_packets)
        got=$(iperf -t "$P_SECONDS" "${rev[@]}")
        c1r=$(ctx_switches "$RELAY") c1h=$(ctx_switches "$HOME_PID") w1=$(wan_packets)
        thread_ticks "$RELAY" >"$WORK/t1.relay"
        thread_ticks "$HOME_PID" >"$WORK/t1.home"
        dg=$((w1 - w0))
        report ""
        report "## threads, $SUBJECT, 1 stream $dir: $got (Mbit/s, bytes); $dg WireGuard datagrams; context switches per datagram: relay $(awk -v c=$((c1r - c0r)) -v d=$dg 'BEGIN {printf "%.2f", c / d}'), home $(awk -v c=$((c1h - c0h)) -v d=$dg 'BEGIN {printf "%.2f", c / d}')"
        for side in relay home; do
            python3 - "$WORK/t0.$side" "$WORK/t1.$side" "$side" "$P_SECONDS" <<'EOF' | tee -a "$summary"
import sys
tck = 100.0
a = {l.split()[0]: int(l.split()[2]) for l in open(sys.argv[1])}
rows = []
for l in open(sys.argv[2]):
    tid, name, t = l.split()
    d = (int(t) - a.get(tid, 0)) / tck
    if d > 0:
        rows.append((d, tid, name))
rows.sort(reverse=True)
secs = float(sys.argv[4])
print(f"{sys.argv[3]}: " + ", ".join(f"{name}/{tid} {d:.2f} s ({100 * d / secs:.0f}% of a core)" for d, tid, name in rows))
EOF
        done
    done
}
if [[ " $STEPS " == *" threads "* ]]; then
    for s in "${ACTIVE[@]}"; do
        use "$s"
        profile_threads
    done
    use pinhole
fi

# profile_perf : step "perf" for the subject `use` chose.
profile_perf() {
    local subj=$SUBJECT
    say "2. $subj: perf record (cpu-clock) of relay and home during a ${P_SECONDS}s 1-stream transfer"
    for side in relay home; do
        pid=$RELAY
        [[ $side == home ]] && pid=$HOME_PID
        perf record -q -e cpu-clock -F 4000 -p "$pid" -o "$OUT/perf-$subj-$side.data" -- sleep $((P_SECONDS + 1)) 2>/dev/null &
        perf_pid=$!
        ALL_PIDS+=("$perf_pid")
        sleep 0.3
        got=$(iperf -t "$P_SECONDS")
        wait "$perf_pid" || true
        perf report -i "$OUT/perf-$subj-$side.data" --stdio --no-children --sort dso,sym --percent-limit 0.3 \
            >"$OUT/perf-$subj-$side.txt" 2>/dev/null || true
        report ""
        report "## perf, $subj, $side, 1 stream up: $got (Mbit/s, bytes)"
        python3 "$BENCH_DIR/perf_categories.py" "$OUT/perf-$subj-$side.data" | tee -a "$summary"
    done
}
if [[ " $STEPS " == *" perf "* ]]; then
    for s in "${ACTIVE[@]}"; do
        use "$s"
        profile_perf
    done
    use pinhole
fi

if [[ " $STEPS " == *" perf-cps "* ]]; then
    say "2b. perf record (cpu-clock) of relay and home during ${P_SECONDS}s of new connections"
    for side in relay home; do
        pid=$RELAY
        [[ $side == home ]] && pid=$HOME_PID
        perf record -q -e cpu-clock -F 4000 -p "$pid" -o "$OUT/perf-cps-$side.data" -- sleep $((P_SECONDS + 1)) 2>/dev/null &
        perf_pid=$!
        ALL_PIDS+=("$perf_pid")
        sleep 0.3
        got=$(run_in "$NS_CLIENT" timeout 60 "$BENCHNET" cps "$RELAY_PUBLIC_IP:$(relay_port pinhole 2)" --seconds "$P_SECONDS" --threads 4)
        wait "$perf_pid" || true
        perf report -i "$OUT/perf-cps-$side.data" --stdio --no-children --sort dso,sym --percent-limit 0.3 \
            >"$OUT/perf-cps-$side.txt" 2>/dev/null || true
        report ""
        report "## perf, $side, new connections: $got"
        python3 "$BENCH_DIR/perf_categories.py" "$OUT/perf-cps-$side.data" 20 | tee -a "$summary"
        sleep 1
    done
fi

# profile_syscalls : step "syscalls" for the subject `use` chose.
profile_syscalls() {
    local subj=$SUBJECT
    say "3. $subj: strace -c -f of the relay: a $P_BYTES transfer, then a UDP flood"
    for what in tcp udp; do
        w0=$(wan_packets)
        strace -c -f -q -p "$RELAY" -o "$OUT/strace-$subj-relay-$what.txt" &
        strace_pid=$!
        ALL_PIDS+=("$strace_pid")
        sleep 0.5
        if [[ $what == tcp ]]; then
            got=$(iperf -n "$P_BYTES")
        else
            start "udp-sink" "$NS_HOME" "$BENCHNET" udp-sink 0.0.0.0:7001 --idle-ms 1000 --max-seconds 30
            wait_for 10 "the UDP sink at home" listening "$NS_HOME" udp 7001
            flood=$(run_in "$NS_CLIENT" timeout 60 "$BENCHNET" udp-flood "$RELAY_PUBLIC_IP:$(relay_port "$subj" 3)" --seconds 2 --size 64)
            try_for 30 eval "! pid_running ${PID_OF[udp-sink]}" || true
            stop udp-sink KILL
            got="sent $(jget sent <<<"$flood"), delivered $(jget packets <<<"$(grep '^{' "$WORK/udp-sink.log" | tail -n 1)")"
        fi
        sleep 0.3
        kill -INT "$strace_pid" 2>/dev/null || true
        wait "$strace_pid" 2>/dev/null || true
        w1=$(wan_packets)
        report ""
        report "## syscalls of the $subj relay, $what ($got); WireGuard datagrams on the WAN link: $((w1 - w0))"
        python3 - "$OUT/strace-$subj-relay-$what.txt" "$((w1 - w0))" <<'EOF' | tee -a "$summary"
import sys
dgrams = max(int(sys.argv[2]), 1)
rows, total = [], 0
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls = int(f[3]); name = f[-1]
        rows.append((calls, name, float(f[1]))); total += calls
rows.sort(reverse=True)
print(f"total {total} syscalls = {total / dgrams:.2f} per WireGuard datagram")
for calls, name, secs in rows[:10]:
    print(f"  {name:<16} {calls:>9}  {calls / dgrams:6.2f}/datagram  {secs:.3f} s in syscall")
EOF
    done
}
if [[ " $STEPS " == *" syscalls "* ]]; then
    for s in "${ACTIVE[@]}"; do
        use "$s"
        profile_syscalls
    done
    use pinhole
fi

if [[ " $STEPS " == *" dhat "* ]]; then
    say "4. valgrind --tool=dhat on the relay, a $P_DHAT_BYTES transfer"
    restart_pinhole relay valgrind --tool=dhat --dhat-out-file="$OUT/dhat-relay.json"
    sleep 1
    w0=$(wan_packets)
    got=$(iperf -n "$P_DHAT_BYTES" -P 1)
    w1=$(wan_packets)
    stop pinhole-relay TERM
    total=$(grep -E 'Total:' "$WORK/pinhole-relay.log" | tail -n 1)
    report ""
    report "## dhat, relay: $got (Mbit/s, bytes under valgrind); WireGuard datagrams: $((w1 - w0))"
    report "   $total"
    python3 - "$total" "$((w1 - w0))" <<'EOF' | tee -a "$summary"
import re, sys
m = re.search(r"([\d,]+) bytes in ([\d,]+) blocks", sys.argv[1])
d = max(int(sys.argv[2]), 1)
if m:
    b, n = (int(x.replace(",", "")) for x in m.groups())
    print(f"   {n / d:.2f} heap blocks and {b / d:.0f} bytes allocated per WireGuard datagram (whole run, start-up included)")
EOF
    python3 "$BENCH_DIR/dhat_top.py" "$OUT/dhat-relay.json" 12 | tee -a "$summary" || true
    restart_pinhole relay
    RELAY=${PID_OF[pinhole-relay]}
fi

if [[ " $STEPS " == *" variants "* ]]; then
    say "5. the same binary with other settings"
    report ""
    report "## variants (relay and home restarted with each; 1 stream up for ${P_SECONDS}s)"
    report "$(printf '   %-52s %6s  %8s  %9s  %6s  %s' variant Mbit/s CPU-s/GB 'p50 us' conn/s 'KiB per idle connection (1,000)')"
    for variant in default "--threads 2"; do
        # "--threads N" goes to `pinhole up`; NAME=VALUE words become the environment.
        prefix=() args=()
        for word in $variant; do
            case $word in
            default) ;;
            *=*) prefix+=("$word") ;;
            *) args+=("$word") ;;
            esac
        done
        ((${#prefix[@]})) && prefix=(env "${prefix[@]}")
        restart_pinhole relay "${prefix[@]}" -- "${args[@]}"
        restart_pinhole home "${prefix[@]}" -- "${args[@]}"
        RELAY=${PID_OF[pinhole-relay]}
        HOME_PID=${PID_OF[pinhole-home]}
        c0=$(cpu_ticks "$RELAY" "$HOME_PID")
        read -r mbps bytes < <(iperf -t "$P_SECONDS")
        c1=$(cpu_ticks "$RELAY" "$HOME_PID")
        cpugb=$(awk -v c=$((c1 - c0)) -v b="$bytes" 'BEGIN {printf "%.1f", (b > 0) ? c / 100 / (b / 1e9) : 0}')
        rr=$(run_in "$NS_CLIENT" timeout 60 "$BENCHNET" rr "$RELAY_PUBLIC_IP:$(relay_port pinhole 2)" --count 2000)
        cps=$(run_in "$NS_CLIENT" timeout 60 "$BENCHNET" cps "$RELAY_PUBLIC_IP:$(relay_port pinhole 2)" --seconds 2 --threads 4)
        sleep 1
        before=$(pss_kib "$RELAY")
        start hold "$NS_CLIENT" prlimit --nofile="$NOFILE:$NOFILE" -- \
            "$BENCHNET" hold "$RELAY_PUBLIC_IP:$(relay_port pinhole 2)" --count 1000 --threads 16 --hold-seconds 300
        wait_for 120 "1000 connections to open" grep -q '^{' "$WORK/hold.log"
        sleep 1
        after=$(pss_kib "$RELAY")
        held=$(jget held <<<"$(grep '^{' "$WORK/hold.log")")
        stop hold KILL
        : >"$WORK/hold.log"
        report "$(printf '   %-52s %6s  %8s  %9s  %6s  %s' "$variant" "$mbps" "$cpugb" "$(jget p50_us <<<"$rr")" \
            "$(jget per_second <<<"$cps")" "$(((after - before) / (held > 0 ? held : 1))) (PSS $((before / 1024)) -> $((after / 1024)) MiB, $held held)")"
        try_for 60 eval "[[ -z \$(ip netns exec $NS_RELAY ss -Htn state established '( sport = :$(relay_port pinhole 2) )' | head -n 1) ]]" || true
    done
fi

# quiet PID : waits (up to 5 minutes) until PID uses no more than a tick of CPU in half a
# second, i.e. what was sent has crossed.
quiet() {
    local i a b
    for ((i = 0; i < 600; i++)); do
        a=$(cpu_ticks "$1")
        sleep 0.5
        b=$(cpu_ticks "$1")
        ((b - a <= 1)) && return 0
    done
}

# cg_total FILE : the instructions a callgrind dump counted.
cg_total() {
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
}

if [[ " $STEPS " == *" instructions "* ]]; then
    say "6. valgrind --tool=callgrind: instructions per round trip, per MB and per connection"
    report ""
    report "## instructions (callgrind, user space only; the same from run to run)"
    report "$(printf '   %-6s %14s %14s %16s' peer 'per round trip' 'per MB up' 'per connection')"
    rr_to="$RELAY_PUBLIC_IP:$(relay_port pinhole 2)"
    PORT=$(relay_port pinhole 1)
    for which in relay home; do
        cg=$OUT/callgrind-$which.out
        restart_pinhole "$which" valgrind --tool=callgrind --callgrind-out-file="$cg" --dump-instr=no
        pid=${PID_OF[pinhole-$which]}
        # Each phase is counted from zero to a dump (callgrind-WHICH.out.1, .2, .3) and starts
        # on a quiet path: under valgrind a transfer's tail is still crossing the tunnel when
        # iperf3 has finished, and would be counted in the next phase.
        run_in "$NS_CLIENT" timeout 120 "$BENCHNET" rr "$rr_to" --count 200 >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        run_in "$NS_CLIENT" timeout 300 "$BENCHNET" rr "$rr_to" --count "$P_CG_ROUND_TRIPS" --warmup 0 >/dev/null
        callgrind_control -d "$pid" >/dev/null 2>&1
        callgrind_control -z "$pid" >/dev/null 2>&1
        bytes=$(run_in "$NS_CLIENT" timeout 600 iperf3 -c "$RELAY_PUBLIC_IP" -p "$PORT" -J -n "$P_CG_BYTES" -P 4 |
            python3 -c 'import json,sys
try: print(json.load(sys.stdin)["end"]["sum_sent"]["bytes"])
except Exception: print(0)')
        quiet "$pid"
        callgrind_control -d "$pid" >/dev/null 2>&1
        run_in "$NS_CLIENT" timeout 120 "$BENCHNET" cps "$rr_to" --seconds 1 --threads 2 >/dev/null
        quiet "$pid"
        callgrind_control -z "$pid" >/dev/null 2>&1
        conns=$(jget connections <<<"$(run_in "$NS_CLIENT" timeout 120 "$BENCHNET" cps "$rr_to" --seconds 3 --threads 2)")
        callgrind_control -d "$pid" >/dev/null 2>&1
        stop "pinhole-$which" TERM
        report "$(python3 -c '
import sys
a = sys.argv[1:]
def per(total, n, scale=1.0):
    try:
        return f"{int(total) / (float(n) / scale):,.0f}"
    except (ValueError, ZeroDivisionError):
        return "n/a"
print(f"   {a[6]:<6} {per(a[0], a[1]):>14} {per(a[2], a[3], 1e6):>14} {per(a[4], a[5]):>16}")
' "$(cg_total "$cg.1")" "$P_CG_ROUND_TRIPS" "$(cg_total "$cg.2")" "$bytes" \
            "$(cg_total "$cg.3")" "$conns" "$which")"
        restart_pinhole "$which"
    done
    RELAY=${PID_OF[pinhole-relay]}
    HOME_PID=${PID_OF[pinhole-home]}
    report "   (under valgrind the kernel's UDP GSO is refused: datagrams leave one per system call)"
fi

say "profile written to $OUT (summary.txt, perf-*.txt, strace-*.txt, dhat-relay.json, callgrind-*.out.N)"
