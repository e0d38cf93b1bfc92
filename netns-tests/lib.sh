# shellcheck shell=bash
# netns-tests/lib.sh: what every end-to-end story shares.
#
# A story sources this file and then reads like the story it tells:
#
#   source "$(dirname "$0")/lib.sh"
#   make_topology                      # client, relay, nat, home namespaces (unique per run)
#   gen_keypair relay; gen_keypair home
#   pinhole_relay_config > "$WORK/relay.toml"
#   pinhole_up relay "$NS_RELAY" "$WORK/relay.toml"
#   ...
#   wait_for 15 "the service answers through the relay" client_gets_hello
#   pass "the client reached the home service"
#
# Topology (TEST-NET addresses only; nothing leaves these namespaces):
#
#   client 198.51.100.50 ── 198.51.100.1 relay 203.0.113.1 ── 203.0.113.10 nat 192.0.2.1 ── 192.0.2.10 home
#
# - The client reaches only the relay: it has no route anywhere else.
# - The relay does not forward packets and has no route to the home's LAN.
# - The nat namespace masquerades the home's outgoing traffic and drops every new inbound
#   connection or datagram, like a home router; the home namespace itself also drops inbound
#   packets on its LAN link that are not replies to what it started. The home can only dial out.
# - The overlay (inside WireGuard) is 10.77.0.0/24: relay 10.77.0.1, home 10.77.0.2.
#
# Every namespace, process and file is removed by an EXIT trap, also on failure or Ctrl-C.
# Set KEEP_WORK=1 to keep the work directory (configs, keys, logs) for a look afterwards.
#
# NETSTACK=userspace (the default) or NETSTACK=tun picks what carries the overlay on the Pinhole
# peers the shared config generators write (relay_config_head, home_config_head and the configs
# built on them; stories that write an [interface] by hand add $(netstack_lines NAME)). With tun
# each such peer gets netstack = "tun" and its own device name, tun_name = "phNAME%d". Stock
# wireguard-go peers are what they are either way. A story that can run on both stacks says so on
# its "# netstacks: userspace tun" line; run.sh reads it.

set -Eeuo pipefail
export LC_ALL=C

NT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$NT_DIR/.." && pwd)
STORY=$(basename "${0%.sh}")

# ---------------------------------------------------------------------------------------------
# Names and addresses
# ---------------------------------------------------------------------------------------------

PFX="ph$$"
NS_CLIENT="$PFX-client"
NS_RELAY="$PFX-relay"
NS_NAT="$PFX-nat"
NS_HOME="$PFX-home"

CLIENT_IP=198.51.100.50
RELAY_PUBLIC_IP=198.51.100.1 # what the client (the world) sees
RELAY_WAN_IP=203.0.113.1     # what the home's NAT dials
NAT_WAN_IP=203.0.113.10
NAT_LAN_IP=192.0.2.1
HOME_LAN_IP=192.0.2.10

OVERLAY_RELAY=10.77.0.1
OVERLAY_HOME=10.77.0.2

WG_PORT=51820     # the relay's WireGuard UDP port
PUBLIC_PORT=8080  # the relay's public TCP port, forwarded into the overlay
OVERLAY_PORT=80   # the home's port inside the overlay
SERVICE_PORT=8000 # the real service at home, on 127.0.0.1

# wireguard-go's control socket (/var/run/wireguard/NAME.sock) is shared by all namespaces,
# so every wireguard-go interface gets a name unique to this run (at most 15 characters).
WG_IF_RELAY="wgr$$"
WG_IF_HOME="wgh$$"

PUBLIC_URL="http://$RELAY_PUBLIC_IP:$PUBLIC_PORT"

NETSTACK=${NETSTACK:-userspace}
case $NETSTACK in
userspace | tun) ;;
*)
    echo "lib.sh: NETSTACK must be 'userspace' or 'tun', not '$NETSTACK'" >&2
    exit 2
    ;;
esac

WORK=$(mktemp -d "/tmp/pinhole-$STORY.XXXXXX")
chmod 755 "$WORK"

# The binary under test: $PINHOLE, or the debug build, or the release build.
if [[ -z ${PINHOLE:-} ]]; then
    for candidate in "$REPO_DIR/target/debug/pinhole" "$REPO_DIR/target/release/pinhole"; do
        if [[ -x $candidate ]]; then
            PINHOLE=$candidate
            break
        fi
    done
fi
PINHOLE=${PINHOLE:-pinhole}

# ---------------------------------------------------------------------------------------------
# Telling the story
# ---------------------------------------------------------------------------------------------

now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}
T0_MS=$(now_ms)

# fmt_ms 12345 -> 12.3
fmt_ms() {
    local ms=$1
    printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100))
}

stamp() {
    local ms=$(($(now_ms) - T0_MS))
    printf '[%6ss]' "$(fmt_ms "$ms")"
}

# say "what happens next" : one line of the story.
say() { echo "$(stamp) $*"; }

# pass "what was shown" : an assertion that held.
pass() { echo "$(stamp)   ok: $*"; }

# note "a measurement or an observation that is not an assertion"
note() { echo "$(stamp)   .. $*"; }

# fail "what went wrong" : stop the story with a clear message and the logs that explain it.
exec 9>&2 # the story's stderr, for failures reported from inside a redirected block
fail() {
    trap - ERR
    echo "$(stamp) FAIL: $*" >&9
    dump_logs >&9
    exit 1
}

dump_logs() {
    local f
    for f in "$WORK"/*.log; do
        [[ -s $f ]] || continue
        echo "----- last 40 lines of $(basename "$f") -----"
        tail -n 40 "$f"
    done
    echo "----- end of logs (work dir: $WORK) -----"
}

on_error() {
    local rc=$1 line=$2 cmd=$3
    fail "unexpected error (exit $rc) at ${BASH_SOURCE[1]##*/}:$line: $cmd"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------------------------
# Waiting: poll a condition until a deadline, never sleep-and-hope
# ---------------------------------------------------------------------------------------------

# try_for SECONDS cmd... : poll cmd (quietly) every 0.2 s until it succeeds (return 0) or the
# deadline passes (return 1). WAITED_MS is the time it took.
WAITED_MS=0
try_for() {
    local limit=$1
    shift
    local start deadline
    start=$(now_ms)
    deadline=$((start + limit * 1000))
    while :; do
        if "$@" >/dev/null 2>&1; then
            WAITED_MS=$(($(now_ms) - start))
            return 0
        fi
        if (($(now_ms) >= deadline)); then
            WAITED_MS=$(($(now_ms) - start))
            return 1
        fi
        sleep 0.2
    done
}

# wait_for SECONDS "what we are waiting for" cmd... : like try_for, but fails the story.
wait_for() {
    local limit=$1 what=$2
    shift 2
    try_for "$limit" "$@" || fail "gave up after ${limit}s waiting for: $what"
}

# tcp_open NS HOST PORT : can a TCP connection be opened from NS?
tcp_open() {
    ip netns exec "$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

# wait_tcp NS HOST PORT SECONDS : wait until HOST:PORT accepts TCP connections from NS.
wait_tcp() {
    wait_for "$4" "$2:$3 to accept TCP connections from $1" tcp_open "$1" "$2" "$3"
}

# listening NS tcp|udp PORT : is something in NS listening on PORT?
listening() {
    local flag=-lnt
    [[ $2 == udp ]] && flag=-lnu
    [[ -n $(ip netns exec "$1" ss -H "$flag" "sport = :$3" 2>/dev/null) ]]
}

# ---------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------

assert_eq() { # assert_eq EXPECTED ACTUAL "what"
    [[ $1 == "$2" ]] || fail "$3: expected '$1', got '$2'"
    pass "$3"
}

assert_contains() { # assert_contains HAYSTACK NEEDLE "what"
    [[ $1 == *"$2"* ]] || fail "$3: '$2' not found in: $1"
    pass "$3"
}

assert_le() { # assert_le VALUE LIMIT "what"
    (($1 <= $2)) || fail "$3: $1 is more than the limit $2"
    pass "$3 ($1 <= $2)"
}

# ---------------------------------------------------------------------------------------------
# Processes: every one is started here, tracked by PID, and ended by PID
# ---------------------------------------------------------------------------------------------

declare -A PID_OF=()
ALL_PIDS=()

# start NAME NS cmd... : run cmd in namespace NS in the background, output to $WORK/NAME.log.
start() {
    local name=$1 ns=$2
    shift 2
    echo "=== $(stamp) started: $*" >>"$WORK/$name.log"
    ip netns exec "$ns" "$@" >>"$WORK/$name.log" 2>&1 &
    PID_OF[$name]=$!
    ALL_PIDS+=("$!")
}

# pid_running PID : true while PID exists and is not a zombie.
pid_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

alive() { # alive NAME
    [[ -n ${PID_OF[$1]:-} ]] && pid_running "${PID_OF[$1]}"
}

assert_alive() { # assert_alive NAME "why it matters"
    alive "$1" || fail "$1 (pid ${PID_OF[$1]:-?}) is not running: ${2:-it should be}"
    pass "$1 is still running (pid ${PID_OF[$1]})"
}

# stop NAME [SIGNAL] : send SIGNAL (default TERM), wait up to 10 s for the exit, reap it.
# STOP_RC is its exit status (128+N when killed by signal N).
STOP_RC=0
stop() {
    local name=$1 sig=${2:-TERM}
    local pid=${PID_OF[$name]:-}
    [[ -n $pid ]] || fail "stop: no process called $name"
    STOP_RC=0
    {
        # (stderr off: bash's own "Killed" notice for a job we killed on purpose is noise)
        kill -s "$sig" "$pid" 2>/dev/null || true
        try_for 10 eval "! pid_running $pid" ||
            fail "$name (pid $pid) did not exit within 10 s of SIG$sig"
        wait "$pid" || STOP_RC=$?
    } 2>/dev/null
    unset "PID_OF[$name]"
    echo "=== $(stamp) stopped with SIG$sig, exit status $STOP_RC" >>"$WORK/$name.log"
}

# wait_exit NAME SECONDS : wait for NAME to end by itself; EXIT_RC is its exit status.
EXIT_RC=0
wait_exit() {
    local name=$1 limit=$2
    local pid=${PID_OF[$name]:-}
    [[ -n $pid ]] || fail "wait_exit: no process called $name"
    try_for "$limit" eval "! pid_running $pid" || fail "$name (pid $pid) still running after ${limit}s"
    EXIT_RC=0
    wait "$pid" 2>/dev/null || EXIT_RC=$?
    unset "PID_OF[$name]"
}

# rss_kib NAME : resident memory of a process, KiB.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/${PID_OF[$1]}/status"
}

# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------

NAMESPACES=()

in_ns() { # in_ns NS cmd...
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

add_ns() {
    ip netns add "$1"
    NAMESPACES+=("$1")
    ip -n "$1" link set lo up
}

# link NS_A IF_A ADDR_A NS_B IF_B ADDR_B : a veth cable between two namespaces.
link() {
    ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

# say_netstack : one line naming the stack the Pinhole peers of this run use.
say_netstack() {
    if [[ $NETSTACK == tun ]]; then
        note "NETSTACK=tun: the shared config generators put the Pinhole peers on kernel TUN devices"
    else
        note "NETSTACK=userspace: the shared config generators leave the Pinhole peers on the embedded stack"
    fi
}

make_topology() {
    say "building the network: client -- relay -- nat -- home (namespaces $PFX-*)"
    say_netstack
    add_ns "$NS_CLIENT"
    add_ns "$NS_RELAY"
    add_ns "$NS_NAT"
    add_ns "$NS_HOME"

    link "$NS_CLIENT" c-relay "$CLIENT_IP/24" "$NS_RELAY" r-client "$RELAY_PUBLIC_IP/24"
    link "$NS_RELAY" r-nat "$RELAY_WAN_IP/24" "$NS_NAT" n-wan "$NAT_WAN_IP/24"
    link "$NS_NAT" n-lan "$NAT_LAN_IP/24" "$NS_HOME" h-nat "$HOME_LAN_IP/24"

    # The relay is a host, not a router.
    in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=0

    # The home's router: masquerade outgoing, refuse every new inbound connection or datagram.
    in_ns "$NS_NAT" sysctl -qw net.ipv4.ip_forward=1
    ip -n "$NS_HOME" route add default via "$NAT_LAN_IP"
    in_ns "$NS_NAT" nft -f - <<'EOF'
table ip homenat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "n-wan" masquerade
    }
    chain fw {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        iifname "n-wan" counter drop
    }
}
EOF
    # And the home host's own firewall: on its LAN link only replies to what it started get in.
    in_ns "$NS_HOME" nft -f - <<'EOF'
table inet homefw {
    chain in {
        type filter hook input priority filter; policy accept;
        iifname "h-nat" ct state established,related accept
        iifname "h-nat" counter drop
    }
}
EOF
}

# show_topology_is_as_promised : the client sees only the relay; the home can only dial out.
show_topology_is_as_promised() {
    in_ns "$NS_CLIENT" ping -c1 -W1 "$RELAY_PUBLIC_IP" >/dev/null ||
        fail "the client cannot ping the relay"
    pass "the client reaches the relay ($RELAY_PUBLIC_IP)"
    ! in_ns "$NS_CLIENT" ping -c1 -W1 "$HOME_LAN_IP" >/dev/null 2>&1 ||
        fail "the client can reach the home directly"
    ! in_ns "$NS_CLIENT" ping -c1 -W1 "$NAT_WAN_IP" >/dev/null 2>&1 ||
        fail "the client can reach the home's NAT directly"
    pass "the client cannot reach the home or its NAT"
    in_ns "$NS_HOME" ping -c1 -W1 "$RELAY_WAN_IP" >/dev/null ||
        fail "the home cannot dial out to the relay"
    pass "the home dials out to the relay ($RELAY_WAN_IP) through its NAT"
    # Even given a route to the home's LAN, the relay gets nothing in: the NAT drops it.
    ip -n "$NS_RELAY" route add 192.0.2.0/24 via "$NAT_WAN_IP"
    if in_ns "$NS_RELAY" ping -c1 -W1 "$HOME_LAN_IP" >/dev/null 2>&1; then
        fail "the relay can reach the home's LAN through its NAT"
    fi
    ip -n "$NS_RELAY" route del 192.0.2.0/24 via "$NAT_WAN_IP"
    pass "nothing gets in to the home that the home did not start"
}

# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------

# gen_keypair NAME : $WORK/NAME.key (mode 600) and $WORK/NAME.pub with `pinhole genkey`/`pubkey`,
# checked against `wg pubkey`: Pinhole keys are WireGuard keys.
gen_keypair() {
    local name=$1 pub wgpub
    (umask 077 && "$PINHOLE" genkey >"$WORK/$name.key")
    pub=$("$PINHOLE" pubkey <"$WORK/$name.key")
    wgpub=$(wg pubkey <"$WORK/$name.key")
    [[ $pub == "$wgpub" ]] || fail "pinhole pubkey ($pub) and wg pubkey ($wgpub) disagree for $name"
    echo "$pub" >"$WORK/$name.pub"
}

# gen_wg_keypair NAME : the same with `wg genkey`, for stock WireGuard peers.
gen_wg_keypair() {
    local name=$1
    (umask 077 && wg genkey >"$WORK/$name.key")
    wg pubkey <"$WORK/$name.key" >"$WORK/$name.pub"
}

key() { cat "$WORK/$1.key"; }
pub() { cat "$WORK/$1.pub"; }

# ---------------------------------------------------------------------------------------------
# Pinhole peers
# ---------------------------------------------------------------------------------------------

# netstack_lines NAME : the [interface] lines that put Pinhole peer NAME on $NETSTACK: nothing
# for userspace (the default), netstack = "tun" and tun_name = "phNAME%d" for tun. The name keeps
# two TUN peers in one namespace apart and says in `ip link` whose device it is (at most 15
# characters once the kernel has replaced %d, so NAME at most 10).
netstack_lines() {
    [[ $NETSTACK == tun ]] || return 0
    printf 'netstack = "tun"\ntun_name = "ph%s%%d"\n' "$1"
}

# use_netstack FILE NAME : put the Pinhole peer NAME whose config FILE came from elsewhere (say
# `pinhole init`) on $NETSTACK: netstack_lines NAME go in after its [interface]'s address line.
# Nothing changes for userspace.
use_netstack() {
    local file=$1 lines
    lines=$(netstack_lines "$2")
    [[ -n $lines ]] || return 0
    python3 - "$file" "$lines" <<'EOF'
import sys
path, extra = sys.argv[1], sys.argv[2]
lines = open(path).read().split("\n")
start = lines.index("[interface]")
i = next(n for n in range(start, len(lines)) if lines[n].startswith("address = "))
lines[i + 1:i + 1] = extra.split("\n")
open(path, "w").write("\n".join(lines))
EOF
}

# relay_config_head COMMENT : the relay's [interface] and its [[peer]] home, after a comment
# line; callers append their own [[forward]]s and [[expose]]s.
relay_config_head() {
    cat <<EOF
# $1
[interface]
private_key_file = "relay.key"
listen_port = $WG_PORT
address = ["$OVERLAY_RELAY/24"]
$(netstack_lines relay)

[[peer]]
name = "home"
public_key = "$(pub home)"
allowed_ips = ["$OVERLAY_HOME/32"]
EOF
}

# home_config_head COMMENT : the home's [interface] and its [[peer]] relay (dialing out, with
# keepalive), after a comment line; callers append their own [[expose]]s.
home_config_head() {
    cat <<EOF
# $1
[interface]
private_key = "$(key home)"
address = ["$OVERLAY_HOME/24"]
$(netstack_lines home)

[[peer]]
name = "relay"
public_key = "$(pub relay)"
allowed_ips = ["$OVERLAY_RELAY/32"]
endpoint = "$RELAY_WAN_IP:$WG_PORT"
persistent_keepalive = 25
EOF
}

# The relay: WireGuard on udp/51820, a public port 8080 forwarded to the home's overlay port 80.
pinhole_relay_config() {
    relay_config_head "relay: reachable by the world; the home dials in to it."
    cat <<EOF

[[forward]]
name = "web"
listen = "0.0.0.0:$PUBLIC_PORT"
to = "$OVERLAY_HOME:$OVERLAY_PORT"
EOF
}

# The home: dials the relay and keeps the NAT mapping open; exposes its overlay port 80 as the
# real service on 127.0.0.1:8000.
pinhole_home_config() {
    home_config_head "home: behind NAT, no inbound port; dials out to the relay."
    cat <<EOF

[[expose]]
name = "web"
listen = "$OVERLAY_HOME:$OVERLAY_PORT"
to = "127.0.0.1:$SERVICE_PORT"
EOF
}

# pinhole_up NAME NS CONFIG [extra args] : start `pinhole up` (after `pinhole check` agrees).
pinhole_up() {
    local name=$1 ns=$2 config=$3
    shift 3
    local out
    out=$("$PINHOLE" check -c "$config" 2>&1) || fail "pinhole check refused $config:
$out"
    start "$name" "$ns" "$PINHOLE" up -c "$config" "$@"
    # A TUN peer shows its device within moments: proof that the story really runs on the TUN
    # stack (and not on a config that lost its netstack line on the way).
    if grep -q '^netstack = "tun"' "$config"; then
        local dev
        dev=$(sed -n 's/^tun_name = "\(.*\)"/\1/p' "$config")
        dev=${dev:-pinhole%d}
        wait_for 10 "$name's TUN device ${dev/\%d/N} in $ns" tun_device_in "$ns" "${dev/\%d/}"
    fi
}

# tun_device_in NS PREFIX : a TUN device whose name is PREFIX and maybe a number is up in NS.
tun_device_in() {
    ip -n "$1" -o link show type tun up 2>/dev/null | grep -qE "^[0-9]+: $2[0-9]*[:@]"
}

# wait_relay_ready NAME SECONDS : the relay's WireGuard and public ports are bound.
wait_relay_ready() {
    wait_for "$2" "$1 to bind udp/$WG_PORT" listening "$NS_RELAY" udp "$WG_PORT"
    wait_for "$2" "$1 to listen on tcp/$PUBLIC_PORT" listening "$NS_RELAY" tcp "$PUBLIC_PORT"
    assert_alive "$1" "it should be serving"
}

# ---------------------------------------------------------------------------------------------
# Stock WireGuard (wireguard-go + wg)
# ---------------------------------------------------------------------------------------------

# stock_home_conf KEY : the wg(8) config of a stock WireGuard home with key KEY that dials the
# relay through its NAT, keepalive 25 s; for wireguard_go_up.
stock_home_conf() {
    cat <<EOF
[Interface]
PrivateKey = $(key "$1")

[Peer]
PublicKey = $(pub relay)
AllowedIPs = $OVERLAY_RELAY/32
Endpoint = $RELAY_WAN_IP:$WG_PORT
PersistentKeepalive = 25
EOF
}

# wireguard_go_up NAME NS IFNAME ADDRESS/PREFIX WG_CONF : a wireguard-go interface in NS.
WG_SOCKETS=() # every wireguard-go control socket of this run, removed by cleanup
wireguard_go_up() {
    local name=$1 ns=$2 ifname=$3 addr=$4 conf=$5
    WG_SOCKETS+=("/var/run/wireguard/$ifname.sock")
    start "$name" "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 LOG_LEVEL=verbose \
        wireguard-go -f "$ifname"
    wait_for 10 "wireguard-go to create $ifname in $ns" \
        eval "[[ -S /var/run/wireguard/$ifname.sock ]] && ip -n $ns link show $ifname"
    in_ns "$ns" wg setconf "$ifname" "$conf"
    ip -n "$ns" addr add "$addr" dev "$ifname"
    ip -n "$ns" link set "$ifname" mtu 1420 up
}

# ---------------------------------------------------------------------------------------------
# The home service and the client
# ---------------------------------------------------------------------------------------------

HELLO="hello from home, run $$"

# web_service NAME NS BIND_ADDR PORT : python's http.server with index.html (HELLO) and a
# 10 MiB random file big.bin; BIG_SHA is its sha256.
web_service() {
    local name=$1 ns=$2 addr=$3 port=$4
    local dir="$WORK/www"
    if [[ ! -d $dir ]]; then
        mkdir -p "$dir"
        echo "$HELLO" >"$dir/index.html"
        head -c $((10 * 1024 * 1024)) /dev/urandom >"$dir/big.bin"
    fi
    BIG_SHA=$(sha256sum "$dir/big.bin" | cut -d' ' -f1)
    start "$name" "$ns" python3 -m http.server "$port" --bind "$addr" --directory "$dir"
    wait_for 10 "the web service on $addr:$port" tcp_open "$ns" "$addr" "$port"
}

# client_get PATH : what the client gets from the relay's public port.
client_get() {
    in_ns "$NS_CLIENT" curl -fsS --max-time 5 "$PUBLIC_URL/${1#/}"
}

# client_gets_hello : the client's request through the relay lands on the home service.
client_gets_hello() {
    [[ $(client_get /) == "$HELLO" ]]
}

# check_hello : one request through the relay, asserted.
check_hello() {
    local got
    got=$(client_get / 2>&1) || fail "the client's request to $PUBLIC_URL/ failed: $got"
    assert_eq "$HELLO" "$got" "the client's request to $PUBLIC_URL/ reaches the home service"
}

# check_big_transfer : 10 MiB through the tunnel, byte for byte.
check_big_transfer() {
    local start sha ms
    start=$(now_ms)
    sha=$(in_ns "$NS_CLIENT" curl -fsS --max-time 60 "$PUBLIC_URL/big.bin" | sha256sum | cut -d' ' -f1)
    ms=$(($(now_ms) - start))
    assert_eq "$BIG_SHA" "$sha" "10 MiB came through intact (sha256) in $(fmt_ms "$ms") s"
}

# ---------------------------------------------------------------------------------------------
# Operating a running peer: pinhole status, per-namespace files
# ---------------------------------------------------------------------------------------------

# has_command SUBCOMMAND : does this pinhole binary have `pinhole SUBCOMMAND`?
has_command() {
    "$PINHOLE" "$1" --help >/dev/null 2>&1
}

# skip_step "what is skipped" "why" : a step the binary cannot do yet, said out loud.
skip_step() {
    echo "$(stamp)   SKIPPED: $1 ($2)"
}

# json_get PYEXPR < JSON : print PYEXPR evaluated with `j` bound to the parsed JSON document
# (None prints as "null"). Example: json_get 'j["forwards"][0]["total"]'
json_get() {
    python3 -c '
import json, sys
j = json.load(sys.stdin)
v = eval(sys.argv[1], {"j": j})
print("null" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else v)
' "$1"
}

# service_stat CONFIG forwards|exposes NAME KEY : one figure of `pinhole status -c CONFIG --json`.
service_stat() {
    "$PINHOLE" status -c "$1" --json |
        json_get "next(s for s in j['$2'] if s['name'] == '$3')['$4']"
}

# peer_stat CONFIG NAME KEY : one figure of a peer in `pinhole status -c CONFIG --json`.
peer_stat() {
    "$PINHOLE" status -c "$1" --json | json_get "next(p for p in j['peers'] if p['name'] == '$2')['$3']"
}

# ns_hosts NS "IP NAME..." : an /etc/hosts seen only by processes started in NS (`ip netns exec`
# bind-mounts /etc/netns/NS/hosts over /etc/hosts). Removed with the namespace.
ns_hosts() {
    mkdir -p "/etc/netns/$1"
    { cat /etc/hosts; echo "$2"; } >"/etc/netns/$1/hosts"
}

# ---------------------------------------------------------------------------------------------
# Cleanup
# ---------------------------------------------------------------------------------------------

CLEANUP_HOOKS=() # commands cleanup runs first: what a caller changed on the host and puts back
cleanup() {
    local rc=$?
    trap - ERR
    set +e
    local pid ns hook
    for hook in "${CLEANUP_HOOKS[@]}"; do $hook; done
    # Our own processes, by PID: politely, then firmly.
    for pid in "${ALL_PIDS[@]}"; do
        pid_running "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for _ in $(seq 20); do
        local any=0
        for pid in "${ALL_PIDS[@]}"; do pid_running "$pid" && any=1; done
        ((any)) || break
        sleep 0.1
    done
    for pid in "${ALL_PIDS[@]}"; do
        pid_running "$pid" && kill -KILL "$pid" 2>/dev/null
    done
    # Anything still living in our namespaces was started by this run (socat's children, ...).
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
    done
    wait 2>/dev/null
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null
        [[ -d /etc/netns/$ns ]] && rm -rf "/etc/netns/$ns"
    done
    rm -f "/var/run/wireguard/$WG_IF_RELAY.sock" "/var/run/wireguard/$WG_IF_HOME.sock" "${WG_SOCKETS[@]}"
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
