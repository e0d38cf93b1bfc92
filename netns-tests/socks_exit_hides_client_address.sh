#!/usr/bin/env bash
# requires: root pinhole ip ping curl python3 wg
# netstacks: userspace tun
#
# Story: dynamic forwarding (`ssh -D`). A laptop runs Pinhole with a plain forward of its
# 127.0.0.1:1080 to the relay's SOCKS5 exit inside the overlay. The laptop's browser (curl)
# asks for http://web.test:8080/, a name that only the relay can resolve: the name travels to
# the exit unresolved, the exit resolves it, and the web server, out on the internet side of
# the relay, sees the relay's address and never the laptop's. The exit refuses, at once and
# with the proper SOCKS reply, what it must not reach: its own loopback, the cloud metadata
# address, the overlay itself, and a denied port.
#
#   laptop 198.51.100.50 ── 198.51.100.1 relay 203.0.113.1  ── 203.0.113.80  internet (web.test)
#                                              2001:db8:77::1 ── 2001:db8:77::80 (IPv6 too)
#
# The web server's TEST-NET addresses stand for the public internet, which the exit's default
# policy allows; allow_destinations opens one port of the relay's loopback, which it refuses.
#
# web.test is put in the relay namespace's own /etc/hosts: `ip netns exec NS` bind-mounts
# /etc/netns/NS/hosts over /etc/hosts for what it starts, so only processes started in the
# relay namespace resolve it (no DNS server needed; the file goes with the namespace).
source "$(dirname "$0")/lib.sh"

NS_LAPTOP="$PFX-laptop"
NS_INTERNET="$PFX-internet"
LAPTOP_IP=198.51.100.50
WEB_IP=203.0.113.80
RELAY_WAN_IP6=2001:db8:77::1
WEB_IP6=2001:db8:77::80
WEB_PORT=8080
OVERLAY_LAPTOP=10.77.0.3
EXIT_PORT=1080
DASHBOARD_PORT=9000 # a service on the relay's own loopback that the exit's owner chose to allow

say "building the network: laptop -- relay -- internet (namespaces $PFX-*)"
say_netstack
add_ns "$NS_LAPTOP"
add_ns "$NS_RELAY"
add_ns "$NS_INTERNET"
link "$NS_LAPTOP" l-relay "$LAPTOP_IP/24" "$NS_RELAY" r-laptop "$RELAY_PUBLIC_IP/24"
link "$NS_RELAY" r-inet "$RELAY_WAN_IP/24" "$NS_INTERNET" i-relay "$WEB_IP/24"
ip -n "$NS_RELAY" -6 addr add "$RELAY_WAN_IP6/64" dev r-inet nodad
ip -n "$NS_INTERNET" -6 addr add "$WEB_IP6/64" dev i-relay nodad
in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=0
ns_hosts "$NS_RELAY" "$WEB_IP web.test"

in_ns "$NS_RELAY" ping -c1 -W1 "$WEB_IP" >/dev/null || fail "the relay cannot reach the internet host"
pass "the relay reaches the internet host $WEB_IP"
! in_ns "$NS_LAPTOP" ping -c1 -W1 "$WEB_IP" >/dev/null 2>&1 || fail "the laptop reaches $WEB_IP directly"
pass "the laptop cannot reach $WEB_IP by itself"
got=$(in_ns "$NS_RELAY" getent hosts web.test) || fail "web.test does not resolve in the relay namespace"
assert_contains "$got" "$WEB_IP" "web.test resolves at the relay"
! in_ns "$NS_LAPTOP" getent hosts web.test >/dev/null || fail "web.test resolves at the laptop too; the test would prove nothing"
pass "web.test does not resolve at the laptop"

say "on the internet: a web server at web.test ($WEB_IP:$WEB_PORT, and [$WEB_IP6]:$WEB_PORT) that logs who connects"
web_service web "$NS_INTERNET" "$WEB_IP" "$WEB_PORT"
web_service web6 "$NS_INTERNET" "$WEB_IP6" "$WEB_PORT"
say "on the relay: a dashboard on its own 127.0.0.1:$DASHBOARD_PORT (loopback: refused by default)"
DASHBOARD="relay dashboard, run $$"
mkdir -p "$WORK/dashboard"
echo "$DASHBOARD" >"$WORK/dashboard/index.html"
start dashboard "$NS_RELAY" python3 -m http.server "$DASHBOARD_PORT" --bind 127.0.0.1 --directory "$WORK/dashboard"
wait_for 10 "the dashboard on the relay's 127.0.0.1:$DASHBOARD_PORT" tcp_open "$NS_RELAY" 127.0.0.1 "$DASHBOARD_PORT"

gen_keypair relay
gen_keypair laptop

say "the relay: a SOCKS5 exit on $OVERLAY_RELAY:$EXIT_PORT for the laptop only"
cat >"$WORK/relay.toml" <<EOF
# relay: the laptop's traffic leaves the overlay here.
[interface]
private_key_file = "relay.key"
listen_port = $WG_PORT
address = ["$OVERLAY_RELAY/24"]
$(netstack_lines relay)

[[peer]]
name = "laptop"
public_key = "$(pub laptop)"
allowed_ips = ["$OVERLAY_LAPTOP/32"]

[[expose]]
name = "exit"
listen = "$OVERLAY_RELAY:$EXIT_PORT"
to = "socks"
allow = ["$OVERLAY_LAPTOP"]
# The internet (here TEST-NET addresses) is allowed by default; the relay's own loopback is
# not, except the dashboard's port, named here.
allow_destinations = ["127.0.0.1:$DASHBOARD_PORT"]
deny_destinations = ["*:25"]
EOF
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_for 10 "the relay to bind udp/$WG_PORT" listening "$NS_RELAY" udp "$WG_PORT"

say "the laptop: pinhole up, forwarding its 127.0.0.1:$EXIT_PORT to the exit"
cat >"$WORK/laptop.toml" <<EOF
# laptop: set the browser's SOCKS5 proxy to 127.0.0.1:$EXIT_PORT, DNS through the proxy.
[interface]
private_key = "$(key laptop)"
address = ["$OVERLAY_LAPTOP/24"]
$(netstack_lines laptop)

[[peer]]
name = "relay"
public_key = "$(pub relay)"
allowed_ips = ["$OVERLAY_RELAY/32"]
endpoint = "$RELAY_PUBLIC_IP:$WG_PORT"
persistent_keepalive = 25

[[forward]]
name = "socks"
listen = "127.0.0.1:$EXIT_PORT"
to = "$OVERLAY_RELAY:$EXIT_PORT"
EOF
pinhole_up laptop "$NS_LAPTOP" "$WORK/laptop.toml" -v
wait_for 10 "the laptop to listen on 127.0.0.1:$EXIT_PORT" listening "$NS_LAPTOP" tcp "$EXIT_PORT"

# probe DEST PORT [--http PATH] : one SOCKS5 CONNECT from the laptop, through its forward.
probe() {
    in_ns "$NS_LAPTOP" python3 "$NT_DIR/tools/socks5_probe.py" 127.0.0.1 "$EXIT_PORT" "$@"
}
exit_answers() { [[ $(probe web.test "$WEB_PORT") == reply=0x00* ]]; }

say "the laptop's first SOCKS request, as soon as the tunnel is up"
started=$(now_ms)
wait_for 15 "the SOCKS exit to answer through the tunnel" exit_answers
pass "the exit answered $(fmt_ms $(($(now_ms) - started))) s after the laptop's forward was listening"

say "curl --socks5-hostname 127.0.0.1:$EXIT_PORT http://web.test:$WEB_PORT/ on the laptop"
lines_before=$(wc -l <"$WORK/web.log")
got=$(in_ns "$NS_LAPTOP" curl -fsS --max-time 10 --socks5-hostname "127.0.0.1:$EXIT_PORT" \
    "http://web.test:$WEB_PORT/" 2>&1) || fail "curl through the SOCKS exit failed: $got"
assert_eq "$HELLO" "$got" "the laptop fetched web.test through the exit (a name only the relay resolves)"
sha=$(in_ns "$NS_LAPTOP" curl -fsS --max-time 60 --socks5-hostname "127.0.0.1:$EXIT_PORT" \
    "http://web.test:$WEB_PORT/big.bin" | sha256sum | cut -d' ' -f1)
assert_eq "$BIG_SHA" "$sha" "10 MiB came through the exit intact"

say "what the web server saw"
wait_for 5 "the web server to log the request" eval "(( \$(wc -l <'$WORK/web.log') > lines_before ))"
seen=$(tail -n +"$((lines_before + 1))" "$WORK/web.log" | grep '"GET ' | awk '{print $1}' | sort -u | paste -sd' ')
note "web server log, source addresses: $seen"
assert_eq "$RELAY_WAN_IP" "$seen" "the web server saw only the relay's address ($RELAY_WAN_IP)"
! grep -q "$LAPTOP_IP" "$WORK/web.log" || fail "the laptop's address $LAPTOP_IP appears in the web server's log"
pass "the laptop's address $LAPTOP_IP never reached the web server"

say "a CONNECT to an IPv6 address: the web server's [$WEB_IP6]:$WEB_PORT"
out=$(probe "$WEB_IP6" "$WEB_PORT" --http /) || fail "no SOCKS reply for [$WEB_IP6]:$WEB_PORT: $out"
[[ $out == reply=0x00* ]] || fail "the exit refused the IPv6 destination [$WEB_IP6]:$WEB_PORT: $out"
assert_contains "$out" "$HELLO" "the laptop fetched the page from [$WEB_IP6]:$WEB_PORT through the exit"
wait_for 5 "the IPv6 web server to log the request" grep -q '"GET ' "$WORK/web6.log"
seen6=$(grep '"GET ' "$WORK/web6.log" | awk '{print $1}' | sort -u | paste -sd' ')
assert_eq "$RELAY_WAN_IP6" "$seen6" "over IPv6 too, the web server saw only the relay's address"

say "the exit's policy: refusals come at once, with SOCKS reply 0x02 (not allowed by ruleset)"
# refused DEST PORT "why" : reply 0x02 within a second.
refused() {
    local out ms
    out=$(probe "$1" "$2" --timeout 5) || fail "no SOCKS reply for $1:$2 ($3): $out"
    [[ $out == reply=0x02* ]] || fail "$1:$2 ($3) should be refused with 0x02; got: $out"
    ms=${out##*after=}
    ms=${ms%ms}
    ((ms < 1000)) || fail "$1:$2 ($3) was refused only after $ms ms; refusals must be immediate"
    pass "$1:$2 refused with 0x02 after $ms ms: $3"
}
refused 127.0.0.1 22 "the relay's own loopback (ssh)"
refused 169.254.169.254 80 "the cloud metadata address"
refused "$OVERLAY_RELAY" "$EXIT_PORT" "the overlay itself"
refused web.test 25 "deny_destinations *:25 (any host, that port)"

out=$(in_ns "$NS_LAPTOP" curl -sS --max-time 5 --socks5-hostname "127.0.0.1:$EXIT_PORT" \
    "http://169.254.169.254/latest/meta-data/" 2>&1) && rc=0 || rc=$?
assert_eq 97 "$rc" "curl to the metadata address through the exit fails with exit 97 (SOCKS refusal): ${out//$'\n'/ }"

say "allow_destinations opens exactly what it names: the dashboard's port on loopback"
out=$(probe 127.0.0.1 "$DASHBOARD_PORT" --http /) || fail "no SOCKS reply for the dashboard: $out"
[[ $out == reply=0x00* ]] || fail "127.0.0.1:$DASHBOARD_PORT is in allow_destinations but was refused: $out"
assert_contains "$out" "$DASHBOARD" "the laptop reached 127.0.0.1:$DASHBOARD_PORT at the relay through the exit"

if has_command status; then
    refusals=$(service_stat "$WORK/relay.toml" exposes exit refused)
    total=$(service_stat "$WORK/relay.toml" exposes exit total)
    note "pinhole status on the relay: exit total=$total refused=$refusals"
    ((refusals >= 5)) || fail "the exit refused 5 requests but pinhole status counts $refusals refusals"
    pass "the refusals are counted ($refusals)"
else
    skip_step "the exit's counters from pinhole status" "this binary has no 'status' command"
fi

assert_alive relay
assert_alive laptop
echo "MEASURED socks_exit_source=$RELAY_WAN_IP"
pass "the laptop browsed from the relay's address, with names resolved at the relay"
