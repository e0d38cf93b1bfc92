#!/usr/bin/env bash
# requires: root pinhole ip nft curl python3 sha256sum wg wireguard-go
# netstacks: tun -- kernel_nat exists only on the TUN stack; the story sets netstack = "tun" itself
#
# Story: the relay and the home both run on the TUN stack and say kernel_nat = true, so Pinhole
# accepts no connection at all: it writes an nftables table, the kernel rewrites the packets
# into and out of the TUN device, and Pinhole only encrypts. Without IPv4 forwarding the relay
# refuses to start and names the sysctl. With it, the world's TCP request and UDP datagrams
# (a port range with an offset) through the relay's public ports get their answers; the home
# service sees the relay's overlay address as the client; megabytes pass intact both ways with
# the MSS of the handshake clamped to the tunnel; status counts the kernel's connections; the
# relay host reaches its own public port; a forward with an allow list refuses the client and
# serves the address it allows. The home adds, by reload, an expose of a camera on its LAN
# (another host): refused while the home does not route, then reached both from the world and
# from the home host itself, the camera seeing the home's LAN address. Each table lives exactly
# as long as its Pinhole. A home on the userspace stack, whose expose Pinhole carries, is
# reached through the same kernel NAT forward, and last a stock WireGuard home (wireguard-go)
# behind another kernel_nat forward of the same relay.
source "$(dirname "$0")/lib.sh"

# kernel_nat needs the TUN stack whatever pass runs this story: relay_config_head and
# home_config_head then write netstack = "tun" and tun_name = "phrelay%d" / "phhome%d".
# shellcheck disable=SC2034 # read by lib.sh (netstack_lines)
NETSTACK=tun

OVERLAY_STOCK=10.77.0.3 # the stock WireGuard home of the last act...
STOCK_PORT=8081         # ...behind the relay's public tcp/8081
UDP_PUBLIC=40100-40101  # the relay's public UDP range...
UDP_OVERLAY=41100-41101 # ...lands on these overlay ports at home (an offset of 1000)...
UDP_SERVICE=42100-42101 # ...and they on the game server's, on 127.0.0.1
TUNNEL_MTU=1420         # the default; the veth links have 1500
CLIENT_MSS=$((1500 - 40))
CLAMPED_MSS=$((TUNNEL_MTU - 40))
BIG_MIB=8
STAFF_PORT=8083        # a public port only the relay's own WAN address may use (allow)
CAMERA_PUBLIC=8082     # the relay's public port for the camera...
CAMERA_OVERLAY=8554    # ...the home's overlay port for it...
CAMERA_PORT=9000       # ...and the camera itself, on the home's LAN (the NAT box's $NAT_LAN_IP)

# nat_table_of NAME : the kernel NAT table of Pinhole peer NAME, named for its TUN device as
# its log says ("TUN device up device=...").
nat_table_of() {
    local dev
    dev=$(sed -n 's/.*TUN device up.* device="\?\([^" ]*\).*/\1/p' "$WORK/$1.log" | tail -n 1)
    [[ -n $dev ]] || fail "no 'TUN device up device=...' line in $1's log"
    echo "pinhole_$dev"
}

# has_table NS TABLE : the nftables table ip TABLE exists in NS.
has_table() {
    in_ns "$1" nft list table ip "$2" >/dev/null 2>&1
}

# home_web NAME NS ADDR PORT : the home's web service: GET / is HELLO, GET /big.bin a random
# BIG_MIB MiB file (BIG_SHA its sha256), GET /whoami the client address:port this service saw,
# and POST /sha256 the sha256 of the body it received.
home_web() {
    local name=$1 ns=$2 addr=$3 port=$4 dir="$WORK/www"
    if [[ ! -d $dir ]]; then
        mkdir -p "$dir"
        echo "$HELLO" >"$dir/index.html"
        head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$dir/big.bin"
        cat >"$WORK/home_web.py" <<'EOF'
import functools, hashlib, http.server, sys

class Handler(http.server.SimpleHTTPRequestHandler):
    def reply(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/whoami":
            return self.reply(("%s:%d\n" % self.client_address).encode())
        return super().do_GET()

    def do_POST(self):
        left, digest = int(self.headers["Content-Length"]), hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        self.reply((digest.hexdigest() + "\n").encode())

host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
handler = functools.partial(Handler, directory=root)
http.server.ThreadingHTTPServer((host, port), handler).serve_forever()
EOF
    fi
    BIG_SHA=$(sha256sum "$dir/big.bin" | cut -d' ' -f1)
    start "$name" "$ns" python3 "$WORK/home_web.py" "$addr" "$port" "$dir"
    wait_for 10 "the web service on $addr:$port" tcp_open "$ns" "$addr" "$port"
}

# seen_as NS URL WANT [CURL_ARG...] : a GET of URL/whoami from NS must be answered by a service
# that saw the client at address WANT (any port); SEEN is what it saw.
seen_as() {
    local ns=$1 url=$2 want=$3
    shift 3
    SEEN=$(in_ns "$ns" curl -fsS --max-time 5 "$@" "$url/whoami") || fail "GET $url/whoami from $ns failed: $SEEN"
    [[ $SEEN == "$want:"* ]] || fail "GET $url/whoami from $ns: the service should see the client as $want, but saw $SEEN"
}

# udp_ask NS HOST PORT PAYLOAD : one datagram from NS to HOST:PORT; prints the reply, which
# must come back from HOST:PORT within a second.
udp_ask() {
    in_ns "$1" python3 - "$2" "$3" "$4" <<'EOF'
import socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(payload.encode(), (host, port))
data, src = s.recvfrom(65535)
if src != (host, port):
    sys.exit(f"the reply came from {src[0]}:{src[1]}, not {host}:{port}")
print(data.decode())
EOF
}

# check_udp NS HOST PUBLIC_PORT SERVICE_PORT "who" : a datagram to PUBLIC_PORT comes back from
# it, answered by the game server on SERVICE_PORT, which saw the relay's overlay address.
check_udp() {
    local ns=$1 host=$2 port=$3 service=$4 who=$5 payload got
    payload="udp $port from $who, run $$"
    got=$(udp_ask "$ns" "$host" "$port" "$payload" 2>&1) || fail "$who: no answer to a datagram to $host:$port: $got"
    [[ $got == "$payload|port=$service|from=$OVERLAY_RELAY:"* ]] ||
        fail "$who: the datagram to $host:$port should reach the game server's udp/$service from $OVERLAY_RELAY, but the reply is: $got"
    pass "$who: udp $host:$port is answered by the game server's udp/$service, which saw ${got##*from=}"
}

# mss_probe NS IFNAME PORT MSS : in NS, count the TCP handshakes (SYN) to PORT that arrive on
# IFNAME: those with MSS in counter "expected", any other in counter "other".
mss_probe() {
    in_ns "$1" nft -f - <<EOF
table inet mssprobe {
    counter expected {}
    counter other {}
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        iifname "$2" tcp dport $3 tcp flags syn / syn,ack tcp option maxseg size $4 counter name "expected"
        iifname "$2" tcp dport $3 tcp flags syn / syn,ack tcp option maxseg size != $4 counter name "other"
    }
}
EOF
}

# mss_seen NS COUNTER : packets counted so far by NS's MSS probe counter COUNTER.
mss_seen() {
    in_ns "$1" nft list counter inet mssprobe "$2" | sed -n 's/.*packets \([0-9]*\).*/\1/p'
}

make_topology
gen_keypair relay
gen_keypair home
gen_wg_keypair stock

say "at home: a web service on 127.0.0.1:$SERVICE_PORT and a UDP game server on 127.0.0.1:$UDP_SERVICE"
home_web web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"
start game "$NS_HOME" python3 "$NT_DIR/tools/udp_echo.py" 127.0.0.1 "$UDP_SERVICE"
wait_for 10 "the game server to bind udp/${UDP_SERVICE#*-}" listening "$NS_HOME" udp "${UDP_SERVICE#*-}"

say "the relay: public tcp/$PUBLIC_PORT and udp/$UDP_PUBLIC forwarded by the kernel (kernel_nat = true)"
{
    relay_config_head "relay: the kernel forwards the public ports into the tunnel; Pinhole encrypts."
    cat <<EOF
[[peer]]
name = "stock"
public_key = "$(pub stock)"
allowed_ips = ["$OVERLAY_STOCK/32"]

[[forward]]
name = "web"
listen = "0.0.0.0:$PUBLIC_PORT"
to = "$OVERLAY_HOME:$OVERLAY_PORT"
kernel_nat = true

[[forward]]
name = "game"
protocol = "udp"
listen = "0.0.0.0:$UDP_PUBLIC"
to = "$OVERLAY_HOME:$UDP_OVERLAY"
kernel_nat = true

[[forward]]
name = "staff"
listen = "0.0.0.0:$STAFF_PORT"
to = "$OVERLAY_HOME:$OVERLAY_PORT"
allow = ["$RELAY_WAN_IP/32"]
kernel_nat = true

[[forward]]
name = "camera"
listen = "0.0.0.0:$CAMERA_PUBLIC"
to = "$OVERLAY_HOME:$CAMERA_OVERLAY"
kernel_nat = true

[[forward]]
name = "stock-web"
listen = "0.0.0.0:$STOCK_PORT"
to = "$OVERLAY_STOCK:$OVERLAY_PORT"
kernel_nat = true
EOF
} >"$WORK/relay.toml"

say "the home: its overlay tcp/$OVERLAY_PORT and udp/$UDP_OVERLAY rewritten by the kernel to 127.0.0.1"
{
    home_config_head "home: behind NAT; the kernel hands the tunnel's packets to the services."
    cat <<EOF
[[expose]]
name = "web"
listen = "$OVERLAY_HOME:$OVERLAY_PORT"
to = "127.0.0.1:$SERVICE_PORT"
kernel_nat = true

[[expose]]
name = "game"
protocol = "udp"
listen = "$OVERLAY_HOME:$UDP_OVERLAY"
to = "127.0.0.1:$UDP_SERVICE"
kernel_nat = true
EOF
} >"$WORK/home.toml"

say "the relay host does not route (net.ipv4.ip_forward = 0): pinhole up refuses, naming the fix"
in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=0
rc=0
out=$(in_ns "$NS_RELAY" timeout 20 "$PINHOLE" up -c "$WORK/relay.toml" 2>&1) || rc=$?
((rc != 0)) || fail "pinhole up with kernel_nat and ip_forward = 0 exited 0: $out"
((rc != 124)) || fail "pinhole up with kernel_nat and ip_forward = 0 kept running: $out"
pass "pinhole up exits $rc"
assert_contains "$out" "net.ipv4.ip_forward" "the message names the sysctl"
note "$(grep -m1 -o 'kernel_nat needs.*' <<<"$out" || tail -n 1 <<<"$out")"
! in_ns "$NS_RELAY" nft list tables ip 2>/dev/null | grep -q pinhole_ ||
    fail "the refused start left a table: $(in_ns "$NS_RELAY" nft list tables ip)"
[[ -z $(ip -n "$NS_RELAY" -o link show type tun 2>/dev/null) ]] ||
    fail "the refused start left a TUN device: $(ip -n "$NS_RELAY" -o link show type tun)"
pass "nothing is left behind: no table, no TUN device"

say "the relay's owner turns forwarding on (the home's loopback exposes need none: 0 there)"
in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=1
in_ns "$NS_HOME" sysctl -qw net.ipv4.ip_forward=0
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_for 10 "the relay to bind udp/$WG_PORT" listening "$NS_RELAY" udp "$WG_PORT"
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
RELAY_TABLE=$(nat_table_of relay)
HOME_TABLE=$(nat_table_of home)
wait_for 10 "table ip $RELAY_TABLE in the relay namespace" has_table "$NS_RELAY" "$RELAY_TABLE"
pass "the relay has its table: nft list table ip $RELAY_TABLE"
wait_for 10 "table ip $HOME_TABLE in the home namespace" has_table "$NS_HOME" "$HOME_TABLE"
pass "the home has its table: nft list table ip $HOME_TABLE"
for port in "$PUBLIC_PORT" "${UDP_PUBLIC%-*}" "${UDP_PUBLIC#*-}"; do
    if listening "$NS_RELAY" tcp "$port" || listening "$NS_RELAY" udp "$port"; then
        fail "something listens on the relay's public port $port: kernel_nat should leave it to the kernel"
    fi
done
for port in "$OVERLAY_PORT" "${UDP_OVERLAY%-*}" "${UDP_OVERLAY#*-}"; do
    if listening "$NS_HOME" tcp "$port" || listening "$NS_HOME" udp "$port"; then
        fail "something listens on the home's overlay port $port: kernel_nat should leave it to the kernel"
    fi
done
pass "no socket on the public ports nor on the home's overlay ports: the kernel carries them"
status=$("$PINHOLE" status -c "$WORK/relay.toml" 2>&1) || fail "pinhole status failed: $status"
assert_contains "$status" "(kernel NAT)" "pinhole status marks the forwards (kernel NAT)"

say "probes count the MSS of the client's TCP handshakes: arriving at the relay, and arriving at home from the tunnel"
mss_probe "$NS_RELAY" r-client "$PUBLIC_PORT" "$CLIENT_MSS"
mss_probe "$NS_HOME" "${HOME_TABLE#pinhole_}" "$OVERLAY_PORT" "$CLAMPED_MSS"

say "the client asks the relay's public tcp/$PUBLIC_PORT for the home page"
wait_for 15 "the client's request through the relay to reach the home service" client_gets_hello
check_hello
seen_as "$NS_CLIENT" "$PUBLIC_URL" "$OVERLAY_RELAY"
pass "the home service sees the client as $SEEN: the relay's overlay address, not $CLIENT_IP"

say "the client sends a datagram to each port of the relay's public udp/$UDP_PUBLIC"
check_udp "$NS_CLIENT" "$RELAY_PUBLIC_IP" "${UDP_PUBLIC%-*}" "${UDP_SERVICE%-*}" "the client"
check_udp "$NS_CLIENT" "$RELAY_PUBLIC_IP" "${UDP_PUBLIC#*-}" "${UDP_SERVICE#*-}" "the client"

say "$BIG_MIB MiB down and $BIG_MIB MiB up through the kernel's forward (veth MTU 1500, tunnel $TUNNEL_MTU)"
t0=$(now_ms)
sha=$(in_ns "$NS_CLIENT" curl -fsS --max-time 60 "$PUBLIC_URL/big.bin" | sha256sum | cut -d' ' -f1)
assert_eq "$BIG_SHA" "$sha" "$BIG_MIB MiB from home came through intact (sha256) in $(fmt_ms $(($(now_ms) - t0))) s"
t0=$(now_ms)
sha=$(in_ns "$NS_CLIENT" curl -fsS --max-time 60 -H 'Expect:' --data-binary "@$WORK/www/big.bin" \
    "$PUBLIC_URL/sha256") || fail "the upload through the relay failed: $sha"
assert_eq "$BIG_SHA" "$sha" "$BIG_MIB MiB to home came through intact (sha256 at home) in $(fmt_ms $(($(now_ms) - t0))) s"
sent=$(mss_seen "$NS_RELAY" expected)
((sent >= 4)) || fail "only $sent of the client's handshakes reached the relay with MSS $CLIENT_MSS ($(mss_seen "$NS_RELAY" other) with another)"
assert_eq 0 "$(mss_seen "$NS_RELAY" other)" "every client handshake reached the relay with MSS $CLIENT_MSS, for its 1500-byte link ($sent SYNs)"
clamped=$(mss_seen "$NS_HOME" expected)
((clamped >= 4)) || fail "only $clamped of the client's handshakes reached home with MSS $CLAMPED_MSS ($(mss_seen "$NS_HOME" other) with another)"
assert_eq 0 "$(mss_seen "$NS_HOME" other)" "every one reached home with MSS $CLAMPED_MSS, clamped to the tunnel's MTU $TUNNEL_MTU ($clamped SYNs)"

# total_of CONFIG KIND NAME : the connections pinhole status counts for that forward or expose.
total_of() {
    "$PINHOLE" status -c "$1" --json | python3 -c 'import json, sys
kind, name = sys.argv[1], sys.argv[2]
print(next(s["total"] for s in json.load(sys.stdin)[kind] if s["name"] == name))' "$2" "$3"
}
n=$(total_of "$WORK/relay.toml" forwards web) || fail "pinhole status --json on the relay failed: $n"
((n >= 4)) || fail "pinhole status counts $n connections for the relay's kernel NAT forward \"web\"; the client made at least 4"
pass "pinhole status on the relay counts the kernel's $n connections of forward \"web\""
n=$(total_of "$WORK/home.toml" exposes game) || fail "pinhole status --json at home failed: $n"
((n == 2)) || fail "pinhole status at home counts $n UDP sessions for expose \"game\", not the client's 2"
pass "pinhole status at home counts 2 UDP sessions for expose \"game\", one per port"

say "on the relay host itself: connections to its own public addresses"
for addr in "$RELAY_PUBLIC_IP" "$RELAY_WAN_IP"; do
    seen_as "$NS_RELAY" "http://$addr:$PUBLIC_PORT" "$OVERLAY_RELAY"
    pass "the relay host's request to $addr:$PUBLIC_PORT reaches the home service (seen as $SEEN)"
done
check_udp "$NS_RELAY" "$RELAY_PUBLIC_IP" "${UDP_PUBLIC#*-}" "${UDP_SERVICE#*-}" "the relay host"

say "tcp/$STAFF_PORT allows only $RELAY_WAN_IP: the rule does not rewrite the client's packets, and the relay refuses them"
rc=0
out=$(in_ns "$NS_CLIENT" curl -sS --max-time 5 "http://$RELAY_PUBLIC_IP:$STAFF_PORT/" 2>&1) || rc=$?
((rc == 7)) || fail "the client should be refused at once on tcp/$STAFF_PORT (curl exit 7), but curl exited $rc: $out"
pass "the client ($CLIENT_IP) is refused on tcp/$STAFF_PORT (connection refused)"
seen_as "$NS_RELAY" "http://$RELAY_WAN_IP:$STAFF_PORT" "$OVERLAY_RELAY" --interface "$RELAY_WAN_IP"
pass "a request from the allowed address $RELAY_WAN_IP reaches the home service (seen as $SEEN)"

say "a camera on the home's LAN ($NAT_LAN_IP:$CAMERA_PORT, another host) gets a kernel_nat expose, by reload"
home_web camera "$NS_NAT" "$NAT_LAN_IP" "$CAMERA_PORT"
cat >>"$WORK/home.toml" <<EOF

[[expose]]
name = "camera"
listen = "$OVERLAY_HOME:$CAMERA_OVERLAY"
to = "$NAT_LAN_IP:$CAMERA_PORT"
kernel_nat = true
EOF
out=$("$PINHOLE" reload -c "$WORK/home.toml" 2>&1) || true
assert_contains "$out" "kernel NAT rules NOT changed" "without forwarding at home, the reload keeps the old rules"
assert_contains "$out" "net.ipv4.ip_forward" "and names the sysctl"
! in_ns "$NS_HOME" nft list table ip "$HOME_TABLE" | grep -q "$NAT_LAN_IP" ||
    fail "the refused reload put the camera into table ip $HOME_TABLE anyway"
in_ns "$NS_HOME" sysctl -qw net.ipv4.ip_forward=1
out=$("$PINHOLE" reload -c "$WORK/home.toml" 2>&1) || fail "pinhole reload failed: $out"
assert_contains "$out" "kernel NAT rules replaced" "with forwarding on, the reload replaces the home's rules"
CAMERA_URL="http://$RELAY_PUBLIC_IP:$CAMERA_PUBLIC"
camera_answers() { [[ $(in_ns "$NS_CLIENT" curl -fsS --max-time 5 "$CAMERA_URL/") == "$HELLO" ]]; }
wait_for 15 "the client's request to $CAMERA_URL to reach the camera" camera_answers
seen_as "$NS_CLIENT" "$CAMERA_URL" "$HOME_LAN_IP"
pass "the world reaches the camera through relay and home; the camera sees $SEEN, the home's LAN address (masqueraded)"
seen_as "$NS_HOME" "http://$OVERLAY_HOME:$CAMERA_OVERLAY" "$HOME_LAN_IP"
pass "the home host's own request to $OVERLAY_HOME:$CAMERA_OVERLAY reaches the camera too (seen as $SEEN)"

say "the home's Pinhole gets SIGTERM: its table goes with it, the relay's stays"
stop home TERM
assert_eq 0 "$STOP_RC" "pinhole up (home) exits 0 on SIGTERM"
! has_table "$NS_HOME" "$HOME_TABLE" || fail "table ip $HOME_TABLE is still in the home namespace after pinhole exited"
pass "table ip $HOME_TABLE is gone from the home namespace"
has_table "$NS_RELAY" "$RELAY_TABLE" || fail "the relay's table ip $RELAY_TABLE went away with the home"
pass "the relay keeps its table ip $RELAY_TABLE"

say "the home comes back on the userspace stack, its expose carried by Pinhole: the relay's kernel NAT does not mind"
NETSTACK=userspace home_config_head "home: the embedded stack; the relay still forwards by kernel NAT." >"$WORK/home-user.toml"
cat >>"$WORK/home-user.toml" <<EOF

[[expose]]
name = "web"
listen = "$OVERLAY_HOME:$OVERLAY_PORT"
to = "127.0.0.1:$SERVICE_PORT"
EOF
pinhole_up home-user "$NS_HOME" "$WORK/home-user.toml" -v
wait_for 15 "the client's request through the relay's kernel NAT to the userspace home" client_gets_hello
pass "the client's request is answered through the userspace home's carried expose"
sha=$(in_ns "$NS_CLIENT" curl -fsS --max-time 60 "$PUBLIC_URL/big.bin" | sha256sum | cut -d' ' -f1)
assert_eq "$BIG_SHA" "$sha" "$BIG_MIB MiB from the userspace home came through intact (sha256)"
stop home-user TERM

say "a second home runs stock WireGuard (wireguard-go) and serves on its tunnel address $OVERLAY_STOCK:$OVERLAY_PORT"
stock_home_conf stock >"$WORK/stock.conf"
wireguard_go_up wg-stock "$NS_HOME" "$WG_IF_HOME" "$OVERLAY_STOCK/24" "$WORK/stock.conf"
home_web web-stock "$NS_HOME" "$OVERLAY_STOCK" "$OVERLAY_PORT"
STOCK_URL="http://$RELAY_PUBLIC_IP:$STOCK_PORT"
stock_gets_hello() { [[ $(in_ns "$NS_CLIENT" curl -fsS --max-time 5 "$STOCK_URL/") == "$HELLO" ]]; }
wait_for 15 "the client's request to $STOCK_URL to reach the stock home through the relay's kernel NAT" \
    stock_gets_hello
pass "the client's request to $STOCK_URL/ is answered by the stock home's own kernel"
seen_as "$NS_CLIENT" "$STOCK_URL" "$OVERLAY_RELAY"
pass "the stock home's service sees the client as $SEEN"

say "the relay's Pinhole gets SIGTERM: its table goes too"
stop relay TERM
assert_eq 0 "$STOP_RC" "pinhole up (relay) exits 0 on SIGTERM"
! has_table "$NS_RELAY" "$RELAY_TABLE" || fail "table ip $RELAY_TABLE is still in the relay namespace after pinhole exited"
pass "table ip $RELAY_TABLE is gone from the relay namespace"
pass "with kernel_nat the kernel forwards TCP and UDP ranges through the tunnel, and Pinhole cleans up after itself"
