# shellcheck shell=bash
# bench/lib.sh: the bench's network, subjects and measurements, shared by bench/run.sh (the
# table) and bench/profile.sh (where Pinhole's time goes). Sourced after the caller has set
# BENCH_DIR, REPO, PINHOLE and NOFILE. It sources netns-tests/lib.sh: the same namespaces,
# process tracking (`start`/`stop`, every PID killed by the EXIT trap) and peer configs as the
# netns stories.

source "$REPO/netns-tests/lib.sh"

BENCHNET_TARGET=${CARGO_TARGET_DIR:-$REPO/target}/bench-tool
BENCHNET=$BENCHNET_TARGET/release/benchnet
say "building benchnet (bench/tool, std only)"
CARGO=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
CARGO_TARGET_DIR=$BENCHNET_TARGET "$CARGO" build -q --release --manifest-path "$BENCH_DIR/tool/Cargo.toml" ||
    fail "cannot build bench/tool"

SAMPLES=$WORK/samples.jsonl
: >"$SAMPLES"
declare -A NOTE_OF=()

# sample SUBJECT FIGURE RUN VALUE [EXTRA_JSON] : one measurement, for report.py.
sample() {
    printf '{"subject":"%s","figure":"%s","run":%s,"value":%s%s}\n' \
        "$1" "$2" "$3" "${4:-null}" "${5:+,$5}" >>"$SAMPLES"
}

# jget KEY < TEXT : one top-level value of the last JSON object line in TEXT ("null" if none).
# benchnet prints flat objects of numbers, so plain bash reads them: a python3 per value cost
# the bench about 7 s a run on this machine.
jget() {
    local line="" l re="[{,]\"$1\":(-?[0-9][0-9.eE+-]*|null|true|false)[,}]"
    while IFS= read -r l; do
        [[ $l == "{"* ]] && line=$l
    done
    if [[ $line =~ $re ]]; then echo "${BASH_REMATCH[1]}"; else echo null; fi
}

# run_in NS cmd... : a bounded foreground command in NS with many file descriptors allowed.
run_in() {
    local ns=$1
    shift
    ip netns exec "$ns" prlimit --nofile="$NOFILE:$NOFILE" -- "$@"
}

# ---------------------------------------------------------------------------------------------
# The network, and the home's services
# ---------------------------------------------------------------------------------------------

# bench_network : the netns stories' topology, plus the home's services (iperf3 -s, echo).
bench_network() {
    make_topology
    for ns in "$NS_CLIENT" "$NS_RELAY" "$NS_HOME"; do
        in_ns "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1 # thousands of short connections per test
    done

    say "at home: iperf3 -s (tcp/5201) and a TCP echo (tcp/7000) on 0.0.0.0"
    start iperf3 "$NS_HOME" prlimit --nofile="$NOFILE:$NOFILE" -- iperf3 -s -p 5201
    start echo "$NS_HOME" prlimit --nofile="$NOFILE:$NOFILE" -- "$BENCHNET" echo-server 0.0.0.0:7000
    wait_for 10 "iperf3 -s at home" listening "$NS_HOME" tcp 5201
    wait_for 10 "the echo server at home" listening "$NS_HOME" tcp 7000
}

declare -A BASE_OF=([kernel]=10000 [wggo]=20000 [rathole]=30000 [pinhole]=40000 [tun]=50000 [tunnat]=60000)
declare -A LABEL_OF=([kernel]="(1) no tunnel, kernel routing" [wggo]="(2) wireguard-go + socat"
    [rathole]="(3) rathole, Noise" [pinhole]="(4) Pinhole, userspace" [tun]="(5) Pinhole, TUN"
    [tunnat]="(6) Pinhole, TUN + kernel_nat")
# The processes of each subject on each side (for CPU and memory): by command name in the
# namespace (socat forks one child per connection), or the process `start` recorded.
declare -A RELAY_COMMS=([kernel]="" [wggo]="wireguard-go socat" [rathole]="rathole" [pinhole]="@pinhole-relay" [tun]="@tun-relay" [tunnat]="@tunnat-relay")
declare -A HOME_COMMS=([kernel]="" [wggo]="wireguard-go" [rathole]="rathole" [pinhole]="@pinhole-home" [tun]="@tun-home" [tunnat]="@tunnat-home")

# The TUN subject's overlay: the upper half of 10.77.0.0/24 (wireguard-go has the lower half in
# the same namespaces' kernels; the userspace Pinhole's overlay is in no kernel at all).
TUN_RELAY=10.77.0.129
TUN_HOME=10.77.0.130
# The kernel_nat subject's own peers and TUN devices (phnat0 on each side), in 10.77.1.128/25.
TUNNAT_RELAY=10.77.1.129
TUNNAT_HOME=10.77.1.130

# ---------------------------------------------------------------------------------------------
# (1) kernel routing: DNAT on the relay to the NAT, DNAT on the NAT to the home
# ---------------------------------------------------------------------------------------------
up_kernel() {
    say "(1) kernel: relay DNAT 10001-10003 -> nat -> home 5201/7000/7001 (ip_forward on the relay)"
    in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=1
    in_ns "$NS_RELAY" nft -f - <<EOF
table ip bench_kernel {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "r-client" tcp dport { 10001, 10002 } dnat to $NAT_WAN_IP
        iifname "r-client" udp dport 10003 dnat to $NAT_WAN_IP
    }
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "r-nat" ct status dnat masquerade
    }
}
EOF
    in_ns "$NS_NAT" nft -f - <<EOF
table ip bench_kernel {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "n-wan" tcp dport 10001 dnat to $HOME_LAN_IP:5201
        iifname "n-wan" tcp dport 10002 dnat to $HOME_LAN_IP:7000
        iifname "n-wan" udp dport 10003 dnat to $HOME_LAN_IP:7001
    }
}
EOF
    # The home router's forward chain drops every new inbound flow: let the DNATed ones through,
    # and the home host's own firewall likewise (only for these three ports).
    in_ns "$NS_NAT" nft insert rule ip homenat fw ct status dnat accept
    in_ns "$NS_HOME" nft insert rule inet homefw in iifname h-nat ip saddr "$RELAY_WAN_IP" tcp dport '{ 5201, 7000 }' accept
    in_ns "$NS_HOME" nft insert rule inet homefw in iifname h-nat ip saddr "$RELAY_WAN_IP" udp dport 7001 accept
}

# ---------------------------------------------------------------------------------------------
# (2) wireguard-go on both ends + socat on the relay
# ---------------------------------------------------------------------------------------------
up_wggo() {
    say "(2) wggo: wireguard-go $WG_IF_RELAY (udp/51821) and $WG_IF_HOME, socat on 20001-20003"
    gen_wg_keypair wgrelay
    gen_wg_keypair wghome
    cat >"$WORK/wgrelay.conf" <<EOF
[Interface]
PrivateKey = $(key wgrelay)
ListenPort = 51821

[Peer]
PublicKey = $(pub wghome)
AllowedIPs = $OVERLAY_HOME/32
EOF
    cat >"$WORK/wghome.conf" <<EOF
[Interface]
PrivateKey = $(key wghome)

[Peer]
PublicKey = $(pub wgrelay)
AllowedIPs = $OVERLAY_RELAY/32
Endpoint = $RELAY_WAN_IP:51821
PersistentKeepalive = 25
EOF
    # /25: the upper half of the overlay is the TUN subject's, on kernel devices too.
    wireguard_go_up wggo-relay "$NS_RELAY" "$WG_IF_RELAY" "$OVERLAY_RELAY/25" "$WORK/wgrelay.conf"
    wireguard_go_up wggo-home "$NS_HOME" "$WG_IF_HOME" "$OVERLAY_HOME/25" "$WORK/wghome.conf"
    # socat's default listen backlog is 5; a bench of new connections needs more.
    start socat-iperf "$NS_RELAY" prlimit --nofile="$NOFILE:$NOFILE" -- \
        socat TCP-LISTEN:20001,fork,reuseaddr,backlog=4096 "TCP:$OVERLAY_HOME:5201,nodelay"
    start socat-echo "$NS_RELAY" prlimit --nofile="$NOFILE:$NOFILE" -- \
        socat TCP-LISTEN:20002,fork,reuseaddr,backlog=4096,nodelay "TCP:$OVERLAY_HOME:7000,nodelay"
    start socat-udp "$NS_RELAY" prlimit --nofile="$NOFILE:$NOFILE" -- \
        socat UDP-LISTEN:20003,fork,reuseaddr "UDP:$OVERLAY_HOME:7001"
    # The home's firewall sees tunnel traffic on the wireguard-go interface, not on h-nat: open.
}

# ---------------------------------------------------------------------------------------------
# (3) rathole, Noise transport (Noise_NK_25519_ChaChaPoly_BLAKE2s)
# ---------------------------------------------------------------------------------------------
RATHOLE=${RATHOLE:-$(command -v rathole || { [[ -x $HOME/.cargo/bin/rathole ]] && echo "$HOME/.cargo/bin/rathole"; } || true)}
up_rathole() {
    say "(3) rathole: server on the relay (tcp/2333, Noise), client at home, ports 30001-30003"
    local keys priv pubk token="bench-$$-$RANDOM"
    keys=$("$RATHOLE" --genkey 2>/dev/null)
    priv=$(awk '/Private Key/ {getline; print}' <<<"$keys")
    pubk=$(awk '/Public Key/ {getline; print}' <<<"$keys")
    cat >"$WORK/rathole-server.toml" <<EOF
[server]
bind_addr = "0.0.0.0:2333"
default_token = "$token"

[server.transport]
type = "noise"

[server.transport.noise]
local_private_key = "$priv"

[server.services.iperf]
bind_addr = "0.0.0.0:30001"

[server.services.echo]
bind_addr = "0.0.0.0:30002"

[server.services.udp]
type = "udp"
bind_addr = "0.0.0.0:30003"
EOF
    cat >"$WORK/rathole-client.toml" <<EOF
[client]
remote_addr = "$RELAY_WAN_IP:2333"
default_token = "$token"

[client.transport]
type = "noise"

[client.transport.noise]
remote_public_key = "$pubk"

[client.services.iperf]
local_addr = "127.0.0.1:5201"

[client.services.echo]
local_addr = "127.0.0.1:7000"

[client.services.udp]
type = "udp"
local_addr = "127.0.0.1:7001"
EOF
    start rathole-relay "$NS_RELAY" env RUST_LOG=warn prlimit --nofile="$NOFILE:$NOFILE" -- \
        "$RATHOLE" --server "$WORK/rathole-server.toml"
    start rathole-home "$NS_HOME" env RUST_LOG=warn prlimit --nofile="$NOFILE:$NOFILE" -- \
        "$RATHOLE" --client "$WORK/rathole-client.toml"
}

# ---------------------------------------------------------------------------------------------
# (4) Pinhole, userspace stack
# ---------------------------------------------------------------------------------------------
up_pinhole() {
    say "(4) pinhole: relay (udp/$WG_PORT) forwards 40001-40003 to $OVERLAY_HOME, home exposes them"
    gen_keypair relay
    gen_keypair home
    {
        # Sockets of our own: the default /var/run/wireguard/relay.sock is shared by every
        # namespace and every other run on this machine.
        pinhole_relay_config | sed -e '/^\[\[forward\]\]/,$d' \
            -e "/^address = /a uapi_socket = \"$WORK/relay.uapi.sock\"\ncontrol_socket = \"$WORK/relay.ctl.sock\""
        cat <<EOF
[[forward]]
name = "iperf"
listen = "0.0.0.0:40001"
to = "$OVERLAY_HOME:5201"

[[forward]]
name = "echo"
listen = "0.0.0.0:40002"
to = "$OVERLAY_HOME:7000"
max_connections = 100000

[[forward]]
name = "udp"
protocol = "udp"
listen = "0.0.0.0:40003"
to = "$OVERLAY_HOME:7001"
EOF
    } >"$WORK/relay.toml"
    {
        pinhole_home_config | sed -e '/^\[\[expose\]\]/,$d' \
            -e "/^address = /a uapi_socket = \"$WORK/home.uapi.sock\"\ncontrol_socket = \"$WORK/home.ctl.sock\""
        cat <<EOF
[[expose]]
name = "iperf"
listen = "$OVERLAY_HOME:5201"
to = "127.0.0.1:5201"

[[expose]]
name = "echo"
listen = "$OVERLAY_HOME:7000"
to = "127.0.0.1:7000"
max_connections = 100000

[[expose]]
name = "udp"
protocol = "udp"
listen = "$OVERLAY_HOME:7001"
to = "127.0.0.1:7001"
EOF
    } >"$WORK/home.toml"
    pinhole_up pinhole-relay "$NS_RELAY" "$WORK/relay.toml"
    pinhole_up pinhole-home "$NS_HOME" "$WORK/home.toml"
}

# pinhole_up runs `pinhole up` without a raised descriptor limit; the bench needs one, so the
# limit of the running process is raised in place (prlimit --pid), which is what an operator
# does with LimitNOFILE= in a unit file.
raise_nofile() {
    local pid
    for pid in "$@"; do
        prlimit --pid "$pid" --nofile="$NOFILE:$NOFILE"
    done
}

# ---------------------------------------------------------------------------------------------
# (5) Pinhole, TUN stack: the kernel does TCP on overlay addresses of a TUN device
# ---------------------------------------------------------------------------------------------
up_tun() {
    say "(5) tun: relay (udp/51822, TUN $TUN_RELAY/25) forwards 50001-50003 to $TUN_HOME, home exposes them"
    gen_keypair tunrelay
    gen_keypair tunhome
    # Overlay ports 15201/17000/17001: the home's services hold 5201/7000/7001 on 0.0.0.0, and
    # in TUN mode the expose listens with a kernel socket on the overlay address.
    cat >"$WORK/tun-relay.toml" <<EOF
[interface]
private_key_file = "tunrelay.key"
listen_port = 51822
address = ["$TUN_RELAY/25"]
netstack = "tun"
uapi_socket = "$WORK/tun-relay.uapi.sock"
control_socket = "$WORK/tun-relay.ctl.sock"

[[peer]]
name = "home"
public_key = "$(pub tunhome)"
allowed_ips = ["$TUN_HOME/32"]

[[forward]]
name = "iperf"
listen = "0.0.0.0:50001"
to = "$TUN_HOME:15201"

[[forward]]
name = "echo"
listen = "0.0.0.0:50002"
to = "$TUN_HOME:17000"
max_connections = 100000

[[forward]]
name = "udp"
protocol = "udp"
listen = "0.0.0.0:50003"
to = "$TUN_HOME:17001"
EOF
    cat >"$WORK/tun-home.toml" <<EOF
[interface]
private_key_file = "tunhome.key"
address = ["$TUN_HOME/25"]
netstack = "tun"
uapi_socket = "$WORK/tun-home.uapi.sock"
control_socket = "$WORK/tun-home.ctl.sock"

[[peer]]
name = "relay"
public_key = "$(pub tunrelay)"
allowed_ips = ["$TUN_RELAY/32"]
endpoint = "$RELAY_WAN_IP:51822"
persistent_keepalive = 25

[[expose]]
name = "iperf"
listen = "$TUN_HOME:15201"
to = "127.0.0.1:5201"

[[expose]]
name = "echo"
listen = "$TUN_HOME:17000"
to = "127.0.0.1:7000"
max_connections = 100000

[[expose]]
name = "udp"
protocol = "udp"
listen = "$TUN_HOME:17001"
to = "127.0.0.1:7001"
EOF
    pinhole_up tun-relay "$NS_RELAY" "$WORK/tun-relay.toml"
    pinhole_up tun-home "$NS_HOME" "$WORK/tun-home.toml"
}

up_tunnat() {
    say "(6) tunnat: relay (udp/51823, TUN phnat0) kernel_nat 60001-60003 to $TUNNAT_HOME, home kernel_nat to its services"
    # The relay routes the DNATed flows from r-client into its TUN device.
    in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=1
    gen_keypair natrelay
    gen_keypair nathome
    cat >"$WORK/tunnat-relay.toml" <<EOF
[interface]
private_key_file = "natrelay.key"
listen_port = 51823
address = ["$TUNNAT_RELAY/25"]
netstack = "tun"
tun_name = "phnat0"
uapi_socket = "$WORK/tunnat-relay.uapi.sock"
control_socket = "$WORK/tunnat-relay.ctl.sock"

[[peer]]
name = "home"
public_key = "$(pub nathome)"
allowed_ips = ["$TUNNAT_HOME/32"]

[[forward]]
name = "iperf"
listen = "0.0.0.0:60001"
to = "$TUNNAT_HOME:5201"
kernel_nat = true

[[forward]]
name = "echo"
listen = "0.0.0.0:60002"
to = "$TUNNAT_HOME:7000"
kernel_nat = true

[[forward]]
name = "udp"
protocol = "udp"
listen = "0.0.0.0:60003"
to = "$TUNNAT_HOME:7001"
kernel_nat = true
EOF
    # The home's exposes keep the services' ports: no socket listens on the overlay address,
    # the kernel rewrites 10.77.1.130:7000 to 127.0.0.1:7000 before one would be looked for.
    cat >"$WORK/tunnat-home.toml" <<EOF
[interface]
private_key_file = "nathome.key"
address = ["$TUNNAT_HOME/25"]
netstack = "tun"
tun_name = "phnat0"
uapi_socket = "$WORK/tunnat-home.uapi.sock"
control_socket = "$WORK/tunnat-home.ctl.sock"

[[peer]]
name = "relay"
public_key = "$(pub natrelay)"
allowed_ips = ["$TUNNAT_RELAY/32"]
endpoint = "$RELAY_WAN_IP:51823"
persistent_keepalive = 25

[[expose]]
name = "iperf"
listen = "$TUNNAT_HOME:5201"
to = "127.0.0.1:5201"
kernel_nat = true

[[expose]]
name = "echo"
listen = "$TUNNAT_HOME:7000"
to = "127.0.0.1:7000"
kernel_nat = true

[[expose]]
name = "udp"
protocol = "udp"
listen = "$TUNNAT_HOME:7001"
to = "127.0.0.1:7001"
kernel_nat = true
EOF
    pinhole_up tunnat-relay "$NS_RELAY" "$WORK/tunnat-relay.toml"
    pinhole_up tunnat-home "$NS_HOME" "$WORK/tunnat-home.toml"
}

# has_kernel_nat : does this pinhole binary know kernel_nat = true?
has_kernel_nat() {
    gen_keypair natprobe
    gen_keypair natpeer
    printf '[interface]\nprivate_key_file = "natprobe.key"\naddress = ["10.77.1.129/25"]\nnetstack = "tun"\n[[peer]]\npublic_key = "%s"\nallowed_ips = ["10.77.1.130/32"]\n[[forward]]\nname = "x"\nlisten = "0.0.0.0:60009"\nto = "10.77.1.130:9"\nkernel_nat = true\n' \
        "$(pub natpeer)" >"$WORK/nat-probe.toml"
    "$PINHOLE" check -c "$WORK/nat-probe.toml" >/dev/null 2>&1
}

# has_tun_stack : does this pinhole binary know netstack = "tun"?
has_tun_stack() {
    printf '[interface]\nprivate_key = "%s"\naddress = ["10.77.0.129/25"]\nnetstack = "tun"\n' \
        "$("$PINHOLE" genkey)" >"$WORK/tun-probe.toml"
    "$PINHOLE" check -c "$WORK/tun-probe.toml" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# Processes of a subject, their CPU and memory
# ---------------------------------------------------------------------------------------------

# pids_of NS "COMM..." : processes in NS whose command name is one of COMM (no fork per
# process: with 10,000 socat children this runs often enough to matter).
pids_of() {
    local ns=$1 comms=" $2 " pid comm
    [[ -n ${2:-} ]] || return 0
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || continue
        if [[ $comms == *" $comm "* ]]; then echo "$pid"; fi
    done
    return 0
}

# cpu_ticks PID... : utime+stime+cutime+cstime (clock ticks) summed; children that exited and
# were reaped (socat's per-connection forks) are in cutime/cstime.
cpu_ticks() {
    local pid stat total=0 f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        read -ra f <<<"$stat"
        total=$((total + f[11] + f[12] + f[13] + f[14]))
    done
    echo "$total"
}

# machine_busy_ticks : busy clock ticks of all CPUs (everything but idle and iowait).
machine_busy_ticks() {
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

# status_kib FIELD PID... : a /proc/PID/status field (VmRSS, VmHWM) summed, KiB.
status_kib() {
    local field=$1 pid total=0 v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# pss_kib PID... : proportional set size summed (shared pages split between sharers), KiB.
pss_kib() {
    (($# > 0)) || { echo 0; return 0; }
    printf '/proc/%s/smaps_rollup\n' "$@" | { xargs cat 2>/dev/null || true; } |
        awk '$1 == "Pss:" {s += $2} END {print s + 0}'
}

# subject_pids NS SPEC : the processes SPEC names ("@NAME" = the one `start` recorded as NAME).
subject_pids() {
    if [[ $2 == @* ]]; then
        local pid=${PID_OF[${2#@}]:-}
        if [[ -n $pid ]] && pid_running "$pid"; then echo "$pid"; fi
        return 0
    fi
    pids_of "$1" "$2"
}
relay_pids() { subject_pids "$NS_RELAY" "${RELAY_COMMS[$1]}"; }
home_pids() { subject_pids "$NS_HOME" "${HOME_COMMS[$1]}"; }

# ---------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------

relay_port() { echo $((BASE_OF[$1] + $2)); } # 1 iperf, 2 echo, 3 udp

# path_ok SUBJECT : one 64-byte round trip through the subject's echo forward.
path_ok() {
    run_in "$NS_CLIENT" timeout 5 "$BENCHNET" rr "$RELAY_PUBLIC_IP:$(relay_port "$1" 2)" --count 1 --warmup 0 >/dev/null 2>&1
}

# measure_tcp SUBJECT RUN STREAMS up|down : iperf3 through the subject; also CPU per GB.
declare -A CPU_PROC=() CPU_MACHINE=() BYTES=()
measure_tcp() {
    local s=$1 run=$2 streams=$3 dir=$4 out rev=() pids p0 p1 m0 m1 bps bytes
    [[ $dir == down ]] && rev=(-R)
    # shellcheck disable=SC2207
    pids=($(relay_pids "$s") $(home_pids "$s"))
    p0=$(cpu_ticks "${pids[@]}")
    m0=$(machine_busy_ticks)
    local amount=(-t "$SECONDS_TCP")
    [[ -n ${TCP_BYTES:-} ]] && amount=(-n "$TCP_BYTES")
    out=$(run_in "$NS_CLIENT" timeout $((SECONDS_TCP + 40)) iperf3 -c "$RELAY_PUBLIC_IP" \
        -p "$(relay_port "$s" 1)" "${amount[@]}" -P "$streams" "${rev[@]}" -J --connect-timeout 5000 2>&1) || true
    m1=$(machine_busy_ticks)
    # socat's per-connection children must exit and be reaped into cutime; nobody else forks.
    if [[ $s == wggo ]]; then sleep 0.2; fi
    p1=$(cpu_ticks "${pids[@]}")
    read -r bps bytes < <(python3 -c 'import json,sys
try:
    j = json.loads(sys.stdin.read()); e = j["end"]["sum_received"]
    print(e["bits_per_second"], e["bytes"])
except Exception:
    print("null null")' <<<"$out")
    if [[ $bps == null ]]; then
        note "$s: iperf3 -P $streams $dir failed: $(tail -c 300 <<<"$out" | tr '\n' ' ')"
        sample "$s" "tcp_${streams}_${dir}" "$run" null
        return 0
    fi
    sample "$s" "tcp_${streams}_${dir}" "$run" "$(awk -v b="$bps" 'BEGIN {printf "%.1f", b / 1e6}')"
    local k="$s.$run"
    BYTES[$k]=$((${BYTES[$k]:-0} + ${bytes%.*}))
    CPU_PROC[$k]=$((${CPU_PROC[$k]:-0} + p1 - p0))
    CPU_MACHINE[$k]=$((${CPU_MACHINE[$k]:-0} + m1 - m0))
}

# cpu_per_gb SUBJECT RUN : CPU seconds per GB (1e9 bytes) over that run's four iperf3 tests.
record_cpu() {
    local s=$1 run=$2 k="$1.$2" tck
    tck=$(getconf CLK_TCK)
    [[ -n ${BYTES[$k]:-} && ${BYTES[$k]} -gt 0 ]] || return 0
    if [[ -n ${RELAY_COMMS[$s]} ]]; then
        sample "$s" cpu_proc_per_gb "$run" "$(awk -v c="${CPU_PROC[$k]}" -v t="$tck" -v b="${BYTES[$k]}" 'BEGIN {printf "%.2f", c / t / (b / 1e9)}')"
    fi
    sample "$s" cpu_machine_per_gb "$run" "$(awk -v c="${CPU_MACHINE[$k]}" -v t="$tck" -v b="${BYTES[$k]}" 'BEGIN {printf "%.2f", c / t / (b / 1e9)}')"
}

# rr_test SUBJECT COUNT [WRAPPER...] : the 64-byte request/response test through SUBJECT's
# forward of the echo service, COUNT timed round trips after 50 to warm up; prints benchnet's
# report. WRAPPER (e.g. `taskset -c 0`) runs the client.
rr_test() {
    local s=$1 count=$2
    shift 2
    run_in "$NS_CLIENT" timeout 60 "$@" "$BENCHNET" rr "$RELAY_PUBLIC_IP:$(relay_port "$s" 2)" \
        --count "$count" --size 64 --warmup 50 2>&1
}

measure_rr() {
    local s=$1 run=$2 out
    out=$(rr_test "$s" "$RR_COUNT") || note "$s: latency test failed: $out"
    sample "$s" rr_p50_us "$run" "$(jget p50_us <<<"$out")"
    sample "$s" rr_p99_us "$run" "$(jget p99_us <<<"$out")"
}

# The CPUs this script may use ("0-1"), and the first of them: the one-core latency test's core.
ALL_CPUS=$(taskset -c -p $$ | awk '{print $NF}')
ONE_CPU=${ALL_CPUS%%[-,]*}

# chain_affinity SUBJECT CPUS : every thread of the subject's relay and home processes, and of
# the echo service, allowed only CPUS. Children forked later (socat's per connection) inherit it.
chain_affinity() {
    local s=$1 cpus=$2 p
    for p in $(relay_pids "$s") $(home_pids "$s") "${PID_OF[echo]}"; do
        taskset -a -c -p "$cpus" "$p" >/dev/null 2>&1 || note "$s: cannot set the CPU affinity of PID $p"
    done
}

# A KVM guest's `haltpoll` cpuidle governor lets an idle virtual CPU poll for work for up to
# guest_halt_poll_ns before it halts. The kernel's default is 200 µs; this machine's image sets 0,
# so every idle core halts at once and waking it again costs the host about 25 µs. The latency
# test is run a second time with the kernel's default, for every subject alike, and the setting
# is put back at once (and by the EXIT trap if the bench is cut short).
HALT_POLL_PARAM=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_DEFAULT_NS=200000
HALT_POLL_SAVED=$(cat "$HALT_POLL_PARAM" 2>/dev/null || true)
# The parameter exists wherever the module is loaded; it acts only where the driver is in use.
[[ $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null) == haltpoll ]] || HALT_POLL_SAVED=
[[ ${BENCH_HALT_POLL:-1} == 1 ]] || HALT_POLL_SAVED=

# halt_poll NS : set the idle poll window (fails where the machine has no haltpoll governor).
halt_poll() {
    [[ -n $HALT_POLL_SAVED && -w $HALT_POLL_PARAM ]] && echo "$1" >"$HALT_POLL_PARAM" 2>/dev/null
}
halt_poll_restore() {
    if [[ -n $HALT_POLL_SAVED ]]; then halt_poll "$HALT_POLL_SAVED" || true; fi
}
CLEANUP_HOOKS+=(halt_poll_restore)

# machine_wake COUNT : two threads bouncing a UDP datagram (benchnet pingpong) on one core, then
# with every core allowed; sets WAKE_ONE_US and WAKE_ALL_US (p50 round trips). Their difference is
# what a wake-up on another core costs this machine: the key to its latency figures. Where the
# haltpoll governor can be set, WAKE_POLL_US is the second figure again with idle cores polling.
machine_wake() {
    local one all
    one=$(run_in "$NS_CLIENT" taskset -c "$ONE_CPU" "$BENCHNET" pingpong 127.0.0.1:0 --count "$1" 2>&1) ||
        note "machine: ping-pong on one core failed: $one"
    all=$(run_in "$NS_CLIENT" "$BENCHNET" pingpong 127.0.0.1:0 --count "$1" 2>&1) ||
        note "machine: ping-pong across cores failed: $all"
    WAKE_ONE_US=$(jget p50_us <<<"$one")
    WAKE_ALL_US=$(jget p50_us <<<"$all")
    WAKE_POLL_US=null
    if halt_poll "$HALT_POLL_DEFAULT_NS"; then
        all=$(run_in "$NS_CLIENT" "$BENCHNET" pingpong 127.0.0.1:0 --count "$1" 2>&1) ||
            note "machine: ping-pong across polling cores failed: $all"
        halt_poll_restore
        WAKE_POLL_US=$(jget p50_us <<<"$all")
    fi
    local polled=""
    [[ $WAKE_POLL_US == null ]] || polled=" ($WAKE_POLL_US µs with idle cores polling before they halt)"
    say "this machine: two threads' UDP ping-pong, p50 $WAKE_ONE_US µs on one core, $WAKE_ALL_US µs across cores$polled"
}

# measure_rr_polling SUBJECT RUN : the latency test while idle cores poll before they halt (the
# caller has set halt_poll).
measure_rr_polling() {
    local s=$1 run=$2 out
    out=$(rr_test "$s" "$RR_COUNT") || note "$s: latency test with idle polling failed: $out"
    sample "$s" rr_p50_polling_us "$run" "$(jget p50_us <<<"$out")"
}

# measure_rr_one_core SUBJECT RUN : the latency test with the client, the service and the
# subject's processes all on one core. On a virtual machine, waking a process on an idle core
# costs tens of microseconds (a UDP ping-pong between two processes: 12 µs on one core, 63 µs
# across two, docs/benchmarks.md), and how many of a round trip's hops cross cores is the
# scheduler's choice. On one core that cost is gone and the chain's own work is what is left.
measure_rr_one_core() {
    local s=$1 run=$2 out
    chain_affinity "$s" "$ONE_CPU"
    out=$(rr_test "$s" "$RR_COUNT" taskset -c "$ONE_CPU") || note "$s: one-core latency test failed: $out"
    chain_affinity "$s" "$ALL_CPUS"
    sample "$s" rr_p50_one_core_us "$run" "$(jget p50_us <<<"$out")"
}

measure_cps() {
    local s=$1 run=$2 out m0 m1 n
    m0=$(machine_busy_ticks)
    out=$(run_in "$NS_CLIENT" timeout 60 "$BENCHNET" cps "$RELAY_PUBLIC_IP:$(relay_port "$s" 2)" \
        --seconds "$CPS_SECONDS" --threads "$CPS_THREADS" 2>&1) || note "$s: connection test failed: $out"
    m1=$(machine_busy_ticks)
    sample "$s" cps "$run" "$(jget per_second <<<"$out")" "\"errors\":$(jget errors <<<"$out")"
    # What one connection costs the whole machine (load tools, both peers, the kernel's work in
    # every namespace): a subject whose chain keeps the machine busy and one that waits on it
    # show apart here, where connections/s alone does not tell them apart.
    n=$(jget connections <<<"$out")
    if [[ $n =~ ^[0-9]+$ && $n -gt 0 ]]; then
        sample "$s" cpu_machine_per_conn_us "$run" \
            "$(awk -v c=$((m1 - m0)) -v t="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {printf "%.1f", c / t / n * 1e6}')"
    fi
    # Let the forwarder finish closing (TIME_WAIT, lingering FINs) before the next subject.
    sleep 0.3
}

measure_udp() {
    local s=$1 run=$2 sink flood got
    start "udp-sink" "$NS_HOME" "$BENCHNET" udp-sink 0.0.0.0:7001 --idle-ms 300 --max-seconds $((${UDP_SECONDS%.*} + 15))
    wait_for 10 "the UDP sink at home" listening "$NS_HOME" udp 7001
    flood=$(run_in "$NS_CLIENT" timeout 60 "$BENCHNET" udp-flood "$RELAY_PUBLIC_IP:$(relay_port "$s" 3)" \
        --seconds "$UDP_SECONDS" --size "$UDP_SIZE" 2>&1) || note "$s: UDP flood failed: $flood"
    try_for $((${UDP_SECONDS%.*} + 20)) eval "! pid_running ${PID_OF[udp-sink]}" || true
    stop udp-sink KILL
    got=$(grep '^{' "$WORK/udp-sink.log" | tail -n 1)
    : >"$WORK/udp-sink.log"
    local pps sent_pps
    pps=$(jget pps <<<"$got")
    sent_pps=$(jget pps <<<"$flood")
    if [[ $pps == 0.0 || $pps == 0 ]]; then pps=null; fi # nothing arrived: not a figure
    sample "$s" udp_pps "$run" "$pps" "\"sent_pps\":$sent_pps"
}

# measure_memory SUBJECT : memory at rest (after warm-up) or peak, relay and home, KiB.
record_status() {
    local s=$1 field=$2 name=$3 r h
    [[ -n ${RELAY_COMMS[$s]} ]] || return 0
    # shellcheck disable=SC2046
    r=$(status_kib "$field" $(relay_pids "$s"))
    # shellcheck disable=SC2046
    h=$(status_kib "$field" $(home_pids "$s"))
    sample "$s" "relay_${name}_mib" 0 "$(awk -v k="$r" 'BEGIN {printf "%.1f", k / 1024}')"
    sample "$s" "home_${name}_mib" 0 "$(awk -v k="$h" 'BEGIN {printf "%.1f", k / 1024}')"
}

# measure_idle SUBJECT N [WAIT] : relay memory (PSS of its processes) with N idle forwarded
# connections; with WAIT=1, wait afterwards until relay and home have let them all go.
measure_idle() {
    local s=$1 n=$2 wait=${3:-1} before after line held port
    port=$(relay_port "$s" 2)
    [[ -n ${RELAY_COMMS[$s]} ]] || return 0
    # shellcheck disable=SC2046
    before=$(pss_kib $(relay_pids "$s"))
    start "hold" "$NS_CLIENT" prlimit --nofile="$NOFILE:$NOFILE" -- \
        "$BENCHNET" hold "$RELAY_PUBLIC_IP:$port" --count "$n" --threads 16 --hold-seconds 300
    if ! try_for 180 grep -q '^{' "$WORK/hold.log"; then
        note "$s: $n connections not opened within 180 s"
        stop hold KILL
        return 0
    fi
    line=$(grep '^{' "$WORK/hold.log" | tail -n 1)
    held=$(jget held <<<"$line")
    sleep 0.5 # let the relay settle
    # shellcheck disable=SC2046
    after=$(pss_kib $(relay_pids "$s"))
    stop hold KILL
    : >"$WORK/hold.log"
    note "$s: $held of $n idle connections held ($(jget failed <<<"$line") failed, opened in $(jget open_seconds <<<"$line") s); relay PSS $((before / 1024)) -> $((after / 1024)) MiB"
    sample "$s" "idle_${n}_relay_mib" 0 "$(awk -v k="$after" 'BEGIN {printf "%.1f", k / 1024}')" "\"held\":$held,\"requested\":$n"
    if ((held > 0)); then
        sample "$s" "idle_${n}_kib_per_conn" 0 "$(awk -v a="$after" -v b="$before" -v n="$held" 'BEGIN {printf "%.1f", (a - b) / n}')" "\"held\":$held,\"requested\":$n"
    fi
    # The client vanished (its sockets closed with it): wait until the relay has let go, when
    # this subject is measured again next (its "before" must not count these).
    ((wait)) || return 0
    try_for 60 eval "[[ -z \$(ip netns exec $NS_RELAY ss -Htn state established '( sport = :$port )' | head -n 1) ]]" || true
    try_for 30 eval "[[ -z \$(ip netns exec $NS_HOME ss -Htn state established '( sport = :7000 )' | head -n 1) ]]" || true
}

# ---------------------------------------------------------------------------------------------
# Bring every subject up
# ---------------------------------------------------------------------------------------------

# bench_up SUBJECT... : bring the subjects up, check each path, warm up; sets ACTIVE.
ACTIVE=()
bench_up() {
    local s
    for s in "$@"; do
        case $s in
        kernel) up_kernel ;;
        wggo) up_wggo ;;
        rathole)
            if [[ -z $RATHOLE || ! -x $RATHOLE ]]; then
                NOTE_OF[rathole]="not installed (cargo install rathole --no-default-features --features server,client,noise)"
                note "(3) rathole: skipped, ${NOTE_OF[rathole]}"
                continue
            fi
            up_rathole
            ;;
        pinhole) up_pinhole ;;
        tun)
            if ! has_tun_stack; then
                NOTE_OF[tun]="not yet implemented in this pinhole binary ([interface] netstack = \"tun\")"
                note "(5) tun: skipped, ${NOTE_OF[tun]}"
                continue
            fi
            up_tun
            ;;
        tunnat)
            if ! has_kernel_nat; then
                NOTE_OF[tunnat]="not yet implemented in this pinhole binary (kernel_nat = true)"
                note "(6) tunnat: skipped, ${NOTE_OF[tunnat]}"
                continue
            fi
            up_tunnat
            ;;
        *) fail "unknown subject '$s' (have: kernel wggo rathole pinhole tun tunnat)" ;;
        esac
        ACTIVE+=("$s")
    done
    # Descriptor limits for the pinhole processes (started by lib.sh's pinhole_up).
    for s in pinhole tun tunnat; do
        if [[ " ${ACTIVE[*]} " == *" $s "* ]]; then
            raise_nofile "${PID_OF[$s-relay]}" "${PID_OF[$s-home]}"
        fi
    done

    for s in "${ACTIVE[@]}"; do
        wait_for 30 "a round trip through ${LABEL_OF[$s]}" path_ok "$s"
        pass "${LABEL_OF[$s]}: the path works ($(fmt_ms "$WAITED_MS") s)"
    done

    say "warm-up: one short round of each path, then memory at rest"
    for s in "${ACTIVE[@]}"; do
        run_in "$NS_CLIENT" timeout 10 "$BENCHNET" rr "$RELAY_PUBLIC_IP:$(relay_port "$s" 2)" --count 200 --warmup 0 >/dev/null 2>&1 || true
    done
    sleep 1
}

# restart_subject SUBJECT : both Pinhole peers of SUBJECT (pinhole, tun or tunnat) restarted
# with the binary $PINHOLE names now, then a round trip through them (the A/B scripts).
restart_subject() {
    local s=$1 relay=$1-relay home=$1-home
    [[ $s == pinhole ]] && relay=relay home=home
    stop "$s-relay" TERM
    stop "$s-home" TERM
    pinhole_up "$s-relay" "$NS_RELAY" "$WORK/$relay.toml" >/dev/null
    pinhole_up "$s-home" "$NS_HOME" "$WORK/$home.toml" >/dev/null
    wait_for 60 "a round trip through $s" path_ok "$s" >/dev/null
}

# ab_contenders : what an A/B script compares, from A, B and AB_SUBJECTS. With A and B set: two
# builds on the one Pinhole subject AB_SUBJECTS names (default pinhole); without: the subjects
# of AB_SUBJECTS (default "pinhole rathole") side by side. Sets builds (1 or 0), subjects and
# contenders (A B, or the subjects).
ab_contenders() {
    builds=0
    if [[ -n ${A:-} || -n ${B:-} ]]; then
        : "${A:?A=path to the first pinhole binary}" "${B:?B=path to the second pinhole binary}"
        builds=1
        subjects=("${AB_SUBJECTS:-pinhole}")
        [[ ${subjects[0]} =~ ^(pinhole|tun|tunnat)$ ]] ||
            fail "AB_SUBJECTS: builds are compared on one Pinhole subject (pinhole, tun or tunnat), not '${subjects[0]}'"
        contenders=(A B)
    else
        read -ra subjects <<<"${AB_SUBJECTS:-pinhole rathole}"
        contenders=("${subjects[@]}")
    fi
}

# ab_turn CONTENDER : sets s to the subject CONTENDER runs on; when builds are compared, that
# subject's peers are restarted with CONTENDER's build first.
ab_turn() {
    s=$1
    if ((builds)); then
        s=${subjects[0]}
        export PINHOLE=${!1}
        restart_subject "$s"
    fi
}

# restart_pinhole WHICH [prefix...] [-- up-args...] : restart the Pinhole relay or home
# (WHICH = relay|home) with a command prefix (an environment, valgrind, ...) and extra
# `pinhole up` arguments (e.g. --threads 2), and wait until the path works again.
restart_pinhole() {
    local which=$1 ns prefix=() args=()
    shift
    while (($#)) && [[ $1 != -- ]]; do prefix+=("$1"); shift; done
    (($#)) && shift
    args=("$@")
    [[ $which == relay ]] && ns=$NS_RELAY || ns=$NS_HOME
    if [[ -n ${PID_OF[pinhole-$which]:-} ]]; then stop "pinhole-$which" TERM; fi
    start "pinhole-$which" "$ns" "${prefix[@]}" "$PINHOLE" up -c "$WORK/$which.toml" "${args[@]}"
    prlimit --pid "${PID_OF[pinhole-$which]}" --nofile="$NOFILE:$NOFILE" 2>/dev/null || true
    wait_for 60 "a round trip through the restarted Pinhole $which" path_ok pinhole
}
