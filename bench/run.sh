#!/usr/bin/env bash
# bench/run.sh: Pinhole side by side with the forwarders people use instead, in one run.
#
#   sudo bench/run.sh                  the full bench (median of BENCH_RUNS runs), ~4-5 minutes
#   BENCH_SMOKE=1 sudo bench/run.sh    every subject once, tiny durations: proves the harness works
#
# The network is the netns stories' own (netns-tests/lib.sh, sourced, not copied):
#
#   client 198.51.100.50 ── 198.51.100.1 relay 203.0.113.1 ── 203.0.113.10 nat 192.0.2.1 ── 192.0.2.10 home
#
# At home run the services: iperf3 -s (tcp/5201), a TCP echo (tcp/7000) and, per UDP test, a UDP
# sink (udp/7001), bound to 0.0.0.0. Every subject makes a public port on the relay reach them:
#
#   (1) kernel   no tunnel: nftables DNAT on the relay and on the home's NAT, kernel routing
#                (the ceiling)                                          public ports 10001-10003
#   (2) wggo     wireguard-go on both ends, socat on the relay into the tunnel (the manual setup)
#                                                                       public ports 20001-20003
#   (3) rathole  rathole server on the relay, client at home, Noise transport (when installed)
#                                                                       public ports 30001-30003
#   (4) pinhole  Pinhole, userspace stack: [[forward]] on the relay, [[expose]] at home
#                                                                       public ports 40001-40003
#   (5) tun      Pinhole, TUN stack ([interface] netstack = "tun"; skipped with a note when the
#                binary has none)                                       public ports 50001-50003
#
# All subjects are up at once (each on its own ports), so every figure is measured for every
# subject in turn, run after run, in a rotating order: a drift of the machine hits all alike.
#
# Knobs (environment):
#   BENCH_RUNS=3            runs per figure; the table shows the median
#   BENCH_SECONDS=2         seconds per iperf3 test (4 tests per subject per run)
#   BENCH_TCP_BYTES=        bytes per iperf3 test instead (iperf3 -n; the smoke run uses 8M)
#   BENCH_RR_COUNT=2000     64-byte round trips per latency sample
#   BENCH_CPS_SECONDS=1     seconds of connect/echo/close per sample
#   BENCH_CPS_THREADS=4     concurrent connectors
#   BENCH_UDP_SECONDS=1     seconds of UDP flood per sample
#   BENCH_UDP_SIZE=64       UDP payload bytes
#   BENCH_IDLE="1000 10000" idle forwarded connections held open (measured once per subject)
#   BENCH_SUBJECTS="kernel wggo rathole pinhole tun tunnat"
#   BENCH_PHASES="traffic idle"   the traffic figures (runs), the idle-connection figures
#   BENCH_TUNNAT_TCP=0      1: the iperf3 tests for subject (6) too (24 s more over 3 runs)
#   BENCH_SMOKE=1           1 run, 8 MB per iperf3 test, 100 round trips, 0.5 s of connections
#                           and of UDP, BENCH_IDLE="100"; docs untouched
#   BENCH_DOC=1             write the table into docs/benchmarks.md (default: 1 unless smoke)
#   BENCH_RESULTS=results   where bench-DATE.json goes
#   PINHOLE=path            the binary (default target/release/pinhole), RATHOLE=path likewise
#   BENCH_PINHOLE_LABEL=..  what to call that binary in the report (default: git describe)
#   BENCH_HALT_POLL=1       0: no latency row with idle cores polling (that row sets the
#                           machine-wide /sys/module/haltpoll/parameters/guest_halt_poll_ns
#                           to the kernel's default for a moment, and puts the old value back)
#
# Every process is started by lib.sh's `start` and ended by PID; namespaces are removed on exit.
# Nothing here judges a figure: the bench reports, it never fails on a number.

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export PINHOLE=${PINHOLE:-$REPO/target/release/pinhole}

SMOKE=${BENCH_SMOKE:-0}
if [[ $SMOKE == 1 ]]; then
    RUNS=${BENCH_RUNS:-1}
    SECONDS_TCP=${BENCH_SECONDS:-1}
    TCP_BYTES=${BENCH_TCP_BYTES-8M}
    RR_COUNT=${BENCH_RR_COUNT:-100}
    PINGPONG_COUNT=2000
    CPS_SECONDS=${BENCH_CPS_SECONDS:-0.5}
    UDP_SECONDS=${BENCH_UDP_SECONDS:-0.5}
    IDLE_COUNTS=${BENCH_IDLE:-100}
    DOC=${BENCH_DOC:-0}
else
    RUNS=${BENCH_RUNS:-3}
    SECONDS_TCP=${BENCH_SECONDS:-2}
    TCP_BYTES=${BENCH_TCP_BYTES:-}
    RR_COUNT=${BENCH_RR_COUNT:-2000}
    PINGPONG_COUNT=20000
    CPS_SECONDS=${BENCH_CPS_SECONDS:-1}
    UDP_SECONDS=${BENCH_UDP_SECONDS:-1}
    IDLE_COUNTS=${BENCH_IDLE:-1000 10000}
    DOC=${BENCH_DOC:-1}
fi
CPS_THREADS=${BENCH_CPS_THREADS:-4}
PHASES=${BENCH_PHASES:-traffic idle}
UDP_SIZE=${BENCH_UDP_SIZE:-64}
read -ra SUBJECTS <<<"${BENCH_SUBJECTS:-kernel wggo rathole pinhole tun tunnat}"
RESULTS=${BENCH_RESULTS:-$REPO/results}
[[ $RESULTS == /* ]] || RESULTS=$REPO/$RESULTS
# Descriptors per process: as many as the hard limit allows (10,000 idle connections need
# about 10,000 on the client, the relay and the home; this sandbox caps the hard limit at 20,000).
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited || $NOFILE -gt 262144 ]] && NOFILE=262144

if ((EUID != 0)); then
    echo "bench/run.sh: needs root (network namespaces): sudo make bench" >&2
    exit 2
fi
for cmd in ip nft wg wireguard-go socat iperf3 python3 prlimit; do
    command -v "$cmd" >/dev/null 2>&1 || {
        echo "bench/run.sh: missing the command '$cmd' (Debian: apt-get install iperf3 socat wireguard-go wireguard-tools nftables iproute2 util-linux)" >&2
        exit 2
    }
done
[[ -x $PINHOLE ]] || {
    echo "bench/run.sh: no pinhole binary at $PINHOLE (cargo build --release -p pinhole)" >&2
    exit 2
}

source "$BENCH_DIR/lib.sh"

BENCH_T0=$(now_ms)
say "bench: runs=$RUNS tcp=${SECONDS_TCP}s rr=$RR_COUNT cps=${CPS_SECONDS}s udp=${UDP_SECONDS}s idle=[$IDLE_COUNTS] smoke=$SMOKE"
bench_network
machine_wake "$PINGPONG_COUNT"
bench_up "${SUBJECTS[@]}"
for s in "${ACTIVE[@]}"; do record_status "$s" VmRSS rest; done

# ---------------------------------------------------------------------------------------------
# Runs: every figure for every subject, in a rotating order
# ---------------------------------------------------------------------------------------------

n=${#ACTIVE[@]}
[[ " $PHASES " == *" traffic "* ]] || RUNS=0
for ((run = 1; run <= RUNS; run++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${ACTIVE[$(((i + run - 1) % n))]}"); done
    say "run $run/$RUNS: order ${order[*]}"
    for streams in 1 4; do
        for dir in up down; do
            for s in "${order[@]}"; do
                # Six subjects' iperf3 tests would take the bench past its 5 minutes.
                [[ $s == tunnat && ${BENCH_TUNNAT_TCP:-0} != 1 ]] && continue
                measure_tcp "$s" "$run" "$streams" "$dir"
            done
        done
    done
    for s in "${order[@]}"; do record_cpu "$s" "$run"; done
    for s in "${order[@]}"; do measure_rr "$s" "$run"; done
    for s in "${order[@]}"; do measure_rr_one_core "$s" "$run"; done
    if halt_poll "$HALT_POLL_DEFAULT_NS"; then
        for s in "${order[@]}"; do measure_rr_polling "$s" "$run"; done
        halt_poll_restore
    fi
    for s in "${order[@]}"; do measure_cps "$s" "$run"; done
    for s in "${order[@]}"; do measure_udp "$s" "$run"; done
    say "run $run done ($(fmt_ms $(($(now_ms) - BENCH_T0))) s so far)"
done

say "peak memory (VmHWM) after the traffic"
for s in "${ACTIVE[@]}"; do record_status "$s" VmHWM peak; done

[[ " $PHASES " == *" idle "* ]] || IDLE_COUNTS=""
# Subject after subject, each with every count in turn; a subject's connections are let go
# before its next count, not after its last (memory is per process, so the next subject's
# figure does not depend on it).
if [[ -n $IDLE_COUNTS ]]; then
    say "idle forwarded connections: $IDLE_COUNTS, one subject at a time"
    read -ra counts <<<"$IDLE_COUNTS"
    for s in "${ACTIVE[@]}"; do
        # (6)'s relay holds no socket or state per connection: its idle connections are
        # entries of the kernel's conntrack table, which no process's memory shows.
        [[ $s == tunnat ]] && continue
        for i in "${!counts[@]}"; do
            measure_idle "$s" "${counts[$i]}" $((i + 1 < ${#counts[@]}))
        done
    done
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

elapsed_ms=$(($(now_ms) - BENCH_T0))
mkdir -p "$RESULTS"
stamp_name=$(date -u +%Y%m%d-%H%M%S)
meta=$WORK/meta.json
notes=$WORK/notes.tsv
: >"$notes"
for k in "${!NOTE_OF[@]}"; do printf '%s\t%s\n' "$k" "${NOTE_OF[$k]}" >>"$notes"; done
version() { "$@" 2>&1 | head -n 1 || true; }
BM_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) BM_SMOKE=$SMOKE BM_RUNS=$RUNS BM_TCP=$SECONDS_TCP BM_TCP_BYTES=${TCP_BYTES:-} \
    BM_RR=$RR_COUNT BM_CPS=$CPS_SECONDS BM_CPS_THREADS=$CPS_THREADS BM_UDP=$UDP_SECONDS \
    BM_UDP_SIZE=$UDP_SIZE BM_IDLE="$IDLE_COUNTS" BM_ELAPSED=$elapsed_ms BM_SUBJECTS="${ACTIVE[*]}" \
    BM_WAKE_ONE=$WAKE_ONE_US BM_WAKE_ALL=$WAKE_ALL_US BM_WAKE_POLL=$WAKE_POLL_US BM_TUNNAT_TCP=${BENCH_TUNNAT_TCP:-0} \
    BM_KERNEL=$(uname -r) BM_CPUS=$(nproc) BM_MEM=$(free -h | awk '/Mem:/ {print $2}') \
    BM_CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') \
    BM_PINHOLE=${BENCH_PINHOLE_LABEL:-$( (cd "$REPO" && git describe --always --dirty 2>/dev/null) || echo unknown)} \
    BM_PINHOLE_BIN=$PINHOLE \
    BM_WGGO=$(version wireguard-go --version) \
    BM_SOCAT=$(socat -V 2>/dev/null | grep -m1 'socat version' || true) \
    BM_RATHOLE=$( if [[ -n $RATHOLE && -x $RATHOLE ]]; then "$RATHOLE" --version 2>&1 | awk '/Build Version/ {print "rathole " $3}'; fi) \
    BM_IPERF=$(version iperf3 --version) \
    python3 - "$meta" "$notes" <<'EOF'
import json, os, sys
e = os.environ
def num(v):
    try:
        return float(v)
    except ValueError:
        return None
notes = {}
for line in open(sys.argv[2]):
    k, _, v = line.rstrip("\n").partition("\t")
    notes[k] = v
meta = {
    "date": e["BM_DATE"], "smoke": e["BM_SMOKE"] == "1", "runs": int(e["BM_RUNS"]),
    "tcp_seconds": float(e["BM_TCP"]), "tcp_bytes": e["BM_TCP_BYTES"] or None, "rr_count": int(e["BM_RR"]),
    "cps_seconds": float(e["BM_CPS"]), "cps_threads": int(e["BM_CPS_THREADS"]),
    "udp_seconds": float(e["BM_UDP"]), "udp_size": int(e["BM_UDP_SIZE"]),
    "idle_counts": [int(x) for x in e["BM_IDLE"].split()],
    "elapsed_seconds": round(int(e["BM_ELAPSED"]) / 1000, 1),
    "subjects": e["BM_SUBJECTS"].split(), "notes": notes,
    "tunnat_tcp": e["BM_TUNNAT_TCP"] == "1",
    "machine": {"kernel": e["BM_KERNEL"], "cpus": int(e["BM_CPUS"]), "memory": e["BM_MEM"],
                "cpu_model": e["BM_CPU_MODEL"],
                "pingpong_one_core_p50_us": num(e["BM_WAKE_ONE"]),
                "pingpong_all_cores_p50_us": num(e["BM_WAKE_ALL"]),
                "pingpong_all_cores_polling_p50_us": num(e["BM_WAKE_POLL"])},
    "versions": {"pinhole": e["BM_PINHOLE"], "pinhole_binary": e["BM_PINHOLE_BIN"],
                 "wireguard-go": e["BM_WGGO"], "socat": e["BM_SOCAT"],
                 "rathole": e["BM_RATHOLE"] or None, "iperf3": e["BM_IPERF"]},
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
json_out="$RESULTS/bench-$stamp_name.json"
doc_arg=()
[[ $DOC == 1 ]] && doc_arg=(--doc "$REPO/docs/benchmarks.md")
python3 "$BENCH_DIR/report.py" --samples "$SAMPLES" --meta "$meta" --json "$json_out" "${doc_arg[@]}"
say "results: $json_out${doc_arg:+ and docs/benchmarks.md}"
say "bench took $(fmt_ms "$elapsed_ms") s"
