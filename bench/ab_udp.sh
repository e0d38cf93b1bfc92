#!/usr/bin/env bash
# bench/ab_udp.sh: UDP forwarding, both ways, two Pinhole builds alternating (root).
#
#   A=old/pinhole B=new/pinhole sudo bench/ab_udp.sh      four rounds, ~2 minutes
#
# `make bench` floods one way only (client → service). This also floods the other way: a
# service at home answers a client's first datagram with AB_SECONDS of 64-byte datagrams, and
# the client counts what arrives. For each round, each build and each stack (AB_SUBJECTS,
# default "pinhole tun"), both peers are restarted with that build, then it prints the
# datagrams per second delivered each way and the relay's and home's CPU ticks over the
# reply flood. Alternating builds on the same network is how the figures in
# docs/benchmarks.md ("What made it fast") were taken; on this shared machine single runs
# spread by ±15 %, so compare means. Knobs: AB_ROUNDS=4, AB_SECONDS=2.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
NOFILE=20000
: "${A:?A=path to the first pinhole binary}" "${B:?B=path to the second pinhole binary}"
export PINHOLE=$A
source "$BENCH_DIR/lib.sh"
ROUNDS=${AB_ROUNDS:-4}
UDP_SECONDS=${AB_SECONDS:-2}
UDP_SIZE=64
read -ra subjects <<<"${AB_SUBJECTS:-pinhole tun}"

# The answering service: on each client's first datagram, AB_SECONDS of 64-byte datagrams back.
cat >"$WORK/answer.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    _, peer = s.recvfrom(2048)
    end, payload = time.time() + float(sys.argv[2]), b"r" * 64
    while time.time() < end:
        for _ in range(256):
            s.sendto(payload, peer)
PY
# The client: one datagram, then count replies until half a second of silence.
cat >"$WORK/pull.py" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.settimeout(0.5)
s.sendto(b"go", (sys.argv[1], int(sys.argv[2])))
n, first, last = 0, None, None
try:
    while True:
        s.recv(2048)
        last = time.time()
        first = first or last
        n += 1
except socket.timeout:
    pass
print(json.dumps({"packets": n, "pps": round(n / max(last - first, 1e-3), 1) if n > 1 else 0}))
PY

bench_network
bench_up "${subjects[@]}" >/dev/null
for ((r = 1; r <= ROUNDS; r++)); do
    for build in A B; do
        export PINHOLE=${!build}
        for s in "${subjects[@]}"; do
            restart_subject "$s"
            measure_udp "$s" "$r" >/dev/null
            up=$(grep "\"$s\"" "$SAMPLES" | grep udp_pps | tail -n 1 | grep -o '"value":[0-9.]*' | cut -d: -f2)
            start "answer" "$NS_HOME" python3 "$WORK/answer.py" 7001 "$UDP_SECONDS"
            wait_for 10 "the answering service" listening "$NS_HOME" udp 7001
            mapfile -t R < <(relay_pids "$s")
            mapfile -t H < <(home_pids "$s")
            r0=$(cpu_ticks "${R[@]}")
            h0=$(cpu_ticks "${H[@]}")
            down=$(run_in "$NS_CLIENT" python3 "$WORK/pull.py" "$RELAY_PUBLIC_IP" "$(relay_port "$s" 3)")
            r1=$(cpu_ticks "${R[@]}")
            h1=$(cpu_ticks "${H[@]}")
            stop answer KILL
            echo "round $r build $build $s: to the service ${up:-?}/s, replies $(jget pps <<<"$down")/s (relay $((r1 - r0)), home $((h1 - h0)) ticks over the replies)"
        done
    done
done
