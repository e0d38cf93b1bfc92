#!/usr/bin/env bash
# scripts/demo.sh (make demo): Pinhole in one minute, on this machine, without root.
#
# A "home" peer exposes a small web service through a WireGuard tunnel to a "relay" peer, and a
# request to the relay's public port comes back with the home service's reply. Everything runs
# on loopback with free ports; every process is stopped and every file removed at the end.
#
# PINHOLE=/path/to/pinhole picks the binary; otherwise it is built with cargo (debug profile).
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "$0")/.." && pwd)

if [[ -z ${PINHOLE:-} ]]; then
    PINHOLE="$REPO/target/debug/pinhole"
    cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
    echo "Building pinhole (cargo build -p pinhole) ..."
    (cd "$REPO" && "$cargo" build -q -p pinhole)
fi
[[ -x $PINHOLE ]] || {
    echo "demo: no pinhole binary at $PINHOLE (run: make build)" >&2
    exit 1
}

DIR=$(mktemp -d /tmp/pinhole-demo.XXXXXX)
declare -A PID_OF=()
STEP=0
ok=0

step() {
    STEP=$((STEP + 1))
    echo
    echo "[$STEP] $*"
}
info() { echo "    $*"; }
indent() { sed 's/^/    | /'; }

running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# start NAME cmd... : in the background, output to $DIR/NAME.log, PID remembered.
start() {
    local name=$1
    shift
    "$@" >"$DIR/$name.log" 2>&1 &
    PID_OF[$name]=$!
}

# stop NAME : SIGTERM, then wait up to 10 s for it to exit; prints how it went.
stop() {
    local name=$1 pid=${PID_OF[$1]:-} rc=0
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        running "$pid" || break
        sleep 0.1
    done
    if running "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        info "$name did not stop within 10 s of SIGTERM; killed"
    fi
    wait "$pid" 2>/dev/null || rc=$?
    unset "PID_OF[$name]"
    STOP_RC=$rc
}

cleanup() {
    local rc=$?
    set +e
    for name in "${!PID_OF[@]}"; do stop "$name"; done
    if ((rc != 0 || !ok)); then
        echo
        echo "The demo did not finish. The last lines of each log:"
        for f in "$DIR"/*.log; do
            [[ -s $f ]] || continue
            echo "--- $(basename "$f")"
            tail -n 20 "$f"
        done
    fi
    rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { # free_port tcp|udp : a port nothing listens on right now
    python3 - "$1" <<'EOF'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("0.0.0.0" if kind == socket.SOCK_DGRAM else "127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

echo "Pinhole demo: a service \"at home\" reached through a relay, over a WireGuard tunnel."
echo "Both peers run on this machine and talk over loopback; no root, no TUN device."
info "pinhole: $PINHOLE ($("$PINHOLE" --version))"
info "work dir: $DIR (removed at the end)"

step "Keys. Each peer gets a WireGuard key pair (the same format as wg genkey / wg pubkey)."
(umask 077 && "$PINHOLE" genkey >"$DIR/relay.key" && "$PINHOLE" genkey >"$DIR/home.key")
RELAY_PUB=$("$PINHOLE" pubkey <"$DIR/relay.key")
HOME_PUB=$("$PINHOLE" pubkey <"$DIR/home.key")
info "pinhole genkey > relay.key    public key (pinhole pubkey < relay.key): $RELAY_PUB"
info "pinhole genkey > home.key     public key (pinhole pubkey < home.key):  $HOME_PUB"

step "Ports. Three free ports on this machine:"
RELAY_PORT=$(free_port udp)
PUBLIC_PORT=$(free_port tcp)
SERVICE_PORT=$(free_port tcp)
info "udp/$RELAY_PORT  the relay's WireGuard port (the home dials it)"
info "tcp/$PUBLIC_PORT  the relay's public port (what the world would connect to)"
info "tcp/$SERVICE_PORT  the web service at home (reachable only from the home itself)"

step "Configs. The relay forwards its public port into the tunnel; the home exposes the service."
cat >"$DIR/relay.toml" <<EOF
[interface]
private_key_file = "relay.key"
listen_port = $RELAY_PORT
address = ["10.77.0.1/24"]

[[peer]]
name = "home"
public_key = "$HOME_PUB"
allowed_ips = ["10.77.0.2/32"]

[[forward]]
name = "web"
listen = "127.0.0.1:$PUBLIC_PORT"
to = "10.77.0.2:80"
EOF
cat >"$DIR/home.toml" <<EOF
[interface]
private_key_file = "home.key"
address = ["10.77.0.2/24"]

[[peer]]
name = "relay"
public_key = "$RELAY_PUB"
allowed_ips = ["10.77.0.1/32"]
endpoint = "127.0.0.1:$RELAY_PORT"
persistent_keepalive = 25

[[expose]]
name = "web"
listen = "10.77.0.2:80"
to = "127.0.0.1:$SERVICE_PORT"
EOF
info "relay.toml:"
indent <"$DIR/relay.toml"
info "home.toml:"
indent <"$DIR/home.toml"

step "Check. pinhole check validates each config and says what the peer would do."
for peer in relay home; do
    info "pinhole check -c $peer.toml"
    "$PINHOLE" check -c "$DIR/$peer.toml" 2>&1 | indent
done

step "The home service: a tiny web server on 127.0.0.1:$SERVICE_PORT."
mkdir -p "$DIR/www"
echo "Hello from the home service! You reached it through the Pinhole relay." >"$DIR/www/index.html"
start web python3 -m http.server "$SERVICE_PORT" --bind 127.0.0.1 --directory "$DIR/www"
for _ in $(seq 100); do
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$SERVICE_PORT/" 2>/dev/null && break
    running "${PID_OF[web]}" || { echo "the web server did not start" >&2; exit 1; }
    sleep 0.1
done
curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$SERVICE_PORT/" ||
    { echo "the web server did not answer within 10 s" >&2; exit 1; }
info "python3 -m http.server is serving index.html (pid ${PID_OF[web]})"

step "Start both peers: pinhole up -c relay.toml, then pinhole up -c home.toml."
start relay "$PINHOLE" up -c "$DIR/relay.toml"
# The relay answers `pinhole status` once it is fully up; starting the home
# peer before that would only make its first handshake wait for a retry.
for _ in $(seq 100); do
    "$PINHOLE" status -c "$DIR/relay.toml" >/dev/null 2>&1 && break
    running "${PID_OF[relay]}" || { echo "the relay did not start; its log:" >&2; cat "$DIR/relay.log" >&2; exit 1; }
    sleep 0.1
done
info "relay running (pid ${PID_OF[relay]}): WireGuard on udp/$RELAY_PORT, public tcp/$PUBLIC_PORT"
start home "$PINHOLE" up -c "$DIR/home.toml"
info "home running (pid ${PID_OF[home]}): dials 127.0.0.1:$RELAY_PORT, keeps the tunnel open"

step "A request to the relay's public port: curl http://127.0.0.1:$PUBLIC_PORT/"
info "it travels: curl -> relay tcp/$PUBLIC_PORT -> WireGuard tunnel -> home 10.77.0.2:80 -> 127.0.0.1:$SERVICE_PORT"
t0=$EPOCHREALTIME
deadline=$((${t0%.*} + 20))
reply=""
while :; do
    if reply=$(curl -fsS --max-time 2 "http://127.0.0.1:$PUBLIC_PORT/" 2>&1); then
        break
    fi
    for name in relay home; do
        running "${PID_OF[$name]}" || { echo "the $name peer exited; its log follows" >&2; exit 1; }
    done
    if ((${EPOCHREALTIME%.*} >= deadline)); then
        echo "no reply through the relay within 20 s (last error: $reply)" >&2
        exit 1
    fi
    sleep 0.2
done
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
info "the reply ($secs s after the peers started; the first request waits for the handshake):"
echo
echo "    >>> $reply"

step "Stop everything with SIGTERM."
for name in home relay; do
    stop "$name"
    if ((STOP_RC != 0)); then
        echo "pinhole up ($name) exited with status $STOP_RC on SIGTERM; 0 was expected" >&2
        exit 1
    fi
    info "$name peer stopped cleanly (exit status 0)"
done
stop web
info "web server stopped"

ok=1
echo
echo "Done. That is the whole idea: run the relay config on a VM with a public IP, the home config"
echo "next to your service, and the world reaches your service through the relay. The example"
echo "configs in configs/ are a starting point: pinhole check -c configs/relay.toml"
